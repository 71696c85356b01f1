// tokenizer.json variants written by the tests themselves: a small SentencePiece-style BPE
// (Prepend/Replace normalizer, byte fallback, Strip decoder), the same with a Metaspace
// pre-tokenizer, and the GPT-2 tokenizer rewritten the way Llama 3 files are laid out
// (Split pre-tokenizer + ByteLevel without its own regex, merges as pairs).
#include <fstream>
#include <nlohmann/json.hpp>

#include "qforge/error.h"
#include "qforge/tokenizer.h"
#include "test_util.h"

namespace qforge {
namespace {

using nlohmann::json;
using test::shared;

const std::string kMeta = "\xE2\x96\x81";  // "▁"

// ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then the pieces below.
enum : int { kSpace = 259, kA, kB, kC, kSpaceA, kAB, kSpaceAB, kBC, kSpaceSpace };

json spm_style_tokenizer() {
  json vocab = json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  const std::vector<std::string> pieces = {kMeta, "a", "b", "c", kMeta + "a", "ab", kMeta + "ab", "bc", kMeta + kMeta};
  for (size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = kSpace + int(i);
  json added = json::array();
  for (int id = 0; id < 3; ++id) {
    static const char* names[] = {"<unk>", "<s>", "</s>"};
    added.push_back({{"id", id}, {"content", names[id]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  // As transformers writes Llama 2's tokenizer.json.
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", kMeta}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMeta}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", kMeta}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        // Rank order: "▁a" first, then "ab", "▁ab", "bc", "▁▁".
        {"merges", {kMeta + " a", "a b", kMeta + "a b", "b c", kMeta + " " + kMeta}}}},
  };
}

TEST(TokenizerJson, SentencePieceStyleBpe) {
  const auto tok = parse_hf_tokenizer_json(spm_style_tokenizer().dump(), "spm-style.json");
  EXPECT_EQ(tok->kind(), "bpe-spm");
  EXPECT_EQ(tok->bos_id(), 1);  // from the post-processor template
  EXPECT_EQ(tok->eos_id(), 2);  // by its usual name
  EXPECT_TRUE(tok->add_bos_default());

  // "ab" -> "▁ab": "▁"+"a" (rank 0) then "▁a"+"b" (rank 2); "a"+"b" (rank 1) never gets a chance.
  EXPECT_EQ(tok->encode("ab", false), (std::vector<int>{kSpaceAB}));
  EXPECT_EQ(tok->encode("ab", true), (std::vector<int>{1, kSpaceAB}));
  EXPECT_EQ(tok->encode("abc", false), (std::vector<int>{kSpaceAB, kC}));
  EXPECT_EQ(tok->encode("bc", false), (std::vector<int>{kSpace, kBC}));
  // Leading space: Prepend always adds "▁", so " ab" is "▁▁ab"; the leftmost best merge ("▁a")
  // wins over "▁▁" (rank 4), leaving a lone "▁".
  EXPECT_EQ(tok->encode(" ab", false), (std::vector<int>{kSpace, kSpaceAB}));
  EXPECT_EQ(tok->encode("a  b", false), (std::vector<int>{kSpaceA, kSpaceSpace, kB}));
  // Byte fallback: "é" is C3 A9, not in the vocabulary, so it becomes <0xC3> <0xA9>.
  EXPECT_EQ(tok->encode("\xC3\xA9", false), (std::vector<int>{kSpace, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok->encode("", false), std::vector<int>{});

  for (const std::string text : {"ab", "abc", " ab", "  ab ", "a  b", "\xC3\xA9t\xC3\xA9", "\n", "x\ty", ""}) {
    EXPECT_EQ(tok->decode(tok->encode(text, true)), text);
    // Streaming gives the same bytes.
    std::string streamed;
    int prev = -1;
    for (int id : tok->encode(text, true)) {
      streamed += tok->token_text(id, prev);
      prev = id;
    }
    EXPECT_EQ(streamed, text);
  }
  // The Strip decoder removes the space of the first "▁" only at the start of the text.
  EXPECT_EQ(tok->token_text(kSpaceAB, -1), "ab");
  EXPECT_EQ(tok->token_text(kSpaceAB, 1), "ab");  // right after BOS
  EXPECT_EQ(tok->token_text(kSpaceAB, kC), " ab");
  EXPECT_EQ(tok->decode({kSpaceAB, kSpaceAB}), "ab ab");
  EXPECT_EQ(tok->token_piece(kSpaceAB), kMeta + "ab");
  // A byte token streams as its raw byte, even when it is half of a character.
  EXPECT_EQ(tok->token_text(3 + 0xC3, kA), "\xC3");

  // Special tokens in text: only with parse_special; each stretch of text after one gets its
  // own "▁" (Prepend applies per stretch, as in Hugging Face).
  EXPECT_EQ(tok->encode("<s>ab", false, true), (std::vector<int>{1, kSpaceAB}));
  EXPECT_NE(tok->encode("<s>ab", false, false)[1], 1);
  EXPECT_EQ(tok->decode({1, kSpaceAB, 2}), "ab");
  EXPECT_THROW(tok->decode({kSpaceSpace + 1}), Error);
}

TEST(TokenizerJson, MetaspacePreTokenizer) {
  json j = spm_style_tokenizer();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kMeta}, {"prepend_scheme", "first"}, {"split", false}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Metaspace"}, {"replacement", kMeta}, {"prepend_scheme", "first"}, {"split", false}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}}}}};
  const auto tok = parse_hf_tokenizer_json(j.dump(), "metaspace.json");
  EXPECT_EQ(tok->encode("ab", false), (std::vector<int>{kSpaceAB}));
  // Hugging Face's Metaspace prepends only when the text does not already start with "▁".
  EXPECT_EQ(tok->encode(" ab", false), (std::vector<int>{kSpaceAB}));
  // prepend_scheme "first": text after a special token gets no "▁".
  EXPECT_EQ(tok->encode("<s>ab", false, true), (std::vector<int>{1, kAB}));
  EXPECT_EQ(tok->decode(tok->encode("ab abc", false)), "ab abc");
  EXPECT_EQ(tok->decode({kSpaceAB, kSpaceAB}), "ab ab");
}

// Old-style Metaspace (add_prefix_space, split defaults to true): words are split at "▁".
TEST(TokenizerJson, MetaspaceSplitsWords) {
  json j = spm_style_tokenizer();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kMeta}, {"add_prefix_space", true}};
  const auto tok = parse_hf_tokenizer_json(j.dump(), "metaspace-old.json");
  // "a  b" -> "▁a▁▁b" -> pieces "▁a", "▁", "▁b": the "▁▁" merge cannot cross pieces.
  EXPECT_EQ(tok->encode("a  b", false), (std::vector<int>{kSpaceA, kSpace, kSpace, kB}));
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The layout of Llama 3's tokenizer.json: the split regex in a Split pre-tokenizer followed by a
// ByteLevel with use_regex false, merges as ["a", "b"] pairs, ignore_merges. With GPT-2's own
// pattern and vocabulary it must tokenize exactly as the GPT-2 file does.
TEST(TokenizerJson, Llama3LayoutMatchesGpt2) {
  const std::string path = shared("tokenizers/gpt2-hf/tokenizer.json");
  json j = json::parse(read_file(path));
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  json pairs = json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    pairs.push_back({s.substr(0, sp), s.substr(sp + 1)});
  }
  j["model"]["merges"] = pairs;
  j["model"]["ignore_merges"] = true;
  const auto llama3_style = parse_hf_tokenizer_json(j.dump(), "llama3-style.json");
  const auto gpt2 = load_hf_tokenizer_json(path);
  EXPECT_EQ(llama3_style->kind(), "bpe-bytelevel");
  std::string text = read_file(shared("text/wikitext-2-raw/wiki.test.raw")).substr(0, 100'000);
  text += read_file(shared("tokenizers/ggml-vocab-gpt-2.gguf.inp"));
  EXPECT_EQ(llama3_style->encode(text, false), gpt2->encode(text, false));
}

TEST(TokenizerJson, SplitBehaviors) {
  // A tiny byte-level-free vocabulary of single characters and "-" runs, to see the pieces that
  // each Split behavior produces (no merges, so one token per character and pieces show as the
  // absence of merges across them: "a-" can only form inside one piece).
  json vocab = {{"a", 0}, {"b", 1}, {"-", 2}, {"a-", 3}, {"-b", 4}, {"--", 5}};
  json base = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a -", "- b", "- -"}}}}};
  const auto pieces_of = [&](const char* behavior) {
    json j = base;
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", false}};
    return parse_hf_tokenizer_json(j.dump(), behavior)->encode("a--b", false);
  };
  EXPECT_EQ(pieces_of("Isolated"), (std::vector<int>{0, 2, 2, 1}));
  EXPECT_EQ(pieces_of("Removed"), (std::vector<int>{0, 1}));
  EXPECT_EQ(pieces_of("MergedWithPrevious"), (std::vector<int>{3, 2, 1}));  // "a-", "-", "b"
  EXPECT_EQ(pieces_of("MergedWithNext"), (std::vector<int>{0, 2, 4}));      // "a", "-", "-b"
  EXPECT_EQ(pieces_of("Contiguous"), (std::vector<int>{0, 5, 1}));          // "a", "--", "b"
}

TEST(TokenizerJson, ConfigOverridesAndDir) {
  test::TempDir dir;
  json j = spm_style_tokenizer();
  std::ofstream(dir / "tokenizer.json") << j.dump();
  {
    const auto tok = load_tokenizer_dir(dir.path.string());
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_TRUE(tok->add_bos_default());
  }
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"add_bos_token": false, "bos_token": {"content": "</s>", "special": true}, "eos_token": "<unk>"})";
  {
    const auto tok = load_tokenizer_dir(dir.path.string());
    EXPECT_EQ(tok->bos_id(), 2);
    EXPECT_EQ(tok->eos_id(), 0);
    EXPECT_FALSE(tok->add_bos_default());
  }
  std::ofstream(dir / "tokenizer_config.json") << R"({"bos_token": "<nope>"})";
  try {
    load_tokenizer_dir(dir.path.string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("<nope>"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qforge
