// Integer kernels of the k-quant super-block types (q2_K .. q6_K) with BlockQ8x256 activations: every
// ISA variant against the scalar twin (activation bytes, GEMV, GEMM, row dequantization), and the
// scalar twin against double-precision arithmetic on dequantized values.
//
// Weight rows are either random bytes with sane f16 super-scales written over the d / dmin fields
// (every code, scale and min pattern occurs, including ones the quantizers never write) or rows
// produced by the quantizers from random floats (the codes real models have).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/quant.h"
#include "quant/blocks_k.h"

namespace {

using namespace qforge;
using namespace qforge::kernels;

constexpr DType kTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
constexpr const char* kSimdIsas[] = {"avx2", "avx512"};
constexpr int kSB = 256;

std::string label(DType t, const char* isa) { return std::string(dtype_name(t)) + "/" + isa; }

// Byte offsets of the f16 d and dmin (-1: none) in each block.
int d_offset(DType t) {
  switch (t) {
    case DType::Q2_K: return 80;
    case DType::Q3_K: return 108;
    case DType::Q6_K: return 208;
    default: return 0;
  }
}
int dmin_offset(DType t) {
  switch (t) {
    case DType::Q2_K: return 82;
    case DType::Q4_K:
    case DType::Q5_K: return 2;
    default: return -1;
  }
}
// Codes' zero point: weight = d * s * (u - Z) [- dmin * m].
int zero_point(DType t) { return t == DType::Q3_K ? 4 : t == DType::Q6_K ? 32 : 0; }

// Rows of random bytes with f16 super-scales of random magnitude (and sign, for d) over d / dmin;
// every third row instead comes from the quantizer (realistic codes and scales).
std::vector<uint8_t> make_weights(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  const QuantType& q = quant_type(t);
  const size_t row_bytes = q.row_bytes(cols), nb = size_t(cols / kSB);
  std::vector<uint8_t> w(row_bytes * size_t(rows));
  std::mt19937 rng(seed);
  for (auto& b : w) b = uint8_t(rng());
  std::uniform_real_distribution<float> mag(-14, -2);
  auto half = [&](bool signed_) {
    const float v = std::exp2(mag(rng)) * (signed_ && (rng() & 1) ? -1.0f : 1.0f);
    return f32_to_f16(v);
  };
  std::normal_distribution<float> nd(0, 0.05f);
  std::vector<float> src(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = w.data() + size_t(r) * row_bytes;
    if (r % 3 == 2) {
      for (auto& v : src) v = nd(rng);
      q.quantize_row(src.data(), row, cols, nullptr);
      continue;
    }
    for (size_t b = 0; b < nb; ++b) {
      uint8_t* blk = row + b * q.block_bytes;
      const uint16_t d = half(true);
      std::memcpy(blk + d_offset(t), &d, 2);
      if (dmin_offset(t) >= 0) {
        const uint16_t m = half(true);
        std::memcpy(blk + dmin_offset(t), &m, 2);
      }
    }
  }
  return w;
}

// Activations with some structure: zero sub-blocks, outliers, exact multiples (rounding ties), and
// super-blocks of very different magnitudes.
std::vector<float> make_activations(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / 16; ++b) {
    const int kind = int(rng() % 8);
    const float scale = std::exp2(float(int(rng() % 16)) - 8);
    for (int i = 0; i < 16; ++i) {
      float v = nd(rng) * scale;
      if (kind == 0) v = 0;
      if (kind == 1 && i == int(rng() % 16)) v *= 60;
      if (kind == 2) v = float(int(rng() % 9) - 4) * 0.5f * scale;
      x[size_t(b * 16 + i)] = v;
    }
  }
  return x;
}

std::vector<BlockQ8x256> quantize_acts(const WeightKernels& k, const std::vector<float>& x) {
  std::vector<BlockQ8x256> xq(x.size() / kSB);
  k.quantize_act(x.data(), xq.data(), int64_t(x.size()));
  return xq;
}

// Dequantized activations in double (exact: d * integer).
std::vector<double> dequant_acts(const std::vector<BlockQ8x256>& xq) {
  std::vector<double> x(xq.size() * kSB);
  for (size_t b = 0; b < xq.size(); ++b)
    for (int i = 0; i < kSB; ++i) x[b * kSB + size_t(i)] = double(xq[b].d) * xq[b].qs[i];
  return x;
}

// Sum over a row of the magnitudes of the terms the kernels add: |d s_j| (u + Z) |x| for the code
// part (the GEMM kernels sum u * x and the zero point apart) plus |dmin m_j| |x| for the mins. Float
// rounding in any kernel is bounded by a small multiple of 2^-24 times this.
double term_magnitude(DType t, const uint8_t* row, int64_t cols, const std::vector<double>& x) {
  // The parts come from the reference dequantizer on edited copies of the blocks (nothing of the
  // kernels is reused): d = 1, dmin = 0 gives s_j (u - Z); d = 0, dmin = 1 gives -m_j; d = 1 with
  // every code zeroed gives -Z s_j.
  const QuantType& q = quant_type(t);
  const size_t bb = q.block_bytes;
  const int64_t nb = cols / kSB;
  const int z = zero_point(t);
  const size_t d_at = size_t(d_offset(t));
  const bool has_min = dmin_offset(t) >= 0;
  const size_t m_at = has_min ? size_t(dmin_offset(t)) : 0;
  std::vector<uint8_t> a(row, row + size_t(nb) * bb), m(a), zc(a);
  const uint16_t one = f32_to_f16(1.0f), zero = 0;
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* pa = a.data() + size_t(b) * bb;
    uint8_t* pm = m.data() + size_t(b) * bb;
    uint8_t* pz = zc.data() + size_t(b) * bb;
    std::memcpy(pa + d_at, &one, 2);
    std::memcpy(pm + d_at, &zero, 2);
    std::memcpy(pz + d_at, &one, 2);
    if (has_min) {
      std::memcpy(pa + m_at, &zero, 2);
      std::memcpy(pm + m_at, &one, 2);
    }
    if (t == DType::Q3_K) std::memset(pz, 0, 96);   // hmask and qs
    if (t == DType::Q6_K) std::memset(pz, 0, 192);  // ql and qh
  }
  std::vector<float> codes(static_cast<size_t>(cols)), mins(static_cast<size_t>(cols), 0.0f),
      zs(static_cast<size_t>(cols), 0.0f);
  q.dequantize_row(a.data(), codes.data(), cols);
  if (has_min) q.dequantize_row(m.data(), mins.data(), cols);
  if (z) q.dequantize_row(zc.data(), zs.data(), cols);
  double s = 0;
  for (int64_t b = 0; b < nb; ++b) {
    uint16_t h;
    std::memcpy(&h, row + size_t(b) * bb + d_at, 2);
    const double d = std::fabs(double(f16_to_f32(h)));
    double dmin = 0;
    if (has_min) {
      std::memcpy(&h, row + size_t(b) * bb + m_at, 2);
      dmin = std::fabs(double(f16_to_f32(h)));
    }
    for (int i = 0; i < kSB; ++i) {
      const size_t k = size_t(b * kSB + i);
      // |s (u - Z)| + 2 Z |s| >= |s| (u + Z) for u in [0, 2Z).
      const double code_part = std::fabs(double(codes[k])) + 2.0 * std::fabs(double(zs[k]));
      s += (d * code_part + dmin * std::fabs(double(mins[k]))) * std::fabs(x[k]);
    }
  }
  return s;
}

TEST(KernelsQK, EntriesExistForEveryIsa) {
  for (DType t : kTypes)
    for (const char* isa : {"scalar", "avx2", "avx512"}) {
      const WeightKernels* k = weight_kernels(t, isa);
      if (std::string(isa) != "scalar" && !k) continue;  // CPU without the ISA
      ASSERT_NE(k, nullptr) << label(t, isa);
      EXPECT_EQ(k->act, ActFormat::Q8x256) << label(t, isa);
      EXPECT_NE(k->quantize_act, nullptr) << label(t, isa);
      EXPECT_NE(k->gemv, nullptr) << label(t, isa);
      EXPECT_NE(k->gemm, nullptr) << label(t, isa);
      EXPECT_NE(k->dequant_row, nullptr) << label(t, isa);
    }
  for (DType t : kTypes) EXPECT_NE(weight_kernels(t), nullptr) << dtype_name(t);
}

TEST(KernelsQK, QuantizeActBytesMatchScalar) {
  const int64_t n = kSB * 13;
  std::vector<float> x = make_activations(n, 11);
  x[5] = std::nextafter(0.5f, 1.0f);  // assorted edge values in super-block 0
  x[6] = -x[5];
  x[7] = 1e-30f;
  for (int i = 256; i < 512; ++i) x[size_t(i)] = 7.0f;      // all equal: every code 127
  for (int i = 512; i < 768; ++i) x[size_t(i)] = -3e-38f;   // tiny, one sign
  for (int i = 768; i < 1024; ++i) x[size_t(i)] = 0.0f;     // all zero: d = 0
  x[1024 + 3] = std::nanf("");                               // NaN is ignored by amax, coded -127
  x[1280 + 9] = 1e30f;                                       // one huge value: the rest round to 0
  for (int i = 1536; i < 1792; ++i) x[size_t(i)] = float(i % 255 - 127) * 0.25f;  // exact ties
  for (DType t : kTypes) {
    const auto ref = quantize_acts(*weight_kernels(t, "scalar"), x);
    for (const char* isa : kSimdIsas) {
      const WeightKernels* k = weight_kernels(t, isa);
      if (!k) continue;
      const auto got = quantize_acts(*k, x);
      for (size_t b = 0; b < ref.size(); ++b) {
        ASSERT_EQ(std::memcmp(&ref[b], &got[b], sizeof(BlockQ8x256)), 0)
            << label(t, isa) << " super-block " << b << ": d " << ref[b].d << " vs " << got[b].d << ", bsums[0] "
            << ref[b].bsums[0] << " vs " << got[b].bsums[0];
      }
    }
  }
}

// Codes within half a step of the values, d = max|x| / 127, bsums the sums of the codes.
TEST(KernelsQK, ActivationQuantizationIsRoundToNearest) {
  const int64_t n = kSB * 8;
  const auto x = make_activations(n, 21);
  const auto xq = quantize_acts(*weight_kernels(DType::Q4_K, "scalar"), x);
  for (int64_t b = 0; b < n / kSB; ++b) {
    float amax = 0;
    for (int i = 0; i < kSB; ++i) amax = std::max(amax, std::fabs(x[size_t(b * kSB + i)]));
    ASSERT_EQ(xq[size_t(b)].d, amax / 127.0f) << "super-block " << b;
    const double d = xq[size_t(b)].d;
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int i = 16 * j; i < 16 * j + 16; ++i) {
        const double xi = x[size_t(b * kSB + i)], qi = xq[size_t(b)].qs[i];
        sum += xq[size_t(b)].qs[i];
        ASSERT_LE(std::fabs(qi), 127);
        ASSERT_LE(std::fabs(xi - d * qi), d * (0.5 + 1e-5)) << "super-block " << b << " i " << i;
      }
      ASSERT_EQ(sum, xq[size_t(b)].bsums[j]) << "super-block " << b << " sub-block " << j;
    }
  }
}

// The scalar twin against the same math in double on the dequantized weights and activations.
TEST(KernelsQK, ScalarGemvIsTheDequantizedDot) {
  const int64_t rows = 12, cols = kSB * 11;
  const auto x = make_activations(cols, 31);
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    const WeightKernels& k = *weight_kernels(t, "scalar");
    const auto W = make_weights(t, rows, cols, 41);
    const auto xq = quantize_acts(k, x);
    const auto xd = dequant_acts(xq);
    std::vector<float> y(static_cast<size_t>(rows)), w(static_cast<size_t>(cols));
    k.gemv(W.data(), q.row_bytes(cols), xq.data(), y.data(), 0, rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = W.data() + size_t(r) * q.row_bytes(cols);
      q.dequantize_row(row, w.data(), cols);
      double ref = 0;
      for (int64_t i = 0; i < cols; ++i) ref += double(w[size_t(i)]) * xd[size_t(i)];
      // The dequantized weights are rounded to float (2^-24 of their terms); the kernel rounds once.
      const double tol = 1e-6 * term_magnitude(t, row, cols, xd) + 1e-6 * std::fabs(ref) + 1e-30;
      EXPECT_NEAR(y[size_t(r)], ref, tol) << dtype_name(t) << " row " << r;
    }
  }
}

struct Case {
  int64_t rows, cols;
};
constexpr Case kCases[] = {{1, 256}, {3, 768}, {17, 2816}, {31, 256}, {67, 768}, {3, 2816}, {17, 256}, {67, 2816}};

// SIMD GEMV and GEMM against the scalar twin on awkward shapes, with r0 > 0 and a padded ldy.
TEST(KernelsQK, SimdMatchesScalar) {
  uint32_t seed = 100;
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    const WeightKernels& ref = *weight_kernels(t, "scalar");
    int case_no = 0;
    for (const Case c : kCases) {
      ++seed;
      const size_t row_bytes = q.row_bytes(c.cols);
      const auto W = make_weights(t, c.rows, c.cols, seed);
      const int64_t max_nx = 9, ldy = c.rows + 3;
      std::vector<BlockQ8x256> X(size_t(max_nx * c.cols / kSB));
      std::vector<std::vector<double>> xd(max_nx);
      std::vector<double> mag(size_t(max_nx * c.rows));
      for (int64_t j = 0; j < max_nx; ++j) {
        const auto x = make_activations(c.cols, seed * 7 + uint32_t(j));
        ref.quantize_act(x.data(), X.data() + j * c.cols / kSB, c.cols);
        xd[size_t(j)] = dequant_acts(std::vector<BlockQ8x256>(X.begin() + j * c.cols / kSB,
                                                                X.begin() + (j + 1) * c.cols / kSB));
        for (int64_t r = 0; r < c.rows; ++r)
          mag[size_t(j * c.rows + r)] = term_magnitude(t, W.data() + size_t(r) * row_bytes, c.cols, xd[size_t(j)]);
      }
      const size_t x_stride = size_t(c.cols / kSB) * sizeof(BlockQ8x256);
      const int64_t r0 = c.rows > 2 ? 2 : 0;
      const int64_t nx = 1 + case_no++ % max_nx;
      std::vector<float> yref(size_t(ldy * max_nx), -1.0f);
      ref.gemm(W.data(), row_bytes, X.data(), x_stride, max_nx, yref.data(), ldy, 0, c.rows, c.cols);
      for (const char* isa : kSimdIsas) {
        const WeightKernels* k = weight_kernels(t, isa);
        if (!k) continue;
        const std::string what = label(t, isa) + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols);
        auto check = [&](const std::vector<float>& y, int64_t nrows_x, const char* fn) {
          for (int64_t j = 0; j < max_nx; ++j)
            for (int64_t r = 0; r < ldy; ++r) {
              const float got = y[size_t(j * ldy + r)];
              if (j >= nrows_x || r < r0 || r >= c.rows) {
                ASSERT_EQ(got, 12345.0f) << what << " " << fn << ": wrote outside its range at x row " << j
                                         << " y index " << r;
                continue;
              }
              const float want = yref[size_t(j * ldy + r)];
              const double tol = 1e-5 * mag[size_t(j * c.rows + r)] + 1e-30;
              ASSERT_NEAR(got, want, tol) << what << " " << fn << ": x row " << j << " weight row " << r
                                          << " expected " << want << " actual " << got;
            }
        };
        // GEMV: one activation row, rows [r0, rows).
        std::vector<float> y(size_t(ldy * max_nx), 12345.0f);
        k->gemv(W.data(), row_bytes, X.data(), y.data(), r0, c.rows, c.cols);
        check(y, 1, "gemv");
        // GEMM with nx rows.
        std::fill(y.begin(), y.end(), 12345.0f);
        k->gemm(W.data(), row_bytes, X.data(), x_stride, nx, y.data(), ldy, r0, c.rows, c.cols);
        check(y, nx, ("gemm nx=" + std::to_string(nx)).c_str());
      }
    }
  }
}

// Every activation row count 1..9 of the GEMM tiles, on one shape.
TEST(KernelsQK, GemmEveryRowCount) {
  const int64_t rows = 17, cols = 768, ldy = rows;
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    const WeightKernels& ref = *weight_kernels(t, "scalar");
    const auto W = make_weights(t, rows, cols, 77);
    const auto x = make_activations(cols * 9, 78);
    const auto X = quantize_acts(ref, x);
    const size_t x_stride = size_t(cols / kSB) * sizeof(BlockQ8x256);
    std::vector<float> yref(size_t(rows * 9));
    ref.gemm(W.data(), q.row_bytes(cols), X.data(), x_stride, 9, yref.data(), ldy, 0, rows, cols);
    for (const char* isa : kSimdIsas) {
      const WeightKernels* k = weight_kernels(t, isa);
      if (!k) continue;
      for (int64_t nx = 1; nx <= 9; ++nx) {
        std::vector<float> y(size_t(rows * 9), 12345.0f);
        k->gemm(W.data(), q.row_bytes(cols), X.data(), x_stride, nx, y.data(), ldy, 1, rows, cols);
        for (int64_t j = 0; j < 9; ++j)
          for (int64_t r = 0; r < rows; ++r) {
            const float got = y[size_t(j * ldy + r)], want = yref[size_t(j * ldy + r)];
            if (j >= nx || r < 1) {
              ASSERT_EQ(got, 12345.0f) << label(t, isa) << " nx " << nx << " wrote y[" << j << "][" << r << "]";
              continue;
            }
            // |want| bounds nothing by itself; the activations here are mild, so use 1e-5 of the
            // term sizes computed the cheap way: the row's weights scaled by max |x|.
            std::vector<float> w(static_cast<size_t>(cols));
            q.dequantize_row(W.data() + size_t(r) * q.row_bytes(cols), w.data(), cols);
            std::vector<double> xd = dequant_acts(std::vector<BlockQ8x256>(X.begin() + j * cols / kSB,
                                                                           X.begin() + (j + 1) * cols / kSB));
            const double tol = 1e-5 * term_magnitude(t, W.data() + size_t(r) * q.row_bytes(cols), cols, xd) + 1e-30;
            ASSERT_NEAR(got, want, tol) << label(t, isa) << " nx " << nx << " x row " << j << " weight row " << r;
          }
      }
    }
  }
}

TEST(KernelsQK, DequantRowIsExact) {
  const int64_t rows = 6, cols = kSB * 5;
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    const auto W = make_weights(t, rows, cols, 55);
    std::vector<float> want(static_cast<size_t>(cols)), got(static_cast<size_t>(cols));
    for (const char* isa : {"scalar", "avx2", "avx512"}) {
      const WeightKernels* k = weight_kernels(t, isa);
      if (!k) continue;
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = W.data() + size_t(r) * q.row_bytes(cols);
        q.dequantize_row(row, want.data(), cols);
        k->dequant_row(row, got.data(), cols);
        for (int64_t i = 0; i < cols; ++i)
          ASSERT_EQ(std::memcmp(&want[size_t(i)], &got[size_t(i)], 4), 0)
              << label(t, isa) << " row " << r << " index " << i << " expected " << want[size_t(i)] << " actual "
              << got[size_t(i)];
      }
    }
  }
}

// The engine's entry point picks these kernels: GEMV for one row, GEMM for several.
TEST(KernelsQK, MatmulUsesTheKernels) {
  const int64_t rows = 40, cols = 512;
  for (DType t : {DType::Q4_K, DType::Q6_K}) {
    const QuantType& q = quant_type(t);
    const auto W = make_weights(t, rows, cols, 91);
    const auto x = make_activations(cols * 6, 92);
    std::vector<float> w(static_cast<size_t>(rows * cols));
    dequantize_matrix(q, W.data(), w.data(), rows, cols);
    for (int64_t n : {1, 6}) {
      std::vector<float> y(size_t(n * rows));
      matmul(t, W.data(), q.row_bytes(cols), rows, cols, x.data(), n, y.data(), 2);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t r = 0; r < rows; ++r) {
          double ref = 0, bound = 0;
          for (int64_t b = 0; b < cols / kSB; ++b) {
            // Quantizing the activations moves each x by at most half a step, max|x| / 254.
            double amax = 0;
            for (int64_t i = b * kSB; i < (b + 1) * kSB; ++i) amax = std::max(amax, std::fabs(double(x[size_t(j * cols + i)])));
            for (int64_t i = b * kSB; i < (b + 1) * kSB; ++i) {
              const double wi = w[size_t(r * cols + i)];
              ref += wi * x[size_t(j * cols + i)];
              bound += std::fabs(wi) * amax / 254 * (1 + 1e-4);
            }
          }
          EXPECT_NEAR(y[size_t(j * rows + r)], ref, bound + 1e-4 * std::fabs(ref)) << dtype_name(t) << " n " << n;
        }
    }
  }
}

}  // namespace
