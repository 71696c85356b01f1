// GGUF reader: header, metadata and tensor infos, validated against the file before anything is
// handed out. Every count and length from the file is compared with the bytes left before it is
// used to allocate or to move the read position, so a hostile count (2^60 array elements) fails at
// once instead of allocating; sizes are overflow-checked; tensors must lie inside the data section,
// aligned, without overlapping one another.
#include "qforge/gguf.h"
#include "qforge/quant.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "formats/gguf_internal.h"
#include "qforge/error.h"

namespace qforge {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

// ---- ggml types -------------------------------------------------------------------------------

namespace {

// Block sizes from ggml's block structs: QK_K = 256 elements per k-quant super-block.
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},     {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},      {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},   {20, "IQ4_NL", 32, 18},  {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},   {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},        {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},       {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},   {35, "TQ2_0", 256, 66},  {39, "MXFP4", 32, 17},
    {40, "NVFP4", 64, 36},    {41, "Q1_0", 128, 18},    {42, "Q2_0", 64, 18},
};

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const auto& t : kGgmlTypes)
    if (t.id == id) return &t;
  return nullptr;
}

std::optional<DType> ggml_type_dtype(uint32_t id) {
  switch (id) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 24: return DType::I8;
    case 25: return DType::I16;
    case 26: return DType::I32;
    case 27: return DType::I64;
    case 28: return DType::F64;
    case 30: return DType::BF16;
    default:
      // Quantized block types: the rows of src/quant/types.cpp that carry a ggml id.
      if (const QuantType* q = find_quant_type_by_ggml(int32_t(id))) return q->dtype;
      return std::nullopt;
  }
}

// ---- values -----------------------------------------------------------------------------------

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "unknown";
}

bool GgufValue::is_integer() const { return gguf_detail::is_integer_type(type); }

std::string GgufValue::type_str() const {
  if (type != GgufType::ARRAY) return gguf_type_name(type);
  return fmt::format("array of {} {}", count, gguf_type_name(elem_type));
}

namespace gguf_detail {

bool is_integer_type(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::U16: case GgufType::I16:
    case GgufType::U32: case GgufType::I32: case GgufType::U64: case GgufType::I64:
      return true;
    default:
      return false;
  }
}

bool is_signed_type(GgufType t) {
  return t == GgufType::I8 || t == GgufType::I16 || t == GgufType::I32 || t == GgufType::I64;
}

size_t fixed_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

Scalar read_scalar(GgufType t, const uint8_t* p) {
  Scalar s;
  auto load = [&](auto v) {
    std::memcpy(&v, p, sizeof(v));
    return v;
  };
  switch (t) {
    case GgufType::U8: s.u = load(uint8_t{}); break;
    case GgufType::BOOL: s.u = load(uint8_t{}); break;
    case GgufType::U16: s.u = load(uint16_t{}); break;
    case GgufType::U32: s.u = load(uint32_t{}); break;
    case GgufType::U64: s.u = load(uint64_t{}); break;
    case GgufType::I8: s.i = load(int8_t{}); break;
    case GgufType::I16: s.i = load(int16_t{}); break;
    case GgufType::I32: s.i = load(int32_t{}); break;
    case GgufType::I64: s.i = load(int64_t{}); break;
    case GgufType::F32: s.f = load(float{}); break;
    case GgufType::F64: s.f = load(double{}); break;
    default: break;
  }
  return s;
}

std::string quote(std::string_view s) {
  // Names come from the file: keep messages bounded and printable whatever the bytes are.
  constexpr size_t kMax = 200;
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') out += fmt::format("\\x{:02x}", c);
    else out += char(c);
  }
  out += "'";
  if (s.size() > kMax) out += fmt::format(" (cut; {} bytes)", s.size());
  return out;
}

}  // namespace gguf_detail

using gguf_detail::quote;

// ---- tensors ----------------------------------------------------------------------------------

std::vector<int64_t> GgufTensor::shape() const {
  std::vector<int64_t> s(ne.rbegin(), ne.rend());
  return s;
}

std::string GgufTensor::shape_str() const { return fmt::format("[{}]", fmt::join(shape(), ", ")); }

// ---- parsing ----------------------------------------------------------------------------------

namespace {

constexpr uint32_t kMaxKvCount = 1u << 16;  // real files have tens of keys; bounds what a file can make us hold
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;          // empty key, type, a one-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, n_dims, one size, type, offset

// Reads little-endian values from the file, each checked against the bytes left.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  const uint8_t* here() const { return data_ + pos_; }

  // `where` is the message prefix ("gguf: FILE: key 'K'"), `what` the field being read.
  template <typename T>
  T read(const std::string& where, std::string_view what) {
    need(sizeof(T), where, what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  void need(uint64_t n, const std::string& where, std::string_view what) const {
    if (n > left())
      fail("{}: {} ({} bytes) runs past the end of the file (offset {}, {} bytes left, file size {})", where, what, n,
           pos_, left(), size_);
  }
  void skip(uint64_t n, const std::string& where, std::string_view what) {
    need(n, where, what);
    pos_ += n;
  }
  // u64 length + bytes.
  std::string_view read_string(const std::string& where, std::string_view what) {
    if (left() < 8)  // (the message is only formatted on failure: this runs once per token string)
      fail("{}: {} length (8 bytes) runs past the end of the file (offset {}, {} bytes left, file size {})", where,
           what, pos_, left(), size_);
    const uint64_t len = read<uint64_t>(where, what);
    if (len > left())
      fail("{}: {} length {} runs past the end of the file (offset {}, {} bytes left, file size {})", where, what,
           len, pos_, left(), size_);
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

GgufType check_type(uint32_t t, const std::string& where, std::string_view what) {
  if (t > uint32_t(GgufType::F64)) fail("{}: {} {} is not a GGUF value type (0..12)", where, what, t);
  return GgufType(t);
}

void check_bool_byte(uint8_t b, const std::string& where, uint64_t index, bool in_array) {
  if (b > 1) {
    if (in_array) fail("{}: element {}: bool value {} is not 0 or 1", where, index, b);
    fail("{}: bool value {} is not 0 or 1", where, b);
  }
}

// Smallest encoding of one value of type t: what a count of them must leave room for.
uint64_t min_bytes(GgufType t) {
  if (t == GgufType::STRING) return 8;
  if (t == GgufType::ARRAY) return 4 + 8;
  return gguf_detail::fixed_size(t);
}

// Reads an array's element type, count and elements. Top-level arrays keep their strings; nested
// arrays are checked and skipped (no real file uses them, and keeping them would let a file make
// us hold many small objects per byte).
void read_array(Reader& r, GgufValue& v, const std::string& where, int depth, bool keep) {
  if (depth >= kGgufMaxArrayNesting) fail("{}: arrays nested deeper than {} levels", where, kGgufMaxArrayNesting);
  v.elem_type = check_type(r.read<uint32_t>(where, "array element type"), where, "array element type");
  v.count = r.read<uint64_t>(where, "array length");
  const uint64_t each = min_bytes(v.elem_type);
  if (v.count > r.left() / each)
    fail("{}: array of {} {} elements cannot fit in the {} bytes left in the file (offset {}, at least {} bytes "
         "each)",
         where, v.count, gguf_type_name(v.elem_type), r.left(), r.pos(), each);
  v.raw = r.here();
  if (const size_t size = gguf_detail::fixed_size(v.elem_type); size > 0) {
    if (v.elem_type == GgufType::BOOL)
      for (uint64_t i = 0; i < v.count; ++i) check_bool_byte(v.raw[i], where, i, true);
    r.skip(v.count * size, where, "array data");  // fits: checked against left() above
  } else if (v.elem_type == GgufType::STRING) {
    if (keep) v.strings.reserve(size_t(v.count));
    for (uint64_t i = 0; i < v.count; ++i) {
      std::string_view s = r.read_string(where, "array element string");
      if (keep) v.strings.push_back(s);
    }
  } else {  // arrays of arrays
    for (uint64_t i = 0; i < v.count; ++i) {
      GgufValue inner;
      inner.type = GgufType::ARRAY;
      read_array(r, inner, where, depth + 1, false);
    }
  }
}

GgufValue read_value(Reader& r, GgufType type, const std::string& where) {
  GgufValue v;
  v.type = type;
  if (type == GgufType::STRING) {
    v.str = r.read_string(where, "string value");
  } else if (type == GgufType::ARRAY) {
    read_array(r, v, where, 0, true);
  } else {
    const size_t size = gguf_detail::fixed_size(type);
    r.need(size, where, fmt::format("{} value", gguf_type_name(type)));
    const auto s = gguf_detail::read_scalar(type, r.here());
    if (type == GgufType::BOOL) check_bool_byte(uint8_t(s.u), where, 0, false);
    v.u = s.u;
    v.i = s.i;
    v.f = s.f;
    r.skip(size, where, "value");
  }
  return v;
}

struct Range {
  uint64_t begin, end;
  size_t tensor;
};

}  // namespace

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  auto map = MappedFile::open(path);
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->map_ = map;
  f->parse_into(map->data(), map->size());
  return f;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, size_t size, const std::string& name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = name;
  f->parse_into(data, size);
  return f;
}

std::string GgufFile::key_origin(std::string_view key) const {
  return fmt::format("gguf: {}: key {}", path_, quote(key));
}

std::string GgufFile::tensor_origin(std::string_view name) const {
  return fmt::format("gguf: {}: tensor {}", path_, quote(name));
}

void GgufFile::parse_into(const uint8_t* data, size_t size) {
  const std::string origin = "gguf: " + path_;
  const std::string header = origin + ": header";
  size_ = size;
  Reader r(data, size);

  // ---- header
  if (size < 4 || std::memcmp(data, "GGUF", 4) != 0) {
    std::string seen;
    for (size_t i = 0; i < std::min<size_t>(size, 4); ++i) seen += fmt::format("{:02x}", data[i]);
    fail("{}: not a GGUF file (magic is {}, expected 'GGUF' = 47475546)", origin, seen.empty() ? "missing" : seen);
  }
  r.skip(4, header, "magic");
  version_ = r.read<uint32_t>(header, "version");
  if (version_ != 2 && version_ != 3) {
    if (version_ == 1) fail_unsupported("{}: GGUF version 1 is not supported (only versions 2 and 3)", origin);
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped == 2 || swapped == 3)
      fail_unsupported("{}: big-endian GGUF file (version {} byte-swapped); only little-endian files are supported",
                       origin, swapped);
    fail("{}: unknown GGUF version {} (supported: 2 and 3)", origin, version_);
  }
  const uint64_t tensor_count = r.read<uint64_t>(header, "tensor_count");
  const uint64_t kv_count = r.read<uint64_t>(header, "kv_count");
  if (kv_count > kMaxKvCount)
    fail("{}: kv_count {} exceeds the limit of {} metadata entries", header, kv_count, kMaxKvCount);
  if (kv_count > r.left() / kMinKvBytes)
    fail("{}: kv_count {} cannot fit in the {} bytes left in the file (at least {} bytes each)", header, kv_count,
         r.left(), kMinKvBytes);
  if (tensor_count > (r.left() - kv_count * kMinKvBytes) / kMinTensorInfoBytes)
    fail("{}: tensor_count {} cannot fit in the {} bytes left in the file (at least {} bytes each)", header,
         tensor_count, r.left(), kMinTensorInfoBytes);

  // ---- metadata
  kv_.reserve(size_t(kv_count));
  for (uint64_t k = 0; k < kv_count; ++k) {
    const std::string entry = fmt::format("{}: metadata entry {} (of {})", origin, k, kv_count);
    const std::string_view key = r.read_string(entry, "key");
    const std::string where = key_origin(key);
    if (kv_index_.count(key)) fail("{}: appears twice in the metadata", where);
    const GgufType type = check_type(r.read<uint32_t>(where, "value type"), where, "value type");
    GgufValue v = read_value(r, type, where);
    kv_index_.emplace(std::string(key), kv_.size());
    kv_.emplace_back(std::string(key), std::move(v));
  }
  alignment_ = get_u32("general.alignment", kGgufDefaultAlignment);
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
    fail("{}: alignment {} is not a power of two", key_origin("general.alignment"), alignment_);

  // ---- tensor infos
  tensors_.reserve(size_t(tensor_count));
  for (uint64_t t = 0; t < tensor_count; ++t) {
    const std::string entry = fmt::format("{}: tensor info {} (of {})", origin, t, tensor_count);
    const std::string_view name = r.read_string(entry, "name");
    const std::string where = tensor_origin(name);
    if (auto it = tensor_index_.find(name); it != tensor_index_.end())
      fail("{}: appears twice (tensor infos {} and {})", where, it->second, t);
    GgufTensor info;
    info.name = std::string(name);
    const uint32_t n_dims = r.read<uint32_t>(where, "n_dims");
    if (n_dims == 0 || n_dims > uint32_t(kGgufMaxDims))
      fail("{}: n_dims is {}, must be 1..{}", where, n_dims, kGgufMaxDims);
    info.numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t n = r.read<uint64_t>(where, "dimension size");
      if (n > uint64_t(std::numeric_limits<int64_t>::max()))
        fail("{}: dimension {} has size {} (over 2^63)", where, d, n);
      info.ne.push_back(n);
    }
    info.type = r.read<uint32_t>(where, "ggml type");
    const GgmlTypeInfo* ti = ggml_type_info(info.type);
    if (!ti) fail("{}: unknown ggml type id {}", where, info.type);
    info.offset = r.read<uint64_t>(where, "data offset");

    // Element count within int64 (TensorView::numel multiplies in int64), rows whole blocks.
    for (uint64_t n : info.ne) {
      info.numel = checked_mul(info.numel, n, where + ": shape");
      if (info.numel > uint64_t(std::numeric_limits<int64_t>::max()))
        fail("{}: shape {} has more than 2^63 elements", where, info.shape_str());
    }
    if (info.ne[0] % ti->block_elems != 0)
      fail("{}: row length ne[0] = {} is not a multiple of the {} block size {}", where, info.ne[0], ti->name,
           ti->block_elems);
    info.nbytes = checked_mul(info.numel / ti->block_elems, ti->block_bytes, where + ": size in bytes");
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }

  // ---- data section: starts at the next multiple of the alignment. A file without tensor data
  // (a vocabulary-only file) may end before that point.
  data_offset_ = checked_add(r.pos(), alignment_ - 1, origin + ": data section offset") / alignment_ * alignment_;
  const uint64_t data_size = data_offset_ <= size ? size - data_offset_ : 0;
  std::vector<Range> ranges;
  ranges.reserve(tensors_.size());
  for (size_t t = 0; t < tensors_.size(); ++t) {
    GgufTensor& info = tensors_[t];
    const std::string where = tensor_origin(info.name);
    if (info.offset % alignment_ != 0)
      fail("{}: data offset {} is not a multiple of the alignment {}", where, info.offset, alignment_);
    if (info.offset > data_size || info.nbytes > data_size - info.offset)
      fail("{}: data at offset {} ({} bytes of {} {}) runs past the end of the data section ({} bytes from file "
           "offset {}; file size {})",
           where, info.offset, info.nbytes, info.type_info().name, info.shape_str(), data_size, data_offset_, size);
    info.data = data + data_offset_ + info.offset;
    ranges.push_back({info.offset, info.offset + info.nbytes, t});
  }
  // Overlaps: sorted by start, every non-empty range must start at or after the furthest end so
  // far (empty tensors occupy no bytes).
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  const Range* furthest = nullptr;
  for (const Range& rg : ranges) {
    if (rg.begin == rg.end) continue;
    if (furthest && rg.begin < furthest->end)
      fail("{}: data [{}, {}) overlaps tensor {} [{}, {})", tensor_origin(tensors_[rg.tensor].name), rg.begin,
           rg.end, quote(tensors_[furthest->tensor].name), furthest->begin, furthest->end);
    if (!furthest || rg.end > furthest->end) furthest = &rg;
  }
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

TensorView GgufFile::tensor_view(const GgufTensor& t) const {
  const auto dtype = ggml_type_dtype(t.type);
  if (!dtype)
    fail_unsupported("{}: ggml type {} has no qforge element type yet (quantized types come later)",
                     tensor_origin(t.name), t.type_info().name);
  TensorView v;
  v.name = t.name;
  v.dtype = *dtype;
  v.shape = t.shape();
  v.data = t.data;
  v.nbytes = t.nbytes;
  v.file = path_;
  return v;
}

}  // namespace qforge
