#include "qforge/imatrix.h"

#include <cmath>
#include <cstring>
#include <string_view>

#include "qforge/error.h"
#include "qforge/gguf.h"
#include "qforge/mmap.h"

namespace qforge {

namespace {

void check_values(const std::string& path, const std::string& name, const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]) || v[i] < 0)
      fail("imatrix: {}: entry '{}': value {} is {} (importance must be finite and >= 0)", path, name, i, v[i]);
}

// ---- legacy .dat -------------------------------------------------------------------------------

class Reader {
 public:
  Reader(const std::string& path, const uint8_t* p, size_t n) : path_(path), p_(p), n_(n) {}
  size_t left() const { return n_ - at_; }
  int32_t i32(const char* what) {
    if (left() < 4) fail("imatrix: {}: truncated at byte {} (reading {})", path_, at_, what);
    int32_t v;
    std::memcpy(&v, p_ + at_, 4);
    at_ += 4;
    return v;
  }
  const uint8_t* bytes(size_t k, const char* what) {
    if (left() < k) fail("imatrix: {}: truncated at byte {}: {} needs {} bytes, {} left", path_, at_, what, k, left());
    const uint8_t* q = p_ + at_;
    at_ += k;
    return q;
  }

 private:
  const std::string& path_;
  const uint8_t* p_;
  size_t n_, at_ = 0;
};

ImportanceMatrix load_legacy(const std::string& path, const uint8_t* data, size_t size) {
  ImportanceMatrix m;
  m.path = path;
  m.legacy = true;
  Reader r(path, data, size);
  const int32_t n_entries = r.i32("the entry count");
  // Each entry takes at least 12 bytes: a count beyond that is not a legacy imatrix.
  if (n_entries < 1 || uint64_t(n_entries) * 12 > r.left())
    fail("imatrix: {}: {} entries in {} bytes: not an importance matrix (neither GGUF nor llama.cpp's legacy .dat)",
         path, n_entries, size);
  for (int32_t e = 0; e < n_entries; ++e) {
    const int32_t len = r.i32("a name length");
    if (len < 1 || len > 4096) fail("imatrix: {}: entry {}: name length {} (want 1..4096)", path, e, len);
    const auto* s = r.bytes(size_t(len), "a name");
    std::string name(reinterpret_cast<const char*>(s), size_t(len));
    const int32_t ncall = r.i32("a call count");
    const int32_t nval = r.i32("a value count");
    if (ncall < 0 || nval < 1)
      fail("imatrix: {}: entry '{}': {} calls and {} values (want >= 0 and >= 1)", path, name, ncall, nval);
    const auto* vals = r.bytes(size_t(nval) * 4, "the values");
    std::vector<float> v(static_cast<size_t>(nval));
    std::memcpy(v.data(), vals, v.size() * 4);
    if (ncall > 0)
      for (float& x : v) x = x / float(int64_t(ncall));
    check_values(path, name, v);
    if (!m.entries.emplace(name, std::move(v)).second) fail("imatrix: {}: entry '{}' appears twice", path, name);
  }
  // Optional trailer: the number of chunks and the dataset's name.
  if (r.left() >= 4) {
    m.chunk_count = r.i32("the chunk count");
    if (r.left() >= 4) {
      const int32_t len = r.i32("the dataset name length");
      if (len > 0 && size_t(len) <= r.left())
        m.datasets.emplace_back(reinterpret_cast<const char*>(r.bytes(size_t(len), "the dataset name")), size_t(len));
    }
  }
  return m;
}

// ---- GGUF ------------------------------------------------------------------------------------

std::vector<float> f32_values(const GgufFile& g, const GgufTensor& t) {
  if (t.type != kGgmlTypeF32)
    fail("{}: type {} (an importance matrix holds f32)", g.tensor_origin(t.name), t.type_info().name);
  std::vector<float> v(size_t(t.numel));
  std::memcpy(v.data(), t.data, v.size() * 4);
  return v;
}

ImportanceMatrix load_gguf(const std::string& path, const uint8_t* data, size_t size) {
  const auto g = GgufFile::parse(data, size, path);
  ImportanceMatrix m;
  m.path = path;
  m.chunk_count = int(g->get_u32("imatrix.chunk_count", 0));
  if (g->has("imatrix.datasets"))
    for (auto s : g->get_string_array("imatrix.datasets")) m.datasets.emplace_back(s);
  constexpr std::string_view kSums = ".in_sum2", kCounts = ".counts";
  for (const GgufTensor& t : g->tensors()) {
    const std::string_view n = t.name;
    if (n.size() > kCounts.size() && n.substr(n.size() - kCounts.size()) == kCounts) continue;  // with its sums
    if (!(n.size() > kSums.size() && n.substr(n.size() - kSums.size()) == kSums))
      fail("{}: not an importance matrix tensor (want NAME.in_sum2 and NAME.counts)", g->tensor_origin(t.name));
    const std::string name(n.substr(0, n.size() - kSums.size()));
    const GgufTensor* c = g->find_tensor(name + std::string(kCounts));
    if (!c) fail("{}: no matching '{}{}' tensor", g->tensor_origin(t.name), name, kCounts);
    const std::vector<float> sums = f32_values(*g, t), counts = f32_values(*g, *c);
    if (counts.empty() || sums.size() % counts.size() != 0)
      fail("{}: {} sums do not split into {} experts", g->tensor_origin(t.name), sums.size(), counts.size());
    const size_t per = sums.size() / counts.size();
    std::vector<float> v(sums.size());
    for (size_t j = 0; j < counts.size(); ++j) {
      if (!std::isfinite(counts[j]) || counts[j] < 0)
        fail("{}: count {} is {}", g->tensor_origin(c->name), j, counts[j]);
      const float count = float(std::lround(counts[j]));
      for (size_t i = 0; i < per; ++i) v[j * per + i] = count > 0 ? sums[j * per + i] / count : 1.0f;
    }
    check_values(path, name, v);
    m.entries.emplace(name, std::move(v));
  }
  if (m.entries.empty()) fail("imatrix: {}: no NAME.in_sum2 tensors: not an importance matrix", path);
  return m;
}

}  // namespace

ImportanceMatrix parse_imatrix(const uint8_t* data, size_t size, const std::string& name) {
  if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) return load_gguf(name, data, size);
  return load_legacy(name, data, size);
}

ImportanceMatrix load_imatrix(const std::string& path) {
  const auto f = MappedFile::open(path);
  return parse_imatrix(f->data(), f->size(), path);
}

}  // namespace qforge
