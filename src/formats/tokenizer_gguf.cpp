// The tokenizer a GGUF file carries in its metadata (tokenizer.ggml.*):
//
//   model "llama": a SentencePiece-style vocabulary with a score per piece ("▁" for spaces, byte
//     pieces "<0xXX>"). Text is split into code points and the adjacent pair whose concatenation is
//     the piece with the highest score is merged (leftmost on ties) until no pair merges; code
//     points left without a piece become byte pieces. This is SentencePiece's BPE rule, which is
//     what llama.cpp's SPM tokenizer and llama2.c's run.c implement too.
//   model "gpt2": byte-level BPE with ranked merges ("left right" strings), as in Hugging Face's
//     tokenizers; the pre-tokenizer regex comes from tokenizer.ggml.pre.
//
// Token types (tokenizer.ggml.token_type): 1 normal, 2 unknown, 3 control, 4 user-defined,
// 5 unused, 6 byte. Control tokens (BOS, EOS, ...) are recognised in text only with parse_special
// and are skipped by decode; user-defined tokens are always recognised and are decoded as they are
// spelled (as llama.cpp does with both).
#include <cmath>
#include <queue>

#include "formats/gguf_internal.h"
#include "formats/tokenizer_bpe.h"
#include "formats/tokenizer_export.h"
#include "formats/tokenizer_hf_pipeline.h"
#include "formats/tokenizer_util.h"
#include "qforge/error.h"
#include "qforge/gguf.h"

namespace qforge {
namespace {

constexpr std::string_view kMetaSpace = "\xE2\x96\x81";  // "▁", SentencePiece's space
constexpr const char* kTokensKey = "tokenizer.ggml.tokens";
constexpr const char* kTypesKey = "tokenizer.ggml.token_type";
constexpr const char* kScoresKey = "tokenizer.ggml.scores";
constexpr const char* kMergesKey = "tokenizer.ggml.merges";

enum TokenType : uint8_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

// What both kinds of vocabulary share: pieces, their types, and the special ids.
struct Vocab {
  std::string path;
  std::vector<std::string> pieces;
  std::vector<uint8_t> types;
  int bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false, add_eos = false;
};

// A token id from the metadata: absent -> fallback; -1 (any width) or the all-ones u32/u64 that
// converters write for "none" -> -1; otherwise it must name a token.
int special_id(const GgufFile& f, const char* key, int fallback, size_t n_tokens) {
  const GgufValue* v = f.find(key);
  if (!v) return fallback < int64_t(n_tokens) ? fallback : -1;
  if (!v->is_integer()) fail("{}: expected a token id (an integer), found {}", f.key_origin(key), v->type_str());
  const bool is_signed = v->type == GgufType::I8 || v->type == GgufType::I16 || v->type == GgufType::I32 ||
                         v->type == GgufType::I64;
  if (is_signed ? v->i == -1 : (v->u == UINT32_MAX || v->u == UINT64_MAX)) return -1;
  if (is_signed ? (v->i < 0 || uint64_t(v->i) >= n_tokens) : v->u >= n_tokens)
    fail("{}: token id {} is out of range (the vocabulary has {} tokens)", f.key_origin(key),
         is_signed ? fmt::to_string(v->i) : fmt::to_string(v->u), n_tokens);
  return is_signed ? int(v->i) : int(v->u);
}

Vocab read_vocab(const GgufFile& f, bool spm) {
  Vocab v;
  v.path = f.path();
  const auto& tokens = f.get_string_array(kTokensKey);
  if (tokens.empty()) fail("{}: the vocabulary is empty", f.key_origin(kTokensKey));
  if (tokens.size() > size_t(INT32_MAX))
    fail("{}: {} tokens is more than token ids can number", f.key_origin(kTokensKey), tokens.size());
  const size_t n = tokens.size();
  v.pieces.reserve(n);
  for (auto t : tokens) v.pieces.emplace_back(t);
  v.types.assign(n, kNormal);
  if (f.has(kTypesKey)) {
    const auto types = f.get_i32_array(kTypesKey);
    if (types.size() != n)
      fail("{}: has {} entries but {} has {}", f.key_origin(kTypesKey), types.size(), kTokensKey, n);
    for (size_t i = 0; i < n; ++i) {
      if (types[i] < kUndefined || types[i] > kByte)
        fail("{}: element {}: token type {} is not one of 0..6", f.key_origin(kTypesKey), i, types[i]);
      v.types[i] = uint8_t(types[i]);
    }
  } else if (spm) {
    // Old files without types: byte pieces are recognisable by their spelling.
    for (size_t i = 0; i < n; ++i)
      if (tok::parse_byte_piece(v.pieces[i]) >= 0) v.types[i] = kByte;
  }
  // llama.cpp's defaults for SentencePiece vocabularies: <unk> 0, <s> 1, </s> 2, and BOS added.
  v.bos = special_id(f, "tokenizer.ggml.bos_token_id", spm ? 1 : -1, n);
  v.eos = special_id(f, "tokenizer.ggml.eos_token_id", spm ? 2 : -1, n);
  int unk_default = -1;
  for (size_t i = 0; i < n && unk_default < 0; ++i)
    if (v.types[i] == kUnknown) unk_default = int(i);
  v.unk = special_id(f, "tokenizer.ggml.unknown_token_id", unk_default, n);
  // The padding id is only carried along (for writing the vocabulary again): one that names no
  // token is dropped rather than refused, since tokenizing never uses it.
  if (const GgufValue* pad = f.find("tokenizer.ggml.padding_token_id"); pad && pad->is_integer()) {
    const bool is_signed = gguf_detail::is_signed_type(pad->type);
    if (is_signed ? pad->i >= 0 && uint64_t(pad->i) < n : pad->u < n) v.pad = is_signed ? int(pad->i) : int(pad->u);
  }
  v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", spm) && v.bos >= 0;
  v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false) && v.eos >= 0;
  return v;
}

class GgufTokenizerBase : public Tokenizer {
 public:
  explicit GgufTokenizerBase(Vocab v) : v_(std::move(v)) {}
  std::string token_piece(int id) const override {
    check_id(id);
    return v_.pieces[size_t(id)];
  }
  int vocab_size() const override { return int(v_.pieces.size()); }
  int bos_id() const override { return v_.bos; }
  int eos_id() const override { return v_.eos; }
  bool add_bos_default() const override { return v_.add_bos; }

 protected:
  // The keys this class reads, as they were (the rest is up to the subclass).
  GgufVocab base_vocab() const {
    GgufVocab g;
    g.tokens = v_.pieces;
    g.token_types.assign(v_.types.begin(), v_.types.end());
    g.bos = v_.bos;
    g.eos = v_.eos;
    g.unk = v_.unk;
    g.pad = v_.pad;
    g.add_bos = v_.add_bos;
    g.add_eos = v_.add_eos;
    return g;
  }

  void check_id(int id) const {
    if (id < 0 || size_t(id) >= v_.pieces.size())
      fail("tokenizer: {}: token id {} is out of range (vocabulary size {})", v_.path, id, v_.pieces.size());
  }
  bool is_control(int id) const { return v_.types[size_t(id)] == kControl || v_.types[size_t(id)] == kUnused; }
  // Splitters for the tokens recognised in text: user-defined ones always, control and unknown
  // ones too with parse_special.
  void build_splitters() {
    for (size_t id = 0; id < v_.pieces.size(); ++id) {
      const uint8_t t = v_.types[id];
      if (t == kUserDefined) {
        plain_.add({v_.pieces[id], int(id)});
        all_.add({v_.pieces[id], int(id)});
      } else if (t == kControl || t == kUnknown) {
        all_.add({v_.pieces[id], int(id)});
      }
    }
  }
  // Encodes text, cutting out recognised tokens and handing the stretches between to `stretch`.
  template <typename F>
  std::vector<int> encode_with(std::string_view text, bool add_bos, bool parse_special, F&& stretch) const {
    std::vector<int> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos && v_.bos >= 0) out.push_back(v_.bos);
    const tok::SpecialSplitter& splitter = parse_special ? all_ : plain_;
    if (splitter.empty()) {
      stretch(text, out);
      return out;
    }
    for (const auto& part : splitter.split(text)) {
      if (part.id >= 0) out.push_back(part.id);
      else stretch(part.text, out);
    }
    return out;
  }

  Vocab v_;
  tok::SpecialSplitter plain_, all_;
};

// ---- SentencePiece-style vocabulary (tokenizer.ggml.model = "llama") ----------------------------

class GgufSpmTokenizer final : public GgufTokenizerBase {
 public:
  GgufSpmTokenizer(const GgufFile& f, Vocab v) : GgufTokenizerBase(std::move(v)) {
    const size_t n = v_.pieces.size();
    scores_.assign(n, 0.0f);
    if (f.has(kScoresKey)) {
      scores_ = f.get_f32_array(kScoresKey);
      if (scores_.size() != n)
        fail("{}: has {} entries but {} has {}", f.key_origin(kScoresKey), scores_.size(), kTokensKey, n);
      // NaN would break the ordering the merge queue relies on.
      for (size_t i = 0; i < n; ++i)
        if (std::isnan(scores_[i])) fail("{}: element {}: score is not a number", f.key_origin(kScoresKey), i);
    }
    add_space_prefix_ = f.get_bool("tokenizer.ggml.add_space_prefix", true);
    for (int b = 0; b < 256; ++b) byte_ids_[b] = -1;
    for (size_t id = 0; id < n; ++id) {
      const uint8_t t = v_.types[id];
      // Only ordinary pieces come out of merging; control, byte and unknown pieces never do.
      if ((t == kNormal || t == kUndefined) && !v_.pieces[id].empty()) ids_.emplace(v_.pieces[id], int(id));
      if (t == kByte) {
        const int b = tok::parse_byte_piece(v_.pieces[id]);
        if (b >= 0 && byte_ids_[b] < 0) byte_ids_[b] = int(id);
      }
    }
    // A vocabulary without a byte piece for some byte may still have the byte as a piece itself.
    for (int b = 0; b < 256; ++b)
      if (byte_ids_[b] < 0) byte_ids_[b] = lookup(std::string(1, char(b)));
    build_splitters();
  }

  std::vector<int> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    return encode_with(text, add_bos, parse_special,
                       [this](std::string_view s, std::vector<int>& out) { encode_stretch(s, out); });
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::string out;
    int prev = -1;
    for (int id : ids) {
      out += token_text(id, prev);
      prev = id;
    }
    return out;
  }

  std::string token_text(int id, int prev_id) const override {
    check_id(id);
    const std::string& piece = v_.pieces[size_t(id)];
    switch (v_.types[size_t(id)]) {
      case kControl:
      case kUnused: return "";
      case kUnknown: return " \xE2\x81\x87 ";  // " ⁇ ", as SentencePiece decodes <unk>
      case kUserDefined: return piece;
      case kByte:
        if (const int b = tok::parse_byte_piece(piece); b >= 0) return std::string(1, char(b));
        return piece;
      default: break;
    }
    std::string text;
    text.reserve(piece.size());
    for (size_t i = 0; i < piece.size();) {
      if (std::string_view(piece).substr(i).starts_with(kMetaSpace)) {
        text += ' ';
        i += kMetaSpace.size();
      } else {
        text += piece[i++];
      }
    }
    // Encoding put a space in front of the text; the first piece of a text gives it back.
    if (add_space_prefix_ && (prev_id < 0 || prev_id == v_.bos) && !text.empty() && text[0] == ' ') text.erase(0, 1);
    return text;
  }

  std::string kind() const override { return "gguf-spm"; }

  GgufVocab gguf_vocab() const override {
    GgufVocab g = base_vocab();
    g.model = "llama";
    g.pre = "default";
    g.scores = scores_;
    g.add_space_prefix = add_space_prefix_;
    return g;
  }

 private:
  int lookup(std::string_view s) const {
    auto it = ids_.find(s);
    return it == ids_.end() ? -1 : it->second;
  }

  void encode_stretch(std::string_view raw, std::vector<int>& out) const {
    if (raw.empty()) return;
    std::string text;
    text.reserve(raw.size() + raw.size() / 2 + 3);
    if (add_space_prefix_) text += kMetaSpace;
    for (char c : raw) {
      if (c == ' ') text += kMetaSpace;
      else text += c;
    }

    // Symbols: byte ranges of text in a doubly linked list; a merged symbol absorbs its right one.
    struct Symbol {
      size_t begin, len;
      int prev, next;
    };
    std::vector<Symbol> sym;
    sym.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      const size_t len = tok::utf8_char_len(text, pos);
      const int i = int(sym.size());
      sym.push_back({pos, len, i - 1, -1});
      if (i > 0) sym[size_t(i) - 1].next = i;
      pos += len;
    }
    const auto view = [&](const Symbol& s) { return std::string_view(text).substr(s.begin, s.len); };

    struct Candidate {
      float score;
      int left, right;
      size_t len;  // bytes of the merged piece: a stale entry no longer adds up to it
      bool operator<(const Candidate& o) const {  // max-heap: best score, then leftmost
        return score != o.score ? score < o.score : left > o.left;
      }
    };
    std::priority_queue<Candidate> queue;
    const auto consider = [&](int left) {
      if (left < 0) return;
      const int right = sym[size_t(left)].next;
      if (right < 0) return;
      const Symbol& l = sym[size_t(left)];
      const Symbol& r = sym[size_t(right)];
      const int id = lookup(std::string_view(text).substr(l.begin, l.len + r.len));
      if (id >= 0) queue.push({scores_[size_t(id)], left, right, l.len + r.len});
    };
    for (int i = 0; i + 1 < int(sym.size()); ++i) consider(i);

    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& l = sym[size_t(c.left)];
      Symbol& r = sym[size_t(c.right)];
      // Stale: either side was absorbed (len 0) or has grown since the entry was queued.
      if (l.len == 0 || r.len == 0 || l.next != c.right || l.len + r.len != c.len) continue;
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) sym[size_t(r.next)].prev = c.left;
      consider(l.prev);
      consider(c.left);
    }

    for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[size_t(i)].next) {
      const std::string_view piece = view(sym[size_t(i)]);
      if (const int id = lookup(piece); id >= 0) {
        out.push_back(id);
        continue;
      }
      for (char ch : piece) {  // a code point without a piece: its bytes
        const int id = byte_ids_[uint8_t(ch)];
        if (id >= 0) out.push_back(id);
        else if (v_.unk >= 0) out.push_back(v_.unk);
        else
          fail("tokenizer: {}: byte 0x{:02X} has no token and the vocabulary has no unknown token", v_.path,
               uint8_t(ch));
      }
    }
  }

  std::vector<float> scores_;
  bool add_space_prefix_ = true;
  tok::StringMap<int> ids_;
  int byte_ids_[256];
};

// ---- byte-level BPE (tokenizer.ggml.model = "gpt2") ---------------------------------------------

class GgufBpeTokenizer final : public GgufTokenizerBase {
 public:
  GgufBpeTokenizer(const GgufFile& f, Vocab v) : GgufTokenizerBase(std::move(v)) {
    pre_ = f.get_string("tokenizer.ggml.pre", "gpt-2");
    const std::string& pre = pre_;
    tok::BpeModel::Options opt;
    if (pre == "gpt-2") {
      tok::PreTokenizerStep step(tok::PreTokenizerStep::ByteLevel);
      step.gpt2_regex = std::make_shared<tok::Regex>(tok::kGpt2SplitPattern, "tokenizer: GPT-2 split pattern");
      pre_tokenizers_.push_back(std::move(step));
    } else if (pre == "llama-bpe" || pre == "qwen2") {
      tok::PreTokenizerStep split(tok::PreTokenizerStep::Split);
      const char* pattern = pre == "qwen2" ? tok::kQwen2SplitPattern : tok::kLlama3SplitPattern;
      split.pattern.regex = std::make_shared<tok::Regex>(pattern, "tokenizer: " + pre + " split pattern");
      split.behavior = tok::SplitBehavior::Isolated;
      pre_tokenizers_.push_back(std::move(split));
      pre_tokenizers_.emplace_back(tok::PreTokenizerStep::ByteLevel);  // no regex of its own
      opt.ignore_merges = pre == "llama-bpe";  // as Llama 3's tokenizer.json says
    } else {
      fail_unsupported("{}: pre-tokenizer {} is not supported (supported: gpt-2, llama-bpe, qwen2)",
                       f.key_origin("tokenizer.ggml.pre"), gguf_detail::quote(pre));
    }
    decoders_.emplace_back(tok::DecoderStep::ByteLevel);

    tok::StringMap<int> ids;
    ids.reserve(v_.pieces.size());
    for (size_t id = 0; id < v_.pieces.size(); ++id) ids.emplace(v_.pieces[id], int(id));
    bpe_ = std::make_unique<tok::BpeModel>(std::move(ids), opt);

    const auto& merges = f.get_string_array(kMergesKey);
    std::string joined;
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string_view m = merges[i];
      // "left right"; the left token may itself start with a space in some vocabularies, so the
      // separator is the first space after the first byte.
      const size_t space = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
      if (space == std::string_view::npos)
        fail("{}: element {}: {} is not two tokens separated by a space", f.key_origin(kMergesKey), i,
             gguf_detail::quote(m));
      const std::string_view left = m.substr(0, space), right = m.substr(space + 1);
      const int a = bpe_->lookup(left), b = bpe_->lookup(right);
      joined.assign(left);
      joined += right;
      const int merged = bpe_->lookup(joined);
      if (a < 0 || b < 0 || merged < 0)
        fail("{}: element {}: token {} is not in the vocabulary", f.key_origin(kMergesKey), i,
             gguf_detail::quote(a < 0 ? left : b < 0 ? right : std::string_view(joined)));
      if (bpe_->add_merge(a, b, merged)) merges_.emplace_back(a, b);
    }
    build_splitters();
  }

  std::vector<int> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    return encode_with(text, add_bos, parse_special, [this](std::string_view s, std::vector<int>& out) {
      if (s.empty()) return;
      std::vector<tok::Piece> pieces;
      pieces.push_back({std::string(s), true});
      tok::pre_tokenize(pre_tokenizers_, pieces);
      for (const auto& p : pieces) bpe_->encode_word(p.text, out);
    });
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int id : ids) {
      check_id(id);
      if (!is_control(id)) tokens.push_back(v_.pieces[size_t(id)]);
    }
    return tok::run_decoders(decoders_, std::move(tokens));
  }

  // The ByteLevel decoder maps each token on its own, so a token's text does not depend on the one before.
  std::string token_text(int id, int /*prev_id*/) const override {
    check_id(id);
    if (is_control(id)) return "";
    return tok::run_decoders(decoders_, {v_.pieces[size_t(id)]});
  }

  std::string kind() const override { return "bpe-bytelevel"; }

  GgufVocab gguf_vocab() const override {
    GgufVocab g = base_vocab();
    g.model = "gpt2";
    g.pre = pre_;
    g.merges.reserve(merges_.size());
    for (const auto& [a, b] : merges_) g.merges.push_back(v_.pieces[size_t(a)] + " " + v_.pieces[size_t(b)]);
    return g;
  }

 private:
  std::string pre_;
  std::vector<std::pair<int, int>> merges_;  // in rank order, as the file lists them (repeats left out)
  std::unique_ptr<tok::BpeModel> bpe_;
  std::vector<tok::PreTokenizerStep> pre_tokenizers_;
  std::vector<tok::DecoderStep> decoders_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_gguf_tokenizer(const GgufFile& file) {
  if (!file.has("tokenizer.ggml.model")) return nullptr;
  const std::string model = file.get_string("tokenizer.ggml.model");
  if (model == "llama") return std::make_unique<GgufSpmTokenizer>(file, read_vocab(file, true));
  if (model == "gpt2") return std::make_unique<GgufBpeTokenizer>(file, read_vocab(file, false));
  if (model == "none" || model == "no_vocab") return nullptr;
  fail_unsupported("{}: tokenizer model {} is not supported (supported: llama, gpt2)",
                   file.key_origin("tokenizer.ggml.model"), gguf_detail::quote(model));
}

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& gguf_path) {
  const auto file = GgufFile::open(gguf_path);
  auto tok = make_gguf_tokenizer(*file);
  if (!tok) fail("{}: the file has no tokenizer", file->key_origin("tokenizer.ggml.model"));
  return tok;
}

}  // namespace qforge
