#include "qforge/dtype.h"

#include <cstring>

#include "qforge/error.h"

namespace qforge {

namespace {
// One row per type. Later quantized types append rows (block_elems > 1).
constexpr DTypeInfo kTypes[] = {
    {DType::F32, "f32", "F32", 1, 4, true},   {DType::F16, "f16", "F16", 1, 2, true},
    {DType::BF16, "bf16", "BF16", 1, 2, true}, {DType::I8, "i8", "I8", 1, 1, false},
    {DType::U8, "u8", "U8", 1, 1, false},      {DType::I32, "i32", "I32", 1, 4, false},
    {DType::I64, "i64", "I64", 1, 8, false},   {DType::BOOL, "bool", "BOOL", 1, 1, false},
    {DType::F64, "f64", "F64", 1, 8, true},    {DType::I16, "i16", "I16", 1, 2, false},
    // Block types: safetensors has no name for them ("" never matches a header's dtype).
    {DType::Q8_0, "q8_0", "", 32, 34, false},    {DType::Q4_0, "q4_0", "", 32, 18, false},
    {DType::Q4_1, "q4_1", "", 32, 20, false},    {DType::Q5_0, "q5_0", "", 32, 22, false},
    {DType::Q5_1, "q5_1", "", 32, 24, false},    {DType::Q2_K, "q2_k", "", 256, 84, false},
    {DType::Q3_K, "q3_k", "", 256, 110, false},  {DType::Q4_K, "q4_k", "", 256, 144, false},
    {DType::Q5_K, "q5_k", "", 256, 176, false},  {DType::Q6_K, "q6_k", "", 256, 210, false},
    {DType::IQ4_NL, "iq4_nl", "", 32, 18, false}, {DType::NF4, "nf4", "", 64, 36, false},
};
}  // namespace

const DTypeInfo& dtype_info(DType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return i;
  throw Error(ErrorKind::Internal, "dtype: unknown type code " + std::to_string(int(t)));
}

std::optional<DType> dtype_from_safetensors(std::string_view s) {
  for (const auto& i : kTypes)
    if (*i.safetensors && s == i.safetensors) return i.type;
  return std::nullopt;
}

std::optional<DType> dtype_from_name(std::string_view s) {
  if (s == "fp32" || s == "float32" || s == "float") return DType::F32;
  if (s == "fp16" || s == "float16" || s == "half") return DType::F16;
  if (s == "bfloat16") return DType::BF16;
  for (const auto& i : kTypes)
    if (s == i.name) return i.type;
  return std::nullopt;
}

uint64_t dtype_bytes(DType t, uint64_t n) {
  const auto& i = dtype_info(t);
  return checked_mul(n / i.block_elems, i.block_bytes, std::string("dtype ") + i.name);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t absx = x & 0x7fffffff;
  if (absx >= 0x7f800000) return uint16_t(sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0));  // inf/nan
  if (absx >= 0x477ff000) return uint16_t(sign | 0x7c00);                                   // overflow
  if (absx < 0x38800000) {  // subnormal or zero in half: round via float arithmetic
    float a;
    std::memcpy(&a, &absx, 4);
    const float scaled = a * 16777216.0f;  // 2^24: one half-subnormal ulp becomes 1.0
    uint32_t m = uint32_t(__builtin_nearbyintf(scaled));
    return uint16_t(sign | m);
  }
  uint32_t mant = absx & 0x7fffff;
  uint32_t exp = (absx >> 23) - 127 + 15;
  uint32_t h = (exp << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // round to nearest even
  return uint16_t(sign | h);
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return uint16_t((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fff + ((x >> 16) & 1);
  return uint16_t(x >> 16);
}

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::BF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::F64: {
      auto* s = static_cast<const double*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]);
      return;
    }
    default: fail_unsupported("dtype: cannot convert {} to f32", dtype_name(t));
  }
}

}  // namespace qforge
