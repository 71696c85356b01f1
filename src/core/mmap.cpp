#include "qforge/mmap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "qforge/error.h"

namespace qforge {

namespace {
// A path the user named that cannot be opened is bad input (exit 2); other OS failures are I/O errors.
[[noreturn]] void fail_open(const std::string& path) {
  const int e = errno;
  if (e == ENOENT || e == ENOTDIR || e == EACCES || e == EISDIR || e == ENAMETOOLONG || e == ELOOP)
    fail("{}: cannot open: {}", path, std::strerror(e));
  fail_io("{}: cannot open: {}", path, std::strerror(e));
}
}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_open(path);
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail_io("{}: cannot stat: {}", path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = size_t(st.st_size);
  if (m->size_ > 0) {
    void* p = mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail_io("{}: cannot mmap {} bytes: {}", path, m->size_, std::strerror(e));
    }
    m->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

static void page_range(const uint8_t* base, size_t size, size_t off, size_t len, void** p, size_t* n) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  if (off > size) off = size;
  if (len > size - off) len = size - off;
  size_t start = off & ~(page - 1);
  *p = const_cast<uint8_t*>(base + start);
  *n = off + len - start;
}

void MappedFile::prefetch(size_t offset, size_t len) const {
  if (!data_) return;
  void* p;
  size_t n;
  page_range(data_, size_, offset, len, &p, &n);
  madvise(p, n, MADV_WILLNEED);
}

void MappedFile::release(size_t offset, size_t len) const {
  if (!data_) return;
  void* p;
  size_t n;
  page_range(data_, size_, offset, len, &p, &n);
  madvise(p, n, MADV_DONTNEED);
}

void release_mapped_pages(const void* p, size_t n) {
  if (!p || n == 0) return;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + n;
  madvise(reinterpret_cast<void*>(begin), size_t(end - begin), MADV_DONTNEED);
}

std::string read_text_file(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_open(path);
  struct stat st {};
  fstat(fd, &st);
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("{}: is a directory, expected a file", path);
  }
  if (uint64_t(st.st_size) > max_bytes) {
    ::close(fd);
    fail("{}: file too large ({} bytes, limit {})", path, uint64_t(st.st_size), max_bytes);
  }
  std::string s;
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      fail_io("{}: read error: {}", path, std::strerror(e));
    }
    if (r == 0) break;
    s.append(buf, size_t(r));
    if (s.size() > max_bytes) {
      ::close(fd);
      fail("{}: file too large (limit {} bytes)", path, max_bytes);
    }
  }
  ::close(fd);
  return s;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail_io("{}: cannot stat: {}", path, std::strerror(errno));
  return uint64_t(st.st_size);
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  std::random_device rd;
  tmp_ = fmt::format("{}.tmp-{:08x}", path_, rd());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_io("{}: cannot create temporary file {}: {}", path_, tmp_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_io("{}: write failed: {}", path_, std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
    offset_ += uint64_t(w);
  }
}

void AtomicFile::write_zeros(size_t n) {
  static const char zeros[4096] = {};
  while (n > 0) {
    size_t k = n < sizeof zeros ? n : sizeof zeros;
    write(zeros, k);
    n -= k;
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) fail_io("{}: fsync failed: {}", path_, std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail_io("{}: rename failed: {}", path_, std::strerror(errno));
  committed_ = true;
}

}  // namespace qforge
