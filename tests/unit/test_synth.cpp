// qforge synth: real shapes (parameter counts of the published models), streamed writing, sharding,
// determinism, and that what it writes loads and runs.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qforge/error.h"
#include "qforge/model.h"
#include "qforge/safetensors.h"
#include "qforge/session.h"
#include "qforge/synth.h"
#include "test_util.h"

namespace fs = std::filesystem;
using qforge::test::TempDir;

namespace {

qforge::SynthResult synth(const std::string& shape, const std::string& out, qforge::DType dtype = qforge::DType::F32,
                          uint64_t seed = 0, int threads = 2) {
  qforge::SynthOptions opt;
  opt.shape = shape;
  opt.out_dir = out;
  opt.dtype = dtype;
  opt.seed = seed;
  opt.n_threads = threads;
  opt.shared_dir = qforge::test::shared("");
  return qforge::synth_checkpoint(opt);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(slurp(path)); }

// Runs a few tokens and checks the logits are finite and not all equal.
void run_some_tokens(const qforge::Model& m, std::vector<int> ids) {
  qforge::Session s(m, {.n_ctx = 32, .n_threads = 2});
  s.eval(ids);
  const float* lg = s.logits();
  float lo = lg[0], hi = lg[0];
  for (int i = 0; i < s.n_vocab(); ++i) {
    ASSERT_TRUE(std::isfinite(lg[i])) << "logit " << i;
    lo = std::min(lo, lg[i]);
    hi = std::max(hi, lg[i]);
  }
  EXPECT_LT(lo, hi);
  int next = 0;
  for (int i = 1; i < s.n_vocab(); ++i)
    if (lg[i] > lg[next]) next = i;
  s.eval(std::vector<int>{next});
  EXPECT_EQ(s.n_past(), int(ids.size()) + 1);
}

}  // namespace

TEST(Synth, PublishedParameterCounts) {
  // The counts the model cards give (GPT-2 without its constant attention masks).
  EXPECT_EQ(qforge::synth_param_count(qforge::synth_shape("gpt2-124m")), 124439808u);
  EXPECT_EQ(qforge::synth_param_count(qforge::synth_shape("tinyllama-1.1b")), 1100048384u);
  EXPECT_EQ(qforge::synth_param_count(qforge::synth_shape("llama-3.2-1b")), 1235814400u);
  EXPECT_EQ(qforge::synth_param_count(qforge::synth_shape("llama-2-7b")), 6738415616u);
  EXPECT_EQ(qforge::synth_weight_bytes(qforge::synth_shape("llama-2-7b"), qforge::DType::BF16), 2 * 6738415616u);
}

TEST(Synth, ListedShapesExcludeTestShapes) {
  std::vector<std::string> names;
  for (const auto& s : qforge::synth_shapes()) names.push_back(s.name);
  EXPECT_EQ(names, (std::vector<std::string>{"gpt2-124m", "tinyllama-1.1b", "llama-3.2-1b", "llama-2-7b"}));
  EXPECT_GT(qforge::synth_shapes(true).size(), names.size());
}

TEST(Synth, UnknownShapeListsValidOnes) {
  try {
    qforge::synth_shape("llama-9000");
    FAIL() << "no error";
  } catch (const qforge::Error& e) {
    EXPECT_EQ(e.exit_code(), 2);
    EXPECT_NE(std::string(e.what()).find("llama-9000"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("tinyllama-1.1b"), std::string::npos) << e.what();
  }
}

TEST(Synth, ConfigsParseBackToTheShape) {
  // config.json is what qforge's own parser reads back as the shape's configuration.
  for (const auto& shape : qforge::synth_shapes(true)) {
    SCOPED_TRACE(shape.name);
    const std::string text = qforge::synth_config_json(shape, qforge::DType::BF16);
    qforge::ModelConfig c = qforge::parse_hf_config_text(text, shape.name);
    EXPECT_EQ(c.arch, shape.cfg.arch);
    EXPECT_EQ(c.hf_architecture, shape.cfg.hf_architecture);
    EXPECT_EQ(c.n_embd, shape.cfg.n_embd);
    EXPECT_EQ(c.n_ff, shape.cfg.n_ff);
    EXPECT_EQ(c.n_layer, shape.cfg.n_layer);
    EXPECT_EQ(c.n_head, shape.cfg.n_head);
    EXPECT_EQ(c.n_head_kv, shape.cfg.n_head_kv);
    EXPECT_EQ(c.head_dim, shape.cfg.head_dim);
    EXPECT_EQ(c.vocab_size, shape.cfg.vocab_size);
    EXPECT_EQ(c.max_ctx, shape.cfg.max_ctx);
    EXPECT_EQ(c.tie_embeddings, shape.cfg.tie_embeddings);
    EXPECT_EQ(c.act, shape.cfg.act);
    EXPECT_EQ(c.bos_token_id, shape.cfg.bos_token_id);
    EXPECT_EQ(c.eos_token_id, shape.cfg.eos_token_id);
    EXPECT_EQ(c.rope_scaling.type, shape.cfg.rope_scaling.type);
    EXPECT_FLOAT_EQ(c.rope_scaling.factor, shape.cfg.rope_scaling.factor);
    EXPECT_FLOAT_EQ(c.rope_theta, shape.cfg.rope_theta);
    EXPECT_EQ(c.torch_dtype, "bfloat16");
    EXPECT_EQ(uint64_t(c.n_params()), qforge::synth_param_count(shape));
  }
  auto llama2 = nlohmann::json::parse(qforge::synth_config_json(qforge::synth_shape("llama-2-7b"), qforge::DType::F16));
  EXPECT_FALSE(llama2.contains("rope_theta"));  // as published: the default applies
  EXPECT_EQ(llama2["num_key_value_heads"], 32);
}

TEST(Synth, TinyLlamaLoadsAndRunsWithTheLlama2Tokenizer) {
  TempDir d;
  const auto r = synth("tiny-llama-test", d / "m");
  EXPECT_EQ(r.files, std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(r.tokenizer.empty());
  EXPECT_FALSE(fs::exists(d / "m.tmp"));
  EXPECT_FALSE(fs::exists(d / "m/.qforge-synth-partial"));
  EXPECT_TRUE(fs::exists(d / "m/README.md"));
  auto cfg = read_json(d / "m/config.json");
  EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(cfg["torch_dtype"], "float32");

  auto m = qforge::load_model(d / "m");
  ASSERT_TRUE(m->tokenizer);
  EXPECT_EQ(m->tokenizer->vocab_size(), 32000);
  EXPECT_EQ(m->weight_bytes(), r.bytes);
  auto ids = m->tokenizer->encode("Once upon a time", true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  run_some_tokens(*m, ids);
}

TEST(Synth, TinyGpt2LoadsAndRunsWithTheGpt2Tokenizer) {
  TempDir d;
  const auto r = synth("tiny-gpt2-test", d / "m");
  auto m = qforge::load_model(d / "m");
  ASSERT_TRUE(m->tokenizer);
  EXPECT_EQ(m->cfg.arch, qforge::Arch::GPT2);
  auto ids = m->tokenizer->encode("Hello world", false);
  EXPECT_EQ(ids, (std::vector<int>{15496, 995}));
  run_some_tokens(*m, ids);
}

TEST(Synth, Llama3ShapeHasNoTokenizerAndSaysSo) {
  TempDir d;
  std::vector<std::string> warnings;
  qforge::SynthOptions opt;
  opt.shape = "tiny-llama3-test";
  opt.out_dir = d / "m";
  opt.shared_dir = qforge::test::shared("");
  opt.warn = [&](const std::string& w) { warnings.push_back(w); };
  const auto r = qforge::synth_checkpoint(opt);
  EXPECT_TRUE(r.tokenizer.empty());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("no tokenizer"), std::string::npos);
  EXPECT_NE(slurp(d / "m/README.md").find("no tokenizer"), std::string::npos);
  auto cfg = read_json(d / "m/config.json");
  EXPECT_EQ(cfg["rope_scaling"]["rope_type"], "llama3");
  EXPECT_FALSE(fs::exists(d / "m/tokenizer.model"));
  auto m = qforge::load_model(d / "m");
  EXPECT_FALSE(m->tokenizer);
  EXPECT_TRUE(m->cfg.tie_embeddings);
  run_some_tokens(*m, {1, 5, 9, 1000});
}

TEST(Synth, MissingSharedDirWritesNoTokenizerAndWarns) {
  TempDir d;
  std::vector<std::string> warnings;
  qforge::SynthOptions opt;
  opt.shape = "tiny-llama-test";
  opt.out_dir = d / "m";
  opt.shared_dir = d / "nowhere";
  opt.warn = [&](const std::string& w) { warnings.push_back(w); };
  const auto r = qforge::synth_checkpoint(opt);
  EXPECT_TRUE(r.tokenizer.empty());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("nowhere"), std::string::npos) << warnings[0];
  EXPECT_FALSE(fs::exists(d / "m/tokenizer.model"));
}

TEST(Synth, WeightsLookLikeTheInit) {
  TempDir d;
  synth("tiny-llama-test", d / "m");
  auto ck = qforge::SafetensorsCheckpoint::open(d / "m");
  const auto& q = ck.get("model.layers.0.self_attn.q_proj.weight");
  ASSERT_EQ(q.dtype, qforge::DType::F32);
  const float* p = reinterpret_cast<const float*>(q.data);
  double sum = 0, sq = 0;
  const int64_t n = q.numel();
  for (int64_t i = 0; i < n; ++i) {
    sum += p[i];
    sq += double(p[i]) * p[i];
  }
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.002);
  EXPECT_NEAR(sd, 0.02, 0.001);
  const auto& norm = ck.get("model.layers.1.input_layernorm.weight");
  for (int64_t i = 0; i < norm.numel(); ++i) ASSERT_EQ(reinterpret_cast<const float*>(norm.data)[i], 1.0f);
}

TEST(Synth, DeterministicWhateverTheThreadCount) {
  TempDir d;
  synth("tiny-llama-test", d / "a", qforge::DType::F32, 7, 1);
  synth("tiny-llama-test", d / "b", qforge::DType::F32, 7, 2);
  synth("tiny-llama-test", d / "c", qforge::DType::F32, 8, 2);
  const std::string a = slurp(d / "a/model.safetensors");
  EXPECT_EQ(a, slurp(d / "b/model.safetensors"));
  EXPECT_NE(a, slurp(d / "c/model.safetensors"));
}

TEST(Synth, HalfTypesRoundTheSameWeights) {
  TempDir d;
  synth("tiny-llama-test", d / "f32", qforge::DType::F32, 3);
  synth("tiny-llama-test", d / "bf16", qforge::DType::BF16, 3);
  synth("tiny-llama-test", d / "f16", qforge::DType::F16, 3);
  EXPECT_EQ(read_json(d / "bf16/config.json")["torch_dtype"], "bfloat16");
  EXPECT_EQ(read_json(d / "f16/config.json")["torch_dtype"], "float16");
  auto f32 = qforge::SafetensorsCheckpoint::open(d / "f32");
  auto bf16 = qforge::SafetensorsCheckpoint::open(d / "bf16");
  auto f16 = qforge::SafetensorsCheckpoint::open(d / "f16");
  const auto& w32 = f32.get("lm_head.weight");
  const auto& wb = bf16.get("lm_head.weight");
  const auto& wh = f16.get("lm_head.weight");
  ASSERT_EQ(wb.dtype, qforge::DType::BF16);
  ASSERT_EQ(wh.dtype, qforge::DType::F16);
  const float* x = reinterpret_cast<const float*>(w32.data);
  const uint16_t* b = reinterpret_cast<const uint16_t*>(wb.data);
  const uint16_t* h = reinterpret_cast<const uint16_t*>(wh.data);
  for (int64_t i = 0; i < 10000; ++i) {
    ASSERT_EQ(b[i], qforge::f32_to_bf16(x[i]));
    ASSERT_EQ(h[i], qforge::f32_to_f16(x[i]));
  }
  auto m = qforge::load_model(d / "bf16");
  run_some_tokens(*m, {1, 100, 200});
}

TEST(Synth, ShardsWithAnIndexWhenOverTheLimit) {
  TempDir d;
  qforge::SynthOptions opt;
  opt.shape = "tiny-llama-test";
  opt.out_dir = d / "m";
  opt.shared_dir = qforge::test::shared("");
  opt.max_shard_bytes = 6'000'000;  // the 8 MB embedding and head each get a shard of their own
  uint64_t last_done = 0, last_total = 0;
  opt.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
  };
  const auto r = qforge::synth_checkpoint(opt);
  EXPECT_EQ(last_done, r.bytes);
  EXPECT_EQ(last_total, r.bytes);
  ASSERT_GE(r.files.size(), 3u);
  EXPECT_EQ(r.files[0], fmt::format("model-00001-of-{:05d}.safetensors", r.files.size()));
  auto index = read_json(d / "m/model.safetensors.index.json");
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), r.bytes);
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"], r.files[0]);
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], r.files.back());
  for (const auto& f : r.files) EXPECT_LE(fs::file_size(d / ("m/" + f)), 8'500'000u) << f;
  EXPECT_FALSE(fs::exists(d / "m/model.safetensors"));
  auto m = qforge::load_model(d / "m");
  run_some_tokens(*m, {1, 2, 3});
}

TEST(Synth, RefusesToOverwriteUnlessForced) {
  TempDir d;
  fs::create_directory(d / "m");
  std::ofstream(d / "m/keep.txt") << "x";
  EXPECT_THROW(synth("tiny-llama3-test", d / "m"), qforge::Error);
  EXPECT_TRUE(fs::exists(d / "m/keep.txt"));
  EXPECT_FALSE(fs::exists(d / "m.tmp"));

  // A DIR.tmp that synth did not make is not removed.
  fs::create_directory(d / "n.tmp");
  EXPECT_THROW(synth("tiny-llama3-test", d / "n"), qforge::Error);
  EXPECT_TRUE(fs::exists(d / "n.tmp"));

  qforge::SynthOptions opt;
  opt.shape = "tiny-llama3-test";
  opt.out_dir = d / "m";
  opt.overwrite = true;
  qforge::synth_checkpoint(opt);
  EXPECT_FALSE(fs::exists(d / "m/keep.txt"));
  EXPECT_TRUE(fs::exists(d / "m/model.safetensors"));
}

TEST(Synth, RejectsQuantizedAndMissingOutput) {
  TempDir d;
  qforge::SynthOptions opt;
  opt.shape = "tiny-llama3-test";
  opt.out_dir = d / "m";
  opt.dtype = qforge::DType::I8;
  EXPECT_THROW(qforge::synth_checkpoint(opt), qforge::Error);
  opt.dtype = qforge::DType::F32;
  opt.out_dir = d / "no/such/parent/m";
  EXPECT_THROW(qforge::synth_checkpoint(opt), qforge::Error);
  EXPECT_FALSE(fs::exists(d / "m"));
}
