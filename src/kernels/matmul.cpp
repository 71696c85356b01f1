#include "kernels/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "kernels/kernels.h"

namespace qforge::kernels {

void set_blas_threads(int n_threads) {
  static int current = -1;
  if (current != n_threads) {
    openblas_set_num_threads(n_threads);
    current = n_threads;
  }
}

void matmul_f32(const float* W, int64_t rows, int64_t cols, const float* X, int64_t n, float* Y, int n_threads) {
  // Waking a second thread costs microseconds: not worth it for products this small (tiny models).
  if (rows * cols * n < kMinParallelWork) n_threads = 1;
  if (n >= 4) {
    set_blas_threads(n_threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(rows), int(cols), 1.0f, X, int(cols), W,
                int(cols), 0.0f, Y, int(rows));
    return;
  }
  const Table& k = table();
  // Split rows in blocks of 16 so each thread streams a contiguous part of W.
  const int64_t blocks = (rows + 15) / 16;
  const int nt = int(std::min<int64_t>(n_threads, blocks));
  for (int64_t t = 0; t < n; ++t) {
    const float* x = X + t * cols;
    float* y = Y + t * rows;
    if (nt <= 1) {
      k.gemv_f32(W, cols, x, y, 0, rows, cols);
      continue;
    }
#pragma omp parallel num_threads(nt)
    {
      const int id = omp_get_thread_num(), tn = omp_get_num_threads();
      const int64_t b0 = blocks * id / tn, b1 = blocks * (id + 1) / tn;
      const int64_t r0 = b0 * 16, r1 = std::min(rows, b1 * 16);
      if (r0 < r1) k.gemv_f32(W, cols, x, y + r0, r0, r1, cols);
    }
  }
}

}  // namespace qforge::kernels
