// The FP32 forward pass for the Llama family and GPT-2, with a KV cache.
// Prompt tokens are processed as a batch (matrix-matrix products); generation one token at a
// time (matrix-vector products, bound by reading the weights from memory).
#include "qforge/session.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <initializer_list>
#include <thread>
#include <utility>

#include "core/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/matmul.h"
#include "model/rope.h"
#include "qforge/error.h"

namespace qforge {

namespace {

void rms_norm(const float* x, const Weight& w, float* out, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float scale = float(1.0 / std::sqrt(ss / double(n) + eps));
  const float* g = w.f32();
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * g[i];
}

void layer_norm(const float* x, const Weight& w, const Weight& b, float* out, int64_t n, float eps) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= double(n);
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= double(n);
  const double scale = 1.0 / std::sqrt(var + eps);
  const float* g = w.f32();
  const float* bb = b.f32();
  for (int64_t i = 0; i < n; ++i) out[i] = float((x[i] - mean) * scale) * g[i] + bb[i];
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
inline float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}
inline float gelu_erf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f)); }

void add_bias(float* y, const Weight& b, int64_t n, int64_t dim) {
  if (!b) return;
  const float* bb = b.f32();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < dim; ++i) y[t * dim + i] += bb[i];
}

}  // namespace

struct Session::Impl {
  const Model& m;
  const ModelConfig& c;
  int n_ctx, n_threads, n_batch;
  int64_t E, Q, KV, F;
  Rope rope;
  std::vector<float> k_cache, v_cache;  // [layer][pos][KV]
  std::vector<float> x, xb, q, k, v, att, hb, hb2;
  std::vector<float> scores;  // [thread][n_ctx]
  std::vector<float> att_scores;  // [thread][n][n_kv], prompt attention
  std::vector<float> logits;  // [n_out][vocab]
  int n_logits = 0;

  Impl(const Model& model, int ctx, int threads, int batch)
      : m(model), c(model.cfg), n_ctx(ctx), n_threads(threads), n_batch(batch), rope(model.cfg) {
    E = c.n_embd;
    Q = int64_t(c.n_head) * c.head_dim;
    KV = int64_t(c.n_head_kv) * c.head_dim;
    F = c.n_ff;
    const size_t cache = size_t(c.n_layer) * size_t(n_ctx) * size_t(KV);
    k_cache.assign(cache, 0.0f);
    v_cache.assign(cache, 0.0f);
    const size_t B = size_t(n_batch);
    x.resize(B * E);
    xb.resize(B * std::max(E, Q));
    q.resize(B * Q);
    k.resize(B * KV);
    v.resize(B * KV);
    att.resize(B * Q);
    hb.resize(B * F);
    hb2.resize(B * F);
    scores.resize(size_t(n_threads) * size_t(n_ctx));
  }

  std::function<void(const Weight&, const float*, int64_t)> on_matmul_input;

  void mm(const Weight& w, const float* in, int64_t n, float* out) {
    if (on_matmul_input) on_matmul_input(w, in, n);
    kernels::matmul(w.dtype, w.data, size_t(w.row_bytes()), w.rows, w.cols, in, n, out, n_threads);
  }
  // Matrices that read the same input (Q, K, V; gate, up) in one go: see kernels::matmul_group.
  void mm_group(std::initializer_list<std::pair<const Weight*, float*>> ws, const float* in, int64_t n) {
    kernels::MatmulTarget t[4];
    int count = 0;
    for (const auto& [w, out] : ws) {
      if (on_matmul_input) on_matmul_input(*w, in, n);
      t[count++] = {w->dtype, w->data, size_t(w->row_bytes()), w->rows, out};
    }
    kernels::matmul_group(t, count, ws.begin()->first->cols, in, n, n_threads);
  }

  // Causal attention of n new tokens (positions p0..p0+n-1) against the cache of layer il.
  void attention(int il, int p0, int64_t n) {
    if (n >= 8) return attention_batched(il, p0, n);
    const int64_t work = n * c.n_head;
    // A head at position p costs ~p * 40 ns here (dot, exp, axpy over head_dim = 64): spreading the
    // heads pays for itself from a few dozen positions on. At 4096 head-positions (the old
    // threshold) a TinyLlama token spent ~8% of its time in serial attention.
    const int nt = work * (p0 + n) > 512 ? n_threads : 1;
    std::atomic<int64_t> next{0};
    parallel_run(nt, [&](int id, int) {
      for (int64_t w0; (w0 = next.fetch_add(4, std::memory_order_relaxed)) < work;)
        for (int64_t w = w0; w < std::min(w0 + 4, work); ++w) attend_head(il, p0, w, scores.data() + size_t(id) * n_ctx);
    });
  }

  // Attention of one (token, head) pair of a small batch; sc: n_ctx floats of scratch.
  void attend_head(int il, int p0, int64_t w, float* sc) {
    const int hd = c.head_dim, group = c.n_head / c.n_head_kv;
    const float scale = 1.0f / std::sqrt(float(hd));
    const float* kc = k_cache.data() + size_t(il) * n_ctx * KV;
    const float* vc = v_cache.data() + size_t(il) * n_ctx * KV;
    const auto& kt = kernels::table();
    const int64_t t = w / c.n_head;
    const int h = int(w % c.n_head);
    const int kvh = h / group;
    const int pos = p0 + int(t);
    const float* qv = q.data() + t * Q + int64_t(h) * hd;
    float mx = -INFINITY;
    for (int j = 0; j <= pos; ++j) {
      sc[j] = kt.dot_f32(qv, kc + int64_t(j) * KV + int64_t(kvh) * hd, hd) * scale;
      mx = std::max(mx, sc[j]);
    }
    double sum = 0;
    for (int j = 0; j <= pos; ++j) {
      sc[j] = std::exp(sc[j] - mx);
      sum += sc[j];
    }
    const float inv = float(1.0 / sum);
    float* out = att.data() + t * Q + int64_t(h) * hd;
    std::fill(out, out + hd, 0.0f);
    for (int j = 0; j <= pos; ++j) kt.axpy_f32(sc[j] * inv, vc + int64_t(j) * KV + int64_t(kvh) * hd, out, hd);
  }

  // Prompt attention as two matrix products per head (S = Q K^T, O = softmax(S) V), heads spread
  // over the threads; inside the parallel region OpenBLAS runs single-threaded.
  void attention_batched(int il, int p0, int64_t n) {
    const int hd = c.head_dim, group = c.n_head / c.n_head_kv;
    const int64_t n_kv = p0 + n;  // keys visible to the last token
    const float scale = 1.0f / std::sqrt(float(hd));
    const float* kc = k_cache.data() + size_t(il) * n_ctx * KV;
    const float* vc = v_cache.data() + size_t(il) * n_ctx * KV;
    const size_t per_thread = size_t(n) * size_t(n_kv);
    if (att_scores.size() < per_thread * size_t(n_threads)) att_scores.resize(per_thread * size_t(n_threads));
    const int nt = int64_t(n) * n_kv * hd * c.n_head < kernels::kMinParallelWork ? 1 : n_threads;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int h = 0; h < c.n_head; ++h) {
      const int kvh = h / group;
      float* S = att_scores.data() + per_thread * size_t(omp_get_thread_num());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(n_kv), hd, scale, q.data() + int64_t(h) * hd,
                  int(Q), kc + int64_t(kvh) * hd, int(KV), 0.0f, S, int(n_kv));
      for (int64_t t = 0; t < n; ++t) {
        float* row = S + t * n_kv;
        const int64_t visible = p0 + t + 1;  // causal mask
        float mx = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) mx = std::max(mx, row[j]);
        double sum = 0;
        for (int64_t j = 0; j < visible; ++j) {
          row[j] = std::exp(row[j] - mx);
          sum += row[j];
        }
        const float inv = float(1.0 / sum);
        for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
        std::fill(row + visible, row + n_kv, 0.0f);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), hd, int(n_kv), 1.0f, S, int(n_kv),
                  vc + int64_t(kvh) * hd, int(KV), 0.0f, att.data() + int64_t(h) * hd, int(Q));
    }
  }

  // Threads for the per-token work between the matrix products (norms, rope, residuals, SwiGLU):
  // serial, it was ~5% of a 512-token prompt on 2 threads while the other thread waited. Each token's
  // values are computed exactly as before, whichever thread does it.
  int elementwise_threads(int64_t n) const { return n >= 8 ? n_threads : 1; }

  void norm(const float* in, const Weight& w, const Weight& b, float* out, int64_t n) {
#pragma omp parallel for num_threads(elementwise_threads(n)) schedule(static)
    for (int64_t t = 0; t < n; ++t) {
      if (c.arch == Arch::GPT2)
        layer_norm(in + t * E, w, b, out + t * E, E, c.norm_eps);
      else
        rms_norm(in + t * E, w, out + t * E, E, c.norm_eps);
    }
  }

  void layer(int il, int p0, int64_t n) {
    const LayerWeights& L = m.layers[size_t(il)];
    norm(x.data(), L.attn_norm, L.attn_norm_b, xb.data(), n);
    mm_group({{&L.wq, q.data()}, {&L.wk, k.data()}, {&L.wv, v.data()}}, xb.data(), n);
    add_bias(q.data(), L.bq, n, Q);
    add_bias(k.data(), L.bk, n, KV);
    add_bias(v.data(), L.bv, n, KV);
    float* kc = k_cache.data() + size_t(il) * n_ctx * KV;
    float* vc = v_cache.data() + size_t(il) * n_ctx * KV;
    const int nt = elementwise_threads(n);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < n; ++t) {
      if (c.arch == Arch::Llama) {
        rope.apply(q.data() + t * Q, c.n_head, p0 + int(t));
        rope.apply(k.data() + t * KV, c.n_head_kv, p0 + int(t));
      }
      std::copy_n(k.data() + t * KV, KV, kc + (p0 + t) * KV);
      std::copy_n(v.data() + t * KV, KV, vc + (p0 + t) * KV);
    }
    attention(il, p0, n);
    mm(L.wo, att.data(), n, xb.data());
    add_bias(xb.data(), L.bo, n, E);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n * E; ++i) x[size_t(i)] += xb[size_t(i)];

    norm(x.data(), L.ffn_norm, L.ffn_norm_b, xb.data(), n);
    if (c.arch == Arch::GPT2) {
      mm(L.w_up, xb.data(), n, hb.data());
      add_bias(hb.data(), L.b_up, n, F);
      const bool tanh_approx = c.act == Activation::GeluTanh;
      for (int64_t i = 0; i < n * F; ++i) hb[size_t(i)] = tanh_approx ? gelu_tanh(hb[size_t(i)]) : gelu_erf(hb[size_t(i)]);
    } else {
      mm_group({{&L.w_gate, hb.data()}, {&L.w_up, hb2.data()}}, xb.data(), n);
      add_bias(hb.data(), L.b_gate, n, F);
      add_bias(hb2.data(), L.b_up, n, F);
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t i = 0; i < n * F; ++i) hb[size_t(i)] = silu(hb[size_t(i)]) * hb2[size_t(i)];
    }
    mm(L.w_down, hb.data(), n, xb.data());
    add_bias(xb.data(), L.b_down, n, E);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n * E; ++i) x[size_t(i)] += xb[size_t(i)];
  }

  // Runs one batch of n tokens starting at position p0; writes logits of the last `n_out` tokens
  // of the batch (n or 1) to dst.
  void forward(const int* tokens, int64_t n, int p0, bool all, float* dst) {
    const Weight& emb = m.tok_embd;
    for (int64_t t = 0; t < n; ++t) {
      kernels::weight_row_to_f32(emb.dtype, emb.row(tokens[t]), x.data() + t * E, E);
      if (m.pos_embd) {
        float* pe = xb.data();  // free until the first layer
        kernels::weight_row_to_f32(m.pos_embd.dtype, m.pos_embd.row(p0 + t), pe, E);
        for (int64_t i = 0; i < E; ++i) x[size_t(t * E + i)] += pe[i];
      }
    }
    for (int il = 0; il < c.n_layer; ++il) layer(il, p0, n);
    if (!dst) return;  // an intermediate batch whose logits nobody asked for
    const int64_t first = all ? 0 : n - 1, n_out = n - first;
    norm(x.data() + first * E, m.out_norm, m.out_norm_b, xb.data(), n_out);
    mm(m.output, xb.data(), n_out, dst);
  }
};

Session::Session(const Model& model, SessionOptions opt) : model_(model) {
  const auto& c = model.cfg;
  n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : c.max_ctx;
  if (n_ctx_ > c.max_ctx && c.arch == Arch::GPT2)
    fail("session: context {} is longer than the model's {} learned positions", n_ctx_, c.max_ctx);
  if (n_ctx_ <= 0) fail("session: context size must be positive, got {}", n_ctx_);
  n_threads_ = opt.n_threads > 0 ? opt.n_threads : int(std::max(1u, std::thread::hardware_concurrency()));
  n_batch_ = std::clamp(opt.n_batch, 1, n_ctx_);
  impl_ = std::make_unique<Impl>(model, n_ctx_, n_threads_, n_batch_);
  impl_->on_matmul_input = std::move(opt.on_matmul_input);
}

Session::~Session() = default;

uint64_t Session::kv_cache_bytes() const { return uint64_t(impl_->k_cache.size() + impl_->v_cache.size()) * 4; }

void Session::eval(std::span<const int> tokens, bool all_logits) {
  const int64_t n = int64_t(tokens.size());
  if (n == 0) fail("session: eval called with no tokens");
  if (n_past_ + n > n_ctx_)
    fail("session: context overflow: {} tokens already in context + {} new > context size {}", n_past_, n, n_ctx_);
  const int V = model_.cfg.vocab_size;
  for (int64_t i = 0; i < n; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= V)
      fail("session: token id {} (input position {}) is out of range for vocabulary size {}", tokens[size_t(i)], i, V);
  auto& I = *impl_;
  I.n_logits = int(all_logits ? n : 1);
  I.logits.resize(size_t(I.n_logits) * size_t(V));
  for (int64_t b = 0; b < n; b += n_batch_) {
    const int64_t nb = std::min<int64_t>(n_batch_, n - b);
    const bool last_batch = b + nb == n;
    if (!all_logits && !last_batch) {
      I.forward(tokens.data() + b, nb, n_past_, false, nullptr);
    } else {
      float* dst = I.logits.data() + (all_logits ? size_t(b) * size_t(V) : 0);
      I.forward(tokens.data() + b, nb, n_past_, all_logits, dst);
    }
    n_past_ += int(nb);
  }
}

const float* Session::logits(int i) const {
  const auto& I = *impl_;
  if (i < 0) i = I.n_logits + i;
  if (i < 0 || i >= I.n_logits) fail("session: logits({}) requested but only {} rows are kept", i, I.n_logits);
  return I.logits.data() + size_t(i) * size_t(model_.cfg.vocab_size);
}

}  // namespace qforge
