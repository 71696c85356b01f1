// The F16 / BF16 / NF4 weight kernels (src/kernels/kernels_float_*.cpp): every ISA variant against
// the scalar twin on awkward shapes, dequant_row bit-exact against the library's own conversions.
//
// Tolerance: the scalar twin sums in double, so its result is the exact dot product of the
// (exactly converted) weights and x, rounded once. The SIMD kernels accumulate in float, in chains
// of at most cols/8 products (8 lanes for AVX2, 16 for AVX-512), then add the lanes. The classic
// bound for a float sum of m terms is (m - 1) * u * sum|terms| (u = 2^-24), so
//   |kernel - twin| <= (cols/8 + 16) * u * sum_i |w_i x_i|
// (the 16 covers the lane and accumulator reduction and the final rounding). That is 2e-6 relative
// at 256 columns and 3.3e-5 at 4288. A single wrong or dropped element costs about sum|wx| / cols,
// which is 7x that bound or more at every size tested, so the check still catches indexing errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/matmul.h"
#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/quant.h"

namespace qforge::kernels {
namespace {

constexpr double kUnit = 1.0 / 16777216.0;  // 2^-24

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// A weight matrix in storage form, each row padded by `pad` bytes (row_bytes > the row's data, as a
// caller may pass), plus its exact f32 values.
struct Matrix {
  DType type;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  std::vector<uint8_t> data;
  std::vector<float> f32;  // dequantized: what the kernels must multiply with
};

Matrix make_matrix(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  Matrix m;
  m.type = t;
  m.rows = rows;
  m.cols = cols;
  const QuantType& q = quant_type(t);
  const size_t pad = (t == DType::NF4) ? 36 : 6;  // NF4 blocks stay 4-byte aligned; 16-bit rows start only 2-byte aligned
  m.row_bytes = size_t(q.row_bytes(cols)) + pad;
  m.data.assign(m.row_bytes * size_t(rows) + 64, 0xA5);  // garbage in the padding must not be read
  m.f32.resize(size_t(rows * cols));
  // Mix magnitudes so the conversions see small and large exponents.
  auto v = random_vec(size_t(rows * cols), seed);
  for (size_t i = 0; i < v.size(); ++i) v[i] *= (i % 7 == 0) ? 100.0f : (i % 5 == 0 ? 1e-3f : 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = m.data.data() + size_t(r) * m.row_bytes;
    q.quantize_row(v.data() + r * cols, row, cols, nullptr);
    q.dequantize_row(row, m.f32.data() + r * cols, cols);
  }
  return m;
}

double abs_dot(const float* w, const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::fabs(double(w[i]) * double(x[i]));
  return s;
}

double tolerance(const float* w, const float* x, int64_t cols) {
  return (double(cols) / 8 + 16) * kUnit * abs_dot(w, x, cols) + 1e-30;
}

struct Case {
  DType type;
  const char* isa;
};

void PrintTo(const Case& c, std::ostream* os) { *os << dtype_name(c.type) << "/" << c.isa; }

std::string case_name(const ::testing::TestParamInfo<Case>& p) {
  return std::string(dtype_name(p.param.type)) + "_" + p.param.isa;
}

class FloatKernels : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    k_ = weight_kernels(GetParam().type, GetParam().isa);
    ref_ = weight_kernels(GetParam().type, "scalar");
    if (!k_) GTEST_SKIP() << GetParam().isa << " not supported on this CPU";
    ASSERT_NE(ref_, nullptr);
  }
  std::vector<int64_t> col_sizes() const {
    // From 64 * 67 columns x no longer fits L1 beside a row, so GEMV takes its multi-row path.
    if (GetParam().type == DType::NF4) return {64, 128, 192, 64 * 5, 64 * 17, 64 * 67, 64 * 97};
    return {1, 7, 8, 15, 16, 17, 31, 33, 64, 97, 255, 4099};
  }
  const WeightKernels* k_ = nullptr;
  const WeightKernels* ref_ = nullptr;
};

TEST_P(FloatKernels, EntriesAreFilled) {
  EXPECT_EQ(k_->act, ActFormat::F32);
  EXPECT_EQ(k_->quantize_act, nullptr);
  EXPECT_NE(k_->gemv, nullptr);
  EXPECT_NE(k_->gemm, nullptr);
  EXPECT_NE(k_->dequant_row, nullptr);
}

TEST_P(FloatKernels, DequantRowIsExact) {
  const DType t = GetParam().type;
  for (int64_t cols : col_sizes()) {
    const Matrix m = make_matrix(t, 3, cols, uint32_t(11 + cols));
    for (int64_t r = 0; r < m.rows; ++r) {
      const uint8_t* row = m.data.data() + size_t(r) * m.row_bytes;
      std::vector<float> want(size_t(cols) + 1, -7.0f), got(size_t(cols) + 1, -7.0f);
      if (t == DType::NF4)
        quant_type(t).dequantize_row(row, want.data(), cols);
      else
        convert_to_f32(t, row, want.data(), size_t(cols));
      k_->dequant_row(row, got.data(), cols);
      for (int64_t i = 0; i < cols; ++i)
        ASSERT_EQ(std::memcmp(&got[size_t(i)], &want[size_t(i)], 4), 0)
            << "cols=" << cols << " row " << r << " index " << i << ": expected " << want[size_t(i)] << ", got "
            << got[size_t(i)];
      EXPECT_EQ(got[size_t(cols)], -7.0f) << "wrote past the row, cols=" << cols;
    }
  }
}

// Every 16-bit pattern (F16/BF16): subnormals, infinities, signed zeros convert bit-exactly;
// NaNs stay NaNs (hardware may set the quiet bit of a signalling NaN).
TEST_P(FloatKernels, DequantAllHalfPatterns) {
  const DType t = GetParam().type;
  if (t == DType::NF4) GTEST_SKIP() << "16-bit types only";
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  std::vector<float> want(all.size()), got(all.size());
  convert_to_f32(t, all.data(), want.data(), all.size());
  k_->dequant_row(all.data(), got.data(), int64_t(all.size()));
  for (size_t i = 0; i < all.size(); ++i) {
    if (std::isnan(want[i])) {
      ASSERT_TRUE(std::isnan(got[i])) << "pattern 0x" << std::hex << i;
      continue;
    }
    ASSERT_EQ(std::memcmp(&got[i], &want[i], 4), 0)
        << "pattern 0x" << std::hex << i << std::dec << ": expected " << want[i] << ", got " << got[i];
  }
}

TEST_P(FloatKernels, GemvMatchesScalar) {
  const DType t = GetParam().type;
  for (int64_t rows : {1, 3, 17, 31, 67}) {
    for (int64_t cols : col_sizes()) {
      const Matrix m = make_matrix(t, rows, cols, uint32_t(rows * 1000 + cols));
      auto xbuf = random_vec(size_t(cols) + 1, uint32_t(5 + cols));
      const float* x = xbuf.data() + 1;  // unaligned activations
      for (int64_t r0 : {int64_t(0), rows / 3}) {
        std::vector<float> want(size_t(rows), -1.0f), got(size_t(rows), -1.0f);
        ref_->gemv(m.data.data(), m.row_bytes, x, want.data(), r0, rows, cols);
        k_->gemv(m.data.data(), m.row_bytes, x, got.data(), r0, rows, cols);
        for (int64_t r = 0; r < r0; ++r) ASSERT_EQ(got[size_t(r)], -1.0f) << "wrote row " << r << " < r0=" << r0;
        for (int64_t r = r0; r < rows; ++r) {
          // The scalar twin must itself be the exact product of the dequantized weights.
          const float* w = m.f32.data() + r * cols;
          double exact = 0;
          for (int64_t i = 0; i < cols; ++i) exact += double(w[i]) * double(x[i]);
          ASSERT_NEAR(want[size_t(r)], exact, 2 * kUnit * abs_dot(w, x, cols) + 1e-30) << "scalar twin, row " << r;
          ASSERT_NEAR(got[size_t(r)], want[size_t(r)], tolerance(w, x, cols))
              << "rows=" << rows << " cols=" << cols << " r0=" << r0 << " index " << r << ": expected "
              << want[size_t(r)] << ", got " << got[size_t(r)];
        }
      }
    }
  }
}

TEST_P(FloatKernels, GemmMatchesScalar) {
  const DType t = GetParam().type;
  for (int64_t rows : {1, 3, 17, 31, 67}) {
    for (int64_t cols : col_sizes()) {
      if (rows == 67 && cols > 1000) continue;  // keeps the scalar twin fast; 31 rows cover the tails
      const Matrix m = make_matrix(t, rows, cols, uint32_t(rows * 77 + cols));
      for (int64_t nx = 1; nx <= 9; ++nx) {
        const int64_t x_stride = cols + 5;  // floats between activation rows, wider than a row
        auto X = random_vec(size_t(nx * x_stride), uint32_t(nx * 13 + cols));
        const int64_t r0 = (nx % 2) ? 0 : rows / 2, ldy = rows + 2;
        std::vector<float> want(size_t(nx * ldy), -1.0f), got(size_t(nx * ldy), -1.0f);
        ref_->gemm(m.data.data(), m.row_bytes, X.data(), size_t(x_stride) * 4, nx, want.data(), ldy, r0, rows, cols);
        k_->gemm(m.data.data(), m.row_bytes, X.data(), size_t(x_stride) * 4, nx, got.data(), ldy, r0, rows, cols);
        for (int64_t c = 0; c < nx; ++c) {
          const float* x = X.data() + c * x_stride;
          for (int64_t r = 0; r < ldy; ++r) {
            const size_t at = size_t(c * ldy + r);
            if (r < r0 || r >= rows) {
              ASSERT_EQ(got[at], -1.0f) << "wrote outside [r0, r1): activation " << c << " row " << r;
              continue;
            }
            ASSERT_NEAR(got[at], want[at], tolerance(m.f32.data() + r * cols, x, cols))
                << "rows=" << rows << " cols=" << cols << " nx=" << nx << " r0=" << r0 << " activation " << c
                << " index " << r << ": expected " << want[at] << ", got " << got[at];
          }
        }
      }
    }
  }
}

// The same weights through matmul() (the engine's entry: threads, GEMV for n < 4, GEMM above).
TEST_P(FloatKernels, MatmulUsesThem) {
  if (std::string(GetParam().isa) != table().isa) GTEST_SKIP() << "matmul runs the best ISA only";
  const DType t = GetParam().type;
  const int64_t rows = 300, cols = 1024;
  const Matrix m = make_matrix(t, rows, cols, 3);
  for (int64_t n : {1, 5}) {
    auto X = random_vec(size_t(n * cols), uint32_t(n));
    std::vector<float> got(size_t(n * rows));
    matmul(t, m.data.data(), m.row_bytes, rows, cols, X.data(), n, got.data(), 2);
    for (int64_t c = 0; c < n; ++c)
      for (int64_t r = 0; r < rows; ++r) {
        const float* w = m.f32.data() + r * cols;
        const float* x = X.data() + c * cols;
        double exact = 0;
        for (int64_t i = 0; i < cols; ++i) exact += double(w[i]) * double(x[i]);
        ASSERT_NEAR(got[size_t(c * rows + r)], exact, tolerance(w, x, cols)) << "n=" << n << " row " << r;
      }
  }
}

std::vector<Case> all_cases() {
  std::vector<Case> v;
  for (DType t : {DType::F16, DType::BF16, DType::NF4})
    for (const char* isa : {"scalar", "avx2", "avx512"}) v.push_back({t, isa});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Types, FloatKernels, ::testing::ValuesIn(all_cases()), case_name);

}  // namespace
}  // namespace qforge::kernels
