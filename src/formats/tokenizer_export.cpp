#include "formats/tokenizer_export.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "formats/tokenizer_hf_pipeline.h"
#include "formats/tokenizer_util.h"
#include "qforge/error.h"

namespace qforge::tok {

const char* const kLlama3SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

namespace {

using nlohmann::json;

bool wrapped(std::string_view t, std::string_view open, std::string_view close) {
  return t.size() >= open.size() + close.size() && t.starts_with(open) && t.ends_with(close);
}

// The pre-tokenizer steps of a tokenizer.json, Sequences flattened. False if the JSON has a shape
// tokenizer_hf.cpp would not have accepted (it read the same JSON before, so this is defensive).
bool flatten(const json& p, std::vector<const json*>& out, int depth) {
  if (depth > 16 || !p.is_object()) return false;
  const auto type = p.find("type");
  if (type == p.end() || !type->is_string()) return false;
  if (*type == "Sequence") {
    const auto list = p.find("pretokenizers");
    if (list == p.end() || !list->is_array()) return false;
    for (const json& q : *list)
      if (!flatten(q, out, depth + 1)) return false;
    return true;
  }
  out.push_back(&p);
  return true;
}

bool flag(const json& p, const char* key, bool fallback) {
  const auto it = p.find(key);
  return it != p.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

}  // namespace

bool looks_special(std::string_view t) {
  if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
  return wrapped(t, "<|", "|>") || wrapped(t, "<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || wrapped(t, "<unused", ">");
}

std::string gguf_pre_tokenizer_name(const json& pre_tokenizer) {
  std::vector<const json*> steps;
  if (pre_tokenizer.is_null() || !flatten(pre_tokenizer, steps, 0)) return "";
  const auto is = [](const json* s, const char* type) { return (*s)["type"] == type; };
  // GPT-2: a ByteLevel step with its own regex and no prefix space.
  if (steps.size() == 1 && is(steps[0], "ByteLevel"))
    return flag(*steps[0], "use_regex", true) && !flag(*steps[0], "add_prefix_space", true) ? "gpt-2" : "";
  // Llama 3 / Qwen 2: Split(regex, Isolated) then ByteLevel without a regex of its own.
  if (steps.size() == 2 && is(steps[0], "Split") && is(steps[1], "ByteLevel")) {
    const json& split = *steps[0];
    if (flag(*steps[1], "use_regex", true) || flag(*steps[1], "add_prefix_space", true)) return "";
    if (split.value("behavior", "") != "Isolated" || flag(split, "invert", false)) return "";
    const auto pat = split.find("pattern");
    if (pat == split.end() || !pat->is_object() || !pat->contains("Regex") || !(*pat)["Regex"].is_string()) return "";
    const std::string regex = (*pat)["Regex"];
    if (regex == kLlama3SplitPattern) return "llama-bpe";
    if (regex == kQwen2SplitPattern) return "qwen2";
    if (regex == kGpt2SplitPattern) return "gpt-2";
  }
  return "";
}

GgufVocab hf_gguf_vocab(const HfVocabParts& p) {
  const std::vector<std::string>& pieces = *p.pieces;
  const size_t n = pieces.size();
  GgufVocab v;
  v.bos = p.bos;
  v.eos = p.eos;
  v.unk = p.unk;
  v.add_bos = p.add_bos;
  v.tokens.reserve(n);
  v.token_types.reserve(n);
  for (size_t id = 0; id < n; ++id) {
    std::string token = pieces[id];
    int32_t type = GgufVocab::kNormal;
    if (token.empty() && !(*p.added)[id]) {
      // An id the file leaves out: llama.cpp's converter fills it like this.
      token = fmt::format("[PAD{}]", id);
      type = GgufVocab::kUnused;
    } else if ((*p.added)[id]) {
      if ((*p.special)[id] || looks_special(token)) {
        type = int(id) == p.unk ? GgufVocab::kUnknown : GgufVocab::kControl;
      } else {
        type = GgufVocab::kUserDefined;
        // The converter writes user-defined tokens pre-normalized: "▁" back to a space.
        if (!p.byte_level)
          for (size_t pos; (pos = token.find("\xE2\x96\x81")) != std::string::npos;) token.replace(pos, 3, " ");
      }
    } else if (int(id) == p.unk) {
      type = GgufVocab::kUnknown;
    } else if (!p.byte_level && p.byte_fallback && parse_byte_piece(token) >= 0) {
      type = GgufVocab::kByte;
    }
    v.tokens.push_back(std::move(token));
    v.token_types.push_back(type);
  }

  if (p.byte_level) {
    if (p.pre.empty())
      fail_unsupported("tokenizer: {}: pre_tokenizer: this byte-level layout has no GGUF name (supported: GPT-2's "
                       "ByteLevel, Llama 3's and Qwen 2's Split + ByteLevel)",
                       p.origin);
    v.model = "gpt2";
    v.pre = p.pre;
    v.merges.reserve(p.merges->size());
    for (const auto& [a, b, merged] : *p.merges) {
      const std::string& left = pieces[size_t(a)];
      const std::string& right = pieces[size_t(b)];
      // GGUF merges are "left right": a token with a space in it cannot be written unambiguously.
      if (left.find(' ') != std::string::npos || right.find(' ') != std::string::npos)
        fail_unsupported("tokenizer: {}: merge ['{}', '{}'] has a space inside a token, which GGUF's \"left right\" "
                         "merges cannot express",
                         p.origin, left, right);
      v.merges.push_back(left + " " + right);
    }
    return v;
  }

  v.model = "llama";
  v.pre = "default";
  v.add_space_prefix = p.space_prefix;
  // Pieces no merge makes (single characters, bytes, specials) are never the result of a merge in
  // llama.cpp's algorithm either, so their score is not used; they get the lowest one, as
  // SentencePiece's own BPE models give single characters.
  const float lowest = -float(p.merges->size()) - 1.0f;
  v.scores.assign(n, 0.0f);
  std::vector<bool> made(n, false);
  for (size_t rank = 0; rank < p.merges->size(); ++rank) {
    const int merged = (*p.merges)[rank][2];
    if (!made[size_t(merged)]) v.scores[size_t(merged)] = -float(rank);
    made[size_t(merged)] = true;
  }
  for (size_t id = 0; id < n; ++id)
    if (!made[id] && v.token_types[id] == GgufVocab::kNormal) v.scores[id] = lowest;
  return v;
}

}  // namespace qforge::tok
