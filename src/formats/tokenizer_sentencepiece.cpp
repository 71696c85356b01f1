// SentencePiece tokenizer.model through libsentencepiece: the library does the encoding itself, so
// results are exactly SentencePiece's; this file adds qforge's error handling, special-token
// parsing, the tokenizer_config.json overrides and streaming text of single tokens.
#include <sentencepiece_processor.h>

#include "formats/tokenizer_util.h"
#include "qforge/error.h"
#include "qforge/mmap.h"
#include "qforge/tokenizer.h"

namespace qforge {
namespace {

// SentencePiece's meta symbol for a space, U+2581 "▁".
constexpr std::string_view kMetaSpace = "\xE2\x96\x81";

std::string replace_meta_spaces(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i).starts_with(kMetaSpace)) {
      out += ' ';
      i += kMetaSpace.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, const std::string& config_dir) : path_(path) {
    // Read the file ourselves so that I/O errors name it, and cap its size: real models are a
    // few MB; protobuf would otherwise be handed whatever the path points at.
    const std::string bytes = read_text_file(path, size_t(256) << 20);
    const auto status = sp_.LoadFromSerializedProto(bytes);
    if (!status.ok()) fail("tokenizer: {}: not a SentencePiece model: {}", path, status.ToString());
    const int n = sp_.GetPieceSize();
    if (n <= 0) fail("tokenizer: {}: the model has no pieces", path);

    bos_ = sp_.bos_id() >= 0 && sp_.bos_id() < n ? sp_.bos_id() : -1;
    eos_ = sp_.eos_id() >= 0 && sp_.eos_id() < n ? sp_.eos_id() : -1;
    // SentencePiece has no "add BOS" setting of its own; Llama-family models (the ones that ship
    // a tokenizer.model) all add it, and tokenizer_config.json's add_bos_token can say otherwise.
    add_bos_ = bos_ >= 0;

    control_.assign(n, false);
    for (int id = 0; id < n; ++id) {
      control_[id] = sp_.IsControl(id);
      // Control pieces (<s>, </s>) and <unk> never come out of normal encoding; with
      // parse_special their text in the input means the token itself, as in transformers.
      if (sp_.IsControl(id) || sp_.IsUnknown(id)) specials_.add({sp_.IdToPiece(id), id});
    }
    // Whether the model puts a "▁" in front of the text (normalizer add_dummy_prefix). The
    // model proto's fields are not reachable without protobuf headers, so ask the model itself.
    std::vector<std::string> probe;
    dummy_prefix_ = sp_.Encode("a", &probe).ok() && !probe.empty() && probe[0].starts_with(kMetaSpace);

    const auto s = tok::read_special_token_settings(
        config_dir,
        [&](std::string_view text) {
          const int id = sp_.PieceToId(text);  // returns unk_id for unknown pieces
          return id >= 0 && id < n && sp_.IdToPiece(id) == text ? id : -1;
        },
        n);
    s.apply(bos_, eos_, add_bos_);
  }

  std::vector<int> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    std::vector<int> out;
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    if (!parse_special) {
      encode_plain(text, out);
      return out;
    }
    // Each stretch of text between special tokens is encoded on its own, so each gets its own
    // dummy-prefix "▁" — what transformers' LlamaTokenizer does with legacy=true (the setting
    // Llama-2-era tokenizer_config.json files carry).
    for (const auto& part : specials_.split(text)) {
      if (part.id >= 0) out.push_back(part.id);
      else encode_plain(part.text, out);
    }
    return out;
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::vector<int> kept;
    kept.reserve(ids.size());
    for (int id : ids) {
      check_id(id);
      if (!control_[id]) kept.push_back(id);
    }
    std::string out;
    const auto status = sp_.Decode(kept, &out);
    if (!status.ok()) fail("tokenizer: {}: cannot decode: {}", path_, status.ToString());
    return out;
  }

  std::string token_text(int id, int prev_id) const override {
    check_id(id);
    if (control_[id]) return "";
    if (sp_.IsByte(id)) return std::string(1, char(tok::parse_byte_piece(sp_.IdToPiece(id))));
    // SentencePiece decodes <unk> as " ⁇ "; stream the same text so that streaming and decode agree.
    if (sp_.IsUnknown(id)) return " \xE2\x81\x87 ";
    std::string text = replace_meta_spaces(sp_.IdToPiece(id));
    // The first piece of a text carries the dummy-prefix space that encoding added; decode drops
    // it, so streaming does too when nothing (or only BOS) came before.
    const bool at_start = prev_id < 0 || prev_id == bos_;
    if (at_start && dummy_prefix_ && text.starts_with(' ')) text.erase(0, 1);
    return text;
  }

  std::string token_piece(int id) const override {
    check_id(id);
    return sp_.IdToPiece(id);
  }
  int vocab_size() const override { return sp_.GetPieceSize(); }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_; }
  bool add_bos_default() const override { return add_bos_; }
  std::string kind() const override { return "sentencepiece"; }

  // As llama.cpp's converter reads a tokenizer.model: every piece with its score, typed by what
  // SentencePiece says of it (user-defined pieces cannot be told from normal ones through the
  // library's API, and the converter does not tell them apart either).
  GgufVocab gguf_vocab() const override {
    const int n = sp_.GetPieceSize();
    GgufVocab v;
    v.model = "llama";
    v.pre = "default";
    v.tokens.reserve(size_t(n));
    v.scores.reserve(size_t(n));
    v.token_types.reserve(size_t(n));
    for (int id = 0; id < n; ++id) {
      v.tokens.push_back(sp_.IdToPiece(id));
      v.scores.push_back(sp_.GetScore(id));
      int32_t type = GgufVocab::kNormal;
      if (sp_.IsUnknown(id)) type = GgufVocab::kUnknown;
      else if (sp_.IsControl(id)) type = GgufVocab::kControl;
      else if (sp_.IsUnused(id)) type = GgufVocab::kUnused;
      else if (sp_.IsByte(id)) type = GgufVocab::kByte;
      v.token_types.push_back(type);
    }
    v.bos = bos_;
    v.eos = eos_;
    v.unk = sp_.unk_id() >= 0 && sp_.unk_id() < n ? sp_.unk_id() : -1;
    v.add_bos = add_bos_;
    v.add_space_prefix = dummy_prefix_;
    return v;
  }

 private:
  void encode_plain(std::string_view text, std::vector<int>& out) const {
    if (text.empty()) return;
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) fail("tokenizer: {}: cannot encode text: {}", path_, status.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  }
  void check_id(int id) const {
    if (id < 0 || id >= sp_.GetPieceSize())
      fail("tokenizer: {}: token id {} is out of range (vocabulary size {})", path_, id, sp_.GetPieceSize());
  }

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  int bos_ = -1, eos_ = -1;
  bool add_bos_ = false;
  bool dummy_prefix_ = true;
  std::vector<bool> control_;
  tok::SpecialSplitter specials_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path, const std::string& config_dir) {
  return std::make_unique<SentencePieceTokenizer>(model_path, config_dir);
}

}  // namespace qforge
