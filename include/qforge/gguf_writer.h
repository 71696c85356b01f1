// GGUF v3 writer (llama.cpp's model format), streaming: metadata and tensor declarations first,
// then tensor data in declaration order, in chunks of any size, so that a model never has to be
// held in memory as a whole. Also the llama.cpp conventions qforge writes models with: the
// metadata keys llama.cpp reads for the "llama" and "gpt2" architectures, the tokenizer.ggml.*
// keys, and llama.cpp's tensor names and Q/K row order.
//
// File layout written (see gguf.h for the reader's view): "GGUF", u32 3, u64 tensor_count,
// u64 kv_count; the key/value pairs in the order they were first set; the tensor infos in
// declaration order with offsets that are the running sum of the tensor sizes, each rounded up
// to the alignment (llama.cpp's reader insists on exactly that packing); zero padding to the
// alignment; the tensors, each followed by zero padding to the alignment.
//
// Output goes to PATH.tmp-XXXX and is renamed over PATH by commit(): a writer destroyed before
// commit() (an exception on the way, a killed run) leaves nothing at PATH. Errors throw
// qforge::Error naming the file: "gguf-writer: PATH: tensor 'NAME': ..." (BadInput for misuse and
// invalid declarations, Io when the OS refuses).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/config.h"
#include "qforge/gguf.h"
#include "qforge/mmap.h"
#include "qforge/tokenizer.h"

namespace qforge {

struct Model;
struct Weight;

class GgufWriter {
 public:
  // Creates the temporary file at once, so an unwritable PATH fails before any work is done.
  // alignment: a power of two; general.alignment is written only when it is not 32.
  explicit GgufWriter(std::string path, uint32_t alignment = kGgufDefaultAlignment);
  ~GgufWriter();  // removes the temporary file unless committed
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // ---- metadata (before begin_data). Setting a key again replaces its value (and type) but
  // keeps its place in the file.
  void set_u8(std::string_view key, uint8_t v);
  void set_i8(std::string_view key, int8_t v);
  void set_u16(std::string_view key, uint16_t v);
  void set_i16(std::string_view key, int16_t v);
  void set_u32(std::string_view key, uint32_t v);
  void set_i32(std::string_view key, int32_t v);
  void set_u64(std::string_view key, uint64_t v);
  void set_i64(std::string_view key, int64_t v);
  void set_f32(std::string_view key, float v);
  void set_f64(std::string_view key, double v);
  void set_bool(std::string_view key, bool v);
  void set_string(std::string_view key, std::string_view v);
  void set_array_string(std::string_view key, const std::vector<std::string>& v);
  void set_array_f32(std::string_view key, std::span<const float> v);
  void set_array_i32(std::string_view key, std::span<const int32_t> v);
  void set_array_u32(std::string_view key, std::span<const uint32_t> v);
  // An array of a fixed-size element type (not STRING or ARRAY): `count` packed little-endian
  // values at `data` (BOOL elements must be 0 or 1).
  void set_array(std::string_view key, GgufType elem_type, const void* data, size_t count);
  bool has_key(std::string_view key) const;
  void remove_key(std::string_view key);

  // ---- tensors (before begin_data). ne in ggml order, innermost first (a [rows, cols] matrix is
  // ne = {cols, rows}); 1 to 4 dimensions; ne[0] a multiple of the type's block size; names
  // unique, non-empty and under 64 bytes (ggml's limit).
  void add_tensor(std::string name, uint32_t ggml_type, std::vector<uint64_t> ne);
  size_t tensor_count() const { return tensors_.size(); }
  // Bytes of a tensor of that type and shape; throws (naming `what`) on an unknown type, a row
  // that is not whole blocks or an overflowing size.
  static uint64_t tensor_nbytes(uint32_t ggml_type, const std::vector<uint64_t>& ne, const std::string& what);

  // Writes the header, metadata and tensor infos; after this no key or tensor can be added.
  // Called by the first write() or by commit() if not called before.
  void begin_data();
  // Appends bytes of the current tensor (tensors in declaration order, chunks of any size, one
  // chunk may span several tensors). The padding after a tensor is written once its last byte is.
  // Throws when more bytes come than the tensors declared.
  void write(const void* bytes, size_t n);
  // The tensor the next write() goes to ("" when every tensor is complete).
  std::string current_tensor() const;
  // Checks every tensor got all its bytes, flushes, fsyncs and renames the file into place.
  void commit();

  uint64_t bytes_written() const { return written_; }  // header, data and padding so far
  uint64_t total_bytes() const;  // size of the finished file (valid after begin_data)
  const std::string& path() const { return path_; }

 private:
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<uint64_t> ne;
    uint64_t nbytes, offset;
  };
  void set_raw(std::string_view key, std::string encoded);  // u32 type + value bytes
  void check_open(std::string_view what) const;
  void emit(const void* p, size_t n);  // buffered append to the file
  void flush();
  void finish_tensors();  // pads completed (and skips empty) tensors
  std::string origin() const { return "gguf-writer: " + path_; }

  std::string path_;
  uint32_t alignment_;
  std::unique_ptr<AtomicFile> out_;
  std::vector<std::pair<std::string, std::string>> kv_;  // key, encoded type + value
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  uint64_t data_bytes_ = 0;  // padded size of the data section
  uint64_t data_start_ = 0;  // file offset of the data section (after begin_data)
  bool begun_ = false, committed_ = false;
  size_t current_ = 0;             // tensor being written
  uint64_t written_in_current_ = 0;
  uint64_t written_ = 0;
  std::string buffer_;
};

// ---- llama.cpp conventions ----------------------------------------------------------------------

// llama.cpp's general.file_type numbers (enum llama_ftype) for files whose big matrices are all of
// one ggml type: F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9, Q2_K 10, Q3_K 12 (Q3_K_M),
// Q4_K 15 (Q4_K_M), Q5_K 17 (Q5_K_M), Q6_K 18, IQ4_NL 25, BF16 32. Throws Unsupported for others.
uint32_t gguf_file_type_for(uint32_t ggml_type);

// The tokenizer.ggml.* keys of a vocabulary: model, pre, tokens, scores ("llama"), token_type,
// merges ("gpt2"), bos/eos/unknown/padding ids (u32, only those that exist), add_bos_token,
// add_eos_token, and add_space_prefix when it is false. Checks the lists agree in length.
void write_tokenizer_metadata(GgufWriter& w, const GgufVocab& vocab);

// The metadata of a model file as llama.cpp's converter writes it: general.architecture ("llama"
// or "gpt2"), general.name, general.file_type, general.quantization_version (2), the
// {arch}.* hyper-parameters llama.cpp reads, and the tokenizer's keys (tokenizer.ggml.model "none"
// without one). A vocabulary shorter than cfg.vocab_size is padded with "[PADn]" unused tokens, as
// the converter does; a longer one fails. Llama 3 rope scaling (and RopeScaling::Factors) writes
// no keys: the factors go in the rope_freqs.weight tensor (the GGUF export adds it).
void write_model_metadata(GgufWriter& w, const ModelConfig& cfg, const Tokenizer* tokenizer,
                          std::string_view model_name, uint32_t file_type);

// Writes a whole model as a GGUF file that llama.cpp loads: metadata, then every tensor (in
// llama.cpp's names and row order, see src/quant/export_tensors.h) in its stored type (matrices keep F32/F16/BF16/quantized types that ggml has;
// vectors are F32), one tensor at a time. file_type defaults to the type of the token embedding.
struct GgufExportOptions {
  std::string name;            // general.name; default: the source directory or file name
  int64_t file_type = -1;      // general.file_type; -1: gguf_file_type_for(the embedding's type)
  uint32_t alignment = kGgufDefaultAlignment;
};
void write_gguf_model(const Model& m, const std::string& path, const GgufExportOptions& opt = {});

}  // namespace qforge
