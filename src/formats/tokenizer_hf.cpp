// Hugging Face tokenizer.json with a BPE model: byte-level BPE (GPT-2, Llama 3, Qwen, ...) and
// SentencePiece-style BPE (Llama 2, Mistral, ... converted by transformers: "▁" for spaces and
// <0xXX> byte fallback). Encoding follows the tokenizers library's order of work:
//   1. added tokens are cut out of the raw text (special ones only when parse_special),
//   2. each remaining stretch is normalized (Replace, Prepend),
//   3. pre-tokenized (ByteLevel, Split, Metaspace, Digits) into pieces,
//   4. each piece goes through the BPE model (tokenizer_bpe.cpp).
// Decoding runs the file's decoder chain (tokenizer_hf_pipeline.cpp) over the token strings.
#include <nlohmann/json.hpp>

#include "formats/tokenizer_bpe.h"
#include "formats/tokenizer_export.h"
#include "formats/tokenizer_hf_pipeline.h"
#include "formats/tokenizer_util.h"
#include "qforge/error.h"
#include "qforge/mmap.h"
#include "qforge/tokenizer.h"

namespace qforge {
namespace {

using nlohmann::json;
using namespace tok;

constexpr int kMaxNesting = 16;  // Sequence inside Sequence ...: real files use 1 or 2 levels

// Typed access to the JSON with errors that name the file and the key path.
class Reader {
 public:
  explicit Reader(std::string origin) : origin_(std::move(origin)) {}
  const std::string& origin() const { return origin_; }

  [[noreturn]] void bad(const std::string& path, const std::string& what) const {
    fail("tokenizer: {}: {}: {}", origin_, path, what);
  }
  [[noreturn]] void unsupported(const std::string& path, const std::string& what) const {
    fail_unsupported("tokenizer: {}: {}: {}", origin_, path, what);
  }
  const json& member(const json& obj, const char* key, const std::string& path) const {
    auto it = obj.find(key);
    if (it == obj.end()) bad(path, fmt::format("missing key \"{}\"", key));
    return *it;
  }
  // A member that may be missing or null.
  const json* optional(const json& obj, const char* key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  const std::string& string(const json& obj, const char* key, const std::string& path) const {
    const json& v = member(obj, key, path);
    if (!v.is_string()) bad(path + "." + key, "expected a string");
    return v.get_ref<const std::string&>();
  }
  bool boolean(const json& obj, const char* key, const std::string& path, bool fallback) const {
    const json* v = optional(obj, key);
    if (!v) return fallback;
    if (!v->is_boolean()) bad(path + "." + key, "expected true or false");
    return v->get<bool>();
  }
  int64_t integer(const json& v, const std::string& path) const {
    if (!v.is_number_integer()) bad(path, "expected an integer");
    return v.get<int64_t>();
  }
  const json& object(const json& v, const std::string& path) const {
    if (!v.is_object()) bad(path, "expected an object");
    return v;
  }
  const json& array(const json& v, const std::string& path) const {
    if (!v.is_array()) bad(path, "expected an array");
    return v;
  }
  const std::string& type(const json& obj, const std::string& path) const {
    object(obj, path);
    return string(obj, "type", path);
  }

 private:
  std::string origin_;
};

// A Replace or Split "pattern": {"String": "..."} or {"Regex": "..."}.
Pattern read_pattern(const Reader& r, const json& obj, const std::string& path) {
  const std::string p = path + ".pattern";
  const json& pat = r.object(r.member(obj, "pattern", path), p);
  Pattern out;
  if (const json* s = r.optional(pat, "String")) {
    if (!s->is_string()) r.bad(p + ".String", "expected a string");
    out.literal = s->get<std::string>();
  } else if (const json* re = r.optional(pat, "Regex")) {
    if (!re->is_string()) r.bad(p + ".Regex", "expected a string");
    out.regex = std::make_shared<Regex>(re->get<std::string>(), fmt::format("tokenizer: {}: {}.Regex", r.origin(), p));
  } else {
    r.bad(p, "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  return out;
}

void read_normalizer(const Reader& r, const json& n, const std::string& path, int depth,
                     std::vector<NormalizerStep>& steps) {
  if (depth > kMaxNesting) r.bad(path, "nested too deeply");
  const std::string& type = r.type(n, path);
  if (type == "Sequence") {
    const json& list = r.array(r.member(n, "normalizers", path), path + ".normalizers");
    for (size_t i = 0; i < list.size(); ++i)
      read_normalizer(r, list[i], fmt::format("{}.normalizers[{}]", path, i), depth + 1, steps);
  } else if (type == "Replace") {
    steps.push_back({NormalizerStep::Replace, read_pattern(r, n, path), r.string(n, "content", path)});
  } else if (type == "Prepend") {
    steps.push_back({NormalizerStep::Prepend, {}, r.string(n, "prepend", path)});
  } else if (type == "NFC") {
    // Accepted as a no-op: qforge has no Unicode composition tables, and text that is already
    // in NFC (nearly all text in practice) is unchanged by it. Decomposed input would tokenize
    // differently from Hugging Face.
  } else {
    r.unsupported(path, fmt::format("normalizer type \"{}\" is not supported", type));
  }
}

void read_pre_tokenizer(const Reader& r, const json& p, const std::string& path, int depth,
                        std::vector<PreTokenizerStep>& steps) {
  if (depth > kMaxNesting) r.bad(path, "nested too deeply");
  const std::string& type = r.type(p, path);
  PreTokenizerStep step(PreTokenizerStep::Split);
  if (type == "Sequence") {
    const json& list = r.array(r.member(p, "pretokenizers", path), path + ".pretokenizers");
    for (size_t i = 0; i < list.size(); ++i)
      read_pre_tokenizer(r, list[i], fmt::format("{}.pretokenizers[{}]", path, i), depth + 1, steps);
    return;
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::ByteLevel;
    step.add_prefix_space = r.boolean(p, "add_prefix_space", path, true);
    // use_regex defaults to true (files written before the option existed used the GPT-2 split).
    if (r.boolean(p, "use_regex", path, true))
      step.gpt2_regex = std::make_shared<Regex>(kGpt2SplitPattern, "tokenizer: GPT-2 split pattern");
  } else if (type == "Split") {
    step.pattern = read_pattern(r, p, path);
    const std::string& b = r.string(p, "behavior", path);
    if (b == "Removed") step.behavior = SplitBehavior::Removed;
    else if (b == "Isolated") step.behavior = SplitBehavior::Isolated;
    else if (b == "MergedWithPrevious") step.behavior = SplitBehavior::MergedWithPrevious;
    else if (b == "MergedWithNext") step.behavior = SplitBehavior::MergedWithNext;
    else if (b == "Contiguous") step.behavior = SplitBehavior::Contiguous;
    else r.bad(path + ".behavior", fmt::format("unknown split behavior \"{}\"", b));
    step.invert = r.boolean(p, "invert", path, false);
  } else if (type == "Digits") {
    // Digits from the rest: each digit alone, or runs of digits together.
    const bool single = r.boolean(p, "individual_digits", path, false);
    step.pattern.regex = std::make_shared<Regex>(single ? "\\p{N}" : "\\p{N}+", "tokenizer: digits pattern");
    step.behavior = SplitBehavior::Isolated;
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Metaspace;
    step.replacement = r.string(p, "replacement", path);
    if (step.replacement.empty()) r.bad(path + ".replacement", "must not be empty");
    // Newer files say prepend_scheme; older ones add_prefix_space (true = "always").
    if (const json* scheme = r.optional(p, "prepend_scheme")) {
      const std::string s = scheme->is_string() ? scheme->get<std::string>() : "";
      if (s == "always") step.prepend = PreTokenizerStep::Prepend::Always;
      else if (s == "first") step.prepend = PreTokenizerStep::Prepend::First;
      else if (s == "never") step.prepend = PreTokenizerStep::Prepend::Never;
      else r.bad(path + ".prepend_scheme", "expected \"always\", \"first\" or \"never\"");
    } else {
      step.prepend = r.boolean(p, "add_prefix_space", path, true) ? PreTokenizerStep::Prepend::Always
                                                                   : PreTokenizerStep::Prepend::Never;
    }
    step.split = r.boolean(p, "split", path, true);
  } else {
    r.unsupported(path, fmt::format("pre-tokenizer type \"{}\" is not supported", type));
  }
  steps.push_back(std::move(step));
}

void read_decoder(const Reader& r, const json& d, const std::string& path, int depth, std::vector<DecoderStep>& steps) {
  if (depth > kMaxNesting) r.bad(path, "nested too deeply");
  const std::string& type = r.type(d, path);
  if (type == "Sequence") {
    const json& list = r.array(r.member(d, "decoders", path), path + ".decoders");
    for (size_t i = 0; i < list.size(); ++i)
      read_decoder(r, list[i], fmt::format("{}.decoders[{}]", path, i), depth + 1, steps);
  } else if (type == "ByteLevel") {
    steps.emplace_back(DecoderStep::ByteLevel);
  } else if (type == "Replace") {
    Pattern p = read_pattern(r, d, path);
    if (p.regex) r.unsupported(path + ".pattern", "a regex pattern in a Replace decoder is not supported");
    DecoderStep s(DecoderStep::Replace);
    s.pattern = p.literal;
    s.content = r.string(d, "content", path);
    steps.push_back(s);
  } else if (type == "ByteFallback") {
    steps.emplace_back(DecoderStep::ByteFallback);
  } else if (type == "Fuse") {
    steps.emplace_back(DecoderStep::Fuse);
  } else if (type == "Strip") {
    DecoderStep s(DecoderStep::Strip);
    s.content = r.string(d, "content", path);
    const int64_t start = r.integer(r.member(d, "start", path), path + ".start");
    const int64_t stop = r.integer(r.member(d, "stop", path), path + ".stop");
    if (start < 0 || stop < 0) r.bad(path, "start and stop must not be negative");
    s.start = size_t(std::min<int64_t>(start, 1 << 20));
    s.stop = size_t(std::min<int64_t>(stop, 1 << 20));
    steps.push_back(s);
  } else if (type == "Metaspace") {
    DecoderStep s(DecoderStep::Metaspace);
    s.content = r.string(d, "replacement", path);
    if (s.content.empty()) r.bad(path + ".replacement", "must not be empty");
    if (const json* scheme = r.optional(d, "prepend_scheme"))
      s.strip_first = !(scheme->is_string() && scheme->get<std::string>() == "never");
    else
      s.strip_first = r.boolean(d, "add_prefix_space", path, true);
    steps.push_back(s);
  } else {
    r.unsupported(path, fmt::format("decoder type \"{}\" is not supported", type));
  }
}

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const std::string& text, const std::string& origin, const std::string& config_dir) : r_(origin) {
    json root;
    try {
      root = json::parse(text);
    } catch (const json::exception& e) {
      fail("tokenizer: {}: invalid JSON: {}", origin, e.what());
    }
    r_.object(root, "top level");
    read_model_and_added_tokens(root);
    if (const json* n = r_.optional(root, "normalizer")) read_normalizer(r_, *n, "normalizer", 0, normalizers_);
    if (const json* p = r_.optional(root, "pre_tokenizer")) {
      read_pre_tokenizer(r_, *p, "pre_tokenizer", 0, pre_tokenizers_);
      gguf_pre_ = gguf_pre_tokenizer_name(*p);
    }
    if (const json* d = r_.optional(root, "decoder")) read_decoder(r_, *d, "decoder", 0, decoders_);
    if (const json* p = r_.optional(root, "post_processor")) read_post_processor(*p, "post_processor", 0);

    byte_level_ = std::any_of(pre_tokenizers_.begin(), pre_tokenizers_.end(),
                              [](const auto& s) { return s.kind == PreTokenizerStep::ByteLevel; }) ||
                  std::any_of(decoders_.begin(), decoders_.end(),
                              [](const auto& s) { return s.kind == DecoderStep::ByteLevel; });

    // Without a tokenizer_config.json or post-processor naming them, recognise the usual names.
    if (bos_ < 0)
      for (const char* name : {"<s>", "<|begin_of_text|>"})
        if (bos_ < 0) bos_ = lookup_special(name);
    if (eos_ < 0)
      for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>"})
        if (eos_ < 0) eos_ = lookup_special(name);

    const auto s = read_special_token_settings(config_dir, [&](std::string_view t) { return lookup_any(t); }, vocab_size());
    s.apply(bos_, eos_, add_bos_);
  }

  std::vector<int> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    std::vector<int> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    const SpecialSplitter& splitter = parse_special ? all_added_ : plain_added_;
    if (splitter.empty()) {
      encode_text(text, true, out);
      return out;
    }
    for (const auto& part : splitter.split(text)) {
      if (part.id >= 0) out.push_back(part.id);
      else encode_text(part.text, part.at_text_start, out);
    }
    return out;
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int id : ids) {
      check_id(id);
      if (!special_[id]) tokens.push_back(pieces_[id]);
    }
    return run_decoders(decoders_, std::move(tokens));
  }

  // Decoders may treat the first token differently (strip the "▁" that encoding prepended), so a
  // token's streamed text is what decoding [prev, id] adds to decoding [prev] alone.
  std::string token_text(int id, int prev_id) const override {
    check_id(id);
    if (special_[id]) return "";
    if (prev_id < 0 || prev_id >= vocab_size() || special_[prev_id]) return run_decoders(decoders_, {pieces_[id]});
    const std::string head = run_decoders(decoders_, {pieces_[prev_id]});
    std::string both = run_decoders(decoders_, {pieces_[prev_id], pieces_[id]});
    if (both.starts_with(head)) return both.substr(head.size());
    return run_decoders(decoders_, {pieces_[id]});  // a decoder chain without that prefix property
  }

  std::string token_piece(int id) const override {
    check_id(id);
    return pieces_[id];
  }
  int vocab_size() const override { return int(pieces_.size()); }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_; }
  bool add_bos_default() const override { return add_bos_; }
  std::string kind() const override { return byte_level_ ? "bpe-bytelevel" : "bpe-spm"; }

  GgufVocab gguf_vocab() const override {
    HfVocabParts p;
    p.origin = r_.origin();
    p.pieces = &pieces_;
    p.added = &added_;
    p.special = &special_;
    p.merges = &merges_;
    p.byte_level = byte_level_;
    p.byte_fallback = byte_fallback_;
    // SentencePiece style puts "▁" in front of the text with a Prepend normalizer (Llama 2) or a
    // Metaspace pre-tokenizer (newer files).
    p.space_prefix = std::any_of(normalizers_.begin(), normalizers_.end(),
                                 [](const auto& n) {
                                   return n.kind == NormalizerStep::Prepend && n.content == "\xE2\x96\x81";
                                 }) ||
                     std::any_of(pre_tokenizers_.begin(), pre_tokenizers_.end(), [](const auto& s) {
                       return s.kind == PreTokenizerStep::Metaspace && s.prepend != PreTokenizerStep::Prepend::Never;
                     });
    p.pre = gguf_pre_;
    p.unk = unk_id_;
    p.bos = bos_;
    p.eos = eos_;
    p.add_bos = add_bos_;
    return hf_gguf_vocab(p);
  }

 private:
  void encode_text(std::string_view text, bool at_text_start, std::vector<int>& out) const {
    if (text.empty()) return;
    std::string normalized(text);
    normalize(normalizers_, normalized);
    std::vector<Piece> pieces;
    pieces.push_back({std::move(normalized), at_text_start});
    pre_tokenize(pre_tokenizers_, pieces);
    for (const auto& p : pieces) bpe_->encode_word(p.text, out);
  }

  void check_id(int id) const {
    if (id < 0 || id >= vocab_size())
      fail("tokenizer: {}: token id {} is out of range (vocabulary size {})", r_.origin(), id, vocab_size());
  }
  int lookup_special(std::string_view text) const {
    auto it = added_ids_.find(text);
    return it == added_ids_.end() ? -1 : it->second;
  }
  int lookup_any(std::string_view text) const {
    const int id = lookup_special(text);
    return id >= 0 ? id : bpe_->lookup(text);
  }

  void read_model_and_added_tokens(const json& root) {
    const json& model = r_.object(r_.member(root, "model", "top level"), "model");
    // "type" may be missing in files from old versions; those are recognised by their merges.
    const json* type = r_.optional(model, "type");
    if (type && !(type->is_string() && type->get<std::string>() == "BPE"))
      r_.unsupported("model.type", fmt::format("model type {} is not supported (only BPE)", type->dump()));
    if (!type && !model.contains("merges")) r_.unsupported("model", "not a BPE model (no \"type\", no \"merges\")");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (const json* v = r_.optional(model, key); v && !(v->is_string() && v->get<std::string>().empty()))
        r_.unsupported(std::string("model.") + key, "a non-empty value is not supported");

    const json& vocab = r_.object(r_.member(model, "vocab", "model"), "model.vocab");
    const json* added = r_.optional(root, "added_tokens");
    if (added) r_.array(*added, "added_tokens");
    // Ids are used as indices; a hostile file must not make us allocate for an id like 2^31 when
    // it names three tokens. Real vocabularies are dense, so bound ids by the number of entries.
    const size_t entries = vocab.size() + (added ? added->size() : 0);
    const int64_t id_limit = int64_t(entries) * 2 + 1024;
    const auto check_range = [&](int64_t id, const std::string& path) {
      if (id < 0 || id >= id_limit)
        r_.bad(path, fmt::format("token id {} is out of range (the file has {} tokens)", id, entries));
    };

    StringMap<int> piece_ids;
    piece_ids.reserve(vocab.size());
    int64_t max_id = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const std::string path = fmt::format("model.vocab[\"{}\"]", it.key());
      const int64_t id = r_.integer(it.value(), path);
      check_range(id, path);
      piece_ids.emplace(it.key(), int(id));
      max_id = std::max(max_id, id);
    }
    struct Added {
      std::string content;
      int id;
      bool special, lstrip, rstrip;
    };
    std::vector<Added> added_list;
    if (added) {
      for (size_t i = 0; i < added->size(); ++i) {
        const std::string path = fmt::format("added_tokens[{}]", i);
        const json& t = r_.object((*added)[i], path);
        const int64_t id = r_.integer(r_.member(t, "id", path), path + ".id");
        check_range(id, path + ".id");
        added_list.push_back({r_.string(t, "content", path), int(id), r_.boolean(t, "special", path, false),
                              r_.boolean(t, "lstrip", path, false), r_.boolean(t, "rstrip", path, false)});
        max_id = std::max(max_id, id);
      }
    }
    pieces_.assign(size_t(max_id + 1), std::string());
    special_.assign(pieces_.size(), false);
    added_.assign(pieces_.size(), false);
    for (const auto& [piece, id] : piece_ids) pieces_[id] = piece;
    for (const auto& a : added_list) {
      // Special tokens are matched only when parse_special asks for it; others always (as
      // Hugging Face does for non-special added tokens). All are matched in the raw text:
      // Hugging Face matches "normalized": true tokens after normalization instead, which only
      // differs for tokens the normalizer would change (e.g. ones containing spaces with a
      // Replace(" ", "▁") normalizer). "single_word" is not honoured.
      pieces_[a.id] = a.content;
      special_[a.id] = a.special;
      added_[a.id] = true;
      added_ids_.emplace(a.content, a.id);
      all_added_.add({a.content, a.id, a.lstrip, a.rstrip});
      if (!a.special) plain_added_.add({a.content, a.id, a.lstrip, a.rstrip});
    }

    BpeModel::Options opt;
    opt.byte_fallback = r_.boolean(model, "byte_fallback", "model", false);
    opt.fuse_unk = r_.boolean(model, "fuse_unk", "model", false);
    opt.ignore_merges = r_.boolean(model, "ignore_merges", "model", false);
    if (const json* unk = r_.optional(model, "unk_token")) {
      if (!unk->is_string()) r_.bad("model.unk_token", "expected a string");
      auto it = piece_ids.find(unk->get<std::string>());
      if (it == piece_ids.end()) r_.bad("model.unk_token", fmt::format("\"{}\" is not in model.vocab", unk->get<std::string>()));
      opt.unk_id = it->second;
    }

    // Merges, in rank order: "left right" strings (the classic form) or ["left", "right"] pairs
    // (tokenizers >= 0.20, which allows spaces inside tokens).
    const json* merges = r_.optional(model, "merges");
    byte_fallback_ = opt.byte_fallback;
    unk_id_ = opt.unk_id;
    bpe_ = std::make_unique<BpeModel>(std::move(piece_ids), opt);
    if (!merges) return;
    r_.array(*merges, "model.merges");
    std::string joined;
    for (size_t i = 0; i < merges->size(); ++i) {
      const json& m = (*merges)[i];
      const std::string path = fmt::format("model.merges[{}]", i);
      std::string_view left, right;
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          r_.bad(path, fmt::format("\"{}\" is not two tokens separated by one space", s));
        left = std::string_view(s).substr(0, space);
        right = std::string_view(s).substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        left = m[0].get_ref<const std::string&>();
        right = m[1].get_ref<const std::string&>();
      } else {
        r_.bad(path, "expected \"left right\" or [\"left\", \"right\"]");
      }
      const int a = bpe_->lookup(left), b = bpe_->lookup(right);
      if (a < 0) r_.bad(path, fmt::format("token \"{}\" is not in model.vocab", left));
      if (b < 0) r_.bad(path, fmt::format("token \"{}\" is not in model.vocab", right));
      joined.assign(left);
      joined += right;
      const int merged = bpe_->lookup(joined);
      if (merged < 0) r_.bad(path, fmt::format("merged token \"{}\" is not in model.vocab", joined));
      // A repeated pair keeps its first (best) rank.
      if (bpe_->add_merge(a, b, merged)) merges_.push_back({a, b, merged});
    }
  }

  // The post-processor says which special tokens encoding adds: TemplateProcessing's "single"
  // template ([<s>, $A] for Llama; [<|begin_of_text|>, $A] for Llama 3), or the cls/sep tokens of
  // Roberta/Bert processing. A special token before the text is BOS and means add_bos.
  void read_post_processor(const json& p, const std::string& path, int depth) {
    if (depth > kMaxNesting) r_.bad(path, "nested too deeply");
    const std::string& type = r_.type(p, path);
    const auto id_in_range = [&](int64_t id, const std::string& where) {
      if (id < 0 || id >= vocab_size()) r_.bad(where, fmt::format("token id {} is out of range", id));
      return int(id);
    };
    if (type == "Sequence") {
      const json& list = r_.array(r_.member(p, "processors", path), path + ".processors");
      for (size_t i = 0; i < list.size(); ++i) read_post_processor(list[i], fmt::format("{}.processors[{}]", path, i), depth + 1);
    } else if (type == "TemplateProcessing") {
      const json& single = r_.array(r_.member(p, "single", path), path + ".single");
      const json& specials = r_.object(r_.member(p, "special_tokens", path), path + ".special_tokens");
      bool seen_text = false;
      for (size_t i = 0; i < single.size(); ++i) {
        const std::string ipath = fmt::format("{}.single[{}]", path, i);
        const json& item = r_.object(single[i], ipath);
        if (item.contains("Sequence")) {
          seen_text = true;
          continue;
        }
        const json& st = r_.object(r_.member(item, "SpecialToken", ipath), ipath + ".SpecialToken");
        const std::string& name = r_.string(st, "id", ipath + ".SpecialToken");
        const std::string spath = fmt::format("{}.special_tokens[\"{}\"]", path, name);
        const json& entry = r_.object(r_.member(specials, name.c_str(), path + ".special_tokens"), spath);
        const json& ids = r_.array(r_.member(entry, "ids", spath), spath + ".ids");
        if (ids.empty()) r_.bad(spath + ".ids", "is empty");
        const int id = id_in_range(r_.integer(ids[0], spath + ".ids[0]"), spath + ".ids[0]");
        if (!seen_text && bos_ < 0) {
          bos_ = id;
          add_bos_ = true;
        } else if (seen_text && eos_ < 0) {
          eos_ = id;  // added after the text; qforge's encode has no add_eos, so only recorded
        }
      }
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      for (const char* key : {"cls", "sep"}) {
        const json& v = r_.array(r_.member(p, key, path), path + "." + key);
        if (v.size() != 2) r_.bad(path + "." + key, "expected [token, id]");
        const int id = id_in_range(r_.integer(v[1], path + "." + key + "[1]"), path + "." + key + "[1]");
        if (std::string(key) == "cls") {
          bos_ = id;
          add_bos_ = true;
        } else {
          eos_ = id;
        }
      }
    }
    // ByteLevel (offsets only) and anything else add no tokens that concern us.
  }

  Reader r_;
  std::unique_ptr<BpeModel> bpe_;
  std::vector<std::string> pieces_;  // id -> token text as the file spells it ("" for unused ids)
  std::vector<bool> special_;        // added tokens marked special: skipped by decode
  std::vector<bool> added_;          // ids listed in added_tokens
  std::vector<std::array<int, 3>> merges_;  // (left, right, merged), rank order, for gguf_vocab()
  std::string gguf_pre_;             // GGUF name of a byte-level pre-tokenizer layout, "" if none
  bool byte_fallback_ = false;
  int unk_id_ = -1;
  StringMap<int> added_ids_;
  SpecialSplitter all_added_, plain_added_;
  std::vector<NormalizerStep> normalizers_;
  std::vector<PreTokenizerStep> pre_tokenizers_;
  std::vector<DecoderStep> decoders_;
  int bos_ = -1, eos_ = -1;
  bool add_bos_ = false;
  bool byte_level_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> parse_hf_tokenizer_json(const std::string& text, const std::string& origin) {
  return std::make_unique<HfTokenizer>(text, origin, "");
}

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& json_path, const std::string& config_dir) {
  // Real tokenizer.json files are up to ~20 MB (large multilingual vocabularies).
  const std::string text = read_text_file(json_path, size_t(256) << 20);
  return std::make_unique<HfTokenizer>(text, json_path, config_dir);
}

}  // namespace qforge
