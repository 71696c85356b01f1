// The BPE model of Hugging Face tokenizer.json: a vocabulary, ranked merges, and the rules for
// characters the vocabulary lacks (byte fallback, <unk>). It encodes one pre-token at a time.
#pragma once
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tokenizer_util.h"

namespace qforge::tok {

class BpeModel {
 public:
  struct Options {
    bool byte_fallback = false;  // characters not in the vocabulary become <0xXX> byte tokens
    bool ignore_merges = false;  // a pre-token that is itself in the vocabulary is taken whole
    bool fuse_unk = false;       // consecutive unknown characters give one <unk>
    int unk_id = -1;             // -1: unknown characters are dropped (as Hugging Face does)
  };

  // vocab: piece -> id, as read from the file (ids already checked to be in range).
  BpeModel(StringMap<int> vocab, Options options);

  // Adds the merge (left, right) -> merged at the next rank; merges added earlier win.
  // Returns false if that pair already had a merge (the first one is kept).
  bool add_merge(int left, int right, int merged);
  int lookup(std::string_view piece) const {
    auto it = vocab_.find(piece);
    return it == vocab_.end() ? -1 : it->second;
  }
  const StringMap<int>& vocab() const { return vocab_; }

  // Appends the ids of one pre-token. Results are cached per distinct pre-token (words repeat a
  // lot in real text), so the merge loop runs once per word, not once per occurrence.
  void encode_word(std::string_view word, std::vector<int>& out) const;

 private:
  void merge_word(std::string_view word, std::vector<int>& out) const;
  static uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  StringMap<int> vocab_;
  Options opt_;
  struct Merge {
    int rank, merged;
  };
  std::unordered_map<uint64_t, Merge> merges_;
  int byte_ids_[256];  // id of "<0xXX>" per byte, -1 where the vocabulary has none

  // Word cache; encode() is const and may be called from several threads.
  static constexpr size_t kCacheLimit = 1 << 18;
  mutable std::mutex cache_mutex_;
  mutable StringMap<std::vector<int>> cache_;
};

}  // namespace qforge::tok
