// The quantization plan: llama-quantize's per-tensor type choice for llama and gpt2 GGUF tensors,
// re-implemented from its documented behaviour (src/llama-quant.cpp in llama.cpp 3f545be was read, not
// copied) and checked against tables llama-quantize produced (tests/data/quant_plan/).
#include "qforge/quant_plan.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <map>
#include <numeric>

#include "qforge/error.h"

namespace qforge {

namespace {

// llama_ftype values (llama.h), the ids of the mixes below.
enum FileType : int32_t {
  kAllF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 7, kQ5_0 = 8, kQ5_1 = 9, kQ2_K = 10, kQ3_K_S = 11,
  kQ3_K_M = 12, kQ3_K_L = 13, kQ4_K_S = 14, kQ4_K_M = 15, kQ5_K_S = 16, kQ5_K_M = 17, kQ6_K = 18,
  kQ2_K_S = 21, kIQ4_NL = 25, kBF16 = 32,
};

constexpr QuantMix kMixes[] = {
    {"q4_0", DType::Q4_0, kQ4_0, true, false, "q4_0; output matrix q6_k"},
    {"q4_1", DType::Q4_1, kQ4_1, true, false, "q4_1; output matrix q6_k"},
    {"q5_0", DType::Q5_0, kQ5_0, true, false, "q5_0; output matrix q6_k"},
    {"q5_1", DType::Q5_1, kQ5_1, true, false, "q5_1; output matrix q6_k"},
    {"q2_k", DType::Q2_K, kQ2_K, true, false, "q2_k; attn_v q3_k/q4_k, ffn_down and attn_output q3_k, output q6_k"},
    {"q2_k_s", DType::Q2_K, kQ2_K_S, true, true, "q2_k; needs an importance matrix"},
    {"q3_k_s", DType::Q3_K, kQ3_K_S, true, false, "q3_k; output matrix q6_k"},
    {"q3_k_m", DType::Q3_K, kQ3_K_M, true, false, "q3_k; attn_v, ffn_down, attn_output q4_k/q5_k"},
    {"q3_k_l", DType::Q3_K, kQ3_K_L, true, false, "q3_k; attn_v, ffn_down, attn_output q5_k"},
    {"iq4_nl", DType::IQ4_NL, kIQ4_NL, true, false, "iq4_nl; some attn_v/ffn_down q5_k"},
    {"q4_k_s", DType::Q4_K, kQ4_K_S, true, false, "q4_k; first attn_v and ffn_down q5_k"},
    {"q4_k_m", DType::Q4_K, kQ4_K_M, true, false, "q4_k; half of attn_v and ffn_down q6_k"},
    {"q5_k_s", DType::Q5_K, kQ5_K_S, true, false, "q5_k; output matrix q6_k"},
    {"q5_k_m", DType::Q5_K, kQ5_K_M, true, false, "q5_k; half of attn_v and ffn_down q6_k"},
    {"q6_k", DType::Q6_K, kQ6_K, true, false, "q6_k"},
    {"q8_0", DType::Q8_0, kQ8_0, true, false, "q8_0"},
    {"f16", DType::F16, kF16, true, false, "f16 matrices, f32 vectors"},
    {"bf16", DType::BF16, kBF16, true, false, "bf16 matrices, f32 vectors"},
    {"f32", DType::F32, kAllF32, true, false, "everything f32"},
    {"nf4", DType::NF4, kNoFileType, false, false, "qforge-only NormalFloat-4 (not storable in GGUF)"},
};

// llama-quantize's aliases.
constexpr std::pair<const char*, const char*> kAliases[] = {
    {"q3_k", "q3_k_m"}, {"q4_k", "q4_k_m"}, {"q5_k", "q5_k_m"}};

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string mix_names() {
  std::string s;
  for (const QuantMix& m : kMixes) s += (s.empty() ? "" : ", ") + std::string(m.name);
  for (auto [alias, target] : kAliases) s += fmt::format(", {} (= {})", alias, target);
  return s;
}

std::string type_names() {
  std::string s;
  for (const QuantType& q : quant_types()) s += (s.empty() ? "" : ", ") + std::string(q.name);
  return s;
}

const QuantType& qt(DType t) { return quant_type(t); }

std::string types_fitting(int64_t row_length) {
  std::string s;
  for (const QuantType& q : quant_types())
    if (row_length % int64_t(q.block_elems) == 0) s += (s.empty() ? "" : ", ") + std::string(q.name);
  return s;
}

// ---- tensor categories (what llama.cpp's rules key on) ----------------------------------------------

enum class Category { TokenEmbd, Output, AttnQkv, AttnV, AttnK, AttnQ, AttnOutput, FfnUp, FfnGate, FfnDown, Other };

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

// Same precedence as llama.cpp: exact names first, then substrings (so "attn_qkv.weight" is not attn_v).
Category category_of(std::string_view name) {
  if (name == "output.weight") return Category::Output;
  if (name == "token_embd.weight") return Category::TokenEmbd;
  if (contains(name, "attn_qkv.weight")) return Category::AttnQkv;
  if (contains(name, "attn_v.weight")) return Category::AttnV;
  if (contains(name, "attn_k.weight")) return Category::AttnK;
  if (contains(name, "attn_q.weight")) return Category::AttnQ;
  if (contains(name, "attn_output.weight")) return Category::AttnOutput;
  if (contains(name, "ffn_up")) return Category::FfnUp;
  if (contains(name, "ffn_gate")) return Category::FfnGate;
  if (contains(name, "ffn_down")) return Category::FfnDown;
  return Category::Other;
}

// The fused qkv of gpt2 counts as attn_v: llama.cpp's attn_v rules (and counter) apply to it.
bool is_attn_v_like(Category c) { return c == Category::AttnV || c == Category::AttnQkv; }

// The block index of "blk.N....", or -1 (llama.cpp orders tensors by it, then by name).
int layer_of(std::string_view name) {
  if (!name.starts_with("blk.")) return -1;
  name.remove_prefix(4);
  int v = -1;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), v);
  if (ec != std::errc() || end == name.data() + name.size() || *end != '.') return -1;
  return v;
}

struct Shape {
  int64_t rows = 1, row_length = 1;
  bool matrix() const { return rows > 1; }  // as ggml_n_dims: a single row is 1-D
};

Shape shape_of(const PlanTensor& t) {
  Shape s;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] < 0) fail("quantize: tensor '{}': negative dimension {}", t.name, t.shape[i]);
    if (i + 1 == t.shape.size()) {
      s.row_length = t.shape[i];
    } else {
      s.rows = int64_t(checked_mul(uint64_t(s.rows), uint64_t(t.shape[i]), "quantize: tensor '" + t.name + "' size"));
    }
  }
  return s;
}

// Why llama.cpp leaves a tensor as it is (empty: it quantizes it).
std::string never_quantized_reason(std::string_view name, const Shape& s) {
  if (!s.matrix()) return "1-D tensor kept f32";
  if (!name.ends_with("weight")) return "llama.cpp quantizes only tensors named *weight: kept f32";
  if (contains(name, "_norm.weight")) return "norm weights are kept f32";
  if (name == "position_embd.weight") return "llama.cpp does not quantize position_embd.weight: kept f32";
  return {};
}

bool fits(const QuantType& q, int64_t row_length) { return row_length % int64_t(q.block_elems) == 0; }

// ---- llama.cpp's per-tensor rules ---------------------------------------------------------------------

struct RuleState {
  const PlanModel& model;
  const QuantMix& mix;
  bool has_importance;
  bool tied;             // no output.weight: token_embd is also the output matrix
  int n_gqa;
  bool is_70b;
  int n_attention_wv;    // attn_v-like tensors in the model
  int i_attention_wv = 0;  // attn_v-like tensors decided so far
  int i_ffn_down = 0;      // ffn_down tensors decided so far
};

// llama.cpp's "more bits" layers: the first and last eighth, and every third one in between.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

struct Choice {
  DType type;
  std::string why;  // empty when the rule left the base type
};

Choice mix_rule(RuleState& st, Category cat, int64_t row_length) {
  const int32_t ft = st.mix.file_type;
  const DType base = st.mix.base;
  const char* mix = st.mix.name;
  Choice c{base, {}};
  auto set = [&](DType t, std::string why) {
    if (t != c.type) c = {t, std::move(why)};
  };

  if (cat == Category::Output || (st.tied && cat == Category::TokenEmbd)) {
    const char* what = cat == Category::Output ? "the output matrix" : "token_embd.weight (tied: also the output matrix)";
    if (!fits(qt(base), row_length))
      set(DType::Q8_0, fmt::format("{} is stored q8_0 by llama.cpp when its row length {} is not a multiple of {}'s "
                                   "block of {}", what, row_length, qt(base).name, qt(base).block_elems));
    else if (base != DType::Q8_0)
      set(DType::Q6_K, fmt::format("{} is stored q6_k by llama.cpp", what));
    return c;
  }
  if (cat == Category::TokenEmbd) return c;

  if (is_attn_v_like(cat)) {
    const int i = st.i_attention_wv, n = st.n_attention_wv;
    const std::string layer = fmt::format("attn_v #{} of {}", i, n);
    if (ft == kQ2_K) {
      set(st.n_gqa >= 4 ? DType::Q4_K : DType::Q3_K,
          fmt::format("{} raises attn_v to {} (GQA {} {} 4)", mix, st.n_gqa >= 4 ? "q4_k" : "q3_k", st.n_gqa,
                      st.n_gqa >= 4 ? ">=" : "<"));
    } else if (ft == kQ2_K_S && st.n_gqa >= 4) {
      set(DType::Q4_K, fmt::format("{} raises attn_v of a GQA {} model to q4_k", mix, st.n_gqa));
    } else if (ft == kQ3_K_M) {
      set(i < 2 ? DType::Q5_K : DType::Q4_K, fmt::format("{} raises {} to {}", mix, layer, i < 2 ? "q5_k" : "q4_k"));
    } else if (ft == kQ3_K_L) {
      set(DType::Q5_K, fmt::format("{} raises attn_v to q5_k", mix));
    } else if (ft == kIQ4_NL && st.n_gqa >= 4) {
      set(DType::Q5_K, fmt::format("{} raises attn_v of a GQA {} model to q5_k", mix, st.n_gqa));
    } else if ((ft == kQ4_K_M || ft == kQ5_K_M) && use_more_bits(i, n)) {
      set(DType::Q6_K, fmt::format("{} gives {} more bits (q6_k: first/last eighth, every third)", mix, layer));
    } else if (ft == kQ4_K_S && i < 4) {
      set(DType::Q5_K, fmt::format("{} raises the first 4 attn_v to q5_k ({})", mix, layer));
    }
    // A 70B llama shares each attn_v among 8 heads: more bits cost little there.
    if (st.is_70b && (c.type == DType::Q3_K || c.type == DType::Q4_K))
      set(DType::Q5_K, fmt::format("{} raises attn_v of a 70B llama (80 layers, GQA) to q5_k", mix));
    ++st.i_attention_wv;
    return c;
  }

  if (cat == Category::FfnDown) {
    const int i = st.i_ffn_down, n = st.model.n_layer;
    const std::string layer = fmt::format("ffn_down #{} of {}", i, n);
    if (ft == kQ2_K) {
      set(DType::Q3_K, fmt::format("{} raises ffn_down to q3_k", mix));
    } else if (ft == kQ2_K_S) {
      if (i < n / 8) set(DType::Q4_K, fmt::format("{} raises the first eighth of ffn_down to q4_k ({})", mix, layer));
    } else if (ft == kQ3_K_M) {
      set(i < n / 16 ? DType::Q5_K : DType::Q4_K,
          fmt::format("{} raises {} to {}", mix, layer, i < n / 16 ? "q5_k (first sixteenth)" : "q4_k"));
    } else if (ft == kQ3_K_L) {
      set(DType::Q5_K, fmt::format("{} raises ffn_down to q5_k", mix));
    } else if (ft == kQ4_K_M || ft == kQ5_K_M) {
      if (use_more_bits(i, n))
        set(DType::Q6_K, fmt::format("{} gives {} more bits (q6_k: first/last eighth, every third)", mix, layer));
    } else if (ft == kIQ4_NL) {
      if (i < n / 8 && !st.has_importance)
        set(DType::Q5_K, fmt::format("{} without an importance matrix raises the first eighth of ffn_down to q5_k "
                                     "({})", mix, layer));
    } else if (ft == kQ4_K_S) {
      if (i < n / 8) set(DType::Q5_K, fmt::format("{} raises the first eighth of ffn_down to q5_k ({})", mix, layer));
    } else if ((ft == kQ4_0 || ft == kQ5_0) && st.has_importance && i < n / 8) {
      set(ft == kQ4_0 ? DType::Q4_1 : DType::Q5_1,
          fmt::format("{} with an importance matrix guards the first eighth of ffn_down with {} ({})", mix,
                      ft == kQ4_0 ? "q4_1" : "q5_1", layer));
    }
    ++st.i_ffn_down;
    return c;
  }

  if (cat == Category::AttnOutput) {
    if (ft == kQ2_K) set(DType::Q3_K, fmt::format("{} raises attn_output to q3_k", mix));
    else if (ft == kQ3_K_M) set(DType::Q4_K, fmt::format("{} raises attn_output to q4_k", mix));
    else if (ft == kQ3_K_L) set(DType::Q5_K, fmt::format("{} raises attn_output to q5_k", mix));
    return c;
  }
  return c;  // attn_q, attn_k, ffn_gate, ffn_up and the rest: no rule in these mixes
}

// llama.cpp's fallback for a type whose block does not divide the row length.
struct Fallback {
  DType type;
  std::string why;
  bool llama_refuses = false;  // llama-quantize stops here; qforge stores f16
};

Fallback fallback(DType t, int64_t row_length) {
  const QuantType& from = qt(t);
  DType to;
  switch (t) {
    case DType::Q2_K:
    case DType::Q3_K: to = DType::Q4_0; break;
    case DType::Q4_K: to = DType::Q5_0; break;
    case DType::Q5_K: to = DType::Q5_1; break;
    case DType::Q6_K: to = DType::Q8_0; break;
    default:
      return {DType::F16,
              fmt::format("row length {} is not a multiple of {}'s block of {}: f16 ({})", row_length, from.name,
                          from.block_elems,
                          from.ggml_type == kNoGgmlType
                              ? "qforge's fallback"
                              : fmt::format("llama-quantize has no fallback for {} and refuses this model", from.name)),
              from.ggml_type != kNoGgmlType};
  }
  const QuantType& next = qt(to);
  if (fits(next, row_length))
    return {to, fmt::format("row length {} is not a multiple of {}'s block of {}: {} -> {} as llama.cpp does",
                            row_length, from.name, from.block_elems, from.name, next.name)};
  return {DType::F16, fmt::format("row length {} fits neither {}'s block of {} nor {}'s of {}: f16 as llama.cpp does",
                                  row_length, from.name, from.block_elems, next.name, next.block_elems)};
}

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : b.empty() ? a : a + "; " + b; }

}  // namespace

std::span<const QuantMix> quant_mixes() { return kMixes; }

const QuantMix* find_quant_mix(std::string_view name) {
  for (auto [alias, target] : kAliases)
    if (same_name(name, alias)) name = target;
  for (const QuantMix& m : kMixes)
    if (same_name(name, m.name)) return &m;
  return nullptr;
}

const QuantMix& parse_quant_mix(std::string_view name) {
  if (const QuantMix* m = find_quant_mix(name)) return *m;
  fail("quantize: --type '{}': unknown mix or type; valid names: {} (add --pure for one type in every matrix)", name,
       mix_names());
}

KeepRule parse_keep_rule(std::string_view spec) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string_view::npos)
    fail("quantize: --keep '{}': expected REGEX=TYPE, e.g. --keep 'output\\.weight=q8_0'", spec);
  KeepRule r;
  r.spec = std::string(spec);
  r.pattern = std::string(spec.substr(0, eq));
  const std::string_view type = spec.substr(eq + 1);
  if (r.pattern.empty()) fail("quantize: --keep '{}': the regex before '=' is empty", spec);
  r.type = find_quant_type(type);
  if (!r.type) {
    if (const QuantMix* m = find_quant_mix(type))  // q4_k_m, q2_k_s, ...: plain names were found above
      fail("quantize: --keep '{}': '{}' is a mix, not a tensor type (its matrices are mostly {}); valid types: {}",
           spec, type, qt(m->base).name, type_names());
    fail("quantize: --keep '{}': unknown type '{}'; valid types: {}", spec, type, type_names());
  }
  try {
    r.regex = std::regex(r.pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("quantize: --keep '{}': invalid regex '{}': {}", spec, r.pattern, e.what());
  }
  return r;
}

std::vector<KeepRule> parse_keep_rules(const std::vector<std::string>& specs) {
  std::vector<KeepRule> rules;
  rules.reserve(specs.size());
  for (const std::string& s : specs) rules.push_back(parse_keep_rule(s));
  return rules;
}

PlanModel plan_model(const ModelConfig& cfg) { return {cfg.arch, cfg.n_layer, cfg.n_head, cfg.n_head_kv}; }

QuantPlan plan_quantization(const PlanModel& model, std::span<const PlanTensor> tensors, const QuantMix& mix,
                            const PlanOptions& opt) {
  if (model.n_layer < 0 || model.n_head < 0 || model.n_head_kv < 0)
    fail("quantize: negative layer or head count ({} layers, {} heads, {} KV heads)", model.n_layer, model.n_head,
         model.n_head_kv);
  QuantPlan plan;
  plan.mix = &mix;
  plan.pure = opt.pure || !mix.llama_rules;
  plan.file_type = mix.file_type;

  const size_t n = tensors.size();
  std::vector<Shape> shapes(n);
  std::map<std::string_view, size_t> by_name;
  bool has_output = false;
  int n_attention_wv = 0;
  for (size_t i = 0; i < n; ++i) {
    shapes[i] = shape_of(tensors[i]);
    if (!by_name.emplace(tensors[i].name, i).second) fail("quantize: tensor '{}' is listed twice", tensors[i].name);
    const Category c = category_of(tensors[i].name);
    if (c == Category::Output) has_output = true;
    if (is_attn_v_like(c)) ++n_attention_wv;
  }

  RuleState st{model, mix, opt.has_importance, !has_output,
               model.n_head_kv == 0 ? 0 : model.n_head / model.n_head_kv,
               model.arch == Arch::Llama && model.n_layer == 80 && model.n_head != model.n_head_kv,
               n_attention_wv};

  // llama.cpp decides in its own order (block index, then name); the layer counters depend on it.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::vector<int> layer(n);
  for (size_t i = 0; i < n; ++i) layer[i] = layer_of(tensors[i].name);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (layer[a] != layer[b]) return layer[a] < layer[b];
    return tensors[a].name < tensors[b].name;
  });

  plan.tensors.resize(n);
  const QuantType& base = qt(mix.base);
  const bool base_quantized = base.block_elems > 1;
  int n_refused = 0;
  std::string first_refused;  // "blk.0.ffn_down.weight (172 values; q8_0 needs multiples of 32)"
  for (size_t i : order) {
    const PlanTensor& t = tensors[i];
    PlannedTensor& p = plan.tensors[i];
    p.name = t.name;
    const std::string kept = never_quantized_reason(t.name, shapes[i]);
    if (!kept.empty()) {
      p.type = &qt(DType::F32);
      if (mix.base != DType::F32) p.note = kept;
      continue;
    }
    p.quantizable = true;
    if (!base_quantized) {  // f32, f16, bf16: no rules, no fallback
      p.type = &base;
      continue;
    }
    Choice c{mix.base, {}};
    if (!plan.pure) c = mix_rule(st, category_of(t.name), shapes[i].row_length);
    if (!fits(qt(c.type), shapes[i].row_length)) {
      Fallback f = fallback(c.type, shapes[i].row_length);
      ++plan.n_fallback;
      if (f.llama_refuses && n_refused++ == 0)
        first_refused = fmt::format("{}: {} values, {} needs multiples of {}", t.name, shapes[i].row_length,
                                    qt(c.type).name, qt(c.type).block_elems);
      c = {f.type, join(c.why, f.why)};
    }
    p.type = &qt(c.type);
    p.note = std::move(c.why);
  }
  if (n_refused > 0)
    plan.warnings.push_back(fmt::format(
        "{} tensor(s) have rows that fit no block llama.cpp can fall back to ({}); qforge stores them f16, "
        "llama-quantize refuses this model for {} (\"no tensor type fallback\")",
        n_refused, first_refused, mix.name));

  // Overrides, after the mix: first matching rule wins.
  std::vector<int> taken(opt.keep.size(), 0), matched(opt.keep.size(), 0), matched_kept(opt.keep.size(), 0);
  for (size_t i = 0; i < n; ++i) {
    const PlanTensor& t = tensors[i];
    PlannedTensor& p = plan.tensors[i];
    bool decided = false;
    for (size_t r = 0; r < opt.keep.size(); ++r) {
      const KeepRule& rule = opt.keep[r];
      if (!std::regex_match(t.name, rule.regex)) continue;
      ++matched[r];
      if (decided) continue;
      if (!p.quantizable) {
        ++matched_kept[r];
        if (rule.type->dtype != DType::F32) continue;  // passed over: the next rule may still name f32
        decided = true;
        continue;
      }
      decided = true;
      ++taken[r];
      if (!fits(*rule.type, shapes[i].row_length))
        fail("quantize: --keep '{}': tensor '{}' has rows of {} values, not a multiple of {}'s block of {}; "
             "types that fit it: {}",
             rule.spec, t.name, shapes[i].row_length, rule.type->name, rule.type->block_elems,
             types_fitting(shapes[i].row_length));
      p.type = rule.type;
      p.note = "--keep " + rule.spec;
    }
  }
  for (size_t r = 0; r < opt.keep.size(); ++r) {
    const KeepRule& rule = opt.keep[r];
    if (taken[r] > 0) continue;
    if (matched[r] == 0)
      fail("quantize: --keep '{}': '{}' matches no tensor (it must match the whole GGUF name, e.g. "
           "'blk\\.0\\.attn_v\\.weight' or 'blk\\.[0-9]+\\.ffn_down\\.weight')",
           rule.spec, rule.pattern);
    if (matched_kept[r] == matched[r] && rule.type->dtype == DType::F32) continue;  // asks for what they are
    if (matched_kept[r] == matched[r])
      fail("quantize: --keep '{}': '{}' matches only tensors that are never quantized (1-D tensors, norms, "
           "position_embd), which stay f32",
           rule.spec, rule.pattern);
    fail("quantize: --keep '{}': every tensor '{}' matches was already taken by an earlier --keep (first match wins)",
         rule.spec, rule.pattern);
  }

  if (mix.requires_importance && !opt.has_importance) {
    for (size_t i = 0; i < n; ++i) {
      const Category c = category_of(tensors[i].name);
      if (plan.tensors[i].quantizable && plan.tensors[i].type->dtype == DType::Q2_K && c != Category::TokenEmbd &&
          c != Category::Output)
        fail("quantize: {} needs an importance matrix (--imatrix FILE, from llama.cpp's llama-imatrix): without one "
             "llama.cpp refuses its q2_k tensors ('{}' first)",
             mix.name, tensors[i].name);
    }
  }
  return plan;
}

QuantPlan plan_quantization(const PlanModel& model, std::span<const PlanTensor> tensors, std::string_view type,
                            const std::vector<std::string>& keep, bool pure, bool has_importance) {
  PlanOptions opt;
  opt.pure = pure;
  opt.has_importance = has_importance;
  opt.keep = parse_keep_rules(keep);
  return plan_quantization(model, tensors, parse_quant_mix(type), opt);
}

}  // namespace qforge
