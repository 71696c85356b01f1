// Read-only memory-mapped files: model weights are used in place, never copied.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace qforge {

class MappedFile {
 public:
  // Maps the whole file read-only. Throws Error (Io) naming the path on failure.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Hint that [offset, offset+len) will be read sequentially soon (madvise WILLNEED).
  void prefetch(size_t offset, size_t len) const;
  // Drop pages of [offset, offset+len) from this process (used when streaming large models).
  void release(size_t offset, size_t len) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Drops the pages holding [p, p+n) of a read-only file mapping from this process's resident set
// (madvise DONTNEED, widened to whole pages). Safe: a later read faults them back in from the file.
// Used after a tensor was copied (transposed, widened) so the copy and its source are not both resident.
void release_mapped_pages(const void* p, size_t n);

// Reads a whole (small) file into a string; throws Error naming the path.
std::string read_text_file(const std::string& path, size_t max_bytes = size_t(64) << 20);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
uint64_t file_size(const std::string& path);

// Writes a file atomically: content goes to PATH.tmp-XXXX, then fsync and rename over PATH.
// Nothing is left at PATH if the writer throws or is destroyed before commit().
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary file unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t n);
  void write_zeros(size_t n);
  uint64_t offset() const { return offset_; }
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t offset_ = 0;
  bool committed_ = false;
};

}  // namespace qforge
