#include "formats/tokenizer_bpe.h"

#include <queue>

namespace qforge::tok {

BpeModel::BpeModel(StringMap<int> vocab, Options options) : vocab_(std::move(vocab)), opt_(options) {
  for (int b = 0; b < 256; ++b) byte_ids_[b] = lookup(byte_piece(uint8_t(b)));
}

bool BpeModel::add_merge(int left, int right, int merged) {
  const int rank = int(merges_.size());
  return merges_.emplace(pair_key(left, right), Merge{rank, merged}).second;
}

void BpeModel::encode_word(std::string_view word, std::vector<int>& out) const {
  if (word.empty()) return;
  {
    std::lock_guard lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out.size();
  merge_word(word, out);
  std::lock_guard lock(cache_mutex_);
  // A bounded cache: text with endless distinct "words" (random bytes, long digit runs) must not
  // grow memory without limit. Dropping everything is crude but keeps the common case fast.
  if (cache_.size() >= kCacheLimit) cache_.clear();
  cache_.emplace(std::string(word), std::vector<int>(out.begin() + long(start), out.end()));
}

// The merge loop of Hugging Face's BPE: every adjacent pair that has a merge goes into a min-heap
// keyed by (rank, position); the best is applied, the pairs it creates with its neighbours are
// queued, and entries made stale by earlier merges are skipped when popped. Positions are the
// index of a symbol's first character and keep their order as symbols merge, so "lowest
// position" is "leftmost", the tie-break Hugging Face uses.
void BpeModel::merge_word(std::string_view word, std::vector<int>& out) const {
  if (opt_.ignore_merges) {
    if (int id = lookup(word); id >= 0) {
      out.push_back(id);
      return;
    }
  }

  struct Symbol {
    int id;
    int prev, next;  // live neighbours, -1 at the ends
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  const auto push = [&](int id) {
    const int i = int(sym.size());
    sym.push_back({id, i - 1, -1});
    if (i > 0) sym[i - 1].next = i;
  };

  // Initial symbols: one per character, as the vocabulary spells it.
  bool unk_pending = false;
  const auto flush_unk = [&] {
    if (unk_pending) push(opt_.unk_id);
    unk_pending = false;
  };
  for (size_t pos = 0; pos < word.size();) {
    const size_t len = utf8_char_len(word, pos);
    const std::string_view ch = word.substr(pos, len);
    pos += len;
    if (const int id = lookup(ch); id >= 0) {
      flush_unk();
      push(id);
      continue;
    }
    if (opt_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[uint8_t(c)] >= 0;
      if (all) {
        flush_unk();
        for (char c : ch) push(byte_ids_[uint8_t(c)]);
        continue;
      }
    }
    if (opt_.unk_id >= 0) {
      if (!opt_.fuse_unk) flush_unk();
      unk_pending = true;
    }
    // No <unk> either: the character is dropped, as Hugging Face's BPE does.
  }
  flush_unk();

  struct Candidate {
    int rank, left, merged, right_id;
    bool operator<(const Candidate& o) const {  // std::priority_queue is a max-heap: invert
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate> queue;
  const auto consider = [&](int left) {
    if (left < 0) return;
    const int right = sym[left].next;
    if (right < 0) return;
    auto it = merges_.find(pair_key(sym[left].id, sym[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.merged, sym[right].id});
  };
  for (int i = 0; i + 1 < int(sym.size()); ++i) consider(i);

  std::vector<bool> dead(sym.size(), false);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    if (dead[c.left]) continue;
    const int right = sym[c.left].next;
    if (right < 0 || sym[right].id != c.right_id) continue;
    // The left symbol may have changed too; the pair is current only if it still merges this way.
    auto it = merges_.find(pair_key(sym[c.left].id, sym[right].id));
    if (it == merges_.end() || it->second.merged != c.merged || it->second.rank != c.rank) continue;
    sym[c.left].id = c.merged;
    dead[right] = true;
    sym[c.left].next = sym[right].next;
    if (sym[right].next >= 0) sym[sym[right].next].prev = c.left;
    consider(sym[c.left].prev);
    consider(c.left);
  }
  for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace qforge::tok
