// The KL-divergence base file: llama-perplexity's --kl-divergence-base layout (see kl_divergence.h),
// written as a stream and read through a memory map, validated as untrusted input.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "qforge/error.h"
#include "qforge/kl_divergence.h"
#include "qforge/mmap.h"

namespace qforge {

static_assert(std::endian::native == std::endian::little, "the base file is little-endian, as is this host's order");
static_assert(sizeof(int) == 4 && sizeof(float) == 4);

namespace {

constexpr char kMagic[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};
constexpr uint64_t kHeaderBytes = 8 + 4 + 4 + 4;
constexpr double kLevels = 65535.0;  // uint16 steps across the stored range
constexpr float kRangeNats = 16.0f;  // the stored range: the top 16 nats of each distribution
// How far qforge's writer widens a row to keep the scored token (see encode_log_prob_row), and the
// widest range a reader accepts from any writer.
constexpr float kMaxWidenNats = 200.0f;
constexpr double kMaxRangeNats = 1000.0;
// Bounds for hostile headers. Far above any real model, small enough that products stay sane.
constexpr int64_t kMaxCtx = int64_t(1) << 24;
constexpr int64_t kMaxVocab = int64_t(1) << 24;

uint64_t row_bytes(int n_vocab) { return uint64_t(kl_row_words(n_vocab)) * 2; }

}  // namespace

uint64_t kl_base_file_size(int n_ctx, int n_vocab, int n_chunks) {
  const std::string what = "KL-divergence base file size";
  const uint64_t tokens = checked_mul(uint64_t(n_ctx), uint64_t(n_chunks), what);
  const uint64_t rows = checked_mul(uint64_t(kl_rows_per_chunk(n_ctx)), uint64_t(n_chunks), what);
  return checked_add(checked_add(kHeaderBytes, checked_mul(tokens, 4, what), what),
                     checked_mul(rows, row_bytes(n_vocab), what), what);
}

void encode_log_prob_row(const float* logits, int n_vocab, uint16_t* row, int keep_token) {
  float mx = logits[0], mn = logits[0];
  for (int v = 1; v < n_vocab; ++v) {
    mx = std::max(mx, logits[v]);
    mn = std::min(mn, logits[v]);
  }
  const bool cut = mn < mx - kRangeNats;
  mn = std::max(mn, mx - kRangeNats);  // everything further below the top shares level 0
  // The scored token is the one whose log-probability PPL(base) needs. When it would land on level
  // 0 (more than 16 nats down, where the value is only a bound), widen this row's range so it sits
  // exactly on level 1: the step grows a little for this row only, and PPL(base) read back from the
  // file stays exact. Readers need nothing new: the layout is the same, only min_log_prob moves.
  if (cut && keep_token >= 0 && keep_token < n_vocab) {
    const float keep = logits[keep_token];
    const double step = (double(mx) - double(mn)) / kLevels;
    if (std::isfinite(keep) && double(keep) - double(mn) < 0.5 * step && mx - keep <= kMaxWidenNats)
      mn = float(double(keep) - (double(mx) - double(keep)) / (kLevels - 1));
  }
  double sum = 0;
  for (int v = 0; v < n_vocab; ++v) sum += std::exp(double(logits[v]) - double(mx));
  const double lse = std::log(sum);
  const float scale = float((double(mx) - double(mn)) / kLevels);
  const float min_log_prob = float(double(mn) - double(mx) - lse);
  std::memcpy(row, &scale, 4);
  std::memcpy(row + 2, &min_log_prob, 4);
  uint16_t* q = row + 4;
  if (scale > 0) {
    // Round against the floats actually stored, so their own rounding does not add to the error.
    const double inv = 1.0 / double(scale);
    for (int v = 0; v < n_vocab; ++v) {
      if (!(logits[v] > mn)) {
        q[v] = 0;
        continue;
      }
      const double lp = double(logits[v]) - double(mx) - lse;
      const double level = std::nearbyint((lp - double(min_log_prob)) * inv);
      q[v] = uint16_t(std::clamp(level, 0.0, kLevels));
    }
  } else {
    std::fill(q, q + n_vocab, uint16_t(0));  // all logits equal: every token is min_log_prob
  }
  if (n_vocab % 2) q[n_vocab] = 0;  // pad word
}

namespace {
// Decodes a row; on a malformed header returns false with the reason in `why` (formatting the
// caller's row name only then: it is called once per scored position).
bool decode_row_impl(const uint16_t* row, int n_vocab, float* log_probs, float* floor, std::string* why) {
  float scale, min_log_prob;
  std::memcpy(&scale, row, 4);
  std::memcpy(&min_log_prob, row + 2, 4);
  // A writer stores scale = range / 65535 (16 nats, or less when every token is within 16 nats of
  // the top, or more when qforge widened the row for the scored token) and min_log_prob =
  // (floor - top) - log-sum-exp, which lies in [-(range + ln n_vocab), 0]. Some slack for rounding.
  if (!std::isfinite(scale) || scale < 0 || double(scale) * kLevels > kMaxRangeNats) {
    *why = fmt::format("scale {} is outside 0 .. {}/65535", scale, kMaxRangeNats);
    return false;
  }
  const double lowest = -(double(scale) * kLevels * 1.001 + std::log(double(n_vocab))) - 0.01;
  if (!std::isfinite(min_log_prob) || min_log_prob > 0.01f || double(min_log_prob) < lowest) {
    *why = fmt::format("min_log_prob {} is outside {:.3f} .. 0", min_log_prob, lowest);
    return false;
  }
  const uint16_t* q = row + 4;
  for (int v = 0; v < n_vocab; ++v) log_probs[v] = float(double(min_log_prob) + double(scale) * double(q[v]));
  // When the row's range was cut at 16 nats, level 0 means "at or below the floor"; otherwise it is
  // the least likely token's own value.
  const bool cut = double(scale) * kLevels >= double(kRangeNats) - 1e-3;
  *floor = cut ? min_log_prob : -INFINITY;
  return true;
}
}  // namespace

float decode_log_prob_row(const uint16_t* row, int n_vocab, float* log_probs, const std::string& where) {
  float floor;
  std::string why;
  if (!decode_row_impl(row, n_vocab, log_probs, &floor, &why)) fail("kl-divergence: {}: {}: corrupt file", where, why);
  return floor;
}

// ---- writer -----------------------------------------------------------------------------------

KlBaseWriter::KlBaseWriter(const std::string& path, int n_ctx, int n_vocab, std::span<const int> tokens)
    : n_vocab_(n_vocab) {
  if (n_ctx < 4 || n_ctx > kMaxCtx) fail("kl-divergence: {}: context {} is out of range", path, n_ctx);
  if (n_vocab < 1 || n_vocab > kMaxVocab) fail("kl-divergence: {}: vocabulary size {} is out of range", path, n_vocab);
  if (tokens.empty() || tokens.size() % size_t(n_ctx) != 0)
    fail("kl-divergence: {}: {} tokens is not a whole number of {}-token chunks", path, tokens.size(), n_ctx);
  const int64_t n_chunks = int64_t(tokens.size() / size_t(n_ctx));
  if (n_chunks > INT32_MAX) fail("kl-divergence: {}: too many chunks ({})", path, n_chunks);
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= n_vocab)
      fail("kl-divergence: {}: token {} at position {} is outside the vocabulary ({} tokens)", path, tokens[i], i,
           n_vocab);
  kl_base_file_size(n_ctx, n_vocab, int(n_chunks));  // overflow check
  rows_expected_ = n_chunks * kl_rows_per_chunk(n_ctx);
  out_ = std::make_unique<AtomicFile>(path);
  out_->write(kMagic, sizeof kMagic);
  const uint32_t ctx32 = uint32_t(n_ctx);
  const int32_t vocab32 = n_vocab, chunks32 = int32_t(n_chunks);
  out_->write(&ctx32, 4);
  out_->write(&vocab32, 4);
  out_->write(&chunks32, 4);
  out_->write(tokens.data(), tokens.size() * 4);
  // Rows go out in batches of about 1 MiB: one write per row would be a system call per position.
  buf_capacity_rows_ = std::max<size_t>(1, (size_t(1) << 20) / row_bytes(n_vocab));
  buf_.resize(buf_capacity_rows_ * size_t(kl_row_words(n_vocab)));
}

KlBaseWriter::~KlBaseWriter() = default;

void KlBaseWriter::add_row(const float* logits, int next_token) {
  if (rows_ >= rows_expected_)
    fail("kl-divergence: {}: more rows than the {} the header announces", out_->path(), rows_expected_);
  encode_log_prob_row(logits, n_vocab_, buf_.data() + buf_rows_ * size_t(kl_row_words(n_vocab_)), next_token);
  ++rows_;
  if (++buf_rows_ == buf_capacity_rows_) flush();
}

void KlBaseWriter::flush() {
  out_->write(buf_.data(), buf_rows_ * row_bytes(n_vocab_));
  buf_rows_ = 0;
}

void KlBaseWriter::commit() {
  if (rows_ != rows_expected_)
    fail("kl-divergence: {}: {} rows written, the header announces {}", out_->path(), rows_, rows_expected_);
  flush();
  out_->commit();
}

uint64_t KlBaseWriter::bytes_written() const { return out_->offset() + buf_rows_ * row_bytes(n_vocab_); }

// ---- reader -----------------------------------------------------------------------------------

KlBaseFile::~KlBaseFile() = default;

std::unique_ptr<KlBaseFile> KlBaseFile::open(const std::string& path) {
  std::unique_ptr<KlBaseFile> f(new KlBaseFile());
  f->path_ = path;
  f->file_ = MappedFile::open(path);
  const uint8_t* d = f->file_->data();
  const uint64_t size = f->file_->size();
  if (size < kHeaderBytes)
    fail("kl-divergence: {}: {} bytes is too short for a base file header ({} bytes): truncated or not a base file",
         path, size, kHeaderBytes);
  if (std::memcmp(d, kMagic, sizeof kMagic) != 0)
    fail(
        "kl-divergence: {}: not a KL-divergence base file (it does not start with \"_logits_\"); write one with "
        "qforge perplexity --kl-divergence-base or llama-perplexity --kl-divergence-base",
        path);
  uint32_t ctx32;
  int32_t vocab32, chunks32;
  std::memcpy(&ctx32, d + 8, 4);
  std::memcpy(&vocab32, d + 12, 4);
  std::memcpy(&chunks32, d + 16, 4);
  if (ctx32 < 4 || ctx32 > kMaxCtx)
    fail("kl-divergence: {}: header: context {} is out of range (4 .. {})", path, ctx32, kMaxCtx);
  if (vocab32 < 1 || vocab32 > kMaxVocab)
    fail("kl-divergence: {}: header: vocabulary size {} is out of range (1 .. {})", path, vocab32, kMaxVocab);
  if (chunks32 < 1) fail("kl-divergence: {}: header: chunk count {} must be at least 1", path, chunks32);
  f->n_ctx_ = int(ctx32);
  f->n_vocab_ = vocab32;
  f->n_chunks_ = chunks32;
  const uint64_t want = kl_base_file_size(f->n_ctx_, f->n_vocab_, f->n_chunks_);
  if (size < want)
    fail(
        "kl-divergence: {}: truncated: the header announces {} chunks of {} tokens over a {}-token vocabulary, "
        "which take {} bytes, but the file has {} (about {} complete chunks)",
        path, f->n_chunks_, f->n_ctx_, f->n_vocab_, want, size,
        size <= kHeaderBytes + uint64_t(f->n_ctx_) * f->n_chunks_ * 4
            ? 0
            : (size - kHeaderBytes - uint64_t(f->n_ctx_) * f->n_chunks_ * 4) /
                  (uint64_t(kl_rows_per_chunk(f->n_ctx_)) * row_bytes(f->n_vocab_)));
  if (size > want)
    fail(
        "kl-divergence: {}: {} bytes after the last row (the header announces {} chunks of {} tokens over a "
        "{}-token vocabulary: {} bytes): not a base file, or a different layout",
        path, size - want, f->n_chunks_, f->n_ctx_, f->n_vocab_, want);
  // The file's size vouches for the token count now, so the copy is bounded by the input.
  const size_t n_tokens = size_t(f->n_ctx_) * size_t(f->n_chunks_);
  f->tokens_.resize(n_tokens);
  std::memcpy(f->tokens_.data(), d + kHeaderBytes, n_tokens * 4);
  for (size_t i = 0; i < n_tokens; ++i)
    if (f->tokens_[i] < 0 || f->tokens_[i] >= f->n_vocab_)
      fail("kl-divergence: {}: token {} (chunk {}, position {}) is {}, outside the vocabulary ({} tokens)", path, i,
           i / size_t(f->n_ctx_), i % size_t(f->n_ctx_), f->tokens_[i], f->n_vocab_);
  f->rows_offset_ = kHeaderBytes + uint64_t(n_tokens) * 4;
  return f;
}

float KlBaseFile::decode_row(int chunk, int row, float* log_probs) const {
  if (chunk < 0 || chunk >= n_chunks_ || row < 0 || row >= rows_per_chunk())
    throw Error(ErrorKind::Internal, fmt::format("kl-divergence: {}: row {} of chunk {} does not exist ({} chunks of "
                                                 "{} rows)",
                                                 path_, row, chunk, n_chunks_, rows_per_chunk()));
  const uint64_t index = uint64_t(chunk) * uint64_t(rows_per_chunk()) + uint64_t(row);
  // Rows start at a multiple of 4 bytes (header and tokens are, and a row is an even number of
  // words), and the mapping is page-aligned, so the words are properly aligned.
  const auto* words = reinterpret_cast<const uint16_t*>(file_->data() + rows_offset_ + index * row_bytes(n_vocab_));
  float floor;
  std::string why;
  if (!decode_row_impl(words, n_vocab_, log_probs, &floor, &why))
    fail("kl-divergence: {}: chunk {}, row {} (position {}): {}: corrupt file", path_, chunk, row, n_ctx_ / 2 + row,
         why);
  return floor;
}

void KlBaseFile::release_chunk(int chunk) const {
  if (chunk < 0 || chunk >= n_chunks_) return;
  const uint64_t bytes = uint64_t(rows_per_chunk()) * row_bytes(n_vocab_);
  file_->release(size_t(rows_offset_ + uint64_t(chunk) * bytes), size_t(bytes));
}

}  // namespace qforge
