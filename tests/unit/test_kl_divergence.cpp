// KL divergence: the accumulator against a direct double computation, a model against itself, the
// base-file row codec's precision and its effect on KL (random 32000-token rows and real model
// logits), the base file's round trip, and hostile or mismatched files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "qforge/error.h"
#include "qforge/kl_divergence.h"
#include "qforge/mmap.h"
#include "qforge/model.h"
#include "qforge/model_compare.h"
#include "qforge/perplexity.h"
#include "test_util.h"

namespace qforge {
namespace {

using Rows = std::vector<std::vector<float>>;

// n rows of n_vocab logits ~ N(0, sigma), and a copy with N(0, noise) added (a "quantized" model).
Rows random_rows(int n, int n_vocab, double sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, float(sigma));
  Rows r(static_cast<size_t>(n), std::vector<float>(size_t(n_vocab)));
  for (auto& row : r)
    for (auto& x : row) x = d(rng);
  return r;
}
Rows perturbed(const Rows& base, double noise, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, float(noise));
  Rows r = base;
  for (auto& row : r)
    for (auto& x : row) x += d(rng);
  return r;
}
std::vector<int> random_targets(int n, int n_vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int> t(static_cast<size_t>(n));
  for (auto& x : t) x = int(rng() % uint32_t(n_vocab));
  return t;
}

// Straightforward double computation, written independently of the accumulator.
std::vector<double> softmax(const std::vector<float>& l) {
  double mx = -INFINITY;
  for (float x : l) mx = std::max(mx, double(x));
  std::vector<double> p(l.size());
  double s = 0;
  for (size_t i = 0; i < l.size(); ++i) s += p[i] = std::exp(double(l[i]) - mx);
  for (auto& x : p) x /= s;
  return p;
}
double direct_kl(const std::vector<float>& base, const std::vector<float>& test) {
  const auto p = softmax(base), q = softmax(test);
  double kl = 0;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] > 0) kl += p[i] * std::log(p[i] / q[i]);
  return kl;
}
double percentile_of(std::vector<double> v, double f) {
  std::sort(v.begin(), v.end());
  const double pos = f * double(v.size() - 1);
  const size_t i = size_t(std::floor(pos));
  return i + 1 < v.size() ? v[i] + (pos - double(i)) * (v[i + 1] - v[i]) : v[i];
}

TEST(KlAccumulator, MatchesDirectDoubleComputation) {
  const int n = 301, V = 1000;
  const Rows base = random_rows(n, V, 3.0, 1), test = perturbed(base, 0.3, 2);
  const std::vector<int> next = random_targets(n, V, 3);
  KlAccumulator acc(V);
  std::vector<double> kls, nll, nll_b, dp;
  int same_top = 0;
  for (int i = 0; i < n; ++i) {
    const double got = acc.add_logits(base[size_t(i)].data(), test[size_t(i)].data(), next[size_t(i)]);
    const double want = direct_kl(base[size_t(i)], test[size_t(i)]);
    EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, want)) << "row " << i;
    kls.push_back(want);
    const auto p = softmax(base[size_t(i)]), q = softmax(test[size_t(i)]);
    nll.push_back(-std::log(q[size_t(next[size_t(i)])]));
    nll_b.push_back(-std::log(p[size_t(next[size_t(i)])]));
    dp.push_back(q[size_t(next[size_t(i)])] - p[size_t(next[size_t(i)])]);
    same_top += std::max_element(p.begin(), p.end()) - p.begin() == std::max_element(q.begin(), q.end()) - q.begin();
  }
  const KlStats s = acc.stats();
  auto mean = [](const std::vector<double>& v) {
    double t = 0;
    for (double x : v) t += x;
    return t / double(v.size());
  };
  auto se = [&](const std::vector<double>& v) {
    const double m = mean(v);
    double t = 0;
    for (double x : v) t += (x - m) * (x - m);
    return std::sqrt(t / double(v.size()) / double(v.size() - 1));
  };
  std::vector<double> dnll(nll.size()), dp2(dp.size());
  for (size_t i = 0; i < nll.size(); ++i) dnll[i] = nll[i] - nll_b[i], dp2[i] = dp[i] * dp[i];
  const double tol = 1e-10;
  EXPECT_EQ(s.tokens, n);
  EXPECT_NEAR(s.kl_mean, mean(kls), tol);
  EXPECT_NEAR(s.kl_stderr, se(kls), tol);
  EXPECT_NEAR(s.kl_median, percentile_of(kls, 0.5), tol);
  EXPECT_NEAR(s.kl_p90, percentile_of(kls, 0.9), tol);
  EXPECT_NEAR(s.kl_p99, percentile_of(kls, 0.99), tol);
  EXPECT_NEAR(s.kl_max, *std::max_element(kls.begin(), kls.end()), tol);
  EXPECT_NEAR(s.kl_min, *std::min_element(kls.begin(), kls.end()), tol);
  EXPECT_NEAR(s.ppl, std::exp(mean(nll)), tol * s.ppl);
  EXPECT_NEAR(s.ppl_stderr, std::exp(mean(nll)) * se(nll), tol * s.ppl);
  EXPECT_NEAR(s.ppl_base, std::exp(mean(nll_b)), tol * s.ppl_base);
  EXPECT_NEAR(s.ln_ppl_ratio, mean(dnll), tol);
  EXPECT_NEAR(s.ln_ppl_ratio_stderr, se(dnll), tol);
  EXPECT_NEAR(s.ppl_ratio, std::exp(mean(dnll)), tol);
  EXPECT_NEAR(s.ppl_diff, std::exp(mean(nll)) - std::exp(mean(nll_b)), tol * s.ppl);
  EXPECT_NEAR(s.top1_agreement, double(same_top) / n, 1e-15);
  EXPECT_LT(s.top1_agreement, 1.0);  // the noise is large enough to flip some
  EXPECT_NEAR(s.dp_mean, mean(dp), tol);
  EXPECT_NEAR(s.dp_rms, std::sqrt(mean(dp2)), tol);
  EXPECT_NEAR(s.dp_median, percentile_of(dp, 0.5), tol);
  // The uncertainty of PPL - PPL_base by the delta method, from the covariance of the two NLLs.
  double cov = 0;
  for (size_t i = 0; i < nll.size(); ++i) cov += (nll[i] - mean(nll)) * (nll_b[i] - mean(nll_b));
  cov /= double(n) * double(n - 1);
  const double a = s.ppl * se(nll), b = s.ppl_base * se(nll_b);
  EXPECT_NEAR(s.ppl_diff_stderr, std::sqrt(a * a + b * b - 2 * s.ppl * s.ppl_base * cov), 1e-8);
}

TEST(KlAccumulator, ModelAgainstItselfIsExactlyZero) {
  const int n = 50, V = 777;
  const Rows rows = random_rows(n, V, 5.0, 4);
  const std::vector<int> next = random_targets(n, V, 5);
  KlAccumulator acc(V);
  for (int i = 0; i < n; ++i)
    EXPECT_EQ(acc.add_logits(rows[size_t(i)].data(), rows[size_t(i)].data(), next[size_t(i)]), 0.0);
  const KlStats s = acc.stats();
  EXPECT_EQ(s.kl_mean, 0.0);
  EXPECT_EQ(s.kl_max, 0.0);
  EXPECT_EQ(s.top1_agreement, 1.0);
  EXPECT_EQ(s.ppl, s.ppl_base);
  EXPECT_EQ(s.ln_ppl_ratio, 0.0);
  EXPECT_EQ(s.ln_ppl_ratio_stderr, 0.0);
  EXPECT_EQ(s.dp_rms, 0.0);
  EXPECT_LT(s.ppl_diff_stderr, 1e-6 * s.ppl);
}

TEST(KlAccumulator, MergeEqualsOneAccumulator) {
  const int n = 40, V = 300;
  const Rows base = random_rows(n, V, 2.0, 6), test = perturbed(base, 0.5, 7);
  const std::vector<int> next = random_targets(n, V, 8);
  KlAccumulator all(V), first(V), second(V);
  for (int i = 0; i < n; ++i) {
    all.add_logits(base[size_t(i)].data(), test[size_t(i)].data(), next[size_t(i)]);
    (i < n / 2 ? first : second).add_logits(base[size_t(i)].data(), test[size_t(i)].data(), next[size_t(i)]);
  }
  first.merge(second);
  const KlStats a = all.stats(), b = first.stats();
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_NEAR(a.kl_mean, b.kl_mean, 1e-14);
  EXPECT_EQ(a.kl_median, b.kl_median);
  EXPECT_EQ(a.kl_p99, b.kl_p99);
  EXPECT_NEAR(a.ppl, b.ppl, 1e-12 * a.ppl);
  EXPECT_EQ(a.top1_agreement, b.top1_agreement);
  KlAccumulator other(V + 1);
  EXPECT_THROW(first.merge(other), Error);
  EXPECT_THROW(all.add_logits(base[0].data(), test[0].data(), V), Error);
}

// ---- row codec ----------------------------------------------------------------------------------

// Encodes and decodes a row; returns the decoded log-probs and the floor.
std::vector<float> round_trip(const std::vector<float>& logits, float* floor) {
  const int V = int(logits.size());
  std::vector<uint16_t> row(size_t(kl_row_words(V)), 0xFFFF);
  encode_log_prob_row(logits.data(), V, row.data());
  if (V % 2) {
    EXPECT_EQ(row.back(), 0) << "pad word";
  }
  std::vector<float> lp(static_cast<size_t>(V));
  *floor = decode_log_prob_row(row.data(), V, lp.data(), "test row");
  return lp;
}

TEST(KlRowCodec, WithinHalfAStep) {
  for (int V : {512, 32000}) {
    const Rows rows = random_rows(20, V, V == 512 ? 2.0 : 4.0, 9);
    for (const auto& l : rows) {
      const auto p = softmax(l);
      float floor;
      const auto lp = round_trip(l, &floor);
      double mx = -INFINITY, mn = INFINITY;
      for (float x : l) mx = std::max(mx, double(x)), mn = std::min(mn, double(x));
      const double range = std::min(16.0, mx - mn), half_step = range / 65535 / 2;
      for (int v = 0; v < V; ++v) {
        const double exact = std::log(p[size_t(v)]);
        if (lp[size_t(v)] > floor) {
          EXPECT_NEAR(lp[size_t(v)], exact, half_step + 2e-6) << "V " << V << " token " << v;
        } else {
          EXPECT_LE(exact, double(floor) + half_step + 2e-6) << "V " << V << " token " << v;
        }
      }
      if (V == 32000) {
        EXPECT_GT(floor, -INFINITY) << "sigma 4 over 32000 tokens spans more than 16 nats";
      }
    }
  }
}

TEST(KlRowCodec, EdgeRows) {
  float floor;
  // All logits equal: scale 0, every token log(1/V).
  auto lp = round_trip(std::vector<float>(7, 1.5f), &floor);
  EXPECT_EQ(floor, -INFINITY);
  for (float x : lp) EXPECT_NEAR(x, -std::log(7.0), 1e-6);
  // One token.
  lp = round_trip({3.0f}, &floor);
  EXPECT_NEAR(lp[0], 0.0, 1e-6);
  // Huge spread: the top stays exact, the rest falls to the floor.
  lp = round_trip({0.0f, -100.0f, -1000.0f, 50.0f, -1e30f}, &floor);
  EXPECT_NEAR(lp[3], 0.0, 1e-5);
  EXPECT_EQ(lp[0], floor);
  EXPECT_EQ(lp[4], floor);
  // The scored token 40 nats below the top: stored exactly when named (the row is widened for it),
  // only as the floor otherwise; the tokens between stay on their own levels.
  const std::vector<float> deep = {10.0f, 0.0f, -30.0f, -5.0f, -100.0f};
  const auto exact = softmax(deep);
  std::vector<uint16_t> enc(size_t(kl_row_words(5)));
  std::vector<float> dec(5);
  encode_log_prob_row(deep.data(), 5, enc.data());
  floor = decode_log_prob_row(enc.data(), 5, dec.data(), "row");
  EXPECT_EQ(dec[2], floor);
  encode_log_prob_row(deep.data(), 5, enc.data(), /*keep_token=*/2);
  floor = decode_log_prob_row(enc.data(), 5, dec.data(), "row");
  EXPECT_EQ(enc[4 + 2], 1) << "the kept token sits on level 1";
  EXPECT_NEAR(dec[2], std::log(exact[2]), 40.0 / 65535);
  EXPECT_LT(floor, dec[2]);
  EXPECT_EQ(dec[4], floor);
  for (int v : {0, 1, 3}) EXPECT_NEAR(dec[size_t(v)], std::log(exact[size_t(v)]), 40.0 / 65535) << v;
  // A corrupt row header is an error naming the row.
  std::vector<uint16_t> row(size_t(kl_row_words(4)), 0);
  const float nan = NAN;
  std::memcpy(row.data(), &nan, 4);
  std::vector<float> out(4);
  try {
    decode_log_prob_row(row.data(), 4, out.data(), "row 7");
    ADD_FAILURE() << "NaN scale accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 7"), std::string::npos) << e.what();
  }
  const float scale = 1e-5f, min_lp = -1000.0f;
  std::memcpy(row.data(), &scale, 4);
  std::memcpy(row.data() + 2, &min_lp, 4);
  EXPECT_THROW(decode_log_prob_row(row.data(), 4, out.data(), "row"), Error);
}

struct KlError {
  double mean_diff = 0, max_diff = 0, exact_mean = 0;
  double ppl_base_exact = 0, ppl_base_file = 0;
};
// KL through the base-file codec (encode, decode, add_log_probs) against the exact KL (add_logits).
KlError file_kl_error(const Rows& base, const Rows& test, const std::vector<int>& next = {}) {
  const int V = int(base[0].size());
  KlAccumulator exact(V), via_file(V);
  KlError e;
  std::vector<uint16_t> row(size_t(kl_row_words(V)));
  std::vector<float> lp(static_cast<size_t>(V));
  for (size_t i = 0; i < base.size(); ++i) {
    const int t = next.empty() ? 0 : next[i];
    encode_log_prob_row(base[i].data(), V, row.data(), t);
    const float floor = decode_log_prob_row(row.data(), V, lp.data(), "row");
    const double a = exact.add_logits(base[i].data(), test[i].data(), t);
    const double b = via_file.add_log_probs(lp.data(), floor, test[i].data(), t);
    EXPECT_GE(b, -1e-15);
    e.max_diff = std::max(e.max_diff, std::fabs(a - b));
  }
  e.exact_mean = exact.stats().kl_mean;
  e.mean_diff = via_file.stats().kl_mean - e.exact_mean;
  e.ppl_base_exact = exact.stats().ppl_base;
  e.ppl_base_file = via_file.stats().ppl_base;
  EXPECT_EQ(exact.stats().top1_agreement, via_file.stats().top1_agreement);
  return e;
}

TEST(KlRowCodec, FileKlErrorOnRandomRows) {
  // sigma 4 over 32000 tokens: half the vocabulary lies below the 16-nat floor, a hard case for the
  // tail; random scored tokens are mostly down there too (the rows get widened for them).
  const Rows base = random_rows(40, 32000, 4.0, 10);
  const KlError self = file_kl_error(base, base, random_targets(40, 32000, 17));
  EXPECT_LT(self.max_diff, 1e-7);
  EXPECT_NEAR(self.ppl_base_file, self.ppl_base_exact, 1e-5 * self.ppl_base_exact);
  for (double noise : {0.02, 0.1, 0.5}) {
    const KlError e = file_kl_error(base, perturbed(base, noise, 11));
    EXPECT_LT(std::fabs(e.mean_diff), 5e-5) << "noise " << noise << ", exact KL " << e.exact_mean;
    EXPECT_LT(e.max_diff, 1e-4) << "noise " << noise << ", exact KL " << e.exact_mean;
  }
}

// Logits of a real model at the scored positions of the first chunks of TinyStories.
Rows real_rows(const std::string& model_dir, int n_ctx, int n_chunks, std::vector<int>* next = nullptr) {
  auto m = load_model(test::shared(model_dir));
  const std::string text = read_text_file(test::shared("text/tinystories/TinyStories-valid-1M.txt"));
  const std::vector<int> tokens = m->tokenizer->encode(text.substr(0, 20000), true);
  PerplexityOptions po;
  po.n_ctx = n_ctx;
  po.n_chunks = n_chunks;
  po.n_threads = 2;
  Rows rows;
  po.on_scored_row = [&](int, int, const float* l, int t) {
    rows.emplace_back(l, l + m->cfg.vocab_size);
    if (next) next->push_back(t);
  };
  compute_perplexity(*m, tokens, po);
  return rows;
}

TEST(KlRowCodec, FileKlErrorOnRealLogits) {
  // Two real models with the same tokenizer: the 7M model as the base, stories260K as the test,
  // and the 7M model against a slightly perturbed copy of itself (KL the size a good quantization has).
  std::vector<int> next;
  const Rows big = real_rows("models/tinystories-llama-7M-hf", 128, 2, &next);
  const Rows small = real_rows("models/stories260K-hf", 128, 2);
  ASSERT_EQ(big.size(), 126u);
  const KlError self = file_kl_error(big, big, next);
  EXPECT_LT(self.max_diff, 1e-7);
  EXPECT_NEAR(self.ppl_base_file, self.ppl_base_exact, 1e-5 * self.ppl_base_exact);
  const KlError models = file_kl_error(big, small);
  EXPECT_GT(models.exact_mean, 0.1);
  // Different models differ below the 16-nat floor too, which the file can not show: here that is
  // about 2.5e-5 nats on a KL of 0.9 (the base's tail terms p log(p/q) the format drops).
  EXPECT_LT(std::fabs(models.mean_diff), 1e-4) << "exact KL " << models.exact_mean;
  EXPECT_LT(models.max_diff, 1e-3);
  const KlError quant = file_kl_error(big, perturbed(big, 0.05, 12));
  EXPECT_LT(std::fabs(quant.mean_diff), 2e-7) << "exact KL " << quant.exact_mean;
  EXPECT_LT(quant.max_diff, 1e-5);
}

// ---- base file ----------------------------------------------------------------------------------

TEST(KlBaseFile, RoundTrip) {
  test::TempDir dir;
  const std::string path = dir / "base.kld";
  const int n_ctx = 16, chunks = 3, V = 32001;  // odd: pad words; 64 KiB rows: several write batches
  const int rows_per_chunk = kl_rows_per_chunk(n_ctx);
  std::vector<int> tokens = random_targets(n_ctx * chunks, V, 13);
  const Rows rows = random_rows(chunks * rows_per_chunk, V, 3.0, 14);
  {
    KlBaseWriter w(path, n_ctx, V, tokens);
    for (const auto& r : rows) w.add_row(r.data());
    EXPECT_FALSE(std::filesystem::exists(path)) << "visible before commit";
    w.commit();
  }
  ASSERT_EQ(file_size(path), kl_base_file_size(n_ctx, V, chunks));
  auto f = KlBaseFile::open(path);
  EXPECT_EQ(f->n_ctx(), n_ctx);
  EXPECT_EQ(f->n_vocab(), V);
  EXPECT_EQ(f->n_chunks(), chunks);
  EXPECT_EQ(f->tokens(), tokens);
  std::vector<float> got(static_cast<size_t>(V)), want(static_cast<size_t>(V));
  std::vector<uint16_t> enc(size_t(kl_row_words(V)));
  for (int c = 0; c < chunks; ++c) {
    for (int r = 0; r < rows_per_chunk; ++r) {
      const float floor = f->decode_row(c, r, got.data());
      encode_log_prob_row(rows[size_t(c * rows_per_chunk + r)].data(), V, enc.data());
      EXPECT_EQ(floor, decode_log_prob_row(enc.data(), V, want.data(), "row"));
      ASSERT_EQ(got, want) << "chunk " << c << " row " << r;
    }
    f->release_chunk(c);
  }
  EXPECT_THROW(f->decode_row(chunks, 0, got.data()), Error);
}

TEST(KlBaseFile, WriterLeavesNothingUnlessComplete) {
  test::TempDir dir;
  const std::string path = dir / "base.kld";
  const std::vector<int> tokens(32, 1);
  const std::vector<float> logits(10, 0.5f);
  {
    KlBaseWriter w(path, 16, 10, tokens);
    w.add_row(logits.data());
    EXPECT_THROW(w.commit(), Error);  // 14 rows announced, 1 written
  }
  {
    KlBaseWriter w(path, 16, 10, tokens);
    w.add_row(logits.data());
  }  // abandoned
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path), std::filesystem::directory_iterator()), 0);
  EXPECT_THROW(KlBaseWriter(path, 16, 10, std::vector<int>(17, 1)), Error);   // not whole chunks
  EXPECT_THROW(KlBaseWriter(path, 16, 10, std::vector<int>(16, 10)), Error);  // token outside the vocabulary
}

// Expects KlBaseFile::open (and decoding every row) to fail with a message holding `want`.
void expect_bad_file(const std::string& path, const std::string& want) {
  try {
    auto f = KlBaseFile::open(path);
    std::vector<float> row(size_t(f->n_vocab()));
    for (int c = 0; c < f->n_chunks(); ++c)
      for (int r = 0; r < f->rows_per_chunk(); ++r) f->decode_row(c, r, row.data());
    ADD_FAILURE() << path << ": accepted, expected an error with '" << want << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << "the message names the file: " << msg;
  }
}

TEST(KlBaseFile, HostileFilesGiveClearErrors) {
  test::TempDir dir;
  const std::string good = dir / "good.kld";
  const int n_ctx = 8, V = 6, chunks = 2;
  {
    KlBaseWriter w(good, n_ctx, V, random_targets(n_ctx * chunks, V, 15));
    for (const auto& r : random_rows(chunks * kl_rows_per_chunk(n_ctx), V, 1.0, 16)) w.add_row(r.data());
    w.commit();
  }
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    const std::string p = dir / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  };
  auto with_u32 = [&](size_t offset, uint32_t v) {
    std::string b = bytes;
    std::memcpy(b.data() + offset, &v, 4);
    return b;
  };
  EXPECT_THROW(KlBaseFile::open(dir / "missing.kld"), Error);
  expect_bad_file(write("empty.kld", ""), "too short");
  expect_bad_file(write("short.kld", bytes.substr(0, 15)), "too short");
  expect_bad_file(write("magic.kld", "GGUF" + bytes.substr(4)), "not a KL-divergence base file");
  expect_bad_file(write("truncated.kld", bytes.substr(0, bytes.size() - 1)), "truncated");
  expect_bad_file(write("headeronly.kld", bytes.substr(0, 20)), "truncated");
  expect_bad_file(write("trailing.kld", bytes + "x"), "after the last row");
  expect_bad_file(write("ctx0.kld", with_u32(8, 0)), "context 0");
  expect_bad_file(write("vocab0.kld", with_u32(12, 0)), "vocabulary size 0");
  expect_bad_file(write("vocabneg.kld", with_u32(12, 0x80000000u)), "vocabulary size");
  expect_bad_file(write("chunks0.kld", with_u32(16, 0)), "chunk count 0");
  // A header announcing 2^31-1 chunks of 2^24 tokens: rejected by size, nothing allocated.
  expect_bad_file(write("huge.kld", with_u32(16, 0x7FFFFFFFu)), "truncated");
  expect_bad_file(write("huge2.kld", with_u32(8, 1u << 24)), "truncated");
  expect_bad_file(write("token.kld", with_u32(20 + 4 * 5, uint32_t(V))), "token 5");
  expect_bad_file(write("tokenneg.kld", with_u32(20, 0xFFFFFFFFu)), "token 0");
  // The second row's scale set to NaN: caught when that row is decoded, naming it.
  const size_t row1 = 20 + 4 * size_t(n_ctx * chunks) + size_t(kl_row_words(V)) * 2;
  expect_bad_file(write("nan.kld", with_u32(row1, 0x7FC00000u)), "chunk 0, row 1");
  // min_log_prob of +1.0.
  expect_bad_file(write("minlp.kld", with_u32(row1 + 4, 0x3F800000u)), "min_log_prob");
}

// ---- whole models -------------------------------------------------------------------------------

TEST(KlModels, SameWeightsInTwoFormats) {
  const std::string text = read_text_file(test::shared("text/tinystories/TinyStories-valid-1M.txt"));
  auto hf = load_model(test::shared("models/stories260K-hf"));
  auto gguf = load_model(test::shared("models/stories260K-gguf/stories260K.gguf"));
  const std::vector<int> tokens = hf->tokenizer->encode(text.substr(0, 20000), true);
  const QualityComparison self = compare_quality(*hf, *hf, tokens, 128, 2, 2);
  EXPECT_EQ(self.kl_mean, 0.0);
  EXPECT_EQ(self.kl_max, 0.0);
  EXPECT_EQ(self.top1_agreement, 1.0);
  EXPECT_EQ(self.ppl_base, self.ppl_test);
  const QualityComparison formats = compare_quality(*hf, *gguf, tokens, 128, 2, 2);
  EXPECT_LT(formats.kl_max, 1e-9);
  EXPECT_EQ(formats.top1_agreement, 1.0);
  EXPECT_NEAR(formats.ppl_base, formats.ppl_test, 1e-5);
}

}  // namespace
}  // namespace qforge
