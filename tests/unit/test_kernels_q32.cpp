// Integer kernels of the 32-weight block types (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl) with BlockQ8x32
// activations: every ISA variant against the scalar twin, the scalar twin against double-precision
// arithmetic on dequantized values, the activation quantizer against its error bound, and no read
// past a matrix's last row (the matrix ends at an inaccessible page).
//
// Weight rows are random bytes with sane f16 scales written over the scale fields, so every code
// pattern occurs, including ones the quantizers never write (q8_0's -128, any qh bits).
//
// Tolerances: the SIMD kernels compute the same exact integer block sums as the scalar twin and
// differ only in the order of the float accumulation over blocks, so they agree to a few float
// ulps of the sum of the terms' magnitudes (sum over i of (|d c_i| + |m|) |x_i|); 1e-5 of it is
// loose enough for 129 blocks (~20 ulps) and tight enough to catch any wrong block.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/quant.h"

namespace {

using namespace qforge;
using namespace qforge::kernels;

constexpr DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::IQ4_NL};
constexpr const char* kSimdIsas[] = {"avx2", "avx512"};
constexpr int kBlock = 32;

bool affine(DType t) { return t == DType::Q4_1 || t == DType::Q5_1; }

// Random weight rows: random code bytes, then f16 scales (and mins) of random sign and magnitude.
// Rows are row_bytes apart (default: packed); padding bytes between rows are 0xff, which read as an
// f16 scale is NaN, so a kernel that lets bytes past a row's end into its result fails loudly.
std::vector<uint8_t> random_weights(DType t, int64_t rows, int64_t cols, uint32_t seed, size_t row_bytes = 0) {
  const QuantType& q = quant_type(t);
  const size_t used = q.row_bytes(cols), nb = size_t(cols / kBlock);
  if (row_bytes == 0) row_bytes = used;
  std::vector<uint8_t> w(row_bytes * size_t(rows), 0xff);
  std::mt19937 rng(seed);
  for (int64_t r = 0; r < rows; ++r)
    for (size_t i = 0; i < used; ++i) w[size_t(r) * row_bytes + i] = uint8_t(rng());
  std::uniform_real_distribution<float> mag(-12, 2);  // scales from ~1e-5 to ~8
  auto half = [&] {
    const float v = std::exp2(mag(rng)) * (rng() & 1 ? 1.0f : -1.0f);
    return f32_to_f16(v);
  };
  for (int64_t r = 0; r < rows; ++r)
    for (size_t b = 0; b < nb; ++b) {
      uint8_t* blk = w.data() + size_t(r) * row_bytes + b * q.block_bytes;
      const uint16_t d = half();
      std::memcpy(blk, &d, 2);
      if (affine(t)) {
        const uint16_t m = half();
        std::memcpy(blk + 2, &m, 2);
      }
    }
  return w;
}

// Activations with some structure: a few zero blocks, outliers, mixed magnitudes.
std::vector<float> random_activations(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const int kind = int(rng() % 8);
    const float scale = std::exp2(float(int(rng() % 20)) - 10);
    for (int i = 0; i < kBlock; ++i) {
      float v = nd(rng) * scale;
      if (kind == 0) v = 0;                                 // all-zero block
      if (kind == 1 && i == int(rng() % kBlock)) v *= 50;  // outlier
      if (kind == 2) v = float(int(rng() % 9) - 4) * 0.5f * scale;  // exact multiples: rounding ties
      x[size_t(b * kBlock + i)] = v;
    }
  }
  return x;
}

std::vector<BlockQ8x32> quantize_acts(const WeightKernels& k, const std::vector<float>& x) {
  std::vector<BlockQ8x32> xq(x.size() / kBlock);
  k.quantize_act(x.data(), xq.data(), int64_t(x.size()));
  return xq;
}

std::vector<float> dequant_acts(const std::vector<BlockQ8x32>& xq) {
  std::vector<float> x(xq.size() * kBlock);
  for (size_t b = 0; b < xq.size(); ++b)
    for (int i = 0; i < kBlock; ++i) x[b * kBlock + size_t(i)] = xq[b].d * float(xq[b].qs[i]);
  return x;
}

// Sum over the row of |d * c_i| + |m| times |x_i|: the size of the terms a kernel adds, which
// bounds its float rounding error (for the affine types the code and min parts are summed apart).
double term_magnitude(DType t, const uint8_t* row, int64_t cols, const std::vector<float>& xd) {
  const QuantType& q = quant_type(t);
  std::vector<float> w(static_cast<size_t>(cols));
  q.dequantize_row(row, w.data(), cols);
  double s = 0;
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    double m = 0;  // the block's min (affine types): w = d * c + m
    if (affine(t)) {
      uint16_t h;
      std::memcpy(&h, row + size_t(b) * q.block_bytes + 2, 2);
      m = double(f16_to_f32(h));
    }
    for (int i = 0; i < kBlock; ++i) {
      const size_t j = size_t(b * kBlock + i);
      s += (std::fabs(double(w[j]) - m) + std::fabs(m)) * std::fabs(double(xd[j]));
    }
  }
  return s;
}

// sum |w_i| * d_x / 2 over the row: how far quantizing the activations can move a dot product.
double activation_error_bound(DType t, const uint8_t* row, int64_t cols, const std::vector<BlockQ8x32>& xq) {
  std::vector<float> w(static_cast<size_t>(cols));
  quant_type(t).dequantize_row(row, w.data(), cols);
  double s = 0;
  for (int64_t i = 0; i < cols; ++i) s += std::fabs(double(w[size_t(i)])) * xq[size_t(i / kBlock)].d * (0.5 + 1e-5);
  return s;
}

std::string label(DType t, const char* isa) { return std::string(dtype_name(t)) + "/" + isa; }

TEST(KernelsQ32, EntriesExistForEveryIsa) {
  for (DType t : kTypes)
    for (const char* isa : {"scalar", "avx2", "avx512"}) {
      const WeightKernels* k = weight_kernels(t, isa);
      if (std::string(isa) != "scalar" && !k) continue;  // CPU without the ISA
      ASSERT_NE(k, nullptr) << label(t, isa);
      EXPECT_EQ(k->act, ActFormat::Q8x32) << label(t, isa);
      EXPECT_NE(k->quantize_act, nullptr) << label(t, isa);
      EXPECT_NE(k->gemv, nullptr) << label(t, isa);
      EXPECT_NE(k->dequant_row, nullptr) << label(t, isa);
    }
  // The default choice is one of them.
  for (DType t : kTypes) EXPECT_NE(weight_kernels(t), nullptr) << dtype_name(t);
}

TEST(KernelsQ32, QuantizeActBytesMatchScalar) {
  const int64_t n = 32 * 41;
  std::vector<float> x = random_activations(n, 11);
  x[5] = std::nextafter(0.5f, 1.0f);  // assorted edge values in block 0
  x[6] = -x[5];
  x[40] = 1e-30f;                      // tiny block
  x[41] = -3e-38f;
  for (int i = 64; i < 96; ++i) x[size_t(i)] = 7.0f;  // all equal: every code 127
  for (DType t : kTypes) {
    const auto ref = quantize_acts(*weight_kernels(t, "scalar"), x);
    for (const char* isa : kSimdIsas) {
      const WeightKernels* k = weight_kernels(t, isa);
      if (!k) continue;
      const auto got = quantize_acts(*k, x);
      for (size_t b = 0; b < ref.size(); ++b) {
        ASSERT_EQ(std::memcmp(&ref[b], &got[b], sizeof(BlockQ8x32)), 0)
            << label(t, isa) << " block " << b << ": d " << ref[b].d << " vs " << got[b].d << ", sum " << ref[b].sum
            << " vs " << got[b].sum;
      }
    }
  }
}

// The activation codes are within half a step of the values, with d = max|x| / 127, so the dot
// product error is at most sum |w_i| d_b / 2.
TEST(KernelsQ32, ActivationQuantizationErrorBound) {
  const int64_t n = 32 * 64;
  const auto x = random_activations(n, 21);
  const auto xq = quantize_acts(*weight_kernels(DType::Q8_0, "scalar"), x);
  std::mt19937 rng(5);
  std::normal_distribution<double> nd(0, 1);
  double dot_err = 0, bound = 0;
  for (int64_t b = 0; b < n / kBlock; ++b) {
    float amax = 0;
    for (int i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(x[size_t(b * kBlock + i)]));
    ASSERT_EQ(xq[size_t(b)].d, amax / 127.0f) << "block " << b;
    int sum = 0;
    const double d = xq[size_t(b)].d;
    for (int i = 0; i < kBlock; ++i) {
      const double xi = x[size_t(b * kBlock + i)], qi = xq[size_t(b)].qs[i];
      sum += xq[size_t(b)].qs[i];
      ASSERT_LE(std::fabs(qi), 127) << "block " << b;
      // Half a step, plus the rounding of x * (1 / d) in float.
      ASSERT_LE(std::fabs(xi - d * qi), d * (0.5 + 1e-5)) << "block " << b << " i " << i << " x " << xi << " q " << qi;
      const double w = nd(rng);
      dot_err += w * (xi - d * qi);
      bound += std::fabs(w) * d * (0.5 + 1e-5);
    }
    ASSERT_EQ(sum, xq[size_t(b)].sum) << "block " << b;
  }
  EXPECT_LE(std::fabs(dot_err), bound);
}

// Scalar twin against the same math in double on dequantized weights and activations.
TEST(KernelsQ32, ScalarGemvIsTheDequantizedDot) {
  const int64_t rows = 9, cols = 32 * 37;
  const auto x = random_activations(cols, 31);
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    const WeightKernels& k = *weight_kernels(t, "scalar");
    const auto W = random_weights(t, rows, cols, 41);
    const auto xq = quantize_acts(k, x);
    const auto xd = dequant_acts(xq);
    std::vector<float> y(static_cast<size_t>(rows)), w(static_cast<size_t>(cols));
    k.gemv(W.data(), q.row_bytes(cols), xq.data(), y.data(), 0, rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = W.data() + size_t(r) * q.row_bytes(cols);
      q.dequantize_row(row, w.data(), cols);
      double ref = 0;
      for (int64_t i = 0; i < cols; ++i) ref += double(w[size_t(i)]) * double(xd[size_t(i)]);
      const double tol = 1e-6 * term_magnitude(t, row, cols, xd) + 1e-30;
      EXPECT_NEAR(y[size_t(r)], ref, tol) << dtype_name(t) << " row " << r;
    }
  }
}

TEST(KernelsQ32, DequantRowIsExact) {
  const int64_t cols = 32 * 129;
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    const auto W = random_weights(t, 3, cols, 51);
    std::vector<float> ref(static_cast<size_t>(cols)), got(static_cast<size_t>(cols));
    for (const char* isa : {"scalar", "avx2", "avx512"}) {
      const WeightKernels* k = weight_kernels(t, isa);
      if (!k) continue;
      for (int64_t r = 0; r < 3; ++r) {
        const uint8_t* row = W.data() + size_t(r) * q.row_bytes(cols);
        q.dequantize_row(row, ref.data(), cols);
        std::fill(got.begin(), got.end(), -1.0f);
        k->dequant_row(row, got.data(), cols);
        for (int64_t i = 0; i < cols; ++i)
          ASSERT_EQ(std::memcmp(&ref[size_t(i)], &got[size_t(i)], 4), 0)
              << label(t, isa) << " row " << r << " index " << i << ": expected " << ref[size_t(i)] << " got "
              << got[size_t(i)];
      }
    }
  }
}

struct Shape {
  int64_t rows, cols;
};
constexpr Shape kShapes[] = {{1, 32},    {3, 96},   {17, 4128}, {31, 96},  {67, 32},
                             {67, 4128}, {31, 4128}, {17, 160},  {2, 512}, {6, 1024}};

TEST(KernelsQ32, GemvMatchesScalar) {
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    const WeightKernels& ref_k = *weight_kernels(t, "scalar");
    for (const Shape s : kShapes) {
      const size_t row_bytes = q.row_bytes(s.cols) + (s.rows > 3 ? 38 : 0);  // padded rows too
      const auto W = random_weights(t, s.rows, s.cols, uint32_t(61 + s.rows + s.cols), row_bytes);
      const auto x = random_activations(s.cols, uint32_t(71 + s.cols));
      const auto xq = quantize_acts(ref_k, x);
      const auto xd = dequant_acts(xq);
      std::vector<float> ref(static_cast<size_t>(s.rows));
      ref_k.gemv(W.data(), row_bytes, xq.data(), ref.data(), 0, s.rows, s.cols);
      for (const char* isa : kSimdIsas) {
        const WeightKernels* k = weight_kernels(t, isa);
        if (!k) continue;
        for (const int64_t r0 : {int64_t(0), std::min<int64_t>(1, s.rows - 1), s.rows / 2}) {
          std::vector<float> y(static_cast<size_t>(s.rows), NAN);
          k->gemv(W.data(), row_bytes, xq.data(), y.data(), r0, s.rows, s.cols);
          for (int64_t r = 0; r < s.rows; ++r) {
            const std::string where = label(t, isa) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols) +
                                      " r0=" + std::to_string(r0) + " row " + std::to_string(r);
            if (r < r0) {
              ASSERT_TRUE(std::isnan(y[size_t(r)])) << where << ": written outside [r0, r1)";
              continue;
            }
            const double tol = 1e-5 * term_magnitude(t, W.data() + size_t(r) * row_bytes, s.cols, xd) + 1e-30;
            ASSERT_NEAR(y[size_t(r)], ref[size_t(r)], tol) << where;
          }
        }
      }
    }
  }
}

TEST(KernelsQ32, GemmMatchesScalar) {
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    const WeightKernels& ref_k = *weight_kernels(t, "scalar");
    for (const Shape s : kShapes) {
      const int64_t max_nx = 9;
      const size_t row_bytes = q.row_bytes(s.cols) + (s.rows > 3 ? 38 : 0);  // padded rows too
      const size_t x_stride = act_row_bytes(ActFormat::Q8x32, s.cols) + 40;
      const auto W = random_weights(t, s.rows, s.cols, uint32_t(81 + s.rows + s.cols), row_bytes);
      // Activation rows x_stride bytes apart (one spare block between rows).
      std::vector<uint8_t> X(x_stride * size_t(max_nx));
      std::vector<std::vector<float>> xd(static_cast<size_t>(max_nx));
      for (int64_t c = 0; c < max_nx; ++c) {
        const auto x = random_activations(s.cols, uint32_t(91 + c));
        const auto xq = quantize_acts(ref_k, x);
        std::memcpy(X.data() + size_t(c) * x_stride, xq.data(), xq.size() * sizeof(BlockQ8x32));
        xd[size_t(c)] = dequant_acts(xq);
      }
      const int64_t ldy = s.rows + 5;
      std::vector<float> ref(size_t(ldy * max_nx));
      ref_k.gemm(W.data(), row_bytes, X.data(), x_stride, max_nx, ref.data(), ldy, 0, s.rows, s.cols);
      for (const char* isa : kSimdIsas) {
        const WeightKernels* k = weight_kernels(t, isa);
        if (!k || !k->gemm) continue;
        for (int64_t nx = 1; nx <= max_nx; ++nx) {
          const int64_t r0 = nx % 2 ? 0 : std::min<int64_t>(nx / 2, s.rows - 1);
          std::vector<float> Y(size_t(ldy * max_nx), NAN);
          k->gemm(W.data(), row_bytes, X.data(), x_stride, nx, Y.data(), ldy, r0, s.rows, s.cols);
          for (int64_t c = 0; c < max_nx; ++c)
            for (int64_t r = 0; r < ldy; ++r) {
              const float got = Y[size_t(c * ldy + r)];
              const std::string where = label(t, isa) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols) +
                                        " nx=" + std::to_string(nx) + " r0=" + std::to_string(r0) + " Y[" +
                                        std::to_string(c) + "][" + std::to_string(r) + "]";
              if (c >= nx || r < r0 || r >= s.rows) {
                ASSERT_TRUE(std::isnan(got)) << where << ": written outside the output";
                continue;
              }
              const double tol =
                  1e-5 * term_magnitude(t, W.data() + size_t(r) * row_bytes, s.cols, xd[size_t(c)]) + 1e-30;
              ASSERT_NEAR(got, ref[size_t(c * ldy + r)], tol) << where;
            }
        }
      }
    }
  }
}

// n bytes that end exactly where an inaccessible page begins: a kernel that reads past the end of
// its last row crashes instead of reading someone else's heap.
class GuardedBytes {
 public:
  explicit GuardedBytes(size_t n) {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    len_ = (n + page - 1) / page * page + page;
    base_ = static_cast<uint8_t*>(mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base_ == MAP_FAILED) throw std::runtime_error("mmap failed");
    mprotect(base_ + len_ - page, page, PROT_NONE);
    data_ = base_ + len_ - page - n;
  }
  ~GuardedBytes() { munmap(base_, len_); }
  GuardedBytes(const GuardedBytes&) = delete;
  GuardedBytes& operator=(const GuardedBytes&) = delete;
  uint8_t* data() { return data_; }

 private:
  uint8_t* base_ = nullptr;
  uint8_t* data_ = nullptr;
  size_t len_ = 0;
};

TEST(KernelsQ32, NoReadPastTheLastRow) {
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    for (const Shape s : {Shape{1, 32}, Shape{3, 96}, Shape{9, 32}, Shape{2, 160}, Shape{5, 512}, Shape{7, 4128}}) {
      const size_t row_bytes = q.row_bytes(s.cols);
      const auto src = random_weights(t, s.rows, s.cols, 131);
      GuardedBytes W(src.size());
      std::memcpy(W.data(), src.data(), src.size());
      const auto x = random_activations(s.cols, 141);
      const auto xq = quantize_acts(*weight_kernels(t, "scalar"), x);
      GuardedBytes X(xq.size() * sizeof(BlockQ8x32));
      std::memcpy(X.data(), xq.data(), xq.size() * sizeof(BlockQ8x32));
      std::vector<float> ref(static_cast<size_t>(s.rows)), y(static_cast<size_t>(s.rows)), row(static_cast<size_t>(s.cols));
      weight_kernels(t, "scalar")->gemv(W.data(), row_bytes, X.data(), ref.data(), 0, s.rows, s.cols);
      for (const char* isa : kSimdIsas) {
        const WeightKernels* k = weight_kernels(t, isa);
        if (!k) continue;
        for (int64_t r0 = 0; r0 < s.rows; ++r0) {  // every range that ends at the last row
          k->gemv(W.data(), row_bytes, X.data(), y.data(), r0, s.rows, s.cols);
          EXPECT_FALSE(std::isnan(y[size_t(s.rows - 1)])) << label(t, isa) << " r0=" << r0;
        }
        if (k->gemm) {
          std::vector<float> Y(size_t(s.rows));
          k->gemm(W.data(), row_bytes, X.data(), xq.size() * sizeof(BlockQ8x32), 1, Y.data(), s.rows, 0, s.rows, s.cols);
          EXPECT_FALSE(std::isnan(Y[size_t(s.rows - 1)])) << label(t, isa);
        }
        k->dequant_row(W.data() + (s.rows - 1) * row_bytes, row.data(), s.cols);
      }
    }
  }
}

// Through matmul() as the engine calls it (threads split rows; n < 4 runs GEMV, n >= 4 the GEMM kernel).
TEST(KernelsQ32, MatmulUsesTheKernels) {
  const int64_t rows = 83, cols = 32 * 70;
  for (DType t : kTypes) {
    const QuantType& q = quant_type(t);
    const WeightKernels& ref_k = *weight_kernels(t, "scalar");
    const auto W = random_weights(t, rows, cols, 101);
    for (const int64_t n : {int64_t(1), int64_t(6)}) {
      std::vector<float> X;
      for (int64_t c = 0; c < n; ++c) {
        const auto x = random_activations(cols, uint32_t(111 + c));
        X.insert(X.end(), x.begin(), x.end());
      }
      std::vector<float> Y(size_t(n * rows), NAN);
      matmul(t, W.data(), q.row_bytes(cols), rows, cols, X.data(), n, Y.data(), 2);
      for (int64_t c = 0; c < n; ++c) {
        const std::vector<float> x(X.begin() + c * cols, X.begin() + (c + 1) * cols);
        const auto xq = quantize_acts(ref_k, x);
        const auto xd = dequant_acts(xq);
        std::vector<float> ref(static_cast<size_t>(rows));
        ref_k.gemv(W.data(), q.row_bytes(cols), xq.data(), ref.data(), 0, rows, cols);
        for (int64_t r = 0; r < rows; ++r) {
          // The SGEMM path (QFORGE_GEMM=sgemm) multiplies unquantized activations: allow for the
          // activation quantization error as well.
          const uint8_t* row = W.data() + size_t(r) * q.row_bytes(cols);
          const double tol = 1e-5 * term_magnitude(t, row, cols, xd) + activation_error_bound(t, row, cols, xq) + 1e-30;
          ASSERT_NEAR(Y[size_t(c * rows + r)], ref[size_t(r)], tol)
              << dtype_name(t) << " n=" << n << " Y[" << c << "][" << r << "]";
        }
      }
    }
  }
}

}  // namespace
