// Threaded products of activations with weight matrices (the engine's hot path).
#pragma once
#include <cstdint>

namespace qforge::kernels {

// Y[n, rows] = X[n, cols] * W[rows, cols]^T, W row-major F32.
// n == 1 (generation) runs the dispatched GEMV split by rows over n_threads: it is bound by the
// memory bandwidth of reading W once. Larger n (prompt processing) runs BLAS SGEMM.
void matmul_f32(const float* W, int64_t rows, int64_t cols, const float* X, int64_t n, float* Y, int n_threads);

// Products with fewer multiply-adds than this run on one thread.
constexpr int64_t kMinParallelWork = int64_t(1) << 20;

// Sets the thread count the BLAS library uses (idempotent, cheap).
void set_blas_threads(int n_threads);

}  // namespace qforge::kernels
