// GGUF, llama.cpp's model format (versions 2 and 3, little-endian): reader, ggml type table and the
// tokenizer stored in a file's metadata.
//
// Layout: "GGUF", u32 version, u64 tensor_count, u64 kv_count; kv_count metadata entries (u64-length
// key string, u32 value type, value); tensor_count tensor infos (name, u32 n_dims, n_dims u64 sizes
// innermost first, u32 ggml type, u64 offset); padding to general.alignment (default 32); the data
// section, into which the tensor offsets point.
//
// The reader maps the file and treats every byte as hostile: counts and lengths are checked against
// the bytes left before anything is allocated, sizes are overflow-checked, and every tensor is
// checked to lie inside the data section, aligned, without overlapping another. Errors name the
// file and the key or tensor at fault: "gguf: FILE: tensor 'NAME': ...", "gguf: FILE: key 'KEY': ...".
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/dtype.h"
#include "qforge/mmap.h"
#include "qforge/tensor.h"
#include "qforge/tokenizer.h"

namespace qforge {

// ---- ggml tensor types ------------------------------------------------------------------------

// A ggml storage type as GGUF files number them (ggml.h's enum ggml_type). Ids that ggml retired
// (4, 5, 31-33, 36-38) are unknown here, as they are to llama.cpp's own reader.
struct GgmlTypeInfo {
  uint32_t id;
  const char* name;      // "F32", "Q4_K", ... (ggml's spelling)
  uint32_t block_elems;  // elements per block (1 for plain types, 32 or 256 for quantized ones)
  uint32_t block_bytes;  // bytes per block
};
inline constexpr uint32_t kGgmlTypeF32 = 0, kGgmlTypeF16 = 1, kGgmlTypeBF16 = 30;
// Null for an id that is not a ggml type.
const GgmlTypeInfo* ggml_type_info(uint32_t id);
// The qforge element type of a plain ggml type (F32, F16, BF16, F64, I8..I64); nullopt for the
// quantized block types, which qforge's DType does not have yet.
std::optional<DType> ggml_type_dtype(uint32_t id);

// ---- metadata values --------------------------------------------------------------------------

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_type_name(GgufType t);  // "u32", "string", "array", ...

// One metadata value. Strings and array elements point into the file's bytes (valid as long as
// the GgufFile that handed them out).
struct GgufValue {
  GgufType type = GgufType::U8;
  // Scalars, widened: unsigned integers and bools (0/1) in `u`, signed integers in `i`, floats in
  // `f`; the other two fields stay 0.
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string_view str;  // STRING
  // ARRAY: element type and count. `raw` points at the first element in the file; elements of a
  // fixed-size type are `count` packed little-endian values there. Strings are listed in
  // `strings`. Arrays of arrays are validated (nesting at most kGgufMaxArrayNesting deep) but
  // their contents are not exposed: no real file uses them.
  GgufType elem_type = GgufType::U8;
  uint64_t count = 0;
  const uint8_t* raw = nullptr;
  std::vector<std::string_view> strings;

  bool is_integer() const;  // U8..I64 (not BOOL)
  std::string type_str() const;  // "u32", "string", "array of 512 string"
};

// ---- tensors ----------------------------------------------------------------------------------

struct GgufTensor {
  std::string name;
  uint32_t type = kGgmlTypeF32;  // a known ggml type id
  std::vector<uint64_t> ne;      // sizes in ggml order: ne[0] is the innermost (contiguous) one
  uint64_t offset = 0;           // from the start of the data section
  const uint8_t* data = nullptr;  // points into the file
  uint64_t nbytes = 0;
  uint64_t numel = 0;

  const GgmlTypeInfo& type_info() const { return *ggml_type_info(type); }
  std::vector<int64_t> shape() const;  // outermost first, as TensorView and PyTorch write it
  std::string shape_str() const;       // "[512, 64]", outermost first
};

// ---- the file ---------------------------------------------------------------------------------

inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr int kGgufMaxDims = 4;           // ggml tensors have at most 4 dimensions
inline constexpr int kGgufMaxArrayNesting = 8;   // arrays of arrays of ... (real files use none)

class GgufFile {
 public:
  // Maps and validates the whole file. Throws Error (BadInput; Unsupported for version 1 and
  // big-endian files) naming the file and the key or tensor at fault.
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Same checks on bytes in memory (fuzzing); `name` is used in messages. The bytes must outlive
  // the returned object: strings and tensor data point into them.
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, size_t size, const std::string& name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section in the file
  uint64_t file_size() const { return size_; }
  // Null when the file was parse()d from caller-owned memory.
  const std::shared_ptr<MappedFile>& mapping() const { return map_; }

  // Metadata, in file order (keys are unique).
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed getters. Without a fallback a missing key fails ("gguf: FILE: key 'KEY': missing"); a
  // value of the wrong type always fails, naming the type found. Integer getters accept any
  // integer type whose value fits (writers differ in the widths they use); get_f32 accepts f32
  // and f64.
  uint32_t get_u32(std::string_view key) const;
  uint32_t get_u32(std::string_view key, uint32_t fallback) const;
  uint64_t get_u64(std::string_view key) const;
  uint64_t get_u64(std::string_view key, uint64_t fallback) const;
  float get_f32(std::string_view key) const;
  float get_f32(std::string_view key, float fallback) const;
  bool get_bool(std::string_view key) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::string get_string(std::string_view key) const;
  std::string get_string(std::string_view key, const std::string& fallback) const;
  // Arrays. Strings point into the file (valid while this object lives).
  const std::vector<std::string_view>& get_string_array(std::string_view key) const;
  std::vector<float> get_f32_array(std::string_view key) const;    // f32 or f64 elements
  std::vector<int32_t> get_i32_array(std::string_view key) const;  // integer elements that fit
  // "gguf: FILE: key 'KEY'", the prefix of messages about that key.
  std::string key_origin(std::string_view key) const;

  // Tensors, in the order of their infos in the file.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(std::string_view name) const;
  // "gguf: FILE: tensor 'NAME'".
  std::string tensor_origin(std::string_view name) const;
  // The tensor as a TensorView (shape outermost first). Throws Unsupported for quantized types,
  // which TensorView's DType cannot describe yet.
  TensorView tensor_view(const GgufTensor& t) const;

 private:
  GgufFile() = default;
  void parse_into(const uint8_t* data, size_t size);
  std::string path_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  uint64_t size_ = 0;
  std::shared_ptr<MappedFile> map_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// ---- tokenizer --------------------------------------------------------------------------------

// The tokenizer described by a file's tokenizer.ggml.* metadata: "llama" (SentencePiece-style
// vocabulary merged by score, as llama.cpp's SPM tokenizer) or "gpt2" (byte-level BPE with
// tokenizer.ggml.merges; pre-tokenizers "gpt-2", "llama-bpe", "qwen2"). BOS/EOS ids and add_bos
// come from the metadata. Returns null when the file has no tokenizer.ggml.model; throws naming
// the file and key for a malformed or unsupported one.
std::unique_ptr<Tokenizer> make_gguf_tokenizer(const GgufFile& file);
// Opens a GGUF file (a model or a vocabulary-only file) and builds its tokenizer; fails when it
// has none.
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& gguf_path);

}  // namespace qforge
