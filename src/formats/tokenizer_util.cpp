#include "formats/tokenizer_util.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "qforge/error.h"
#include "qforge/mmap.h"

namespace qforge::tok {

size_t utf8_char_len(std::string_view s, size_t pos) {
  const auto b = [&](size_t i) { return pos + i < s.size() ? uint8_t(s[pos + i]) : uint8_t(0); };
  const uint8_t c = b(0);
  const auto cont = [&](size_t i) { return (b(i) & 0xC0) == 0x80; };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 1;
  if (c >= 0xE0 && c <= 0xEF) {
    // E0 needs A0..BF (no overlong forms), ED needs 80..9F (no UTF-16 surrogates).
    const uint8_t c1 = b(1);
    const bool ok1 = c == 0xE0 ? (c1 >= 0xA0 && c1 <= 0xBF) : c == 0xED ? (c1 >= 0x80 && c1 <= 0x9F) : cont(1);
    return ok1 && cont(2) ? 3 : 1;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    // F0 needs 90..BF (no overlong forms), F4 needs 80..8F (nothing above U+10FFFF).
    const uint8_t c1 = b(1);
    const bool ok1 = c == 0xF0 ? (c1 >= 0x90 && c1 <= 0xBF) : c == 0xF4 ? (c1 >= 0x80 && c1 <= 0x8F) : cont(1);
    return ok1 && cont(2) && cont(3) ? 4 : 1;
  }
  return 1;
}

int parse_byte_piece(std::string_view p) {
  if (p.size() != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return -1;
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string byte_piece(uint8_t b) { return fmt::format("<0x{:02X}>", b); }

// ---- special tokens in text ---------------------------------------------------------------

void SpecialSplitter::add(Token t) {
  if (t.text.empty()) return;  // an empty token would match everywhere
  by_first_byte_[uint8_t(t.text[0])].push_back(int(tokens_.size()));
  tokens_.push_back(std::move(t));
}

static bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::vector<SpecialSplitter::Part> SpecialSplitter::split(std::string_view text) const {
  std::vector<Part> parts;
  size_t text_begin = 0, pos = 0;
  while (pos < text.size()) {
    const Token* best = nullptr;
    for (int idx : by_first_byte_[uint8_t(text[pos])]) {
      const Token& t = tokens_[idx];
      if ((!best || t.text.size() > best->text.size()) && text.substr(pos).starts_with(t.text)) best = &t;
    }
    if (!best) {
      ++pos;
      continue;
    }
    // lstrip/rstrip (Hugging Face AddedToken options) let the token absorb the whitespace next to
    // it, so that e.g. "<mask>" written after a space does not leave a lone space token behind.
    size_t text_end = pos;
    if (best->lstrip)
      while (text_end > text_begin && is_ascii_space(text[text_end - 1])) --text_end;
    if (text_end > text_begin) parts.push_back({text.substr(text_begin, text_end - text_begin), -1, text_begin == 0});
    parts.push_back({{}, best->id, false});
    pos += best->text.size();
    if (best->rstrip)
      while (pos < text.size() && is_ascii_space(text[pos])) ++pos;
    text_begin = pos;
  }
  if (text_begin < text.size()) parts.push_back({text.substr(text_begin), -1, text_begin == 0});
  return parts;
}

// ---- tokenizer_config.json / config.json --------------------------------------------------

void SpecialTokenSettings::apply(int& bos_id, int& eos_id, bool& add_bos_default) const {
  if (bos) bos_id = *bos;
  else if (bos_id < 0 && config_bos) bos_id = *config_bos;
  if (eos) eos_id = *eos;
  else if (eos_id < 0 && config_eos) eos_id = *config_eos;
  if (add_bos) add_bos_default = *add_bos;
}

static nlohmann::json read_json_object(const std::string& path) {
  const std::string text = read_text_file(path, size_t(16) << 20);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer: {}: invalid JSON: {}", path, e.what());
  }
  if (!j.is_object()) fail("tokenizer: {}: expected a JSON object at the top level", path);
  return j;
}

SpecialTokenSettings read_special_token_settings(const std::string& config_dir,
                                                 const std::function<int(std::string_view)>& lookup,
                                                 int vocab_size) {
  SpecialTokenSettings s;
  if (config_dir.empty()) return s;

  const std::string tc_path = config_dir + "/tokenizer_config.json";
  if (file_exists(tc_path)) {
    const nlohmann::json tc = read_json_object(tc_path);
    if (auto it = tc.find("add_bos_token"); it != tc.end() && !it->is_null()) {
      if (!it->is_boolean()) fail("tokenizer: {}: add_bos_token: expected true or false", tc_path);
      s.add_bos = it->get<bool>();
    }
    // bos_token / eos_token are either the token text or, as transformers saves AddedToken
    // objects, {"content": text, ...}. null means "no such token" and leaves the default.
    const auto token_id = [&](const char* key) -> std::optional<int> {
      auto it = tc.find(key);
      if (it == tc.end() || it->is_null()) return std::nullopt;
      const nlohmann::json* text = &*it;
      if (it->is_object()) {
        auto c = it->find("content");
        if (c == it->end()) fail("tokenizer: {}: {}: object without \"content\"", tc_path, key);
        text = &*c;
      }
      if (!text->is_string()) fail("tokenizer: {}: {}: expected a string or {{\"content\": ...}}", tc_path, key);
      const std::string& str = text->get_ref<const std::string&>();
      const int id = lookup(str);
      if (id < 0) fail("tokenizer: {}: {} '{}' is not in the tokenizer's vocabulary", tc_path, key, str);
      return id;
    };
    s.bos = token_id("bos_token");
    s.eos = token_id("eos_token");
  }

  const std::string mc_path = config_dir + "/config.json";
  if (file_exists(mc_path)) {
    const nlohmann::json mc = read_json_object(mc_path);
    const auto id_of = [&](const char* key) -> std::optional<int> {
      auto it = mc.find(key);
      if (it == mc.end() || it->is_null()) return std::nullopt;
      const nlohmann::json* v = &*it;
      // Some models list several end tokens (eos_token_id: [128001, 128009]); the first is the
      // one a plain "end of text" means.
      if (v->is_array()) {
        if (v->empty()) return std::nullopt;
        v = &(*v)[0];
      }
      if (!v->is_number_integer()) fail("tokenizer: {}: {}: expected an integer token id", mc_path, key);
      const int64_t id = v->get<int64_t>();
      if (id < 0 || id >= vocab_size)
        fail("tokenizer: {}: {} {} is outside the tokenizer's vocabulary (size {})", mc_path, key, id, vocab_size);
      return int(id);
    };
    s.config_bos = id_of("bos_token_id");
    s.config_eos = id_of("eos_token_id");
  }
  return s;
}

}  // namespace qforge::tok
