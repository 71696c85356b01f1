// llama2.c's tokenizer.bin: int32 max_token_length, then per token float32 score, int32 byte length
// and the bytes. The file does not store the vocabulary size; it is however many tokens the file
// holds. Pieces were exported from a SentencePiece model with "▁" already turned into ' ', BOS and
// EOS written as "\n<s>\n" / "\n</s>\n", and byte tokens "<0x00>".."<0xFF>" at ids 3..258.
#include <cmath>
#include <cstring>
#include <queue>

#include "formats/tokenizer_util.h"
#include "qforge/error.h"
#include "qforge/mmap.h"
#include "qforge/tokenizer.h"

namespace qforge {
namespace {

constexpr int kUnkId = 0, kBosId = 1, kEosId = 2, kFirstByteId = 3;

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(const uint8_t* data, size_t size, const std::string& origin) : origin_(origin) {
    size_t off = 0;
    const auto read_i32 = [&](const char* what, size_t index) {
      if (size - off < 4) fail("tokenizer: {}: truncated: token {}: {} runs past end of file", origin, index, what);
      int32_t v;
      std::memcpy(&v, data + off, 4);
      off += 4;
      return v;
    };
    if (size < 4) fail("tokenizer: {}: too short for a llama2.c tokenizer ({} bytes)", origin, size);
    const int32_t max_len = read_i32("max_token_length", 0);
    if (max_len < 0) fail("tokenizer: {}: max_token_length is negative ({})", origin, max_len);
    while (off < size) {
      const size_t index = pieces_.size();
      float score;
      const int32_t score_bits = read_i32("score", index);
      std::memcpy(&score, &score_bits, 4);
      // NaN would break the ordering the merge queue relies on.
      if (!std::isfinite(score)) fail("tokenizer: {}: token {}: score is not a finite number", origin, index);
      const int32_t len = read_i32("length", index);
      // Every length is checked against what is left, so a corrupt length can neither read past
      // the end nor make us allocate more than the file holds.
      if (len < 0 || size_t(len) > size - off)
        fail("tokenizer: {}: token {}: length {} but only {} bytes remain", origin, index, len, size - off);
      pieces_.emplace_back(reinterpret_cast<const char*>(data + off), size_t(len));
      scores_.push_back(score);
      off += size_t(len);
    }
    if (pieces_.size() < 3) fail("tokenizer: {}: only {} tokens; BOS=1 and EOS=2 need at least 3", origin, pieces_.size());
    if (pieces_.size() > size_t(INT32_MAX)) fail("tokenizer: {}: too many tokens", origin);
    for (size_t id = 0; id < pieces_.size(); ++id) {
      byte_of_.push_back(int(id) >= kFirstByteId ? tok::parse_byte_piece(pieces_[id]) : -1);
      // Lookups of duplicate pieces get the lowest id. Only ordinary pieces can be produced by
      // merging (see encode_segment), so control and byte pieces are left out.
      if (id > size_t(kEosId) && byte_of_[id] < 0 && !pieces_[id].empty()) ids_.emplace(pieces_[id], int(id));
    }
    specials_.add({"<s>", kBosId});
    specials_.add({"</s>", kEosId});
    specials_.add({"<unk>", kUnkId});
  }

  std::vector<int> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    std::vector<int> out;
    if (add_bos) out.push_back(kBosId);
    if (!parse_special) {
      encode_segment(text, out);
      return out;
    }
    for (const auto& part : specials_.split(text)) {
      if (part.id >= 0) out.push_back(part.id);
      else encode_segment(part.text, out);
    }
    return out;
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
    if (id == kBosId || id == kEosId) return "";
    if (byte_of_[id] >= 0) return std::string(1, char(byte_of_[id]));
    std::string_view piece = pieces_[id];
    // Encoding put a dummy " " in front of the text (as SentencePiece's add_dummy_prefix does), so
    // the first piece of a text, at the very start or right after BOS, drops its leading space.
    // run.c only does this after BOS; doing it at the start too makes decode(encode(t)) == t.
    if ((prev_id < 0 || prev_id == kBosId) && piece.starts_with(' ')) piece.remove_prefix(1);
    return std::string(piece);
  }

  std::string token_piece(int id) const override {
    check_id(id);
    return pieces_[id];
  }
  int vocab_size() const override { return int(pieces_.size()); }
  int bos_id() const override { return kBosId; }
  int eos_id() const override { return kEosId; }
  bool add_bos_default() const override { return true; }  // run.c always starts with BOS
  std::string kind() const override { return "llama2c"; }

  // As llama.cpp's convert-llama2c-to-ggml writes a tokenizer.bin: ids 0, 1, 2 become <unk>
  // (unknown), <s> and </s> (control); empty pieces are control, "<0xXX>" pieces bytes; spaces
  // are written as SentencePiece's "▁"; the file's scores are kept.
  GgufVocab gguf_vocab() const override {
    GgufVocab v;
    v.model = "llama";
    v.pre = "default";
    v.tokens.reserve(pieces_.size());
    v.token_types.reserve(pieces_.size());
    v.scores = scores_;
    for (size_t id = 0; id < pieces_.size(); ++id) {
      std::string text = pieces_[id];
      int32_t type = GgufVocab::kNormal;
      if (id == size_t(kUnkId)) {
        text = "<unk>";
        type = GgufVocab::kUnknown;
      } else if (id == size_t(kBosId) || id == size_t(kEosId)) {
        text = id == size_t(kBosId) ? "<s>" : "</s>";
        type = GgufVocab::kControl;
      } else if (text.empty()) {
        type = GgufVocab::kControl;
      } else if (byte_of_[id] >= 0) {
        type = GgufVocab::kByte;
      }
      std::string escaped;
      escaped.reserve(text.size());
      for (char c : text) {
        if (c == ' ') escaped += "\xE2\x96\x81";
        else escaped += c;
      }
      v.tokens.push_back(std::move(escaped));
      v.token_types.push_back(type);
    }
    v.bos = kBosId;
    v.eos = kEosId;
    v.unk = kUnkId;
    v.add_bos = true;
    // run.c puts a " " in front of the text only when the vocabulary has that piece.
    v.add_space_prefix = lookup(" ") >= 0;
    return v;
  }

 private:
  void check_id(int id) const {
    if (id < 0 || size_t(id) >= pieces_.size())
      fail("tokenizer: {}: token id {} is out of range (vocabulary size {})", origin_, id, pieces_.size());
  }
  int lookup(std::string_view s) const {
    auto it = ids_.find(s);
    return it == ids_.end() ? -1 : it->second;
  }

  // run.c's algorithm: a " " piece in front, each UTF-8 code point its own piece (bytes of code
  // points that have no piece become byte tokens), then repeatedly merge the adjacent pair whose
  // concatenation is a piece with the highest score, the leftmost such pair on ties.
  //
  // run.c rescans the whole sequence after every merge, O(n^2), which is hopeless for a long
  // text. A priority queue keyed by (score, -position) picks the same pair each step: positions
  // (index of the first code point of a symbol) keep their order as symbols merge, so "smallest
  // position" is "leftmost", and queue entries whose symbols have changed since are skipped.
  //
  // Differences from run.c, all on inputs run.c mishandles: text is not cut at a NUL byte, a
  // byte token whose id would be past the vocabulary is an error instead of an out-of-range id,
  // and merges never produce BOS/EOS/<unk> or byte tokens (run.c would, for text that spells
  // "<0x41>" piecewise, if the vocabulary had the halves); SentencePiece never does either.
  void encode_segment(std::string_view text, std::vector<int>& out) const {
    if (text.empty()) return;
    struct Symbol {
      int id;
      int prev, next;  // neighbours in the live list, -1 at the ends
    };
    std::vector<Symbol> sym;
    sym.reserve(text.size() + 1);
    const auto push = [&](int id) {
      const int i = int(sym.size());
      sym.push_back({id, i - 1, -1});
      if (i > 0) sym[i - 1].next = i;
    };
    const int space = lookup(" ");
    if (space >= 0) push(space);  // run.c adds the dummy prefix only when the vocabulary has " "

    for (size_t pos = 0; pos < text.size();) {
      // run.c's grouping of bytes into code points: a byte plus the continuation bytes after it,
      // at most 4 bytes. (Not a validity check: that is what run.c does with any input.)
      size_t len = 1;
      while (pos + len < text.size() && len < 4 && (uint8_t(text[pos + len]) & 0xC0) == 0x80) ++len;
      const int id = lookup(text.substr(pos, len));
      if (id >= 0) {
        push(id);
      } else {
        for (size_t i = 0; i < len; ++i) {
          const int byte_id = kFirstByteId + uint8_t(text[pos + i]);
          if (size_t(byte_id) >= pieces_.size())
            fail("tokenizer: {}: byte 0x{:02X} has no token (vocabulary size {})", origin_,
                 uint8_t(text[pos + i]), pieces_.size());
          push(byte_id);
        }
      }
      pos += len;
    }

    struct Candidate {
      float score;
      int left;    // position of the left symbol
      int merged;  // id the pair merges into
      int right_id;
      bool operator<(const Candidate& o) const {  // max-heap: best score, then leftmost
        return score != o.score ? score < o.score : left > o.left;
      }
    };
    std::priority_queue<Candidate> queue;
    std::string scratch;
    const auto consider = [&](int left) {
      if (left < 0) return;
      const int right = sym[left].next;
      if (right < 0) return;
      scratch = pieces_[sym[left].id];
      scratch += pieces_[sym[right].id];
      const int merged = lookup(scratch);
      if (merged >= 0) queue.push({scores_[merged], left, merged, sym[right].id});
    };
    for (int i = 0; i + 1 < int(sym.size()); ++i) consider(i);

    std::vector<bool> dead(sym.size(), false);
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      const int right = sym[c.left].next;
      // Stale entry: the left symbol was absorbed, or either side changed since it was queued.
      if (dead[c.left] || right < 0 || sym[right].id != c.right_id) continue;
      scratch = pieces_[sym[c.left].id];
      scratch += pieces_[sym[right].id];
      if (lookup(scratch) != c.merged) continue;
      sym[c.left].id = c.merged;
      dead[right] = true;
      sym[c.left].next = sym[right].next;
      if (sym[right].next >= 0) sym[sym[right].next].prev = c.left;
      consider(sym[c.left].prev);
      consider(c.left);
    }
    for (int i = 0; i >= 0 && i < int(sym.size()); i = sym[i].next) out.push_back(sym[i].id);
  }

  std::string origin_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<int> byte_of_;  // byte value of "<0xXX>" pieces, else -1
  tok::StringMap<int> ids_;
  tok::SpecialSplitter specials_;
};

}  // namespace

std::unique_ptr<Tokenizer> parse_llama2c_tokenizer(const uint8_t* data, size_t size, const std::string& origin) {
  return std::make_unique<Llama2cTokenizer>(data, size, origin);
}

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& bin_path) {
  const auto file = MappedFile::open(bin_path);
  return parse_llama2c_tokenizer(file->data(), file->size(), bin_path);
}

}  // namespace qforge
