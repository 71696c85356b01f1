// kernels::matmul_group (Q, K, V or gate and up in one parallel step) gives what matmul gives on
// each matrix alone, for mixed storage types (q4_K, q6_K and q8_0 want different activation
// formats), row counts that are not multiples of the 16-row split unit, 1-3 activation rows and
// 1-3 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "qforge/dtype.h"
#include "qforge/quant.h"

using namespace qforge;
using namespace qforge::kernels;

namespace {

struct Matrix {
  DType dtype;
  int64_t rows;
  std::vector<uint8_t> bytes;
  std::vector<float> dequant;  // the stored weights as F32, for the error bound
  size_t row_bytes = 0;
};

Matrix make_matrix(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  Matrix m{t, rows, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> w(size_t(rows * cols));
  for (auto& v : w) v = nd(rng);
  if (t == DType::F16) {
    m.row_bytes = size_t(cols) * 2;
    m.bytes.resize(m.row_bytes * size_t(rows));
    auto* h = reinterpret_cast<uint16_t*>(m.bytes.data());
    for (size_t i = 0; i < w.size(); ++i) h[i] = f32_to_f16(w[i]);
    m.dequant.resize(w.size());
    convert_to_f32(t, m.bytes.data(), m.dequant.data(), w.size());
    return m;
  }
  const QuantType& q = quant_type(t);
  m.row_bytes = q.row_bytes(cols);
  m.bytes.resize(m.row_bytes * size_t(rows));
  m.dequant.resize(w.size());
  for (int64_t r = 0; r < rows; ++r) {
    q.quantize_row(w.data() + r * cols, m.bytes.data() + size_t(r) * m.row_bytes, cols, nullptr);
    q.dequantize_row(m.bytes.data() + size_t(r) * m.row_bytes, m.dequant.data() + r * cols, cols);
  }
  return m;
}

TEST(MatmulGroup, SameAsOneMatrixAtATime) {
  const int64_t cols = 2560;  // 10 super-blocks; with ~430 rows past the size that runs threaded
  std::vector<Matrix> ms;
  ms.push_back(make_matrix(DType::Q4_K, 301, cols, 1));
  ms.push_back(make_matrix(DType::Q6_K, 45, cols, 2));
  ms.push_back(make_matrix(DType::Q8_0, 83, cols, 3));
  ms.push_back(make_matrix(DType::F16, 17, cols, 4));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> x(size_t(3 * cols));
  for (auto& v : x) v = nd(rng);
  for (int count : {2, 3, 4})
    for (int64_t n : {1, 2, 3})
      for (int threads : {1, 2, 3}) {
        std::vector<std::vector<float>> got(ms.size()), want(ms.size());
        std::vector<MatmulTarget> targets;
        for (int i = 0; i < count; ++i) {
          const Matrix& m = ms[size_t(i)];
          got[size_t(i)].assign(size_t(n * m.rows), NAN);
          want[size_t(i)].assign(size_t(n * m.rows), NAN);
          targets.push_back({m.dtype, m.bytes.data(), m.row_bytes, m.rows, got[size_t(i)].data()});
          matmul(m.dtype, m.bytes.data(), m.row_bytes, m.rows, cols, x.data(), n, want[size_t(i)].data(), 1);
        }
        matmul_group(targets.data(), count, cols, x.data(), n, threads);
        for (int i = 0; i < count; ++i) {
          const Matrix& m = ms[size_t(i)];
          for (int64_t t = 0; t < n; ++t)
            for (int64_t r = 0; r < m.rows; ++r) {
              // Same kernel, same quantized activations: only the order of the final lane sums
              // may differ (4 rows at a time or one), so the bound is rounding of sum |w x|.
              double mag = 0;
              for (int64_t c = 0; c < cols; ++c) mag += std::fabs(double(m.dequant[size_t(r * cols + c)]) * x[size_t(t * cols + c)]);
              const float g = got[size_t(i)][size_t(t * m.rows + r)], w = want[size_t(i)][size_t(t * m.rows + r)];
              ASSERT_NEAR(g, w, 1e-5 * mag) << "matrix " << i << " (" << dtype_name(m.dtype) << ") of " << count
                                            << ", n " << n << ", threads " << threads << ": token " << t << " row " << r
                                            << " expected " << w << " actual " << g;
            }
        }
      }
}

}  // namespace
