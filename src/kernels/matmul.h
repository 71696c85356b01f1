// Threaded products of activations with weight matrices (the engine's hot path).
#pragma once
#include <cstddef>
#include <cstdint>

#include "qforge/dtype.h"

namespace qforge::kernels {

// Y[n, rows] = X[n, cols] * W[rows, cols]^T, W row-major F32.
// n == 1 (generation) runs the dispatched GEMV split by rows over n_threads: it is bound by the
// memory bandwidth of reading W once. Larger n (prompt processing) runs BLAS SGEMM.
void matmul_f32(const float* W, int64_t rows, int64_t cols, const float* X, int64_t n, float* Y, int n_threads);

// The same for W stored as `dtype` (F32, F16, BF16 or a quantized block type), rows row_bytes apart.
// Generation (n < kMinGemmRows) quantizes each activation row as the type's kernel wants and runs
// its GEMV split by rows over n_threads. Prompts run the type's GEMM kernel when it has one, else
// convert tiles of W to F32 and run SGEMM on them. Throws Unsupported for a type without kernels.
void matmul(DType dtype, const void* W, size_t row_bytes, int64_t rows, int64_t cols, const float* X, int64_t n,
            float* Y, int n_threads);

// One matrix of a matmul_group: Y[n, rows] = X[n, cols] * W^T, W stored as dtype, rows row_bytes apart.
struct MatmulTarget {
  DType dtype;
  const void* W;
  size_t row_bytes;
  int64_t rows;
  float* Y;
};

// Several matrices applied to the same activations X[n, cols] (Q, K and V; gate and up). For
// generation (n < kMinGemmRows) all of them run in one parallel region, the threads splitting
// their bytes evenly: one wait for the slowest thread instead of one per matrix, and small matrices
// (K and V of grouped-query attention) no longer cost a region of their own. Otherwise, or when a
// matrix has no weight kernel (F32), it is matmul() on each in turn.
void matmul_group(const MatmulTarget* targets, int count, int64_t cols, const float* X, int64_t n, int n_threads);

// One stored row of `cols` weights as F32 (embedding lookups).
void weight_row_to_f32(DType dtype, const void* row, float* y, int64_t cols);

// Activation rows from which the quantized GEMM kernel is used instead of GEMV per row.
constexpr int64_t kMinGemmRows = 4;

// Products with fewer multiply-adds than this run on one thread.
constexpr int64_t kMinParallelWork = int64_t(1) << 20;

// Sets the thread count the BLAS library uses (idempotent, cheap).
void set_blas_threads(int n_threads);

}  // namespace qforge::kernels
