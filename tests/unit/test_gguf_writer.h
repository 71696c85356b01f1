// A small GGUF writer for the tests: builds files byte by byte so that tests can make valid files
// of any shape and break any field of them. Not a library writer: no streaming, no checks.
#pragma once
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace qforge::test {

class GgufBuilder {
 public:
  uint32_t version = 3;
  uint32_t alignment = 32;  // used to place tensors; write general.alignment yourself to change it in the file
  std::string magic = "GGUF";

  // ---- metadata: each call appends one key/value pair
  void u8(const std::string& k, uint8_t v) { scalar(k, 0, v); }
  void i8(const std::string& k, int8_t v) { scalar(k, 1, v); }
  void u16(const std::string& k, uint16_t v) { scalar(k, 2, v); }
  void i16(const std::string& k, int16_t v) { scalar(k, 3, v); }
  void u32(const std::string& k, uint32_t v) { scalar(k, 4, v); }
  void i32(const std::string& k, int32_t v) { scalar(k, 5, v); }
  void f32(const std::string& k, float v) { scalar(k, 6, v); }
  void boolean(const std::string& k, bool v) { scalar(k, 7, uint8_t(v)); }
  void u64(const std::string& k, uint64_t v) { scalar(k, 10, v); }
  void i64(const std::string& k, int64_t v) { scalar(k, 11, v); }
  void f64(const std::string& k, double v) { scalar(k, 12, v); }
  void str(const std::string& k, const std::string& v) {
    key(k, 8);
    put_str(kv_, v);
  }
  void str_array(const std::string& k, const std::vector<std::string>& v) {
    key(k, 9);
    put(kv_, uint32_t(8));
    put(kv_, uint64_t(v.size()));
    for (const auto& s : v) put_str(kv_, s);
  }
  void f32_array(const std::string& k, const std::vector<float>& v) { array(k, 6, v); }
  void i32_array(const std::string& k, const std::vector<int32_t>& v) { array(k, 5, v); }
  // Anything else: the raw bytes after the key (type id and value).
  void raw_kv(const std::string& k, const std::string& type_and_value) {
    put_str(kv_, k);
    kv_ += type_and_value;
    ++n_kv_;
  }

  // ---- tensors: ne in ggml order (innermost first); data placed at the next aligned offset
  // unless `offset` is given.
  void tensor(const std::string& name, uint32_t ggml_type, std::vector<uint64_t> ne, const std::string& bytes,
              std::optional<uint64_t> offset = std::nullopt) {
    tensors_.push_back({name, ggml_type, std::move(ne), bytes, offset});
  }
  void clear_tensors() { tensors_.clear(); }
  void tensor_f32(const std::string& name, std::vector<uint64_t> ne, const std::vector<float>& v) {
    tensor(name, 0, std::move(ne), std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4));
  }

  // Header counts may be overridden to lie about the content.
  std::optional<uint64_t> tensor_count_override, kv_count_override;

  std::string build() const {
    std::string out = magic;
    put(out, version);
    put(out, tensor_count_override.value_or(tensors_.size()));
    put(out, kv_count_override.value_or(n_kv_));
    out += kv_;
    std::string data;
    for (const auto& t : tensors_) {
      uint64_t off;
      if (t.offset) {
        off = *t.offset;
      } else {
        data.resize((data.size() + alignment - 1) / alignment * alignment, '\0');
        off = data.size();
        data += t.bytes;
      }
      put_str(out, t.name);
      put(out, uint32_t(t.ne.size()));
      for (uint64_t n : t.ne) put(out, n);
      put(out, t.type);
      put(out, off);
    }
    if (!tensors_.empty()) {
      out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
      out += data;
    }
    return out;
  }

  void write(const std::string& path) const {
    std::ofstream f(path, std::ios::binary);
    const std::string b = build();
    f.write(b.data(), std::streamsize(b.size()));
  }

  template <typename T>
  static void put(std::string& s, T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    s.append(b, sizeof(T));
  }
  static void put_str(std::string& s, const std::string& v) {
    put(s, uint64_t(v.size()));
    s += v;
  }

 private:
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<uint64_t> ne;
    std::string bytes;
    std::optional<uint64_t> offset;
  };
  void key(const std::string& k, uint32_t type) {
    put_str(kv_, k);
    put(kv_, type);
    ++n_kv_;
  }
  template <typename T>
  void scalar(const std::string& k, uint32_t type, T v) {
    key(k, type);
    put(kv_, v);
  }
  template <typename T>
  void array(const std::string& k, uint32_t type, const std::vector<T>& v) {
    key(k, 9);
    put(kv_, type);
    put(kv_, uint64_t(v.size()));
    for (const T& x : v) put(kv_, x);
  }

  std::string kv_;
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace qforge::test
