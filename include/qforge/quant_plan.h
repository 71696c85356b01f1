// The quantization plan: which storage type each tensor of a model gets, for a mix name such as
// "q4_k_m" plus the user's per-tensor overrides (--keep REGEX=TYPE).
//
// For the mixes llama.cpp has, the plan is the one llama-quantize (llama.cpp 3f545be) makes for the
// same GGUF tensors, tensor for tensor: its per-category rules (attn_v, ffn_down and attn_output get more
// bits in some layers, the output matrix q6_k or q8_0, GQA and 70B adjustments), the counters it keeps
// across layers, 1-D tensors and norms kept f32, and its fallback when a row length is not a whole
// number of blocks. tests/unit/test_quant_plan.cpp checks this against tables produced by llama-quantize
// itself (tests/data/quant_plan/README.md).
//
// Names. A name means what it means to llama-quantize, so the same name gives the same file:
//   q2_k q2_k_s q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k q4_0 q4_1 q5_0 q5_1 q8_0 iq4_nl
//   f16 bf16 f32 are llama.cpp's mixes, and q3_k, q4_k, q5_k are llama-quantize's aliases of q3_k_m,
//   q4_k_m, q5_k_m. Note that the bare names are mixes too: q4_0 or q6_k store the output matrix (and
//   a tied token_embd) in q6_k / q8_0, q2_k raises attn_v, ffn_down and attn_output.
//   For one type in every matrix (llama-quantize --pure), set PlanOptions::pure: "q4_k" + pure is q4_k
//   everywhere a row fits its blocks.
//   nf4 is qforge-only (no ggml id, so GGUF cannot hold it; no llama.cpp rules): always pure.
// In --keep overrides, TYPE names one storage type (quant_types(): f32 f16 bf16 q8_0 q4_0 q4_1 q5_0
// q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl nf4), so there q4_k is the q4_k type.
//
// Row lengths that fit no block. llama.cpp falls back q2_k/q3_k -> q4_0, q4_k -> q5_0, q5_k -> q5_1,
// q6_k -> q8_0, and to f16 when the fallback does not fit either; the plan does the same. Where
// llama-quantize has no fallback and refuses the model (q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl rows that
// are not a multiple of 32, e.g. stories260K's 172-wide ffn_down) the plan stores f16 and says so in
// the tensor's note and in QuantPlan::warnings. nf4 rows that are not a multiple of 64 are f16 too.
//
// Overrides (--keep REGEX=TYPE, any number) are applied after the mix: the first rule whose regex
// (ECMAScript, std::regex_match: it must match the whole GGUF tensor name) matches a tensor decides its
// type. They do not change the mix's layer counters (unlike llama-quantize --tensor-type, which skips
// the mix rules for the tensors it overrides and so shifts later layers' choices). Tensors llama.cpp
// never quantizes (1-D norms and biases, position_embd.weight) stay f32 and are passed over by rules
// naming another type. plan_quantization fails, naming the rule, when:
//   - the type's block does not divide a matched tensor's row length (the tensor, its row length and
//     the block size are in the message);
//   - a rule matches no tensor, or only tensors an earlier rule already took: a mistyped pattern would
//     otherwise silently leave the model quantized differently from what was asked;
//   - a rule matches only never-quantized tensors and names a type other than f32.
#pragma once
#include <cstdint>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/config.h"
#include "qforge/quant.h"

namespace qforge {

inline constexpr int32_t kNoFileType = -1;

struct QuantMix {
  const char* name;            // canonical name, lower case: "q4_k_m"
  DType base;                  // type of the matrices no rule or fallback changes
  int32_t file_type;           // llama_ftype, written as general.file_type; kNoFileType for nf4
  bool llama_rules;            // false: the same type in every matrix (nf4)
  bool requires_importance;    // q2_k_s: llama.cpp refuses it without an importance matrix
  const char* summary;         // one line for --help
};

// Every mix, canonical names only, in llama-quantize's order.
std::span<const QuantMix> quant_mixes();
// Case-insensitive; accepts the aliases q3_k, q4_k, q5_k. Null when unknown.
const QuantMix* find_quant_mix(std::string_view name);
// Same, but throws qforge::Error listing the valid names when unknown.
const QuantMix& parse_quant_mix(std::string_view name);

struct KeepRule {
  std::string spec;      // as given: "output\.weight=q8_0"
  std::string pattern;   // the part before the last '='
  std::regex regex;      // ECMAScript, matched against the whole tensor name
  const QuantType* type = nullptr;
};

// Parses "REGEX=TYPE" (split at the last '='). Throws qforge::Error for a missing '=', an empty
// pattern, an invalid regex, or an unknown TYPE (listing the valid types).
KeepRule parse_keep_rule(std::string_view spec);
std::vector<KeepRule> parse_keep_rules(const std::vector<std::string>& specs);

// What the rules need to know about the model (as llama.cpp reads it from the GGUF metadata).
struct PlanModel {
  Arch arch = Arch::Llama;  // the GGUF general.architecture qforge writes: llama or gpt2
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
};
PlanModel plan_model(const ModelConfig& cfg);

// One tensor of the output, GGUF naming ("blk.3.attn_v.weight"). shape is outermost first, as stored:
// the last dimension is the row length, the rows are the product of the others. A tensor with a
// single row (or none) is 1-D to llama.cpp. Whether output is tied is read from the list: tied when no
// "output.weight" is present, as llama-quantize decides it.
struct PlanTensor {
  std::string name;
  std::vector<int64_t> shape;
};

struct PlanOptions {
  bool pure = false;          // llama-quantize --pure: the mix's base type in every matrix (then fallback)
  bool has_importance = false;  // an importance matrix will be used (changes q4_0/q5_0/iq4_nl ffn_down)
  std::vector<KeepRule> keep;   // first match wins
};

struct PlannedTensor {
  std::string name;
  const QuantType* type = nullptr;
  // Why the type differs from the mix's base type (a mix rule, a fallback, a 1-D tensor kept f32) or
  // which --keep rule chose it; empty otherwise.
  std::string note;
  bool quantizable = false;   // llama.cpp would quantize it (a matrix named *weight, not a norm, ...)
};

struct QuantPlan {
  const QuantMix* mix = nullptr;
  bool pure = false;
  int32_t file_type = kNoFileType;      // general.file_type (llama_ftype)
  std::vector<PlannedTensor> tensors;   // in input order
  int n_fallback = 0;                   // matrices whose row length did not fit the chosen type
  std::vector<std::string> warnings;    // where the plan departs from what llama-quantize would do
};

QuantPlan plan_quantization(const PlanModel& model, std::span<const PlanTensor> tensors, const QuantMix& mix,
                            const PlanOptions& options = {});
// The same from the CLI's strings: parse_quant_mix(type), parse_keep_rules(keep).
QuantPlan plan_quantization(const PlanModel& model, std::span<const PlanTensor> tensors, std::string_view type,
                            const std::vector<std::string>& keep, bool pure = false, bool has_importance = false);

}  // namespace qforge
