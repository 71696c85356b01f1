// Tokenizers: SentencePiece tokenizer.model (libsentencepiece), Hugging Face tokenizer.json
// (byte-level BPE as in GPT-2 / Llama 3, and SentencePiece-style BPE with byte fallback),
// and llama2.c's tokenizer.bin.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qforge {

// A vocabulary as llama.cpp's GGUF files describe it (the tokenizer.ggml.* keys): what a GGUF file
// written by qforge must carry for llama.cpp (and qforge's GGUF tokenizer) to tokenize exactly as
// the original tokenizer does.
struct GgufVocab {
  // "llama": SentencePiece-style pieces ("▁" for spaces, "<0xXX>" byte pieces) merged by score;
  // "gpt2": byte-level BPE with ranked merges.
  std::string model;
  // tokenizer.ggml.pre: "default" for "llama"; the pre-tokenizer of a "gpt2" vocabulary
  // ("gpt-2", "llama-bpe", "qwen2").
  std::string pre;
  std::vector<std::string> tokens;
  std::vector<float> scores;  // one per token for "llama"; empty for "gpt2"
  // One per token: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
  std::vector<int32_t> token_types;
  std::vector<std::string> merges;  // "gpt2": "left right", best first
  int bos = -1, eos = -1, unk = -1, pad = -1;  // -1: none
  bool add_bos = false, add_eos = false;
  bool add_space_prefix = true;  // "llama": a "▁" goes in front of the text

  enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes text. add_bos prepends BOS when the tokenizer has one. Special tokens written in the
  // text (e.g. "<|endoftext|>", "<s>") are recognised only when parse_special is true; otherwise
  // their text is encoded like any other. (Added tokens that a tokenizer.json does not mark
  // special are always recognised, as in Hugging Face.) Text need not be valid UTF-8.
  virtual std::vector<int> encode(std::string_view text, bool add_bos, bool parse_special = false) const = 0;
  // Decodes ids to text (special tokens such as BOS/EOS are skipped). Throws on an id out of range.
  // decode(encode(text, ...)) == text for any text the vocabulary can spell (byte-level and
  // byte-fallback vocabularies spell all text), except that SentencePiece-style vocabularies read a
  // literal "▁" (U+2581) in the text as a space.
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  // The text of one token as it would appear when streaming (given the previous token, for
  // SentencePiece's leading-space rule: prev_id -1 or BOS means "start of text", where the space
  // that encoding added in front is dropped). May be an incomplete UTF-8 sequence for byte tokens;
  // concatenating token_text over a sequence gives decode() of it.
  virtual std::string token_text(int id, int prev_id) const = 0;
  virtual std::string token_piece(int id) const = 0;  // raw vocabulary entry
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;  // -1 if none
  virtual int eos_id() const = 0;  // -1 if none
  virtual bool add_bos_default() const = 0;  // what the model's tokenizer_config asks for
  virtual std::string kind() const = 0;  // "sentencepiece", "bpe-bytelevel", "bpe-spm", "llama2c"
  // The vocabulary in llama.cpp's GGUF terms, typed and scored as llama.cpp's converters do (see
  // each implementation). Throws Unsupported for a tokenizer llama.cpp's GGUF cannot describe
  // (e.g. a byte-level pre-tokenizer other than GPT-2's, Llama 3's or Qwen 2's).
  virtual GgufVocab gguf_vocab() const = 0;
};

// Loads the tokenizer of a model directory: tokenizer.json if present, else tokenizer.model;
// BOS/EOS and add_bos from tokenizer_config.json / config.json. Throws naming the file at fault.
std::unique_ptr<Tokenizer> load_tokenizer_dir(const std::string& dir);
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path, const std::string& config_dir = "");
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& json_path, const std::string& config_dir = "");
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& bin_path);
// From bytes in memory (fuzzing); `origin` is used in messages.
std::unique_ptr<Tokenizer> parse_hf_tokenizer_json(const std::string& text, const std::string& origin);
std::unique_ptr<Tokenizer> parse_llama2c_tokenizer(const uint8_t* data, size_t size, const std::string& origin);

}  // namespace qforge
