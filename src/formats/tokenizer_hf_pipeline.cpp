#include "formats/tokenizer_hf_pipeline.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>

#include "formats/tokenizer_util.h"
#include "qforge/error.h"

namespace qforge::tok {

// ---- PCRE2 --------------------------------------------------------------------------------

const char* const kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

Regex::Regex(const std::string& pattern, const std::string& what) : what_(what) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  // MATCH_INVALID_UTF: our input is bytes, not necessarily valid UTF-8 (Hugging Face only ever
  // sees valid strings). With it PCRE2 also skips its whole-subject UTF check on every call,
  // which would otherwise make matching a long text quadratic.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail("{}: invalid regex at offset {}: {}", what, err_offset, reinterpret_cast<const char*>(msg));
  }
  code_ = code;
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is the fallback
  // A pattern from a hostile file could backtrack exponentially; cap the work per match.
  auto* mc = pcre2_match_context_create(nullptr);
  pcre2_set_match_limit(mc, 10'000'000);
  pcre2_set_depth_limit(mc, 100'000);
  mcontext_ = mc;
}

Regex::~Regex() {
  pcre2_match_context_free(static_cast<pcre2_match_context*>(mcontext_));
  pcre2_code_free(static_cast<pcre2_code*>(code_));
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  auto* code = static_cast<pcre2_code*>(code_);
  auto* mc = static_cast<pcre2_match_context*>(mcontext_);
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  if (!md) fail("{}: out of memory for regex match data", what_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), start, 0, md.get(), mc);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail("{}: regex matching failed: {}", what_, reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t b = ov[0], e = ov[1];
    if (e <= b) {  // empty match: try again one character later
      if (b >= text.size()) break;
      start = b + utf8_char_len(text, b);
      continue;
    }
    out.emplace_back(b, e);
    start = e;
  }
  return out;
}

std::vector<std::pair<size_t, size_t>> Pattern::find_all(std::string_view text) const {
  if (regex) return regex->find_all(text);
  std::vector<std::pair<size_t, size_t>> out;
  if (literal.empty()) return out;
  for (size_t pos = text.find(literal); pos != std::string_view::npos; pos = text.find(literal, pos + literal.size()))
    out.emplace_back(pos, pos + literal.size());
  return out;
}

// ---- GPT-2 byte <-> unicode ---------------------------------------------------------------

namespace {
// Printable bytes keep their own code point; the others (controls, space, 0x7F-0xA0, 0xAD) are
// moved, in byte order, to U+0100 upwards. This is GPT-2's table, so vocabularies spell a space
// as 'Ġ' (U+0120) and a newline as 'Ċ' (U+010A).
struct ByteTables {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 512> to_byte;  // every mapped code point is below U+0200
  ByteTables() {
    to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool keeps = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const int cp = keeps ? b : next++;
      to_byte[cp] = int16_t(b);
      if (cp < 0x80) {
        to_unicode[b] = std::string(1, char(cp));
      } else {
        to_unicode[b] = {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
      }
    }
  }
};
const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

// Decodes one UTF-8 code point at s[pos]; returns its length, or 0 if the bytes are not valid.
size_t decode_code_point(std::string_view s, size_t pos, uint32_t& cp) {
  const size_t len = utf8_char_len(s, pos);
  const uint8_t c = uint8_t(s[pos]);
  if (len == 1) {
    if (c >= 0x80) return 0;
    cp = c;
    return 1;
  }
  cp = len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
  for (size_t i = 1; i < len; ++i) cp = (cp << 6) | (uint8_t(s[pos + i]) & 0x3F);
  return len;
}
}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return byte_tables().to_unicode[b]; }

std::string bytes_to_unicode(std::string_view bytes) {
  const auto& t = byte_tables().to_unicode;
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t[uint8_t(c)];
  return out;
}

int unicode_to_byte(uint32_t cp) { return cp < 512 ? byte_tables().to_byte[cp] : -1; }

// ---- normalizers --------------------------------------------------------------------------

void normalize(const std::vector<NormalizerStep>& steps, std::string& text) {
  for (const auto& step : steps) {
    if (step.kind == NormalizerStep::Prepend) {
      // Hugging Face prepends only to non-empty text.
      if (!text.empty()) text.insert(0, step.content);
      continue;
    }
    const auto matches = step.pattern.find_all(text);
    if (matches.empty()) continue;
    std::string out;
    out.reserve(text.size() + matches.size() * step.content.size());
    size_t prev = 0;
    for (auto [b, e] : matches) {
      out.append(text, prev, b - prev);
      out += step.content;
      prev = e;
    }
    out.append(text, prev);
    text = std::move(out);
  }
}

// ---- pre-tokenizers -----------------------------------------------------------------------

namespace {

// Cuts text at the matches of a pattern and groups the parts as Hugging Face's
// SplitDelimiterBehavior says; empty parts are dropped.
std::vector<std::string> split_text(std::string_view text, const std::vector<std::pair<size_t, size_t>>& matches,
                                    SplitBehavior behavior, bool invert) {
  struct Span {
    size_t b, e;
    bool is_match;
  };
  std::vector<Span> spans;
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (b > prev) spans.push_back({prev, b, invert});
    spans.push_back({b, e, !invert});
    prev = e;
  }
  if (prev < text.size()) spans.push_back({prev, text.size(), invert});

  std::vector<Span> grouped;
  switch (behavior) {
    case SplitBehavior::Isolated: grouped = spans; break;
    case SplitBehavior::Removed:
      for (const auto& s : spans)
        if (!s.is_match) grouped.push_back(s);
      break;
    case SplitBehavior::Contiguous:
      // Runs of consecutive matches become one part.
      for (const auto& s : spans) {
        if (s.is_match && !grouped.empty() && grouped.back().is_match) grouped.back().e = s.e;
        else grouped.push_back(s);
      }
      break;
    case SplitBehavior::MergedWithPrevious: {
      // A match joins the part before it, unless that part is itself a match: in "a--b" split on
      // "-", the first "-" joins "a" and the second stands alone ("a-", "-", "b").
      bool prev_match = false;
      for (const auto& s : spans) {
        if (s.is_match && !prev_match && !grouped.empty()) grouped.back().e = s.e;
        else grouped.push_back(s);
        prev_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      // The mirror image, walking from the end: "Hey▁▁friend" split on "▁" gives "Hey", "▁",
      // "▁friend" (this is how Metaspace keeps "▁" at the start of each word).
      bool next_match = false;
      for (size_t i = spans.size(); i-- > 0;) {
        const Span& s = spans[i];
        if (s.is_match && !next_match && !grouped.empty()) grouped.back().b = s.b;
        else grouped.push_back(s);
        next_match = s.is_match;
      }
      std::reverse(grouped.begin(), grouped.end());
      break;
    }
  }
  std::vector<std::string> out;
  out.reserve(grouped.size());
  for (const auto& s : grouped)
    if (s.e > s.b) out.emplace_back(text.substr(s.b, s.e - s.b));
  return out;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  size_t prev = 0;
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, prev)) {
    out.append(s, prev, pos - prev);
    out += to;
    prev = pos + from.size();
  }
  out.append(s, prev);
  s = std::move(out);
}

}  // namespace

void pre_tokenize(const std::vector<PreTokenizerStep>& steps, std::vector<Piece>& pieces) {
  for (const auto& step : steps) {
    std::vector<Piece> next;
    next.reserve(pieces.size());
    const auto emit = [&](std::vector<std::string> parts, bool at_text_start) {
      for (size_t i = 0; i < parts.size(); ++i) next.push_back({std::move(parts[i]), at_text_start && i == 0});
    };
    for (auto& piece : pieces) {
      switch (step.kind) {
        case PreTokenizerStep::ByteLevel: {
          // As Hugging Face: a space in front of every piece that lacks one (so the first word is
          // spelled like the others), the GPT-2 split, then bytes -> printable characters.
          if (step.add_prefix_space && !piece.text.starts_with(' ')) piece.text.insert(0, 1, ' ');
          std::vector<std::string> parts;
          if (step.gpt2_regex) parts = split_text(piece.text, step.gpt2_regex->find_all(piece.text), SplitBehavior::Isolated, false);
          else parts.push_back(std::move(piece.text));
          for (auto& p : parts) p = bytes_to_unicode(p);
          emit(std::move(parts), piece.at_text_start);
          break;
        }
        case PreTokenizerStep::Split:
          emit(split_text(piece.text, step.pattern.find_all(piece.text), step.behavior, step.invert), piece.at_text_start);
          break;
        case PreTokenizerStep::Metaspace: {
          // Spaces become the replacement ("▁"); then a "▁" goes in front unless the piece already
          // starts with one. Note this differs from SentencePiece, which always adds its dummy
          // prefix: Hugging Face's Metaspace turns " Hello" into "▁Hello", not "▁▁Hello".
          replace_all(piece.text, " ", step.replacement);
          const bool prepend = step.prepend == PreTokenizerStep::Prepend::Always ||
                               (step.prepend == PreTokenizerStep::Prepend::First && piece.at_text_start);
          if (prepend && !piece.text.starts_with(step.replacement)) piece.text.insert(0, step.replacement);
          if (step.split) {
            Pattern p{step.replacement, nullptr};
            emit(split_text(piece.text, p.find_all(piece.text), SplitBehavior::MergedWithNext, false), piece.at_text_start);
          } else {
            next.push_back(std::move(piece));
          }
          break;
        }
      }
    }
    pieces = std::move(next);
  }
}

// ---- decoders -----------------------------------------------------------------------------

std::string run_decoders(const std::vector<DecoderStep>& steps, std::vector<std::string> tokens) {
  for (const auto& step : steps) {
    switch (step.kind) {
      case DecoderStep::ByteLevel: {
        // Printable characters back to bytes, all tokens joined. A token with a character outside
        // the table (an added token such as "<|im start|>" with a real space) is kept as written.
        std::string out;
        for (const auto& t : tokens) {
          std::string bytes;
          bool ok = true;
          for (size_t pos = 0; pos < t.size() && ok;) {
            uint32_t cp = 0;
            const size_t len = decode_code_point(t, pos, cp);
            const int b = len ? unicode_to_byte(cp) : -1;
            if (b < 0) ok = false;
            else bytes += char(b);
            pos += len ? len : 1;
          }
          out += ok ? bytes : t;
        }
        tokens.assign(1, std::move(out));
        break;
      }
      case DecoderStep::Replace:
        for (auto& t : tokens) replace_all(t, step.pattern, step.content);
        break;
      case DecoderStep::ByteFallback: {
        // "<0x0A>" tokens become their byte. Hugging Face turns byte runs that are not valid UTF-8
        // into U+FFFD; we keep the bytes, so that decoding one token at a time (streaming) and
        // then joining gives the same bytes as decoding all at once.
        std::vector<std::string> out;
        out.reserve(tokens.size());
        bool last_was_byte = false;
        for (auto& t : tokens) {
          const int b = parse_byte_piece(t);
          if (b >= 0 && last_was_byte) out.back() += char(b);
          else if (b >= 0) out.emplace_back(1, char(b));
          else out.push_back(std::move(t));
          last_was_byte = b >= 0;
        }
        tokens = std::move(out);
        break;
      }
      case DecoderStep::Fuse: {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderStep::Strip:
        // Up to `start` copies of content removed from the front of each token, `stop` from the
        // back (after Fuse there is one token, so this strips the text's ends).
        for (auto& t : tokens) {
          size_t b = 0, e = t.size();
          for (size_t i = 0; i < step.start && t.compare(b, step.content.size(), step.content) == 0 && !step.content.empty(); ++i)
            b += step.content.size();
          for (size_t i = 0; i < step.stop && e - b >= step.content.size() && !step.content.empty() &&
                             t.compare(e - step.content.size(), step.content.size(), step.content) == 0;
               ++i)
            e -= step.content.size();
          t = t.substr(b, e - b);
        }
        break;
      case DecoderStep::Metaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          // The "▁" that encoding prepended is dropped from the first token only. (Hugging Face
          // drops every "▁" of the first token; one is what encoding added.)
          if (i == 0 && step.strip_first && tokens[i].starts_with(step.content)) tokens[i].erase(0, step.content.size());
          replace_all(tokens[i], step.content, " ");
        }
        break;
    }
  }
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

}  // namespace qforge::tok
