// Tokenizers against real data: llama.cpp's tokenizer test vectors (produced by the original Hugging
// Face tokenizers), round trips over WikiText-2 and TinyStories, and llama2.c's tokenizer.bin
// against the SentencePiece model it was exported from.
#include <chrono>
#include <fstream>
#include <sstream>

#include "qforge/error.h"
#include "qforge/tokenizer.h"
#include "test_util.h"
#include "vocab_vectors.h"

namespace qforge {
namespace {

using test::shared;

using test::read_file;
using test::read_prefix;
using test::read_vectors;
using test::show;
using test::Vector;

// Decoding token by token with token_text gives the same bytes as decode().
void expect_streaming_matches(const Tokenizer& t, const std::string& text) {
  const auto ids = t.encode(text, true);
  std::string streamed;
  int prev = -1;
  for (int id : ids) {
    streamed += t.token_text(id, prev);
    prev = id;
  }
  EXPECT_EQ(streamed, t.decode(ids)) << t.kind();
  EXPECT_EQ(streamed, text) << t.kind();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- GPT-2 tokenizer.json --------------------------------------------------------------------

TEST(TokenizerGpt2, ReproducesLlamaCppVectors) {
  const auto tok = load_hf_tokenizer_json(shared("tokenizers/gpt2-hf/tokenizer.json"), shared("tokenizers/gpt2-hf"));
  const auto vectors = read_vectors(shared("tokenizers/ggml-vocab-gpt-2.gguf"));
  ASSERT_EQ(vectors.size(), 46u);
  for (const auto& v : vectors) {
    EXPECT_EQ(show(tok->encode(v.text, false)), show(v.ids)) << "text: '" << v.text << "'";
    EXPECT_EQ(tok->decode(v.ids), v.text);
  }
}

TEST(TokenizerGpt2, Settings) {
  const auto tok = load_tokenizer_dir(shared("tokenizers/gpt2-hf"));
  EXPECT_EQ(tok->kind(), "bpe-bytelevel");
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->bos_id(), 50256);  // tokenizer_config.json: bos_token <|endoftext|>
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_FALSE(tok->add_bos_default());  // GPT-2 adds nothing
  EXPECT_EQ(tok->token_piece(220), "\xC4\xA0");  // " " is spelled 'Ġ'
  EXPECT_EQ(tok->token_text(220, -1), " ");
}

TEST(TokenizerGpt2, SpecialTokensOnlyWhenAsked) {
  const auto tok = load_tokenizer_dir(shared("tokenizers/gpt2-hf"));
  const std::string text = "Hi<|endoftext|>there";
  const auto parsed = tok->encode(text, false, true);
  ASSERT_EQ(parsed.size(), 3u) << show(parsed);
  EXPECT_EQ(parsed[1], 50256);
  const auto plain = tok->encode(text, false, false);
  EXPECT_GT(plain.size(), 3u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50256), 0);
  EXPECT_EQ(tok->decode(plain), text);
  EXPECT_EQ(tok->decode(parsed), "Hithere");  // special tokens are skipped by decode
}

TEST(TokenizerGpt2, WikiTextRoundTripAndSpeed) {
  const auto tok = load_hf_tokenizer_json(shared("tokenizers/gpt2-hf/tokenizer.json"));
  const std::string text = read_file(shared("text/wikitext-2-raw/wiki.test.raw"));
  ASSERT_EQ(text.size(), 1290590u);
  auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok->encode(text, false);
  const double enc_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  const std::string back = tok->decode(ids);
  const double dec_s = seconds_since(t0);
  std::printf("[ timing ] GPT-2 tokenizer.json, WikiText-2 test (%zu bytes): %zu tokens, encode %.3f s, decode %.3f s\n",
              text.size(), ids.size(), enc_s, dec_s);
  EXPECT_TRUE(back == text);  // not EXPECT_EQ: a 1.3 MB diff is no help
  EXPECT_LT(enc_s, 5.0);
}

TEST(TokenizerGpt2, TinyStoriesRoundTrip) {
  const auto tok = load_tokenizer_dir(shared("tokenizers/gpt2-hf"));
  const std::string text = read_prefix(shared("text/tinystories/TinyStories-valid-1M.txt"), 300'000);
  EXPECT_TRUE(tok->decode(tok->encode(text, false)) == text);
  expect_streaming_matches(*tok, text.substr(0, 2000));
}

// ---- SentencePiece tokenizer.model -----------------------------------------------------------

TEST(TokenizerSentencePiece, ReproducesLlamaSpmVectors) {
  const auto tok = load_sentencepiece(shared("models/llama2-tokenizer/tokenizer.model"));
  const auto vectors = read_vectors(shared("tokenizers/ggml-vocab-llama-spm.gguf"));
  ASSERT_EQ(vectors.size(), 46u);
  for (const auto& v : vectors) {
    EXPECT_EQ(show(tok->encode(v.text, false)), show(v.ids)) << "text: '" << v.text << "'";
  }
}

TEST(TokenizerSentencePiece, Stories260KSettingsFromDir) {
  const auto tok = load_tokenizer_dir(shared("models/stories260K-hf"));
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->add_bos_default());
  const auto ids = tok->encode("Once upon a time", true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok->decode(ids), "Once upon a time");
  // <s> in the text is the BOS token only with parse_special.
  EXPECT_EQ(tok->encode("<s>Hi", false, true)[0], 1);
  EXPECT_NE(tok->encode("<s>Hi", false, false)[0], 1);
  EXPECT_THROW(tok->decode({0, 512}), Error);
  EXPECT_THROW(tok->decode({-1}), Error);
}

TEST(TokenizerSentencePiece, Stories260KRoundTrips) {
  const auto tok = load_sentencepiece(shared("models/stories260K-hf/tokenizer.model"));
  const std::string wiki = read_prefix(shared("text/wikitext-2-raw/wiki.test.raw"), 300'000);
  const std::string stories = read_prefix(shared("text/tinystories/TinyStories-valid-1M.txt"), 300'000);
  // A 512-token vocabulary has byte fallback for everything else, so even WikiText round-trips.
  EXPECT_TRUE(tok->decode(tok->encode(wiki, false)) == wiki);
  EXPECT_TRUE(tok->decode(tok->encode(stories, false)) == stories);
  expect_streaming_matches(*tok, stories.substr(0, 2000));
  expect_streaming_matches(*tok, "Zoë said: \"日本\"\n\n  two spaces");
}

// ---- llama2.c tokenizer.bin ------------------------------------------------------------------

TEST(TokenizerLlama2c, Tok512RoundTrips) {
  const auto tok = load_llama2c_tokenizer(shared("models/stories260K-llama2c/tok512.bin"));
  EXPECT_EQ(tok->kind(), "llama2c");
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const std::string wiki = read_prefix(shared("text/wikitext-2-raw/wiki.test.raw"), 300'000);
  const std::string stories = read_prefix(shared("text/tinystories/TinyStories-valid-1M.txt"), 300'000);
  EXPECT_TRUE(tok->decode(tok->encode(wiki, false)) == wiki);
  EXPECT_TRUE(tok->decode(tok->encode(stories, false)) == stories);
  expect_streaming_matches(*tok, stories.substr(0, 2000));
  EXPECT_EQ(tok->decode(tok->encode("", false)), "");
}

// tok512.bin was exported from stories260K's tokenizer.model, and run.c's merge rule (highest
// score first, leftmost on ties) is SentencePiece's BPE rule, so the ids must agree.
TEST(TokenizerLlama2c, MatchesSentencePieceModel) {
  const auto bin = load_llama2c_tokenizer(shared("models/stories260K-llama2c/tok512.bin"));
  const auto spm = load_sentencepiece(shared("models/stories260K-hf/tokenizer.model"));
  const std::string stories = read_prefix(shared("text/tinystories/TinyStories-valid-1M.txt"), 20'000);
  std::istringstream lines(stories);
  int compared = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    EXPECT_EQ(show(bin->encode(line, true)), show(spm->encode(line, true))) << line;
    ++compared;
  }
  EXPECT_GT(compared, 20);
  // Also a long stretch in one piece (merges across lines and sentences).
  EXPECT_EQ(bin->encode(stories, false), spm->encode(stories, false));
  EXPECT_EQ(bin->encode("", false), spm->encode("", false));
}

// The 32000-token Llama 2 vocabulary in llama2.c form reproduces the same vectors.
TEST(TokenizerLlama2c, Llama2BinReproducesLlamaSpmVectors) {
  const auto tok = load_llama2c_tokenizer(shared("models/llama2-tokenizer/tokenizer.bin"));
  EXPECT_EQ(tok->vocab_size(), 32000);
  for (const auto& v : read_vectors(shared("tokenizers/ggml-vocab-llama-spm.gguf"))) {
    EXPECT_EQ(show(tok->encode(v.text, false)), show(v.ids)) << "text: '" << v.text << "'";
  }
}

}  // namespace
}  // namespace qforge
