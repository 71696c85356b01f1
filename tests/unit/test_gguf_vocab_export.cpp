// GGUF vocabulary export: tokenizers of every kind (SentencePiece model, llama2.c tokenizer.bin,
// Hugging Face tokenizer.json in both styles, GGUF vocabularies) written as vocabulary-only GGUF
// files tokenize exactly as the originals; exports compare key by key with files llama.cpp's
// tools wrote (stories260K.gguf, ggml-vocab-gpt-2.gguf, ggml-vocab-llama-spm.gguf).
#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>

#include "qforge/error.h"
#include "qforge/gguf.h"
#include "qforge/gguf_writer.h"
#include "qforge/tokenizer.h"
#include "test_util.h"
#include "vocab_vectors.h"

namespace qforge {
namespace {

using test::shared;
using test::TempDir;

#define EXPECT_CONTAINS(haystack, needle) EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

std::string unsupported_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(int(e.kind()), int(ErrorKind::Unsupported)) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

// Texts for comparing tokenizers: llama.cpp's test strings (both sets) and TinyStories text.
std::vector<std::string> comparison_texts() {
  std::vector<std::string> texts;
  for (const char* v : {"tokenizers/ggml-vocab-gpt-2.gguf", "tokenizers/ggml-vocab-llama-spm.gguf"})
    for (auto& vec : test::read_vectors(shared(v))) texts.push_back(vec.text);
  texts.push_back(test::read_prefix(shared("text/tinystories/TinyStories-valid-1M.txt"), 20000));
  texts.push_back("<s>special</s> tokens <unk> and <|endoftext|> in text");
  return texts;
}

std::string write_vocab(const Tokenizer& tok, const std::string& path) {
  GgufWriter w(path);
  w.set_string("general.architecture", tok.gguf_vocab().model == "gpt2" ? "gpt2" : "llama");
  write_tokenizer_metadata(w, tok.gguf_vocab());
  w.commit();
  return path;
}

// The exported vocabulary, loaded back, tokenizes every text as the original does.
void expect_same_tokenization(const Tokenizer& original, const Tokenizer& exported) {
  EXPECT_EQ(exported.vocab_size(), original.vocab_size());
  EXPECT_EQ(exported.bos_id(), original.bos_id());
  EXPECT_EQ(exported.eos_id(), original.eos_id());
  EXPECT_EQ(exported.add_bos_default(), original.add_bos_default());
  for (const auto& text : comparison_texts()) {
    for (bool special : {false, true})
      EXPECT_EQ(test::show(exported.encode(text, true, special)), test::show(original.encode(text, true, special)))
          << "parse_special " << special << ", text: '" << text.substr(0, 200) << "'";
  }
}

void expect_same_vocab(const GgufVocab& a, const GgufVocab& b) {
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.pre, b.pre);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.scores, b.scores);
  EXPECT_EQ(a.token_types, b.token_types);
  EXPECT_EQ(a.merges, b.merges);
  EXPECT_EQ(a.bos, b.bos);
  EXPECT_EQ(a.eos, b.eos);
}

TEST(GgufVocabExport, SentencePieceModel) {
  TempDir d;
  const auto sp = load_tokenizer_dir(shared("models/stories260K-hf"));
  ASSERT_EQ(sp->kind(), "sentencepiece");
  const auto back = load_gguf_tokenizer(write_vocab(*sp, d / "v.gguf"));
  expect_same_tokenization(*sp, *back);
  // Against llama.cpp's own conversion of the same tokenizer: the same tokens, scores and types.
  const GgufVocab ours = sp->gguf_vocab();
  const GgufVocab ref = load_gguf_tokenizer(shared("models/stories260K-gguf/stories260K.gguf"))->gguf_vocab();
  expect_same_vocab(ours, ref);
  EXPECT_EQ(ours.unk, 0);
  EXPECT_EQ(ours.token_types[0], GgufVocab::kUnknown);
  EXPECT_EQ(ours.token_types[1], GgufVocab::kControl);
  EXPECT_EQ(ours.token_types[3], GgufVocab::kByte);
}

TEST(GgufVocabExport, Llama2cTokenizer) {
  TempDir d;
  const auto l2c = load_llama2c_tokenizer(shared("models/stories260K-llama2c/tok512.bin"));
  const auto back = load_gguf_tokenizer(write_vocab(*l2c, d / "v.gguf"));
  expect_same_tokenization(*l2c, *back);
  // llama.cpp's stories260K.gguf was converted from this file by convert-llama2c-to-ggml.
  const auto ref = load_gguf_tokenizer(shared("models/stories260K-gguf/stories260K.gguf"));
  expect_same_vocab(l2c->gguf_vocab(), ref->gguf_vocab());
}

// Llama 2's tokenizer at full size, as tokenizer.model and as llama2.c's tokenizer.bin: both
// exports reproduce the Hugging Face test vectors of ggml-vocab-llama-spm.gguf (which llama.cpp
// converted from the same tokenizer) and carry the same tokens and types.
TEST(GgufVocabExport, Llama2TokenizersReproduceVectors) {
  TempDir d;
  const auto sp = load_sentencepiece(shared("models/llama2-tokenizer/tokenizer.model"));
  const auto l2c = load_llama2c_tokenizer(shared("models/llama2-tokenizer/tokenizer.bin"));
  const auto ref = load_gguf_tokenizer(shared("tokenizers/ggml-vocab-llama-spm.gguf"));
  const auto vectors = test::read_vectors(shared("tokenizers/ggml-vocab-llama-spm.gguf"));
  for (const Tokenizer* tok : {sp.get(), l2c.get()}) {
    SCOPED_TRACE(tok->kind());
    const auto back = load_gguf_tokenizer(write_vocab(*tok, d / (tok->kind() + ".gguf")));
    for (const auto& v : vectors)
      EXPECT_EQ(test::show(back->encode(v.text, false)), test::show(v.ids)) << "text: '" << v.text << "'";
    const GgufVocab a = back->gguf_vocab(), b = ref->gguf_vocab();
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.token_types, b.token_types);
  }
  expect_same_vocab(sp->gguf_vocab(), ref->gguf_vocab());  // scores too: both from the SentencePiece model
}

TEST(GgufVocabExport, GgufVocabulariesRoundTrip) {
  TempDir d;
  for (const char* name : {"ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf"}) {
    SCOPED_TRACE(name);
    const std::string src = shared(std::string("tokenizers/") + name);
    const auto original = load_gguf_tokenizer(src);
    const auto back = load_gguf_tokenizer(write_vocab(*original, d / name));
    expect_same_vocab(back->gguf_vocab(), original->gguf_vocab());
    for (const auto& v : test::read_vectors(src))
      EXPECT_EQ(test::show(back->encode(v.text, false)), test::show(v.ids)) << "text: '" << v.text << "'";
    expect_same_tokenization(*original, *back);
    // The keys themselves, as llama.cpp wrote them.
    const auto a = GgufFile::open(src), b = GgufFile::open(d / name);
    for (const char* key : {"tokenizer.ggml.model", "tokenizer.ggml.pre"})
      EXPECT_EQ(b->get_string(key), a->get_string(key)) << key;
    for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"})
      if (a->has(key)) {
        EXPECT_EQ(b->get_string_array(key), a->get_string_array(key)) << key;
      }
    EXPECT_EQ(b->get_i32_array("tokenizer.ggml.token_type"), a->get_i32_array("tokenizer.ggml.token_type"));
    if (a->has("tokenizer.ggml.scores")) {
      EXPECT_EQ(b->get_f32_array("tokenizer.ggml.scores"), a->get_f32_array("tokenizer.ggml.scores"));
    }
    for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"})
      EXPECT_EQ(b->get_u32(key), a->get_u32(key)) << key;
  }
}

TEST(GgufVocabExport, HfByteLevelMatchesLlamaCppConversion) {
  TempDir d;
  const auto hf = load_tokenizer_dir(shared("tokenizers/gpt2-hf"));
  ASSERT_EQ(hf->kind(), "bpe-bytelevel");
  const GgufVocab v = hf->gguf_vocab();
  // ggml-vocab-gpt-2.gguf is llama.cpp's conversion of the same tokenizer.
  GgufVocab ref = load_gguf_tokenizer(shared("tokenizers/ggml-vocab-gpt-2.gguf"))->gguf_vocab();
  expect_same_vocab(v, ref);
  EXPECT_EQ(v.token_types[50256], GgufVocab::kControl);  // <|endoftext|>
  const auto back = load_gguf_tokenizer(write_vocab(*hf, d / "v.gguf"));
  expect_same_tokenization(*hf, *back);
}

// The Llama 3 layout of a byte-level tokenizer.json (Split + ByteLevel without regex) is named by
// its pattern: GPT-2's own pattern in that layout is still "gpt-2"; Llama 3's is "llama-bpe".
TEST(GgufVocabExport, ByteLevelPreTokenizerNames) {
  auto j = nlohmann::json::parse(test::read_file(shared("tokenizers/gpt2-hf/tokenizer.json")));
  const auto with_split = [&](const std::string& regex) {
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "Split"},
                             {"pattern", {{"Regex", regex}}},
                             {"behavior", "Isolated"},
                             {"invert", false}},
                            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    return parse_hf_tokenizer_json(j.dump(), "t.json")->gguf_vocab().pre;
  };
  EXPECT_EQ(with_split(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"), "gpt-2");
  EXPECT_EQ(with_split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
                       "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
            "llama-bpe");
  const std::string msg = unsupported_error_of([&] { with_split("\\s+"); });
  EXPECT_CONTAINS(msg, "t.json: pre_tokenizer: this byte-level layout has no GGUF name");
}

// A SentencePiece-style tokenizer.json (byte fallback, "▁"): exported as "llama" with scores from
// the merge ranks, it tokenizes as the BPE merges do.
TEST(GgufVocabExport, HfSentencePieceStyle) {
  TempDir d;
  // A real vocabulary in that form: Llama 2's pieces with merges in score order, built from the
  // SentencePiece model the way transformers' converter does (every split of a piece into two
  // pieces, ranked by the piece's score).
  const auto sp = load_sentencepiece(shared("models/stories260K-hf/tokenizer.model"));
  const GgufVocab spv = sp->gguf_vocab();
  nlohmann::json vocab = nlohmann::json::object();
  std::map<std::string, int> ids;
  for (size_t i = 0; i < spv.tokens.size(); ++i) {
    vocab[spv.tokens[i]] = int(i);
    ids[spv.tokens[i]] = int(i);
  }
  std::vector<std::tuple<float, int, int, std::string>> merges;  // -score, left id, right id, "l r"
  for (size_t i = 0; i < spv.tokens.size(); ++i) {
    const std::string& t = spv.tokens[i];
    if (spv.token_types[i] != GgufVocab::kNormal) continue;
    for (size_t cut = 1; cut < t.size(); ++cut) {
      auto l = ids.find(t.substr(0, cut)), r = ids.find(t.substr(cut));
      if (l != ids.end() && r != ids.end())
        merges.emplace_back(-spv.scores[i], l->second, r->second, l->first + " " + r->first);
    }
  }
  std::sort(merges.begin(), merges.end());
  nlohmann::json merge_list = nlohmann::json::array();
  for (const auto& m : merges) merge_list.push_back(std::get<3>(m));
  nlohmann::json added = nlohmann::json::array();
  for (int id = 0; id < 3; ++id)
    added.push_back({{"id", id}, {"content", spv.tokens[size_t(id)]}, {"special", true}, {"normalized", false}});
  const std::string meta = "\xE2\x96\x81";
  const nlohmann::json j = {
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", meta}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", meta}}}}}},
      {"pre_tokenizer", nullptr},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", meta}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", merge_list}}},
  };
  const auto hf = parse_hf_tokenizer_json(j.dump(), "spm-style.json");
  ASSERT_EQ(hf->kind(), "bpe-spm");
  const GgufVocab v = hf->gguf_vocab();
  EXPECT_EQ(v.model, "llama");
  EXPECT_EQ(v.pre, "default");
  EXPECT_EQ(v.tokens, spv.tokens);
  EXPECT_EQ(v.token_types, spv.token_types);  // unknown, control, byte, normal: as SentencePiece says
  EXPECT_TRUE(v.add_space_prefix);
  const auto back = load_gguf_tokenizer(write_vocab(*hf, d / "v.gguf"));
  for (const auto& text : comparison_texts())
    EXPECT_EQ(test::show(back->encode(text, false)), test::show(hf->encode(text, false))) << text.substr(0, 200);
}

}  // namespace
}  // namespace qforge
