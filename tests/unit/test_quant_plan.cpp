// The quantization plan against llama-quantize's own choices (tests/data/quant_plan/*.txt, produced by
// llama.cpp 3f545be: see the README there), and the --keep overrides and their errors.
#include "qforge/quant_plan.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "qforge/error.h"
#include "test_util.h"

namespace qforge {
namespace {

struct RefColumn {
  std::string label;  // "q4_k_m", "pure-q4_k", "imatrix-q4_0"
  std::string mix;
  bool pure = false, importance = false;
  std::string file_type;  // "-" when llama-quantize failed
  std::string error;      // its message then
};

struct RefModel {
  std::string file;
  PlanModel model;
  std::vector<PlanTensor> tensors;
  std::vector<RefColumn> columns;
  std::vector<std::vector<std::string>> types;  // [tensor][column]
};

std::vector<int64_t> parse_shape(const std::string& s) {
  std::vector<int64_t> shape;
  std::stringstream ss(s);
  std::string d;
  while (std::getline(ss, d, ',')) shape.push_back(std::stoll(d));
  return shape;
}

RefModel load_reference(const std::string& path) {
  RefModel m;
  m.file = std::filesystem::path(path).filename().string();
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::stringstream ss(line);
    std::string key;
    ss >> key;
    if (key == "arch") {
      std::string a;
      ss >> a;
      m.model.arch = a == "gpt2" ? Arch::GPT2 : Arch::Llama;
    } else if (key == "n_layer") {
      ss >> m.model.n_layer;
    } else if (key == "n_head") {
      ss >> m.model.n_head;
    } else if (key == "n_head_kv") {
      ss >> m.model.n_head_kv;
    } else if (key == "mixes") {
      std::string label;
      while (ss >> label) {
        RefColumn c;
        c.label = label;
        c.mix = label;
        if (label.starts_with("pure-")) c.pure = true, c.mix = label.substr(5);
        if (label.starts_with("imatrix-")) c.importance = true, c.mix = label.substr(8);
        m.columns.push_back(c);
      }
    } else if (key == "file_type") {
      for (RefColumn& c : m.columns) ss >> c.file_type;
    } else if (key == "error") {
      std::string label, msg;
      ss >> label;
      std::getline(ss, msg);
      for (RefColumn& c : m.columns)
        if (c.label == label) c.error = msg;
    } else if (key == "tensor") {
      std::string name, shape;
      ss >> name >> shape;
      m.tensors.push_back({name, parse_shape(shape)});
      std::vector<std::string> row(m.columns.size());
      for (std::string& t : row) ss >> t;
      EXPECT_FALSE(row.empty() || row.back().empty()) << path << ": " << line;
      m.types.push_back(row);
    } else {
      ADD_FAILURE() << path << ": unexpected line: " << line;
    }
  }
  return m;
}

std::vector<std::string> reference_files() {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(test::source("tests/data/quant_plan")))
    if (e.path().extension() == ".txt") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

const RefModel& reference(const std::string& name) {
  static std::map<std::string, RefModel> cache;
  auto it = cache.find(name);
  if (it == cache.end())
    it = cache.emplace(name, load_reference(test::source("tests/data/quant_plan/" + name + ".txt"))).first;
  return it->second;
}

const PlannedTensor& find(const QuantPlan& p, const std::string& name) {
  for (const PlannedTensor& t : p.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

QuantPlan plan(const RefModel& m, const std::string& type, const std::vector<std::string>& keep = {},
               bool pure = false) {
  return plan_quantization(m.model, m.tensors, type, keep, pure);
}

// Runs f and returns the qforge::Error message it throws ("" and a failure when it does not throw).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), 2) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

// ---- against llama-quantize -------------------------------------------------------------------------

TEST(QuantPlan, MatchesLlamaQuantizeTables) {
  const auto files = reference_files();
  ASSERT_GE(files.size(), 8u);
  int compared = 0, refused = 0;
  for (const std::string& path : files) {
    const RefModel m = load_reference(path);
    ASSERT_FALSE(m.tensors.empty()) << path;
    for (size_t c = 0; c < m.columns.size(); ++c) {
      const RefColumn& col = m.columns[c];
      SCOPED_TRACE(m.file + " " + col.label);
      const QuantMix* mix = find_quant_mix(col.mix);
      ASSERT_NE(mix, nullptr);
      PlanOptions opt;
      opt.pure = col.pure;
      opt.has_importance = col.importance;
      const QuantPlan p = plan_quantization(m.model, m.tensors, *mix, opt);
      ASSERT_EQ(p.tensors.size(), m.tensors.size());
      if (!col.error.empty()) {
        // llama-quantize refused (no fallback for a 32-block type): the plan stores f16 and says why.
        ++refused;
        EXPECT_NE(col.error.find("no tensor type fallback"), std::string::npos) << col.error;
        ASSERT_FALSE(p.warnings.empty());
        EXPECT_NE(p.warnings[0].find("llama-quantize refuses"), std::string::npos) << p.warnings[0];
        int f16 = 0;
        for (const PlannedTensor& t : p.tensors) {
          if (t.note.find("refuses") == std::string::npos) continue;
          ++f16;
          EXPECT_EQ(std::string(t.type->name), "f16") << t.name;
        }
        EXPECT_GT(f16, 0);
        continue;
      }
      EXPECT_EQ(std::to_string(p.file_type), col.file_type);
      EXPECT_TRUE(p.warnings.empty());
      for (size_t i = 0; i < m.tensors.size(); ++i) {
        const PlannedTensor& t = p.tensors[i];
        EXPECT_EQ(t.name, m.tensors[i].name);
        EXPECT_EQ(std::string(t.type->name), m.types[i][c]) << t.name << " (note: " << t.note << ")";
        // A note whenever the type is not the mix's base type.
        if (t.type->dtype != mix->base) {
          EXPECT_FALSE(t.note.empty()) << t.name;
        }
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 20000);
  EXPECT_GT(refused, 10);
}

TEST(QuantPlan, OrderOfTheInputDoesNotMatter) {
  const RefModel& m = reference("tinyllama-1.1b");
  std::vector<PlanTensor> shuffled = m.tensors;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
  for (const char* mix : {"q4_k_m", "q3_k_m", "q2_k", "q5_k_m"}) {
    const QuantPlan a = plan(m, mix);
    const QuantPlan b = plan_quantization(m.model, shuffled, mix, {});
    for (const PlannedTensor& t : b.tensors) EXPECT_EQ(find(a, t.name).type, t.type) << mix << " " << t.name;
  }
}

TEST(QuantPlan, NotesExplainTheChoices) {
  const RefModel& tl = reference("tinyllama-1.1b");
  const QuantPlan p = plan(tl, "q4_k_m");
  EXPECT_EQ(find(p, "blk.0.attn_norm.weight").note, "1-D tensor kept f32");
  EXPECT_NE(find(p, "blk.0.attn_v.weight").note.find("q4_k_m"), std::string::npos);
  EXPECT_NE(find(p, "output.weight").note.find("q6_k"), std::string::npos);
  EXPECT_EQ(find(p, "blk.2.attn_q.weight").note, "");

  const QuantPlan s = plan(reference("stories260K"), "q4_k_m");
  EXPECT_EQ(find(s, "blk.1.attn_q.weight").note,
            "row length 64 is not a multiple of q4_k's block of 256: q4_k -> q5_0 as llama.cpp does");
  EXPECT_EQ(find(s, "blk.1.ffn_down.weight").note,
            "row length 172 fits neither q4_k's block of 256 nor q5_0's of 32: f16 as llama.cpp does");
  EXPECT_NE(find(s, "token_embd.weight").note.find("tied"), std::string::npos);
  EXPECT_EQ(s.n_fallback, 35);  // llama-quantize: "35 of 47 tensor(s) required fallback quantization"

  const QuantPlan g = plan(reference("gpt2-124m"), "q4_k_m");
  EXPECT_NE(find(g, "position_embd.weight").note.find("position_embd"), std::string::npos);
  EXPECT_EQ(std::string(find(g, "position_embd.weight").type->name), "f32");
  EXPECT_FALSE(find(g, "blk.0.attn_qkv.bias").quantizable);
}

// ---- names ------------------------------------------------------------------------------------------

TEST(QuantPlan, NamesFollowLlamaQuantize) {
  EXPECT_STREQ(parse_quant_mix("Q4_K").name, "q4_k_m");  // llama-quantize's alias
  EXPECT_STREQ(parse_quant_mix("q3_k").name, "q3_k_m");
  EXPECT_STREQ(parse_quant_mix("q5_K").name, "q5_k_m");
  EXPECT_STREQ(parse_quant_mix("Q4_K_S").name, "q4_k_s");
  const std::map<std::string, int> file_types = {
      {"f32", 0},     {"f16", 1},     {"q4_0", 2},    {"q4_1", 3},    {"q8_0", 7},    {"q5_0", 8},
      {"q5_1", 9},    {"q2_k", 10},   {"q3_k_s", 11}, {"q3_k_m", 12}, {"q3_k_l", 13}, {"q4_k_s", 14},
      {"q4_k_m", 15}, {"q5_k_s", 16}, {"q5_k_m", 17}, {"q6_k", 18},   {"q2_k_s", 21}, {"iq4_nl", 25},
      {"bf16", 32},   {"nf4", kNoFileType}};
  EXPECT_EQ(quant_mixes().size(), file_types.size());
  for (const auto& [name, ft] : file_types) EXPECT_EQ(parse_quant_mix(name).file_type, ft) << name;
  EXPECT_FALSE(parse_quant_mix("nf4").llama_rules);

  const std::string e = error_of([] { parse_quant_mix("q4_z"); });
  EXPECT_NE(e.find("'q4_z'"), std::string::npos) << e;
  EXPECT_NE(e.find("q4_k_m"), std::string::npos) << e;
  EXPECT_NE(e.find("q4_k (= q4_k_m)"), std::string::npos) << e;
}

TEST(QuantPlan, BareNamesAreMixesAndPureIsOneType) {
  const RefModel& tl = reference("tinyllama-1.1b");
  // q6_k as a mix: same as the type except nothing; q4_0 as a mix raises the output matrix.
  EXPECT_EQ(std::string(find(plan(tl, "q4_0"), "output.weight").type->name), "q6_k");
  EXPECT_EQ(std::string(find(plan(tl, "q4_0", {}, true), "output.weight").type->name), "q4_0");
  const QuantPlan pure = plan(tl, "q4_k", {}, true);
  EXPECT_TRUE(pure.pure);
  EXPECT_EQ(pure.file_type, 15);  // llama-quantize --pure Q4_K writes Q4_K_M's file type
  for (const PlannedTensor& t : pure.tensors)
    EXPECT_EQ(std::string(t.type->name), t.quantizable ? "q4_k" : "f32") << t.name;
}

TEST(QuantPlan, Nf4IsPureWithF16ForRowsItCannotHold) {
  const QuantPlan p = plan(reference("stories260K"), "nf4");
  EXPECT_TRUE(p.pure);
  EXPECT_EQ(p.file_type, kNoFileType);
  EXPECT_EQ(std::string(find(p, "token_embd.weight").type->name), "nf4");  // no output rule
  EXPECT_EQ(std::string(find(p, "blk.0.attn_q.weight").type->name), "nf4");
  const PlannedTensor& down = find(p, "blk.0.ffn_down.weight");
  EXPECT_EQ(std::string(down.type->name), "f16");
  EXPECT_NE(down.note.find("172"), std::string::npos);
  EXPECT_TRUE(p.warnings.empty());  // llama-quantize has no nf4 to refuse
}

TEST(QuantPlan, Q2KSNeedsAnImportanceMatrix) {
  const RefModel& tl = reference("tinyllama-1.1b");
  const std::string e = error_of([&] { plan(tl, "q2_k_s"); });
  EXPECT_NE(e.find("importance matrix"), std::string::npos) << e;
  EXPECT_NO_THROW(plan_quantization(tl.model, tl.tensors, "q2_k_s", {}, false, true));
}

TEST(QuantPlan, TinyAndOddShapes) {
  PlanModel m{Arch::Llama, 1, 1, 1};
  const std::vector<PlanTensor> t = {{"token_embd.weight", {8, 64}},
                                     {"blk.0.attn_q.weight", {1, 256}},   // one row: 1-D to llama.cpp
                                     {"blk.0.ffn_up.weight", {2, 4, 256}},  // 3-D: 8 rows of 256
                                     {"blk.0.ffn_down.bias", {256}},
                                     {"blk.0.attn_q.scale", {4, 256}},  // not *weight
                                     {"something", {}}};
  const QuantPlan p = plan_quantization(m, t, "q4_k_m", {});
  EXPECT_EQ(std::string(p.tensors[1].type->name), "f32");
  EXPECT_EQ(std::string(p.tensors[2].type->name), "q4_k");
  EXPECT_EQ(std::string(p.tensors[3].type->name), "f32");
  EXPECT_EQ(std::string(p.tensors[4].type->name), "f32");
  EXPECT_EQ(std::string(p.tensors[5].type->name), "f32");

  const std::vector<PlanTensor> neg = {{"blk.0.attn_q.weight", {-4, 256}}};
  EXPECT_NE(error_of([&] { plan_quantization(m, neg, "q4_k_m", {}); }).find("negative"), std::string::npos);
  const std::vector<PlanTensor> twice = {{"a.weight", {4, 32}}, {"a.weight", {4, 32}}};
  EXPECT_NE(error_of([&] { plan_quantization(m, twice, "q8_0", {}); }).find("twice"), std::string::npos);
}

TEST(QuantPlan, PlanModelFromConfig) {
  ModelConfig c;
  c.arch = Arch::GPT2;
  c.n_layer = 12;
  c.n_head = 12;
  c.n_head_kv = 12;
  const PlanModel m = plan_model(c);
  EXPECT_EQ(m.arch, Arch::GPT2);
  EXPECT_EQ(m.n_layer, 12);
  EXPECT_EQ(m.n_head_kv, 12);
}

// ---- --keep -----------------------------------------------------------------------------------------

TEST(QuantPlan, KeepOverridesAfterTheMix) {
  const RefModel& tl = reference("tinyllama-1.1b");
  const QuantPlan base = plan(tl, "q4_k_m");
  const QuantPlan p = plan(tl, "q4_k_m",
                           {"output\\.weight=Q8_0", "blk\\.(0|1)\\..*=f16", "blk\\.[0-9]+\\.attn_v\\.weight=q5_k"});
  EXPECT_EQ(std::string(find(p, "output.weight").type->name), "q8_0");
  EXPECT_EQ(find(p, "output.weight").note, "--keep output\\.weight=Q8_0");
  // First match wins: layer 1's attn_v and ffn_up were taken by the f16 rule.
  EXPECT_EQ(std::string(find(p, "blk.1.attn_v.weight").type->name), "f16");
  EXPECT_EQ(std::string(find(p, "blk.1.ffn_up.weight").type->name), "f16");
  EXPECT_EQ(std::string(find(p, "blk.5.attn_v.weight").type->name), "q5_k");
  // 1-D tensors matched by a non-f32 rule stay f32.
  EXPECT_EQ(std::string(find(p, "blk.0.attn_norm.weight").type->name), "f32");
  // The mix's layer counters are unchanged by overrides: the other tensors are as without them.
  for (const PlannedTensor& t : p.tensors) {
    if (t.note.find("--keep") == std::string::npos) {
      EXPECT_EQ(t.type, find(base, t.name).type) << t.name;
    }
  }
  // f32 asked for never-quantized tensors is what they are: accepted.
  EXPECT_NO_THROW(plan(tl, "q4_k_m", {".*_norm\\.weight=f32"}));
  // Overrides apply to float mixes too.
  EXPECT_EQ(std::string(find(plan(tl, "f16", {"token_embd\\.weight=q8_0"}), "token_embd.weight").type->name), "q8_0");
}

TEST(QuantPlan, KeepParseErrors) {
  std::string e = error_of([] { parse_keep_rule("output.weight"); });
  EXPECT_NE(e.find("expected REGEX=TYPE"), std::string::npos) << e;
  e = error_of([] { parse_keep_rule("=q8_0"); });
  EXPECT_NE(e.find("empty"), std::string::npos) << e;
  e = error_of([] { parse_keep_rule("output\\.weight=q9_0"); });
  EXPECT_NE(e.find("unknown type 'q9_0'"), std::string::npos) << e;
  EXPECT_NE(e.find("iq4_nl"), std::string::npos) << e;  // lists the valid types
  EXPECT_NE(e.find("nf4"), std::string::npos) << e;
  e = error_of([] { parse_keep_rule("output\\.weight="); });
  EXPECT_NE(e.find("unknown type ''"), std::string::npos) << e;
  e = error_of([] { parse_keep_rule("output\\.weight=q4_k_m"); });
  EXPECT_NE(e.find("is a mix, not a tensor type"), std::string::npos) << e;
  e = error_of([] { parse_keep_rule("blk\\.([0-9=q8_0"); });
  EXPECT_NE(e.find("invalid regex 'blk\\.([0-9'"), std::string::npos) << e;
  // The last '=' separates: a regex may contain '=' (a lookahead).
  const KeepRule r = parse_keep_rule("blk\\.0\\.(?=attn).*=q8_0");
  EXPECT_EQ(r.pattern, "blk\\.0\\.(?=attn).*");
  EXPECT_STREQ(r.type->name, "q8_0");
  EXPECT_STREQ(parse_keep_rule("x=Q4_K").type->name, "q4_k");  // the type, not the mix
}

TEST(QuantPlan, KeepPlanErrors) {
  const RefModel& st = reference("stories260K");
  // The type's block does not divide the row length: name the tensor, the row length and the block.
  std::string e = error_of([&] { plan(st, "q8_0", {"blk\\.0\\.ffn_down\\.weight=q4_0"}); });
  EXPECT_NE(e.find("'blk.0.ffn_down.weight'"), std::string::npos) << e;
  EXPECT_NE(e.find("172"), std::string::npos) << e;
  EXPECT_NE(e.find("block of 32"), std::string::npos) << e;
  EXPECT_NE(e.find("types that fit it: f32, f16, bf16"), std::string::npos) << e;
  e = error_of([&] { plan(st, "q8_0", {"blk\\..*\\.attn_q\\.weight=q6_k"}); });
  EXPECT_NE(e.find("rows of 64 values, not a multiple of q6_k's block of 256"), std::string::npos) << e;
  // Matches nothing (a full match is needed: "output" is not "output.weight").
  e = error_of([&] { plan(st, "q4_k_m", {"output=q8_0"}); });
  EXPECT_NE(e.find("matches no tensor"), std::string::npos) << e;
  // Only never-quantized tensors, asking for a quantized type.
  e = error_of([&] { plan(st, "q4_k_m", {".*norm.*=q8_0"}); });
  EXPECT_NE(e.find("never quantized"), std::string::npos) << e;
  // Every match already taken by an earlier rule.
  e = error_of([&] { plan(st, "q4_k_m", {"blk\\..*=f16", "blk\\.0\\.attn_q\\.weight=q8_0"}); });
  EXPECT_NE(e.find("already taken by an earlier --keep"), std::string::npos) << e;
}

}  // namespace
}  // namespace qforge
