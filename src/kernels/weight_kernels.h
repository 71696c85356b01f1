// Kernels for weights kept in their stored form (F16, BF16, block-quantized): matrix-vector and
// matrix-matrix products, activation quantization, and row dequantization.
//
// Every storage type gets one WeightKernels entry per instruction set. The scalar entries are the
// reference twins; AVX2 and AVX-512 files override the entries they accelerate. dispatch picks the
// set for the running CPU (or QFORGE_ISA), so the engine calls weight_kernels(dtype) and never
// names an ISA.
//
// Integer kernels multiply weight codes with 8-bit activations quantized on the fly, which is what
// lets AVX-512 VNNI (vpdpbusd) and AVX2 (vpmaddubsw) do 32-64 multiply-adds per instruction. The
// activation block layouts below are qforge-internal (never stored): they carry what the weight
// types need to remove their zero points cheaply.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "qforge/dtype.h"

namespace qforge::kernels {

// 32 activations as 8-bit codes: x[i] ~= d * qs[i]; sum = sum of qs (for types whose codes carry
// an offset: q4_0's -8, q4_1's min). 10 bits per value.
struct BlockQ8x32 {
  float d;
  int32_t sum;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8x32) == 40, "BlockQ8x32 layout");

// 256 activations for the k-quant super-blocks: x[i] ~= d * qs[i]; bsums[j] = sum of qs[16j..16j+15]
// (for the per-sub-block minimums of q2_K/q4_K/q5_K). 9.1 bits per value.
struct BlockQ8x256 {
  float d;
  int16_t bsums[16];
  int8_t qs[256];
};
static_assert(sizeof(BlockQ8x256) == 292, "BlockQ8x256 layout");

enum class ActFormat : uint8_t {
  F32,     // activations used as they are (F16, BF16, NF4 weights)
  Q8x32,   // BlockQ8x32 (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl)
  Q8x256,  // BlockQ8x256 (q2_K .. q6_K)
};
// Elements per activation block (1 for F32) and bytes of an activation row of n values
// (n must be a multiple of the block).
int64_t act_block_elems(ActFormat f);
size_t act_row_bytes(ActFormat f, int64_t n);

struct WeightKernels {
  ActFormat act = ActFormat::F32;
  // Converts one activation row of n floats to `act` blocks (n a multiple of the block). Null for F32.
  void (*quantize_act)(const float* x, void* xq, int64_t n) = nullptr;
  // y[r] = dot(row r of W, activation row xq) for r in [r0, r1). Rows of W are row_bytes apart and
  // hold `cols` weights each; y is indexed by absolute row.
  void (*gemv)(const void* W, size_t row_bytes, const void* xq, float* y, int64_t r0, int64_t r1,
               int64_t cols) = nullptr;
  // Several activation rows at once (prompt processing): Y[c * ldy + r] = dot(row r of W, activation
  // row c) for c in [0, nx), r in [r0, r1). Activation rows are x_stride bytes apart. Null when the
  // type has none; the caller then dequantizes tiles of W and runs SGEMM.
  void (*gemm)(const void* W, size_t row_bytes, const void* X, size_t x_stride, int64_t nx, float* Y,
               int64_t ldy, int64_t r0, int64_t r1, int64_t cols) = nullptr;
  // Dequantizes one row of `cols` weights to F32.
  void (*dequant_row)(const void* row, float* y, int64_t cols) = nullptr;

  explicit operator bool() const { return gemv != nullptr; }
};

inline constexpr size_t kDTypeCount = size_t(DType::NF4) + 1;
using WeightKernelSet = std::array<WeightKernels, kDTypeCount>;
inline WeightKernels& entry(WeightKernelSet& s, DType t) { return s[size_t(t)]; }

// Kernels of the best ISA for this CPU (or QFORGE_ISA). Null when no kernel handles the type
// (F32 weights use the F32 path in matmul.h, integer dtypes are not weights).
const WeightKernels* weight_kernels(DType t);
// A specific variant ("scalar", "avx2", "avx512"); null when the CPU lacks the ISA or the type has
// no kernel. Entries an ISA does not override are the scalar ones.
const WeightKernels* weight_kernels(DType t, std::string_view isa);

// Registration, one function per family and ISA (each in its own file). Each fills the entries of
// the types it implements and leaves the others alone. Later calls override earlier ones:
// scalar, then avx2, then avx512.
void register_float_kernels_scalar(WeightKernelSet& s);  // F16, BF16, NF4  (kernels_float_*.cpp)
void register_float_kernels_avx2(WeightKernelSet& s);
void register_float_kernels_avx512(WeightKernelSet& s);
void register_q32_kernels_scalar(WeightKernelSet& s);  // q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl (kernels_q32_*.cpp)
void register_q32_kernels_avx2(WeightKernelSet& s);
void register_q32_kernels_avx512(WeightKernelSet& s);
void register_qk_kernels_scalar(WeightKernelSet& s);  // q2_K .. q6_K (kernels_qk_*.cpp)
void register_qk_kernels_avx2(WeightKernelSet& s);
void register_qk_kernels_avx512(WeightKernelSet& s);

}  // namespace qforge::kernels
