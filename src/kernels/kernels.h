// The kernel dispatch table: every hot loop has a scalar reference (kernels_scalar.cpp) and ISA
// variants (*_avx2.cpp, *_avx512.cpp) compiled for their instruction set only. table() picks the
// best variant the running CPU supports; QFORGE_ISA=scalar|avx2|avx512 forces one (tests, benches).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace qforge::kernels {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false;
  std::string brand;  // "AMD EPYC 9R14 ..."
  std::string summary() const;  // "AMD EPYC (avx2 fma f16c avx512f ... )"
};
const CpuFeatures& cpu();

struct Table {
  const char* isa;  // "scalar", "avx2", "avx512"
  // sum_i a[i]*b[i]
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  // y[r - r0] = dot(W + r*ld, x, cols) for r in [r0, r1). W is row-major with leading dimension ld.
  void (*gemv_f32)(const float* W, int64_t ld, const float* x, float* y, int64_t r0, int64_t r1, int64_t cols);
  // y[i] += a * x[i]
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);
};

const Table& table();                    // best for this CPU (or QFORGE_ISA)
const Table* table_for(std::string_view isa);  // nullptr if unknown or unsupported on this CPU

// The variants, defined in their own files.
const Table& table_scalar();
const Table& table_avx2();
const Table& table_avx512();

}  // namespace qforge::kernels
