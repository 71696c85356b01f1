// Turning tokenizers into llama.cpp's GGUF vocabulary description (GgufVocab): the pieces shared
// by the tokenizer back ends (token typing rules of llama.cpp's converters, the byte-level
// pre-tokenizer names, the Hugging Face tokenizer.json case).
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/tokenizer.h"

namespace qforge::tok {

// Split patterns of the byte-level BPE pre-tokenizers GGUF names, as their tokenizer.json files
// spell them: Llama 3 ("llama-bpe") and Qwen 2 ("qwen2", digits one at a time).
extern const char* const kLlama3SplitPattern;
extern const char* const kQwen2SplitPattern;

// Added tokens that llama.cpp's converter types as control even when the file does not mark them
// special: "<|...|>", "<｜...｜>", "<unused...>", "<pad>", "<mask>", "<2mass>", "[@BOS@]".
bool looks_special(std::string_view token);

// tokenizer.ggml.pre for a byte-level tokenizer.json's "pre_tokenizer" (null: none): "gpt-2",
// "llama-bpe" or "qwen2"; "" when the layout is none of those.
std::string gguf_pre_tokenizer_name(const nlohmann::json& pre_tokenizer);

// What a Hugging Face BPE tokenizer.json holds, as tokenizer_hf.cpp read it.
struct HfVocabParts {
  std::string origin;                       // for messages
  const std::vector<std::string>* pieces;   // id -> token text; "" for ids the file does not use
  const std::vector<bool>* added;           // from added_tokens
  const std::vector<bool>* special;         // added and marked special
  const std::vector<std::array<int, 3>>* merges;  // (left, right, merged) ids, rank order
  bool byte_level = false;
  bool byte_fallback = false;
  bool space_prefix = true;  // SentencePiece style: the normalizer / Metaspace puts "▁" in front
  std::string pre;           // byte-level: gguf_pre_tokenizer_name(), "" if unknown
  int unk = -1, bos = -1, eos = -1;
  bool add_bos = false;
};
// Byte-level -> "gpt2" with the merges. SentencePiece style (byte fallback, "▁") -> "llama", typed
// as llama.cpp's converter types it (byte pieces 6, special tokens 3, other added tokens 4), with
// scores that reproduce the merge order: a piece scores -(rank of the first merge that makes it).
// (llama.cpp's converter writes -1000 for every piece of such a file, which loses the merge order;
// scores from the ranks make llama.cpp's score-driven merging pick the pieces Hugging Face's
// rank-driven BPE picks.)
GgufVocab hf_gguf_vocab(const HfVocabParts& p);

}  // namespace qforge::tok
