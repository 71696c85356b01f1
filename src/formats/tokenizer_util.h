// Pieces shared by the tokenizer back ends: UTF-8 walking, SentencePiece byte pieces ("<0x0A>"),
// the special-token splitter used when parse_special is on, and the BOS/EOS/add_bos settings
// that tokenizer_config.json and config.json may give.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qforge::tok {

// Byte length of the UTF-8 sequence that starts at s[pos], or 1 when the bytes there are not a
// well-formed sequence (so that invalid input still walks forward one byte at a time).
size_t utf8_char_len(std::string_view s, size_t pos);

// "<0x0A>" -> 10; anything else (including lower-case hex, which SentencePiece never writes) -> -1.
int parse_byte_piece(std::string_view piece);
std::string byte_piece(uint8_t b);  // 10 -> "<0x0A>"

// unordered_map<std::string, V> that can be looked up with a string_view without allocating.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// Finds special tokens written in text. At each position the longest token that matches wins
// (as Hugging Face's added-vocabulary matcher does), scanning left to right.
class SpecialSplitter {
 public:
  struct Token {
    std::string text;
    int id;
    bool lstrip = false;  // the match also swallows whitespace just before it
    bool rstrip = false;  // ... and just after it
  };
  void add(Token t);
  bool empty() const { return tokens_.empty(); }

  struct Part {
    std::string_view text;       // ordinary text (when id < 0)
    int id = -1;                 // a matched special token
    bool at_text_start = false;  // ordinary text that begins at byte 0 of the input
  };
  std::vector<Part> split(std::string_view text) const;

 private:
  std::vector<Token> tokens_;
  std::vector<std::vector<int>> by_first_byte_ = std::vector<std::vector<int>>(256);
};

// What a model directory's tokenizer_config.json and config.json say about BOS/EOS. Unset fields
// mean "the file does not say".
struct SpecialTokenSettings {
  std::optional<int> bos, eos;                // tokenizer_config.json bos_token / eos_token
  std::optional<bool> add_bos;                // tokenizer_config.json add_bos_token
  std::optional<int> config_bos, config_eos;  // config.json bos_token_id / eos_token_id

  // tokenizer_config.json overrides what the tokenizer file itself says; config.json only fills
  // in ids the tokenizer file does not have (its ids describe the model, not the tokenizer).
  void apply(int& bos_id, int& eos_id, bool& add_bos_default) const;
};
// lookup(text) returns the id of a token text, or -1. Fails naming the file when a token named
// there is not in the vocabulary or an id is out of range. An empty config_dir or missing files
// give empty settings.
SpecialTokenSettings read_special_token_settings(const std::string& config_dir,
                                                 const std::function<int(std::string_view)>& lookup,
                                                 int vocab_size);

}  // namespace qforge::tok
