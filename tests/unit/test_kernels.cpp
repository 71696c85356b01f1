// Every ISA variant of every kernel against the scalar twin, on awkward sizes (primes, tails, 0, 1).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/matmul.h"

namespace qforge::kernels {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Float error bound of a length-n dot product: ~ n * eps * sum|a_i b_i| (worst case of any summation order).
double dot_bound(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::fabs(double(a[i]) * b[i]);
  return (double(n) + 2) * 1.2e-7 * s + 1e-30;
}

const std::vector<int64_t> kSizes = {0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 257, 1021, 2048, 4099};

class KernelVariants : public ::testing::TestWithParam<const char*> {};

TEST_P(KernelVariants, DotMatchesScalar) {
  const Table* t = table_for(GetParam());
  if (!t) GTEST_SKIP() << GetParam() << " not supported on this CPU";
  const Table& ref = table_scalar();
  for (int64_t n : kSizes) {
    auto a = random_vec(size_t(n) + 1, 1 + uint32_t(n)), b = random_vec(size_t(n) + 1, 1000 + uint32_t(n));
    // Offset by one float so the kernels also see unaligned pointers.
    const float want = ref.dot_f32(a.data() + 1, b.data() + 1, n - (n > 0));
    const float got = t->dot_f32(a.data() + 1, b.data() + 1, n - (n > 0));
    EXPECT_NEAR(got, want, dot_bound(a.data() + 1, b.data() + 1, n - (n > 0))) << "n=" << n;
  }
}

TEST_P(KernelVariants, GemvMatchesScalar) {
  const Table* t = table_for(GetParam());
  if (!t) GTEST_SKIP() << GetParam() << " not supported on this CPU";
  const Table& ref = table_scalar();
  for (int64_t rows : {1, 3, 4, 5, 17}) {
    for (int64_t cols : kSizes) {
      const int64_t ld = cols + 3;  // a leading dimension wider than the row
      auto W = random_vec(size_t(rows * ld) + 1, 7 + uint32_t(rows * 31 + cols));
      auto x = random_vec(size_t(cols) + 1, 99 + uint32_t(cols));
      std::vector<float> want(static_cast<size_t>(rows)), got(static_cast<size_t>(rows));
      ref.gemv_f32(W.data(), ld, x.data(), want.data(), 0, rows, cols);
      t->gemv_f32(W.data(), ld, x.data(), got.data(), 0, rows, cols);
      for (int64_t r = 0; r < rows; ++r)
        ASSERT_NEAR(got[size_t(r)], want[size_t(r)], dot_bound(W.data() + r * ld, x.data(), cols))
            << "rows=" << rows << " cols=" << cols << " row " << r;
      // A sub-range writes only its own outputs, starting at y[0].
      if (rows > 2) {
        std::vector<float> part(static_cast<size_t>(rows), -7.0f);
        t->gemv_f32(W.data(), ld, x.data(), part.data(), 1, rows - 1, cols);
        for (int64_t r = 1; r < rows - 1; ++r)
          ASSERT_NEAR(part[size_t(r - 1)], want[size_t(r)], dot_bound(W.data() + r * ld, x.data(), cols));
        ASSERT_EQ(part[size_t(rows - 2)], -7.0f) << "wrote past the range";
      }
    }
  }
}

TEST_P(KernelVariants, AxpyMatchesScalar) {
  const Table* t = table_for(GetParam());
  if (!t) GTEST_SKIP() << GetParam() << " not supported on this CPU";
  for (int64_t n : kSizes) {
    auto x = random_vec(size_t(n) + 1, 5 + uint32_t(n));
    auto y0 = random_vec(size_t(n) + 1, 6 + uint32_t(n));
    auto want = y0, got = y0;
    table_scalar().axpy_f32(0.37f, x.data(), want.data(), n);
    t->axpy_f32(0.37f, x.data(), got.data(), n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(got[size_t(i)], want[size_t(i)], 2.4e-7 * (std::fabs(want[size_t(i)]) + std::fabs(0.37f * x[size_t(i)])))
          << "n=" << n << " index " << i;
    ASSERT_EQ(got[size_t(n)], y0[size_t(n)]) << "axpy wrote past n=" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, KernelVariants, ::testing::Values("scalar", "avx2", "avx512"));

// The threaded matmul (GEMV path for n < 4, SGEMM otherwise) against the scalar twin.
TEST(Matmul, ThreadedProductsMatchScalar) {
  const Table& ref = table_scalar();
  for (int64_t n : {1, 2, 3, 4, 5, 33}) {
    for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 13}, {67, 257}, {130, 64}}) {
      auto W = random_vec(size_t(rows * cols), 3 + uint32_t(rows + cols));
      auto X = random_vec(size_t(n * cols), 4 + uint32_t(n));
      for (int threads : {1, 2, 3}) {
        std::vector<float> Y(static_cast<size_t>(n * rows));
        matmul_f32(W.data(), rows, cols, X.data(), n, Y.data(), threads);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < rows; ++r) {
            float want;
            ref.gemv_f32(W.data(), cols, X.data() + t * cols, &want, r, r + 1, cols);
            ASSERT_NEAR(Y[size_t(t * rows + r)], want, dot_bound(W.data() + r * cols, X.data() + t * cols, cols))
                << "n=" << n << " rows=" << rows << " cols=" << cols << " threads=" << threads << " at [" << t << ","
                << r << "]";
          }
      }
    }
  }
}

}  // namespace
}  // namespace qforge::kernels
