// Element types of stored tensors. Quantized block types are added by later issues as rows of the
// same table (src/core/dtype.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qforge {

enum class DType : uint8_t {
  F32, F16, BF16, I8, U8, I32, I64, BOOL, F64, I16,
  // Block-quantized storage types (layouts and algorithms: src/quant/, table: include/qforge/quant.h).
  Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, NF4,
};

struct DTypeInfo {
  DType type;
  const char* name;            // qforge's name, lower case: "f32"
  const char* safetensors;     // name in a safetensors header: "F32"; "" for types safetensors lacks
  uint32_t block_elems;        // elements per storage block (1 for plain types)
  uint32_t block_bytes;        // bytes per storage block
  bool is_float;
};

const DTypeInfo& dtype_info(DType t);
inline const char* dtype_name(DType t) { return dtype_info(t).name; }
std::optional<DType> dtype_from_safetensors(std::string_view s);
std::optional<DType> dtype_from_name(std::string_view s);  // "f32", "fp16", "bf16", ...
// Bytes needed for n elements (n must be a multiple of block_elems).
uint64_t dtype_bytes(DType t, uint64_t n);

// Scalar conversions (round-to-nearest-even for float -> half types).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f);

// Converts n elements of a float type (F32/F16/BF16/F64) to f32.
void convert_to_f32(DType t, const void* src, float* dst, size_t n);

}  // namespace qforge
