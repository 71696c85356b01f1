// Hostile and broken tokenizer files: every loader must fail with one clear qforge::Error naming
// the file and the key or token at fault, never crash or allocate what the input cannot justify.
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qforge/error.h"
#include "qforge/tokenizer.h"
#include "test_util.h"

namespace qforge {
namespace {

using nlohmann::json;
using test::shared;
using namespace std::string_literals;

// Runs f, expects a qforge::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning " << *parts.begin();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
    EXPECT_EQ(e.exit_code(), 2) << msg;
  }
}

// ---- tokenizer.json --------------------------------------------------------------------------

json minimal_bpe() {
  return {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}}};
}

void expect_json_error(const json& j, std::initializer_list<std::string> parts) {
  expect_error([&] { parse_hf_tokenizer_json(j.dump(), "bad.json"); }, parts);
}

TEST(TokenizerBadInput, MinimalJsonWorks) {
  const auto tok = parse_hf_tokenizer_json(minimal_bpe().dump(), "ok.json");
  EXPECT_EQ(tok->encode("abba", false), (std::vector<int>{2, 1, 0}));
  EXPECT_EQ(tok->encode("xab", false), (std::vector<int>{2}));  // no <unk>: unknown chars dropped
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), -1);
  EXPECT_EQ(tok->encode("ab", true), (std::vector<int>{2}));  // no BOS to add
}

TEST(TokenizerBadInput, JsonSyntaxAndShape) {
  expect_error([] { parse_hf_tokenizer_json("{\"model\": ", "trunc.json"); }, {"trunc.json", "invalid JSON"});
  expect_error([] { parse_hf_tokenizer_json("", "empty.json"); }, {"empty.json", "invalid JSON"});
  expect_error([] { parse_hf_tokenizer_json("[1, 2]", "arr.json"); }, {"arr.json", "expected an object"});
  expect_error([] { parse_hf_tokenizer_json(std::string(100000, '['), "deep.json"); }, {"deep.json"});
  expect_json_error(json::object(), {"bad.json", "missing key \"model\""});
  json j = minimal_bpe();
  j["model"].erase("vocab");
  expect_json_error(j, {"bad.json", "model", "\"vocab\""});
  j = minimal_bpe();
  j["model"]["vocab"] = json::array();
  expect_json_error(j, {"model.vocab", "expected an object"});
}

TEST(TokenizerBadInput, JsonModel) {
  json j = minimal_bpe();
  j["model"]["type"] = "Unigram";
  expect_json_error(j, {"bad.json", "model.type", "Unigram"});
  j = minimal_bpe();
  j["model"]["vocab"]["c"] = "seven";
  expect_json_error(j, {"model.vocab[\"c\"]", "integer"});
  j = minimal_bpe();
  j["model"]["vocab"]["c"] = 2000000000;  // would be an 2e9-entry table
  expect_json_error(j, {"model.vocab[\"c\"]", "2000000000", "out of range"});
  j = minimal_bpe();
  j["model"]["vocab"]["c"] = -1;
  expect_json_error(j, {"model.vocab[\"c\"]", "out of range"});
  j = minimal_bpe();
  j["model"]["unk_token"] = "<unk>";
  expect_json_error(j, {"model.unk_token", "<unk>"});
  j = minimal_bpe();
  j["model"]["continuing_subword_prefix"] = "##";
  expect_json_error(j, {"continuing_subword_prefix"});
}

TEST(TokenizerBadInput, JsonMerges) {
  json j = minimal_bpe();
  j["model"]["merges"] = {"a z"};
  expect_json_error(j, {"bad.json", "model.merges[0]", "\"z\"", "not in model.vocab"});
  j["model"]["merges"] = {"a b", "b a"};  // "ba" is not a token
  expect_json_error(j, {"model.merges[1]", "\"ba\""});
  j["model"]["merges"] = {"a b c"};
  expect_json_error(j, {"model.merges[0]", "two tokens"});
  j["model"]["merges"] = {"ab"};
  expect_json_error(j, {"model.merges[0]"});
  j["model"]["merges"] = json::array({json::array({"a"})});
  expect_json_error(j, {"model.merges[0]"});
  j["model"]["merges"] = {7};
  expect_json_error(j, {"model.merges[0]"});
  j["model"]["merges"] = json::array({json::array({"a", "q"})});
  expect_json_error(j, {"model.merges[0]", "\"q\""});
}

TEST(TokenizerBadInput, JsonAddedTokensAndPipeline) {
  json j = minimal_bpe();
  j["added_tokens"] = {{{"id", 99999999}, {"content", "<x>"}, {"special", true}}};
  expect_json_error(j, {"added_tokens[0].id", "out of range"});
  j["added_tokens"] = {{{"content", "<x>"}}};
  expect_json_error(j, {"added_tokens[0]", "\"id\""});
  j["added_tokens"] = {{{"id", 3}, {"content", 5}}};
  expect_json_error(j, {"added_tokens[0].content", "string"});

  j = minimal_bpe();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_json_error(j, {"bad.json", "pre_tokenizer.pattern.Regex", "invalid regex"});
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "x"}}}, {"behavior", "Sideways"}};
  expect_json_error(j, {"pre_tokenizer.behavior", "Sideways"});
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Whitespace"}}}}};
  expect_json_error(j, {"pre_tokenizer.pretokenizers[0]", "Whitespace"});
  j["pre_tokenizer"] = {{"type", "Split"}};
  expect_json_error(j, {"pre_tokenizer", "\"pattern\""});

  j = minimal_bpe();
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_json_error(j, {"normalizer", "Lowercase"});
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}};
  expect_json_error(j, {"normalizer", "\"content\""});

  j = minimal_bpe();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_json_error(j, {"decoder", "WordPiece"});
  j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}};
  expect_json_error(j, {"decoder", "negative"});

  j = minimal_bpe();
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}}},
                         {"special_tokens", json::object()}};
  expect_json_error(j, {"post_processor.special_tokens", "<s>"});

  // Sequences nested past any real file's depth.
  json deep = {{"type", "ByteLevel"}};
  for (int i = 0; i < 40; ++i) deep = {{"type", "Sequence"}, {"decoders", {deep}}};
  j = minimal_bpe();
  j["decoder"] = deep;
  expect_json_error(j, {"decoder", "nested too deeply"});
}

TEST(TokenizerBadInput, DecodeOutOfRange) {
  const auto tok = parse_hf_tokenizer_json(minimal_bpe().dump(), "ok.json");
  expect_error([&] { tok->decode({0, 3}); }, {"ok.json", "token id 3", "out of range"});
  expect_error([&] { tok->decode({-5}); }, {"token id -5"});
  expect_error([&] { tok->token_text(1 << 30, -1); }, {"out of range"});
  expect_error([&] { tok->token_piece(-1); }, {"out of range"});
}

TEST(TokenizerBadInput, InvalidUtf8TextStillRoundTrips) {
  const auto gpt2 = load_hf_tokenizer_json(shared("tokenizers/gpt2-hf/tokenizer.json"));
  const std::string text = "ok \xFF\xFE bad \xC3 half \xE2\x82 cut\x80 end \0 nul"s;
  EXPECT_EQ(gpt2->decode(gpt2->encode(text, false)), text);
  const auto spm = load_llama2c_tokenizer(shared("models/stories260K-llama2c/tok512.bin"));
  EXPECT_EQ(spm->decode(spm->encode(text, false)), text);
}

// ---- tokenizer.bin ---------------------------------------------------------------------------

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void append_i32(std::vector<uint8_t>& v, int32_t x) {
  uint8_t b[4];
  std::memcpy(b, &x, 4);
  v.insert(v.end(), b, b + 4);
}
// Writes one token; `len` overrides the stored length (to write lies).
void append_token(std::vector<uint8_t>& v, float score, const std::string& piece, int32_t len = INT32_MIN) {
  int32_t bits;
  std::memcpy(&bits, &score, 4);
  append_i32(v, bits);
  append_i32(v, len != INT32_MIN ? len : int32_t(piece.size()));
  v.insert(v.end(), piece.begin(), piece.end());
}

void expect_bin_error(const std::vector<uint8_t>& v, std::initializer_list<std::string> parts) {
  expect_error([&] { parse_llama2c_tokenizer(v.data(), v.size(), "bad.bin"); }, parts);
}

TEST(TokenizerBadInput, Llama2cBin) {
  const auto good = read_bytes(shared("models/stories260K-llama2c/tok512.bin"));
  ASSERT_GT(good.size(), 100u);

  expect_bin_error({}, {"bad.bin", "too short"});
  expect_bin_error({7, 0}, {"bad.bin", "too short"});
  // Cut in the middle of a token's header and in the middle of its bytes.
  for (size_t cut : {good.size() - 1, good.size() - 3, size_t(4 + 8 + 2), size_t(4 + 3)}) {
    std::vector<uint8_t> v(good.begin(), good.begin() + long(cut));
    expect_bin_error(v, {"bad.bin", "token"});
  }

  std::vector<uint8_t> v;
  append_i32(v, 7);
  append_token(v, 0, "<unk>");
  append_token(v, 0, "x", 0x7fffffff);  // absurd length
  expect_bin_error(v, {"bad.bin", "token 1", "length 2147483647"});

  v.clear();
  append_i32(v, 7);
  append_token(v, 0, "<unk>");
  append_token(v, 0, "", -5);
  expect_bin_error(v, {"token 1", "length -5"});

  v.clear();
  append_i32(v, -1);
  expect_bin_error(v, {"max_token_length"});

  v.clear();
  append_i32(v, 7);
  append_token(v, std::nanf(""), "<unk>");
  expect_bin_error(v, {"token 0", "score"});

  v.clear();
  append_i32(v, 7);
  append_token(v, 0, "<unk>");
  append_token(v, 0, "<s>");
  expect_bin_error(v, {"bad.bin", "only 2 tokens"});

  // Three tokens parse; text needing byte fallback has no byte tokens to fall back on.
  append_token(v, 0, "</s>");
  const auto tiny = parse_llama2c_tokenizer(v.data(), v.size(), "tiny.bin");
  EXPECT_EQ(tiny->vocab_size(), 3);
  expect_error([&] { tiny->encode("hi", false); }, {"tiny.bin", "byte 0x", "has no token"});
  expect_error([&] { tiny->decode({3}); }, {"tiny.bin", "token id 3"});

  expect_error([] { load_llama2c_tokenizer("/nonexistent/tok.bin"); }, {"/nonexistent/tok.bin"});
}

// ---- tokenizer.model and directories ---------------------------------------------------------

TEST(TokenizerBadInput, SentencePieceModel) {
  test::TempDir dir;
  {
    std::ofstream(dir / "garbage.model") << "this is not a protobuf \xFF\xFF\xFF\xFF\x01\x02";
  }
  expect_error([&] { load_sentencepiece(dir / "garbage.model"); }, {"garbage.model"});
  {
    std::ofstream f(dir / "empty.model");
  }
  expect_error([&] { load_sentencepiece(dir / "empty.model"); }, {"empty.model"});
  // A real model cut in half.
  auto bytes = read_bytes(shared("models/stories260K-hf/tokenizer.model"));
  {
    std::ofstream f(dir / "cut.model", std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), long(bytes.size() / 2));
  }
  expect_error([&] { load_sentencepiece(dir / "cut.model"); }, {"cut.model"});
  expect_error([&] { load_sentencepiece(dir / "missing.model"); }, {"missing.model"});
}

TEST(TokenizerBadInput, Directory) {
  test::TempDir dir;
  expect_error([&] { load_tokenizer_dir(dir.path.string()); }, {dir.path.string(), "tokenizer.json", "tokenizer.model"});
  expect_error([&] { load_tokenizer_dir(dir / "nope"); }, {"nope"});
  std::ofstream(dir / "tokenizer.json") << "{not json";
  expect_error([&] { load_tokenizer_dir(dir.path.string()); }, {"tokenizer.json", "invalid JSON"});
  std::ofstream(dir / "tokenizer.json") << minimal_bpe().dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"add_bos_token": "yes"})";
  expect_error([&] { load_tokenizer_dir(dir.path.string()); }, {"tokenizer_config.json", "add_bos_token"});
  std::ofstream(dir / "tokenizer_config.json") << "{}";
  std::ofstream(dir / "config.json") << R"({"eos_token_id": 12345})";
  expect_error([&] { load_tokenizer_dir(dir.path.string()); }, {"config.json", "eos_token_id", "12345"});
  std::ofstream(dir / "config.json") << R"({"eos_token_id": [1, 2]})";
  EXPECT_EQ(load_tokenizer_dir(dir.path.string())->eos_id(), 1);
}

}  // namespace
}  // namespace qforge
