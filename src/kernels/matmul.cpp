#include "kernels/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/weight_kernels.h"
#include "qforge/error.h"
#include "qforge/quant.h"

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
    parallel_run(nt, [&](int id, int tn) {
      const int64_t b0 = blocks * id / tn, b1 = blocks * (id + 1) / tn;
      const int64_t r0 = b0 * 16, r1 = std::min(rows, b1 * 16);
      if (r0 < r1) k.gemv_f32(W, cols, x, y + r0, r0, r1, cols);
    });
  }
}

namespace {

// Rows of W per parallel work item: a multiple of 16 keeps each thread on whole cache lines of y.
constexpr int64_t kRowBlock = 16;

// Thread id's share of [0, rows) in kRowBlock blocks, of tn threads (default: of the enclosing
// OpenMP parallel region).
template <typename F>
void for_my_rows(int64_t rows, F&& f, int id = omp_get_thread_num(), int tn = omp_get_num_threads()) {
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  const int64_t b0 = blocks * id / tn, b1 = blocks * (id + 1) / tn;
  const int64_t r0 = b0 * kRowBlock, r1 = std::min(rows, b1 * kRowBlock);
  if (r0 < r1) f(r0, r1);
}

// Which prompt path runs for types that have both (QFORGE_GEMM=kernel|sgemm; benches compare them).
bool prefer_gemm_kernel() {
  static const bool v = [] {
    const char* e = std::getenv("QFORGE_GEMM");
    return !(e && std::string_view(e) == "sgemm");
  }();
  return v;
}

// Activation rows converted to the kernel's format, `stride` bytes apart.
const void* prepare_activations(const WeightKernels& k, const float* X, int64_t n, int64_t cols, size_t& stride,
                                std::vector<uint8_t>& buf, int n_threads) {
  if (k.act == ActFormat::F32) {
    stride = size_t(cols) * sizeof(float);
    return X;
  }
  if (cols % act_block_elems(k.act) != 0)
    fail("matmul: a row of {} weights is not a whole number of {}-value activation blocks", cols,
         act_block_elems(k.act));
  stride = act_row_bytes(k.act, cols);
  buf.resize(stride * size_t(n));
  const int nt = n * cols < kMinParallelWork / 8 ? 1 : int(std::min<int64_t>(n_threads, n));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t t = 0; t < n; ++t) k.quantize_act(X + t * cols, buf.data() + size_t(t) * stride, cols);
  return buf.data();
}

void matmul_dequant_sgemm(const WeightKernels& k, const uint8_t* W, size_t row_bytes, int64_t rows, int64_t cols,
                          const float* X, int64_t n, float* Y, int n_threads) {
  // Tiles of about 4 MiB of F32: converted once, then multiplied with all n activation rows.
  const int64_t tile = std::max<int64_t>(kRowBlock, (int64_t(1) << 20) / cols / kRowBlock * kRowBlock);
  thread_local std::vector<float> buf;
  buf.resize(size_t(std::min(tile, rows)) * size_t(cols));
  set_blas_threads(n_threads);
  for (int64_t r0 = 0; r0 < rows; r0 += tile) {
    const int64_t nr = std::min(tile, rows - r0);
    float* T = buf.data();
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t r = 0; r < nr; ++r) k.dequant_row(W + size_t(r0 + r) * row_bytes, T + r * cols, cols);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(nr), int(cols), 1.0f, X, int(cols), T, int(cols),
                0.0f, Y + r0, int(rows));
  }
}

}  // namespace

void matmul(DType dtype, const void* W_, size_t row_bytes, int64_t rows, int64_t cols, const float* X, int64_t n,
            float* Y, int n_threads) {
  if (dtype == DType::F32 && row_bytes == size_t(cols) * sizeof(float))
    return matmul_f32(static_cast<const float*>(W_), rows, cols, X, n, Y, n_threads);
  const WeightKernels* kp = weight_kernels(dtype);
  if (!kp) fail_unsupported("matmul: no kernel for {} weights", dtype_name(dtype));
  const WeightKernels& k = *kp;
  const auto* W = static_cast<const uint8_t*>(W_);
  if (rows * cols * n < kMinParallelWork) n_threads = 1;

  if (n >= kMinGemmRows && (!k.gemm || !prefer_gemm_kernel()))
    return matmul_dequant_sgemm(k, W, row_bytes, rows, cols, X, n, Y, n_threads);

  thread_local std::vector<uint8_t> act;
  size_t stride = 0;
  const auto* A = static_cast<const uint8_t*>(prepare_activations(k, X, n, cols, stride, act, n_threads));
  const int nt = int(std::min<int64_t>(n_threads, (rows + kRowBlock - 1) / kRowBlock));
  if (n >= kMinGemmRows) {
    // Chunks of activation rows: every chunk streams all of W once more, so chunks should be long,
    // but short enough that the chunk stays in cache while W passes. The integer formats size them
    // to 256 KiB. The F32 kernels work in column panels (only a panel of each row has to stay in
    // cache), so they take 64 rows whatever the row length: on Zen 4, F16 2048 x 5632 at n = 512
    // went from 80 to 96 GFLOP/s on 1 thread (180 to 190 on 2) against 8-row chunks, and 16 to 128
    // rows were all within 3% on 2048 x 2048 (bench_kernels_float, QF_CHUNK).
    const int64_t chunk = k.act == ActFormat::F32 ? 64 : std::max<int64_t>(8, int64_t(256 << 10) / int64_t(stride) / 8 * 8);
#pragma omp parallel num_threads(nt)
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
      const int64_t nc = std::min(chunk, n - c0);
      for_my_rows(rows, [&](int64_t r0, int64_t r1) {
        k.gemm(W, row_bytes, A + size_t(c0) * stride, stride, nc, Y + c0 * rows, rows, r0, r1, cols);
      });
    }
    return;
  }
  parallel_run(nt, [&](int id, int tn) {
    for (int64_t t = 0; t < n; ++t)
      for_my_rows(
          rows, [&](int64_t r0, int64_t r1) { k.gemv(W, row_bytes, A + size_t(t) * stride, Y + t * rows, r0, r1, cols); },
          id, tn);
  });
}

void matmul_group(const MatmulTarget* targets, int count, int64_t cols, const float* X, int64_t n, int n_threads) {
  constexpr int kMaxGroup = 4;
  const WeightKernels* ks[kMaxGroup] = {};
  bool grouped = count <= kMaxGroup && n < kMinGemmRows;
  int64_t work = 0;
  for (int i = 0; grouped && i < count; ++i) {
    ks[i] = targets[i].dtype == DType::F32 ? nullptr : weight_kernels(targets[i].dtype);
    grouped = ks[i] != nullptr;
    work += targets[i].rows * cols * n;
  }
  if (!grouped || work < kMinParallelWork || n_threads <= 1) {
    for (int i = 0; i < count; ++i) {
      const MatmulTarget& t = targets[i];
      matmul(t.dtype, t.W, t.row_bytes, t.rows, cols, X, n, t.Y, n_threads);
    }
    return;
  }
  // Activations once per format the kernels want (q4_K and q6_K share theirs).
  thread_local std::vector<uint8_t> act[kMaxGroup];
  const uint8_t* A[kMaxGroup] = {};
  size_t stride[kMaxGroup] = {};
  for (int i = 0; i < count; ++i) {
    int same = 0;
    while (same < i && ks[same]->act != ks[i]->act) ++same;
    if (same < i) {
      A[i] = A[same];
      stride[i] = stride[same];
    } else {
      A[i] = static_cast<const uint8_t*>(prepare_activations(*ks[i], X, n, cols, stride[i], act[i], n_threads));
    }
  }
  // Thread `id` takes the rows whose bytes fall in [total * id / nt, total * (id + 1) / nt) of the
  // matrices laid end to end, cut at kRowBlock rows (so y stays on whole cache lines per thread).
  int64_t total = 0, offset[kMaxGroup + 1] = {};
  for (int i = 0; i < count; ++i) offset[i + 1] = total += targets[i].rows * int64_t(targets[i].row_bytes);
  auto row_at = [&](int i, int64_t byte) {
    const MatmulTarget& t = targets[i];
    if (byte <= offset[i]) return int64_t(0);
    if (byte >= offset[i + 1]) return t.rows;
    const int64_t r = (byte - offset[i]) / int64_t(t.row_bytes);
    return std::clamp((r + kRowBlock / 2) / kRowBlock * kRowBlock, int64_t(0), t.rows);
  };
  parallel_run(n_threads, [&](int id, int tn) {
    const int64_t b0 = total * id / tn, b1 = total * (id + 1) / tn;
    for (int64_t tok = 0; tok < n; ++tok)
      for (int i = 0; i < count; ++i) {
        const int64_t r0 = row_at(i, b0), r1 = row_at(i, b1);
        const MatmulTarget& t = targets[i];
        if (r0 < r1)
          ks[i]->gemv(t.W, t.row_bytes, A[i] + size_t(tok) * stride[i], t.Y + tok * t.rows, r0, r1, cols);
      }
  });
}

void weight_row_to_f32(DType dtype, const void* row, float* y, int64_t cols) {
  if (dtype == DType::F32) {
    std::memcpy(y, row, size_t(cols) * sizeof(float));
  } else if (const WeightKernels* k = weight_kernels(dtype); k && k->dequant_row) {
    k->dequant_row(row, y, cols);
  } else if (dtype_info(dtype).block_elems > 1) {
    quant_type(dtype).dequantize_row(row, y, cols);
  } else {
    convert_to_f32(dtype, row, y, size_t(cols));
  }
}

}  // namespace qforge::kernels
