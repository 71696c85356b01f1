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
