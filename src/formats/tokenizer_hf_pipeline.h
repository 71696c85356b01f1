// The text-processing steps of a Hugging Face tokenizer.json around its BPE model: normalizers,
// pre-tokenizers (with PCRE2 for split patterns) and decoders. Each step here is one JSON object
// of the file; tokenizer_hf.cpp reads the JSON and builds these.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qforge::tok {

// A compiled PCRE2 pattern in UTF + UCP mode (so \s, \p{L}, \p{N} follow Unicode, as the Oniguruma
// patterns of tokenizer.json expect). Invalid UTF-8 in the subject is tolerated: such bytes never
// match, they end up between matches.
class Regex {
 public:
  // `what` names the pattern in error messages ("tokenizer: FILE: pre_tokenizer.pattern").
  Regex(const std::string& pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-empty matches of the pattern in text, left to right, as [begin, end) byte offsets.
  // An empty match moves the search on by one character (as Oniguruma's find-all does).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  void* code_ = nullptr;   // pcre2_code_8
  void* mcontext_ = nullptr;  // pcre2_match_context_8 with match limits
  std::string what_;
};

// The regex of GPT-2 that ByteLevel uses when use_regex is true.
extern const char* const kGpt2SplitPattern;

// GPT-2's reversible map from bytes to printable characters (' ' -> 'Ġ', '\n' -> 'Ċ', ...): byte
// b becomes the UTF-8 string byte_to_unicode()[b].
const std::string& byte_to_unicode(uint8_t b);
std::string bytes_to_unicode(std::string_view bytes);
// The inverse for one code point; -1 if the code point is not in the map.
int unicode_to_byte(uint32_t code_point);

// How a split pattern's matches relate to the text around them (Hugging Face's
// SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// A literal string or a regex; what Replace and Split use for "pattern".
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;  // set when the file gave {"Regex": ...}
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
};

struct NormalizerStep {
  enum Kind { Replace, Prepend } kind;
  Pattern pattern;      // Replace
  std::string content;  // Replace: the replacement; Prepend: the prefix
};
void normalize(const std::vector<NormalizerStep>& steps, std::string& text);

// A pre-token; at_text_start marks the one that begins at byte 0 of the input (Metaspace's
// prepend_scheme "first" prepends only there).
struct Piece {
  std::string text;
  bool at_text_start = false;
};

struct PreTokenizerStep {
  enum Kind { ByteLevel, Split, Metaspace } kind;
  explicit PreTokenizerStep(Kind k) : kind(k) {}
  // ByteLevel
  bool add_prefix_space = false;
  std::shared_ptr<Regex> gpt2_regex;  // set when use_regex is true
  // Split
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  // Metaspace
  std::string replacement;
  enum class Prepend { Always, First, Never } prepend = Prepend::Always;
  bool split = true;
};
void pre_tokenize(const std::vector<PreTokenizerStep>& steps, std::vector<Piece>& pieces);

struct DecoderStep {
  enum Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace } kind;
  explicit DecoderStep(Kind k) : kind(k) {}
  std::string pattern, content;  // Replace (literal pattern); Strip content; Metaspace replacement
  size_t start = 0, stop = 0;    // Strip
  bool strip_first = false;      // Metaspace: drop the leading replacement of the first token
};
// Runs the decoder chain over token strings and joins what comes out. Bytes are passed through
// as they are: an incomplete UTF-8 sequence stays incomplete (the caller may be streaming).
std::string run_decoders(const std::vector<DecoderStep>& steps, std::vector<std::string> tokens);

}  // namespace qforge::tok
