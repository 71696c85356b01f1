// KL divergence of a test model's next-token distributions from a base model's, with the figures
// llama-perplexity's --kl-divergence report gives: PPL of both models and their ratio, mean and
// percentiles of the per-token KL divergence, top-1 token agreement and the change in the
// probability of the right token (Δp).
//
// Two ways in:
//  - in one process (an original and a quantized model side by side): KlAccumulator::add_logits
//    with both models' logits rows; no file involved.
//  - in two runs: the base run streams its log-probabilities to a base file (KlBaseWriter), the
//    test run reads them back (KlBaseFile) and calls KlAccumulator::add_log_probs.
//
// Base file format: llama-perplexity's --kl-divergence-base format, byte for byte, so a file either
// program writes, the other reads (little-endian):
//   char[8] "_logits_" | uint32 n_ctx | int32 n_vocab | int32 n_chunks
//   int32 tokens[n_chunks * n_ctx]     the text's tokens, as tokenized (chunk starts not yet BOS)
//   then, chunk by chunk, one row per scored position (n_ctx - 1 - n_ctx/2 rows per chunk) of
//   kl_row_words(n_vocab) uint16 words: float scale, float min_log_prob, then one uint16 q per
//   token (plus one zero pad word when n_vocab is odd). Token v's log-probability is
//   min_log_prob + scale * q[v]. The range kept is the top 16 nats: min_log_prob is 16 nats below
//   the most likely token (or the least likely token, when all are within 16 nats of the top), and
//   q = 0 stands for "at or below min_log_prob". Where the scored token lies deeper than 16 nats,
//   qforge's writer widens that row's range (up to 200 nats) so the token sits on level 1 and its
//   log-probability is stored: PPL(base) read back is then exact. llama-perplexity's writer does
//   not; from its files, such tokens count at the floor and PPL(base) comes out a little low (5 of
//   1270 positions of tinystories-llama-7M at ctx 256: PPL 7.071 instead of 7.156).
// Precision: a step is at most 16/65535 = 2.44e-4 nats (more only in the rare rows widened for a
// deep scored token), so a stored log-probability is within 1.22e-4 nats (0.012% in probability)
// of the exact one; tokens more than 16 nats below the top are
// only known to lie in [0, e^floor]. add_log_probs turns this into a small, bounded error on KL:
// tail tokens take the test model's probability capped at e^floor (exact when the models agree in
// the tail, never more tail mass than the file allows), and the kept entries are rescaled to the
// remaining mass, which cancels the first-order effect of the rounding. What is left is second
// order (about step^2/24 = 2.5e-9 nats per token) plus the part of KL that lives in the base's own
// tail (p log(p/q) for tokens more than 16 nats below the top), which the format cannot show and
// which counts as 0. Measured against exact KL on real TinyStories logits: a model against itself
// 1e-9; against a copy with logit noise 0.05 (KL 7e-4, like a good quantization) -1.4e-8 mean and
// 5e-6 worst token; two different models (KL 0.75) -2.4e-5 mean (the tail part). The unit tests
// hold these limits, and also on 32000-token random rows.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace qforge {

class MappedFile;
class AtomicFile;

// Figures over all positions added so far. Log-likelihoods are natural logs; KL in nats per token.
struct KlStats {
  int64_t tokens = 0;
  // Perplexity of each model over the same positions, and their comparison. ln_ppl_ratio is the
  // mean of (NLL_test - NLL_base) per token; its standard error comes from the per-token differences,
  // so it accounts for the strong correlation between the two models.
  double ppl = 0, ppl_stderr = 0;            // test model
  double ppl_base = 0, ppl_base_stderr = 0;  // base model
  double ln_ppl_correlation = 0;             // correlation of the two models' per-token NLL
  double ln_ppl_ratio = 0, ln_ppl_ratio_stderr = 0;
  double ppl_ratio = 0, ppl_ratio_stderr = 0;  // PPL / PPL_base
  double ppl_diff = 0, ppl_diff_stderr = 0;    // PPL - PPL_base
  // KL(base || test) per token.
  double kl_mean = 0, kl_stderr = 0;
  double kl_min = 0, kl_p01 = 0, kl_p05 = 0, kl_p10 = 0, kl_median = 0, kl_p90 = 0, kl_p95 = 0, kl_p99 = 0, kl_p999 = 0,
         kl_max = 0;
  // Fraction of positions where both models rank the same token first.
  double top1_agreement = 0, top1_agreement_stderr = 0;
  // Δp = p_test(next token) - p_base(next token), as fractions (not %).
  double dp_mean = 0, dp_stderr = 0, dp_rms = 0, dp_rms_stderr = 0;
  double dp_min = 0, dp_p01 = 0, dp_p05 = 0, dp_p10 = 0, dp_median = 0, dp_p90 = 0, dp_p95 = 0, dp_p99 = 0, dp_max = 0;
};

// Accumulates per-position comparisons. All arithmetic in double. Keeps one KL and one Δp value per
// position (16 bytes) for the percentiles. Not thread-safe: use one per thread and merge().
class KlAccumulator {
 public:
  explicit KlAccumulator(int n_vocab);
  int n_vocab() const { return n_vocab_; }

  // One position, both models' raw logits (n_vocab floats each); next_token is the token that
  // actually follows. Identical rows give KL exactly 0 and agreeing top-1. Returns this position's KL.
  double add_logits(const float* base_logits, const float* test_logits, int next_token);

  // One position, the base model as normalized log-probabilities (e.g. decoded from a base file).
  // Entries <= floor are "below the stored range": their probability is only known to be in
  // [0, e^floor], and the KL sum takes min(test probability, e^floor) for them; pass -INFINITY when
  // every entry is exact. The kept entries are rescaled so the row sums to 1 (see the top of this
  // file); the base NLL of next_token uses its value as given.
  double add_log_probs(const float* base_log_probs, float floor, const float* test_logits, int next_token);

  // Adds another accumulator's positions (after this one's, for the stored values).
  void merge(const KlAccumulator& other);

  int64_t count() const { return n_; }
  double mean_kl() const { return n_ ? sum_kl_ / double(n_) : 0.0; }
  // Sorts copies of the stored values for the percentiles: O(n log n).
  KlStats stats() const;

 private:
  // Shared tail of add_*: base_lp_ and test_lp_ hold the two rows' log-probabilities.
  double add_row(double base_next_lp, int base_top, int test_top, int next_token);

  int n_vocab_;
  std::vector<double> base_lp_, test_lp_;  // scratch rows
  int64_t n_ = 0, n_same_top_ = 0;
  double sum_nll_ = 0, sum_nll2_ = 0, sum_nll_base_ = 0, sum_nll_base2_ = 0, sum_nll_cross_ = 0;
  double sum_dnll_ = 0, sum_dnll2_ = 0;  // NLL_test - NLL_base
  double sum_kl_ = 0, sum_kl2_ = 0;
  double sum_dp_ = 0, sum_dp2_ = 0, sum_dp4_ = 0;
  std::vector<double> kl_values_, dp_values_;
};

// ---- base file --------------------------------------------------------------------------------

// uint16 words per stored row: two floats (4 words), the tokens, and a pad word for odd vocabularies.
constexpr int64_t kl_row_words(int64_t n_vocab) { return 2 * ((n_vocab + 1) / 2) + 4; }
// Scored positions per chunk of n_ctx tokens (llama-perplexity scores n_ctx/2 .. n_ctx-2).
constexpr int kl_rows_per_chunk(int n_ctx) { return n_ctx - 1 - n_ctx / 2; }
// Expected size of a base file; throws on overflow.
uint64_t kl_base_file_size(int n_ctx, int n_vocab, int n_chunks);

// Encodes one row of logits (n_vocab floats) into kl_row_words(n_vocab) words. keep_token (the
// scored token; -1: none) is stored exactly even when it lies more than 16 nats below the top.
void encode_log_prob_row(const float* logits, int n_vocab, uint16_t* row, int keep_token = -1);
// Decodes one row into n_vocab log-probabilities; returns the floor (entries <= floor were below the
// stored range) or -INFINITY when the row kept every token. `where` names the row in errors: the
// row's two floats are checked (finite, in range) since the file may be hostile.
float decode_log_prob_row(const uint16_t* row, int n_vocab, float* log_probs, const std::string& where);

// Streams a base file: header and tokens at construction, then rows in order, chunk by chunk. It
// is written to PATH.tmp-XXXX and renamed over PATH by commit(), so an interrupted run leaves no
// partial file behind.
class KlBaseWriter {
 public:
  // tokens: n_chunks * n_ctx tokens, the text's own (before the first of each chunk becomes BOS).
  KlBaseWriter(const std::string& path, int n_ctx, int n_vocab, std::span<const int> tokens);
  ~KlBaseWriter();
  // The base model's logits at the next scored position, and the token scored there (kept exact).
  void add_row(const float* logits, int next_token = -1);
  // Fails unless every row was written; then flushes, syncs and renames.
  void commit();
  int64_t rows_written() const { return rows_; }
  int64_t rows_expected() const { return rows_expected_; }
  uint64_t bytes_written() const;

 private:
  void flush();
  std::unique_ptr<AtomicFile> out_;
  int n_vocab_;
  int64_t rows_ = 0, rows_expected_ = 0;
  std::vector<uint16_t> buf_;  // rows not yet written
  size_t buf_rows_ = 0, buf_capacity_rows_ = 0;
};

// A base file, memory-mapped and validated: the header against the file's size before anything is
// allocated, every token against the vocabulary. Rows are decoded on demand.
class KlBaseFile {
 public:
  static std::unique_ptr<KlBaseFile> open(const std::string& path);
  ~KlBaseFile();
  const std::string& path() const { return path_; }
  int n_ctx() const { return n_ctx_; }
  int n_vocab() const { return n_vocab_; }
  int n_chunks() const { return n_chunks_; }
  int rows_per_chunk() const { return kl_rows_per_chunk(n_ctx_); }
  const std::vector<int>& tokens() const { return tokens_; }  // n_chunks * n_ctx
  // Row `row` (0 .. rows_per_chunk()-1, i.e. position n_ctx/2 + row) of `chunk` into n_vocab floats;
  // returns the floor as decode_log_prob_row does.
  float decode_row(int chunk, int row, float* log_probs) const;
  // Drops a finished chunk's pages from memory (files can be many GB).
  void release_chunk(int chunk) const;

 private:
  KlBaseFile() = default;
  std::shared_ptr<MappedFile> file_;
  std::string path_;
  int n_ctx_ = 0, n_vocab_ = 0, n_chunks_ = 0;
  uint64_t rows_offset_ = 0;
  std::vector<int> tokens_;
};

}  // namespace qforge
