// Block-quantized storage types: one table of every type qforge can write, with its ggml/GGUF type id,
// block geometry and scalar reference (de)quantizers.
//
// Byte layouts are those of ggml (llama.cpp), so a GGUF file written from these blocks loads in
// llama.cpp unchanged; each type's layout is described next to its block struct in src/quant/<type>.cpp.
// The plain float types (f32, f16, bf16) are rows of the same table so that a writer can treat every
// storage type alike. NF4 (bitsandbytes' NormalFloat-4) is qforge-only: it has no ggml id.
//
// The quantizers are pure functions (no state, no heap): rows may be quantized in parallel.
// Adding a type: see docs/ADDING_A_TYPE.md (one source file plus one table row).
#pragma once
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "qforge/dtype.h"

namespace qforge {

// Quantizes one row of n floats into n / block_elems consecutive blocks at y.
// `importance` may be null; otherwise it holds n non-negative weights, one per column of the row, that
// say how much an error in that column matters (llama.cpp's importance matrix: the mean squared
// activation that multiplies the column). Types that search for their scales weight the search by it;
// the others ignore it. Because some types normalise importance by the row's own statistics, pass one
// row at a time when importance is given.
// Throws qforge::Error if n is negative or not a multiple of block_elems, if x holds a NaN or an
// infinity, or a value beyond +-65504 for the ggml block types (their scales are f16), or if an
// importance value is negative or not finite.
using QuantizeRowFn = void (*)(const float* x, void* y, int64_t n, const float* importance);
// Dequantizes n values (n / block_elems blocks) from x into y. Throws if n is not a whole number of
// blocks. Block buffers must be aligned like their fields: 2 bytes (4 for nf4) suffices.
using DequantizeRowFn = void (*)(const void* x, float* y, int64_t n);

inline constexpr int32_t kNoGgmlType = -1;

struct QuantType {
  DType dtype;
  const char* name;      // qforge's name, lower case: "q4_k" (same as dtype_name)
  int32_t ggml_type;     // ggml_type / GGUF tensor type id; kNoGgmlType for qforge-only types
  uint32_t block_elems;  // weights per block
  uint32_t block_bytes;  // bytes per block ("type size" in ggml)
  bool uses_importance;  // whether `importance` changes what quantize_row produces
  QuantizeRowFn quantize_row;
  DequantizeRowFn dequantize_row;

  double bits_per_weight() const { return 8.0 * block_bytes / block_elems; }
  // Bytes of a row of n weights; throws unless n is a whole number of blocks.
  uint64_t row_bytes(int64_t n) const;
};

// Every type, in DType order.
std::span<const QuantType> quant_types();
// Null when the type has no quantizer (integer types, f64, bool).
const QuantType* find_quant_type(DType t);
// By name, case-insensitive: "q4_k", "Q4_K", "iq4_nl", "f16". Null when unknown.
const QuantType* find_quant_type(std::string_view name);
// By ggml type id (GGUF numbering). Null when qforge has no quantizer for that id.
const QuantType* find_quant_type_by_ggml(int32_t ggml_type);
// The type's table row; throws qforge::Error (Unsupported) naming the type when there is none.
const QuantType& quant_type(DType t);

// Quantizes a row-major [rows x cols] matrix row by row (each row is cols values, each output row
// row_bytes(cols) bytes). `importance` (nullable) has cols values and applies to every row.
void quantize_matrix(const QuantType& type, const float* x, void* y, int64_t rows, int64_t cols,
                     const float* importance = nullptr);
void dequantize_matrix(const QuantType& type, const void* x, float* y, int64_t rows, int64_t cols);

// ---- NF4 double quantization ------------------------------------------------------------------
//
// bitsandbytes can "double quantize" (compress_statistics=True) the per-block absmax values of an
// NF4 tensor: it subtracts their mean, splits them into groups of 256 and stores each group as 8-bit
// codes of its signed dynamic map scaled by the group's largest magnitude. That takes the scale cost
// from 32 bits per 64 weights (0.5 bpw) to about 8.1 bits (0.127 bpw). qforge's NF4 blocks keep the
// float absmax in each block (so a row stands alone); these functions produce the compressed form of
// a whole tensor's absmax values and give back the values it decodes to.

inline constexpr int kNf4BlockElems = 64;
inline constexpr int kNf4NestedGroup = 256;  // absmax values per second-level scale

struct Nf4NestedAbsmax {
  float offset = 0;                // mean of the absmax values, subtracted before coding
  std::vector<float> group_scale;  // largest |absmax - offset| of each group of 256
  std::vector<uint8_t> codes;      // one code of the 8-bit dynamic map per NF4 block
};

// The 256 sorted values of bitsandbytes' signed 8-bit dynamic map (create_dynamic_map()).
std::span<const float, 256> nf4_dynamic_map();
// The 16 NF4 code values, ascending, from -1 to 1.
std::span<const float, 16> nf4_codebook();

// Reads the absmax of each of `nblocks` NF4 blocks.
std::vector<float> nf4_block_absmax(const void* blocks, int64_t nblocks);
// Overwrites the absmax of each block (e.g. with decoded double-quantized values).
void nf4_set_block_absmax(void* blocks, int64_t nblocks, const float* absmax);
Nf4NestedAbsmax nf4_double_quantize(std::span<const float> absmax);
std::vector<float> nf4_double_dequantize(const Nf4NestedAbsmax& nested);

}  // namespace qforge
