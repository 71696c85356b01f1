// GGUF v3 writer: metadata and tensor infos are collected in memory (they are small: even a
// 150k-token vocabulary is a few MB), then written in one go by begin_data(); tensor data streams
// through a small buffer straight to the file, so memory use does not grow with the model.
#include "qforge/gguf_writer.h"

#include <fmt/format.h>

#include <cstring>
#include <limits>

#include "formats/gguf_internal.h"
#include "qforge/error.h"

namespace qforge {

using gguf_detail::quote;

namespace {

constexpr size_t kBufferBytes = size_t(4) << 20;  // data is written in chunks of about this size
constexpr size_t kMaxNameBytes = 63;              // ggml's GGML_MAX_NAME (64) includes the NUL

template <typename T>
void put(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s.append(b, sizeof(T));
}

void put_string(std::string& s, std::string_view v) {
  put(s, uint64_t(v.size()));
  s.append(v);
}

template <typename T>
std::string scalar(GgufType type, T v) {
  std::string s;
  put(s, uint32_t(type));
  put(s, v);
  return s;
}

uint64_t round_up(uint64_t n, uint64_t alignment, const std::string& what) {
  return checked_add(n, alignment - 1, what) / alignment * alignment;
}

// Runs an AtomicFile call, putting "gguf-writer: " in front of its messages ("PATH: write failed").
template <typename F>
void io(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    throw Error(e.kind(), std::string("gguf-writer: ") + e.what());
  }
}

}  // namespace

GgufWriter::GgufWriter(std::string path, uint32_t alignment) : path_(std::move(path)), alignment_(alignment) {
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
    fail("{}: alignment {} is not a power of two", origin(), alignment_);
  io([&] { out_ = std::make_unique<AtomicFile>(path_); });
}

// out_ (an AtomicFile) removes the temporary file unless commit() renamed it.
GgufWriter::~GgufWriter() = default;

void GgufWriter::check_open(std::string_view what) const {
  if (committed_) fail("{}: {} after commit()", origin(), what);
  if (begun_) fail("{}: {} after the data section was started (declare all keys and tensors first)", origin(), what);
}

// ---- metadata -----------------------------------------------------------------------------------

void GgufWriter::set_raw(std::string_view key, std::string encoded) {
  check_open(fmt::format("setting key {}", quote(key)));
  if (key.empty()) fail("{}: empty metadata key", origin());
  if (auto it = kv_index_.find(key); it != kv_index_.end()) {
    kv_[it->second].second = std::move(encoded);
    return;
  }
  kv_index_.emplace(std::string(key), kv_.size());
  kv_.emplace_back(std::string(key), std::move(encoded));
}

void GgufWriter::set_u8(std::string_view k, uint8_t v) { set_raw(k, scalar(GgufType::U8, v)); }
void GgufWriter::set_i8(std::string_view k, int8_t v) { set_raw(k, scalar(GgufType::I8, v)); }
void GgufWriter::set_u16(std::string_view k, uint16_t v) { set_raw(k, scalar(GgufType::U16, v)); }
void GgufWriter::set_i16(std::string_view k, int16_t v) { set_raw(k, scalar(GgufType::I16, v)); }
void GgufWriter::set_u32(std::string_view k, uint32_t v) { set_raw(k, scalar(GgufType::U32, v)); }
void GgufWriter::set_i32(std::string_view k, int32_t v) { set_raw(k, scalar(GgufType::I32, v)); }
void GgufWriter::set_u64(std::string_view k, uint64_t v) { set_raw(k, scalar(GgufType::U64, v)); }
void GgufWriter::set_i64(std::string_view k, int64_t v) { set_raw(k, scalar(GgufType::I64, v)); }
void GgufWriter::set_f32(std::string_view k, float v) { set_raw(k, scalar(GgufType::F32, v)); }
void GgufWriter::set_f64(std::string_view k, double v) { set_raw(k, scalar(GgufType::F64, v)); }
void GgufWriter::set_bool(std::string_view k, bool v) { set_raw(k, scalar(GgufType::BOOL, uint8_t(v ? 1 : 0))); }

void GgufWriter::set_string(std::string_view k, std::string_view v) {
  std::string s;
  put(s, uint32_t(GgufType::STRING));
  put_string(s, v);
  set_raw(k, std::move(s));
}

void GgufWriter::set_array_string(std::string_view k, const std::vector<std::string>& v) {
  size_t bytes = 4 + 4 + 8;
  for (const auto& e : v) bytes += 8 + e.size();
  std::string s;
  s.reserve(bytes);
  put(s, uint32_t(GgufType::ARRAY));
  put(s, uint32_t(GgufType::STRING));
  put(s, uint64_t(v.size()));
  for (const auto& e : v) put_string(s, e);
  set_raw(k, std::move(s));
}

void GgufWriter::set_array(std::string_view k, GgufType elem, const void* data, size_t count) {
  const size_t size = gguf_detail::fixed_size(elem);
  if (size == 0)
    fail("{}: key {}: set_array needs a fixed-size element type, not {}", origin(), quote(k), gguf_type_name(elem));
  const auto* p = static_cast<const uint8_t*>(data);
  if (elem == GgufType::BOOL)
    for (size_t i = 0; i < count; ++i)
      if (p[i] > 1) fail("{}: key {}: element {}: bool value {} is not 0 or 1", origin(), quote(k), i, p[i]);
  std::string s;
  s.reserve(16 + count * size);
  put(s, uint32_t(GgufType::ARRAY));
  put(s, uint32_t(elem));
  put(s, uint64_t(count));
  if (count) s.append(reinterpret_cast<const char*>(p), count * size);
  set_raw(k, std::move(s));
}

void GgufWriter::set_array_f32(std::string_view k, std::span<const float> v) {
  set_array(k, GgufType::F32, v.data(), v.size());
}
void GgufWriter::set_array_i32(std::string_view k, std::span<const int32_t> v) {
  set_array(k, GgufType::I32, v.data(), v.size());
}
void GgufWriter::set_array_u32(std::string_view k, std::span<const uint32_t> v) {
  set_array(k, GgufType::U32, v.data(), v.size());
}

bool GgufWriter::has_key(std::string_view key) const { return kv_index_.count(key) != 0; }

void GgufWriter::remove_key(std::string_view key) {
  check_open(fmt::format("removing key {}", quote(key)));
  auto it = kv_index_.find(key);
  if (it == kv_index_.end()) return;
  kv_.erase(kv_.begin() + long(it->second));
  kv_index_.clear();
  for (size_t i = 0; i < kv_.size(); ++i) kv_index_.emplace(kv_[i].first, i);
}

// ---- tensors ------------------------------------------------------------------------------------

uint64_t GgufWriter::tensor_nbytes(uint32_t ggml_type, const std::vector<uint64_t>& ne, const std::string& what) {
  const GgmlTypeInfo* ti = ggml_type_info(ggml_type);
  if (!ti) fail("{}: unknown ggml type id {}", what, ggml_type);
  if (ne.empty() || ne.size() > size_t(kGgufMaxDims))
    fail("{}: {} dimensions; a ggml tensor has 1 to {}", what, ne.size(), kGgufMaxDims);
  uint64_t numel = 1;
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] > uint64_t(std::numeric_limits<int64_t>::max())) fail("{}: ne[{}] = {} is over 2^63", what, d, ne[d]);
    numel = checked_mul(numel, ne[d], what + ": element count");
  }
  if (numel > uint64_t(std::numeric_limits<int64_t>::max())) fail("{}: more than 2^63 elements", what);
  if (ne[0] % ti->block_elems != 0)
    fail("{}: row length ne[0] = {} is not a multiple of the {} block size {}", what, ne[0], ti->name,
         ti->block_elems);
  return checked_mul(numel / ti->block_elems, ti->block_bytes, what + ": size in bytes");
}

void GgufWriter::add_tensor(std::string name, uint32_t ggml_type, std::vector<uint64_t> ne) {
  const std::string where = fmt::format("{}: tensor {}", origin(), quote(name));
  check_open(fmt::format("adding tensor {}", quote(name)));
  if (name.empty()) fail("{}: empty tensor name", origin());
  if (name.size() > kMaxNameBytes)
    fail("{}: name is {} bytes; ggml allows at most {}", where, name.size(), kMaxNameBytes);
  if (tensor_index_.count(name)) fail("{}: declared twice", where);
  const uint64_t nbytes = tensor_nbytes(ggml_type, ne, where);
  const uint64_t offset = data_bytes_;
  data_bytes_ = round_up(checked_add(offset, nbytes, where + ": data section size"), alignment_,
                         where + ": data section size");
  tensor_index_.emplace(name, tensors_.size());
  tensors_.push_back({std::move(name), ggml_type, std::move(ne), nbytes, offset});
}

// ---- data ---------------------------------------------------------------------------------------

void GgufWriter::begin_data() {
  check_open("begin_data()");
  if (alignment_ != kGgufDefaultAlignment) {
    set_u32("general.alignment", alignment_);
  } else if (const auto it = kv_index_.find("general.alignment"); it != kv_index_.end()) {
    // A caller's general.alignment must say what the tensors are actually aligned to.
    const std::string& enc = kv_[it->second].second;
    uint32_t type = 0, value = 0;
    std::memcpy(&type, enc.data(), 4);
    if (type == uint32_t(GgufType::U32)) std::memcpy(&value, enc.data() + 4, 4);
    if (value != alignment_)
      fail("{}: key 'general.alignment' is set but the writer aligns to {} (pass the alignment to the constructor)",
           origin(), alignment_);
  }
  std::string h;
  h.append("GGUF", 4);
  put(h, uint32_t(3));
  put(h, uint64_t(tensors_.size()));
  put(h, uint64_t(kv_.size()));
  for (const auto& [key, value] : kv_) {
    put_string(h, key);
    h += value;
  }
  for (const Tensor& t : tensors_) {
    put_string(h, t.name);
    put(h, uint32_t(t.ne.size()));
    for (uint64_t n : t.ne) put(h, n);
    put(h, t.type);
    put(h, t.offset);
  }
  data_start_ = round_up(h.size(), alignment_, origin() + ": header size");
  h.resize(size_t(data_start_), '\0');
  begun_ = true;
  buffer_.reserve(kBufferBytes);
  emit(h.data(), h.size());
  finish_tensors();
}

uint64_t GgufWriter::total_bytes() const {
  if (!begun_) fail("{}: total_bytes() before begin_data()", origin());
  return data_start_ + data_bytes_;
}

std::string GgufWriter::current_tensor() const {
  return current_ < tensors_.size() ? tensors_[current_].name : std::string();
}

void GgufWriter::emit(const void* p, size_t n) {
  written_ += n;
  if (buffer_.size() + n > kBufferBytes) flush();
  if (n >= kBufferBytes) {
    io([&] { out_->write(p, n); });
    return;
  }
  buffer_.append(static_cast<const char*>(p), n);
}

void GgufWriter::flush() {
  if (buffer_.empty()) return;
  io([&] { out_->write(buffer_.data(), buffer_.size()); });
  buffer_.clear();
}

// Pads after every tensor that is complete and moves past tensors with no bytes at all.
void GgufWriter::finish_tensors() {
  while (current_ < tensors_.size() && written_in_current_ == tensors_[current_].nbytes) {
    static const char zeros[256] = {};
    const uint64_t end = tensors_[current_].offset + tensors_[current_].nbytes;
    for (uint64_t pad = (alignment_ - end % alignment_) % alignment_; pad > 0;) {
      const size_t k = size_t(std::min<uint64_t>(pad, sizeof zeros));
      emit(zeros, k);
      pad -= k;
    }
    ++current_;
    written_in_current_ = 0;
  }
}

void GgufWriter::write(const void* bytes, size_t n) {
  if (committed_) fail("{}: write() after commit()", origin());
  if (!begun_) begin_data();
  const auto* p = static_cast<const uint8_t*>(bytes);
  while (n > 0) {
    if (current_ >= tensors_.size())
      fail("{}: {} bytes more than the {} declared tensors hold", origin(), n, tensors_.size());
    const Tensor& t = tensors_[current_];
    const size_t k = size_t(std::min<uint64_t>(n, t.nbytes - written_in_current_));
    emit(p, k);
    p += k;
    n -= k;
    written_in_current_ += k;
    finish_tensors();
  }
}

void GgufWriter::commit() {
  if (committed_) fail("{}: commit() called twice", origin());
  if (!begun_) begin_data();
  if (current_ < tensors_.size()) {
    const Tensor& t = tensors_[current_];
    fail("{}: tensor {}: only {} of its {} bytes were written ({} of {} tensors incomplete)", origin(),
         quote(t.name), written_in_current_, t.nbytes, tensors_.size() - current_, tensors_.size());
  }
  flush();
  if (written_ != total_bytes() || out_->offset() != written_)
    throw Error(ErrorKind::Internal, fmt::format("{}: wrote {} bytes, expected {}", origin(), written_, total_bytes()));
  io([&] { out_->commit(); });
  committed_ = true;
}

// ---- llama.cpp's file types ---------------------------------------------------------------------

uint32_t gguf_file_type_for(uint32_t ggml_type) {
  switch (ggml_type) {
    case 0: return 0;    // ALL_F32
    case 1: return 1;    // MOSTLY_F16
    case 2: return 2;    // MOSTLY_Q4_0
    case 3: return 3;    // MOSTLY_Q4_1
    case 8: return 7;    // MOSTLY_Q8_0
    case 6: return 8;    // MOSTLY_Q5_0
    case 7: return 9;    // MOSTLY_Q5_1
    case 10: return 10;  // MOSTLY_Q2_K
    case 11: return 12;  // MOSTLY_Q3_K_M
    case 12: return 15;  // MOSTLY_Q4_K_M
    case 13: return 17;  // MOSTLY_Q5_K_M
    case 14: return 18;  // MOSTLY_Q6_K
    case 20: return 25;  // MOSTLY_IQ4_NL
    case 30: return 32;  // MOSTLY_BF16
    default: break;
  }
  const GgmlTypeInfo* ti = ggml_type_info(ggml_type);
  fail_unsupported("gguf-writer: no llama.cpp file type for ggml type {}", ti ? ti->name : std::to_string(ggml_type));
}

}  // namespace qforge
