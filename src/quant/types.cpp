// The table of storage types qforge can quantize to. One row per type; the per-type code lives in
// src/quant/<type>.cpp. Adding a type: docs/ADDING_A_TYPE.md.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

#include "qforge/error.h"
#include "qforge/quant.h"
#include "quant/quant_util.h"

namespace qforge {

namespace quant {
// Defined in src/quant/<type>.cpp.
void quantize_q8_0(const float*, void*, int64_t, const float*);
void dequantize_q8_0(const void*, float*, int64_t);
void quantize_q4_0(const float*, void*, int64_t, const float*);
void dequantize_q4_0(const void*, float*, int64_t);
void quantize_q4_1(const float*, void*, int64_t, const float*);
void dequantize_q4_1(const void*, float*, int64_t);
void quantize_q5_0(const float*, void*, int64_t, const float*);
void dequantize_q5_0(const void*, float*, int64_t);
void quantize_q5_1(const float*, void*, int64_t, const float*);
void dequantize_q5_1(const void*, float*, int64_t);
void quantize_q2_k(const float*, void*, int64_t, const float*);
void dequantize_q2_k(const void*, float*, int64_t);
void quantize_q3_k(const float*, void*, int64_t, const float*);
void dequantize_q3_k(const void*, float*, int64_t);
void quantize_q4_k(const float*, void*, int64_t, const float*);
void dequantize_q4_k(const void*, float*, int64_t);
void quantize_q5_k(const float*, void*, int64_t, const float*);
void dequantize_q5_k(const void*, float*, int64_t);
void quantize_q6_k(const float*, void*, int64_t, const float*);
void dequantize_q6_k(const void*, float*, int64_t);
void quantize_iq4_nl(const float*, void*, int64_t, const float*);
void dequantize_iq4_nl(const void*, float*, int64_t);
void quantize_nf4(const float*, void*, int64_t, const float*);
void dequantize_nf4(const void*, float*, int64_t);

namespace {
// The plain float types: element-wise conversion (round to nearest even for the 16-bit ones, as
// ggml and numpy do). NaN and infinities pass through: these types can hold them.
void check_length(const char* type, int64_t n) {
  if (n < 0) fail("quant: {}: negative row length {}", type, n);
}
void quantize_f32(const float* x, void* y, int64_t n, const float*) {
  check_length("f32", n);
  std::memcpy(y, x, size_t(n) * 4);
}
void dequantize_f32(const void* x, float* y, int64_t n) {
  check_length("f32", n);
  std::memcpy(y, x, size_t(n) * 4);
}
void quantize_f16(const float* x, void* vy, int64_t n, const float*) {
  check_length("f16", n);
  auto* y = static_cast<uint16_t*>(vy);
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_f16(x[i]);
}
void dequantize_f16(const void* x, float* y, int64_t n) {
  check_length("f16", n);
  convert_to_f32(DType::F16, x, y, size_t(n));
}
void quantize_bf16(const float* x, void* vy, int64_t n, const float*) {
  check_length("bf16", n);
  auto* y = static_cast<uint16_t*>(vy);
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_bf16(x[i]);
}
void dequantize_bf16(const void* x, float* y, int64_t n) {
  check_length("bf16", n);
  convert_to_f32(DType::BF16, x, y, size_t(n));
}
}  // namespace
}  // namespace quant

namespace {
using namespace quant;
// ggml type ids are those of ggml.h's enum ggml_type (the numbers GGUF files store).
// clang-format off
constexpr QuantType kQuantTypes[] = {
    // dtype         name      ggml id      elems bytes importance  quantize          dequantize
    {DType::F32,    "f32",    0,           1,    4,    false,      quantize_f32,    dequantize_f32},
    {DType::F16,    "f16",    1,           1,    2,    false,      quantize_f16,    dequantize_f16},
    {DType::BF16,   "bf16",   30,          1,    2,    false,      quantize_bf16,   dequantize_bf16},
    {DType::Q8_0,   "q8_0",   8,           32,   34,   false,      quantize_q8_0,   dequantize_q8_0},
    {DType::Q4_0,   "q4_0",   2,           32,   18,   true,       quantize_q4_0,   dequantize_q4_0},
    {DType::Q4_1,   "q4_1",   3,           32,   20,   true,       quantize_q4_1,   dequantize_q4_1},
    {DType::Q5_0,   "q5_0",   6,           32,   22,   true,       quantize_q5_0,   dequantize_q5_0},
    {DType::Q5_1,   "q5_1",   7,           32,   24,   true,       quantize_q5_1,   dequantize_q5_1},
    {DType::Q2_K,   "q2_k",   10,          256,  84,   true,       quantize_q2_k,   dequantize_q2_k},
    {DType::Q3_K,   "q3_k",   11,          256,  110,  true,       quantize_q3_k,   dequantize_q3_k},
    {DType::Q4_K,   "q4_k",   12,          256,  144,  true,       quantize_q4_k,   dequantize_q4_k},
    {DType::Q5_K,   "q5_k",   13,          256,  176,  true,       quantize_q5_k,   dequantize_q5_k},
    {DType::Q6_K,   "q6_k",   14,          256,  210,  true,       quantize_q6_k,   dequantize_q6_k},
    {DType::IQ4_NL, "iq4_nl", 20,          32,   18,   true,       quantize_iq4_nl, dequantize_iq4_nl},
    {DType::NF4,    "nf4",    kNoGgmlType, 64,   36,   false,      quantize_nf4,    dequantize_nf4},
};
// clang-format on

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return std::tolower(x) == std::tolower(y); });
}
}  // namespace

uint64_t QuantType::row_bytes(int64_t n) const {
  if (n < 0 || n % block_elems != 0)
    fail("quant: {}: row length {} is not a multiple of the block size {}", name, n, block_elems);
  return checked_mul(uint64_t(n) / block_elems, block_bytes, std::string("quant: ") + name + ": row size");
}

std::span<const QuantType> quant_types() { return kQuantTypes; }

const QuantType* find_quant_type(DType t) {
  for (const auto& q : kQuantTypes)
    if (q.dtype == t) return &q;
  return nullptr;
}

const QuantType* find_quant_type(std::string_view name) {
  for (const auto& q : kQuantTypes)
    if (same_name(name, q.name)) return &q;
  return nullptr;
}

const QuantType* find_quant_type_by_ggml(int32_t ggml_type) {
  if (ggml_type == kNoGgmlType) return nullptr;
  for (const auto& q : kQuantTypes)
    if (q.ggml_type == ggml_type) return &q;
  return nullptr;
}

const QuantType& quant_type(DType t) {
  if (const QuantType* q = find_quant_type(t)) return *q;
  fail_unsupported("quant: no quantizer for type {}", dtype_name(t));
}

void quantize_matrix(const QuantType& type, const float* x, void* y, int64_t rows, int64_t cols,
                     const float* importance) {
  if (rows < 0) fail("quant: {}: negative row count {}", type.name, rows);
  const uint64_t row_bytes = type.row_bytes(cols);
  auto* out = static_cast<uint8_t*>(y);
  for (int64_t r = 0; r < rows; ++r) type.quantize_row(x + r * cols, out + uint64_t(r) * row_bytes, cols, importance);
}

void dequantize_matrix(const QuantType& type, const void* x, float* y, int64_t rows, int64_t cols) {
  if (rows < 0) fail("quant: {}: negative row count {}", type.name, rows);
  const uint64_t row_bytes = type.row_bytes(cols);
  const auto* in = static_cast<const uint8_t*>(x);
  for (int64_t r = 0; r < rows; ++r) type.dequantize_row(in + uint64_t(r) * row_bytes, y + r * cols, cols);
}

}  // namespace qforge
