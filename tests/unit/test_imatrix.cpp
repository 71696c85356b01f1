// Importance matrices (qforge/imatrix.h) and `quantize --imatrix`.
//
// tests/data/imatrix/ts7-imatrix.{gguf,dat} were written by llama.cpp's llama-imatrix (3f545be) for the
// shared tinystories-llama-7M model (as f32 GGUF), on the first 200,000 bytes of
// TinyStories-valid-1M.txt, -c 256 --chunks 40, in its two formats. The expected hashes below are of
// llama-quantize --imatrix's own output for the same model, types and imatrix: FNV-1a 64 over every
// tensor's name and data bytes, tensors sorted by name. Matching them means qforge's bytes are
// llama-quantize's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "qforge/error.h"
#include "qforge/gguf.h"
#include "qforge/imatrix.h"
#include "qforge/model.h"
#include "qforge/quantize.h"
#include "test_util.h"

using namespace qforge;
using qforge::test::shared;
using qforge::test::source;
using qforge::test::TempDir;

namespace {

const std::string kModel = "models/tinystories-llama-7M-hf";

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& path, const std::string& b) {
  std::ofstream(path, std::ios::binary).write(b.data(), std::streamsize(b.size()));
}

uint64_t tensor_hash(const std::string& gguf) {
  const auto g = GgufFile::open(gguf);
  std::vector<const GgufTensor*> ts;
  for (const auto& t : g->tensors()) ts.push_back(&t);
  std::sort(ts.begin(), ts.end(), [](auto* a, auto* b) { return a->name < b->name; });
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  };
  for (const auto* t : ts) {
    mix(reinterpret_cast<const uint8_t*>(t->name.data()), t->name.size());
    mix(t->data, size_t(t->nbytes));
  }
  return h;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Imatrix, BothFormatsReadTheSameImportance) {
  const ImportanceMatrix g = load_imatrix(source("tests/data/imatrix/ts7-imatrix.gguf"));
  const ImportanceMatrix d = load_imatrix(source("tests/data/imatrix/ts7-imatrix.dat"));
  EXPECT_FALSE(g.legacy);
  EXPECT_TRUE(d.legacy);
  EXPECT_EQ(g.chunk_count, 40);
  EXPECT_EQ(d.chunk_count, 40);
  ASSERT_EQ(g.entries.size(), 56u);  // 8 layers x 7 matrices; llama-imatrix skips output.weight by default
  ASSERT_EQ(d.entries.size(), g.entries.size());
  const std::vector<float>* q = g.find("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->size(), 256u);
  EXPECT_EQ(g.find("blk.0.ffn_down.weight")->size(), 768u);
  for (const auto& [name, v] : g.entries) {
    const std::vector<float>* w = d.find(name);
    ASSERT_NE(w, nullptr) << name;
    ASSERT_EQ(w->size(), v.size()) << name;
    for (size_t i = 0; i < v.size(); ++i) {
      ASSERT_GT(v[i], 0.0f) << name << " index " << i;
      ASSERT_NEAR((*w)[i], v[i], 1e-5f * v[i]) << name << " index " << i;
    }
  }
}

TEST(Imatrix, QuantizeMatchesLlamaQuantizeByteForByte) {
  const ImportanceMatrix im = load_imatrix(source("tests/data/imatrix/ts7-imatrix.gguf"));
  auto m = load_model(shared(kModel));
  TempDir dir;
  struct Case {
    const char* type;
    uint64_t llama_hash;  // llama-quantize --imatrix ts7-imatrix.gguf (see the top of the file)
  };
  for (const Case& c : {Case{"q4_k_m", 0x29f59607a7ff456dull}, Case{"q4_0", 0x752d4a306c20a87dull}}) {
    QuantizeOptions o;
    o.type = c.type;
    o.importance = &im;
    o.n_threads = 2;
    const std::string out = dir / (std::string(c.type) + ".gguf");
    const QuantizeReport r = quantize_model(*m, out, o);
    EXPECT_EQ(r.imatrix_tensors, 56) << c.type;
    EXPECT_EQ(tensor_hash(out), c.llama_hash) << c.type << ": bytes differ from llama-quantize --imatrix";
    // q4_0 with an importance matrix guards the first eighth of ffn_down with q4_1, as llama.cpp does.
    if (std::string(c.type) == "q4_0") {
      const auto g = GgufFile::open(out);
      EXPECT_EQ(std::string(g->find_tensor("blk.0.ffn_down.weight")->type_info().name), "Q4_1");
    }
    // And without it the bytes differ: the importance really reached the quantizers.
    o.importance = nullptr;
    quantize_model(*m, dir / "plain.gguf", o);
    EXPECT_NE(tensor_hash(dir / "plain.gguf"), c.llama_hash) << c.type;
  }
}

TEST(Imatrix, BadFilesFailClearly) {
  TempDir dir;
  const std::string dat = read_bytes(source("tests/data/imatrix/ts7-imatrix.dat"));
  const std::string gguf = read_bytes(source("tests/data/imatrix/ts7-imatrix.gguf"));
  // Every truncation fails with a message naming the file (the .dat's optional trailer aside).
  for (size_t n = 0; n + 8 < dat.size(); n += 97) {
    const std::string p = dir / "cut.dat";
    write_bytes(p, dat.substr(0, n));
    const std::string e = error_of([&] { load_imatrix(p); });
    ASSERT_NE(e.find("cut.dat"), std::string::npos) << "truncated at " << n << ": '" << e << "'";
  }
  for (size_t n = 0; n < gguf.size(); n += 997) {
    const std::string p = dir / "cut.gguf";
    write_bytes(p, gguf.substr(0, n));
    const std::string e = error_of([&] { load_imatrix(p); });
    ASSERT_NE(e.find("cut.gguf"), std::string::npos) << "truncated at " << n << ": '" << e << "'";
  }
  // A value that is not finite names its entry. The first entry's first value sits after
  // n_entries, the name length, the name, ncall and nval.
  {
    std::string bad = dat;
    int32_t len;
    std::memcpy(&len, bad.data() + 4, 4);
    const size_t at = 4 + 4 + size_t(len) + 8;
    const float nan = std::nanf("");
    std::memcpy(bad.data() + at, &nan, 4);
    write_bytes(dir / "nan.dat", bad);
    const std::string e = error_of([&] { load_imatrix(dir / "nan.dat"); });
    EXPECT_NE(e.find("nan.dat"), std::string::npos) << e;
    EXPECT_NE(e.find("must be finite"), std::string::npos) << e;
    EXPECT_NE(e.find(bad.substr(8, size_t(len))), std::string::npos) << e;
  }
  // Not an importance matrix at all.
  const std::string cfg = shared(kModel + "/config.json");
  EXPECT_NE(error_of([&] { load_imatrix(cfg); }).find("not an importance matrix"), std::string::npos);
  const std::string model_gguf = shared("models/stories260K-gguf/stories260K.gguf");
  EXPECT_NE(error_of([&] { load_imatrix(model_gguf); }).find("not an importance matrix"), std::string::npos);
}

TEST(Imatrix, AnotherModelsImatrixOrHfOutputIsRefused) {
  const ImportanceMatrix im = load_imatrix(source("tests/data/imatrix/ts7-imatrix.gguf"));
  TempDir dir;
  // stories260K has the same tensor names with 64-wide rows: the sizes do not match.
  auto small = load_model(shared("models/stories260K-hf"));
  QuantizeOptions o;
  o.type = "q8_0";
  o.importance = &im;
  std::string e = error_of([&] { quantize_model(*small, dir / "x.gguf", o); });
  EXPECT_NE(e.find("ts7-imatrix.gguf"), std::string::npos) << e;
  EXPECT_NE(e.find("has 256 values, but the tensor's rows have 64"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir / "x.gguf"));
  o.type = "f16";
  o.format = QuantizeFormat::Hf;
  e = error_of([&] { quantize_model(*small, dir / "hf", o); });
  EXPECT_NE(e.find("GGUF output only"), std::string::npos) << e;
}

// `qforge imatrix` measures what llama-imatrix measures: the same 40 chunks of 256 tokens of the same
// text give each column's importance within 2e-3 of llama-imatrix's (the engines' float rounding
// differs; the largest difference seen was 4e-4, in blk.5.attn_output).
TEST(Imatrix, CollectedMatchesLlamaImatrix) {
  auto m = load_model(shared(kModel));
  const std::string text = read_bytes(shared("text/tinystories/TinyStories-valid-1M.txt")).substr(0, 200000);
  const std::vector<int> tokens = m->tokenizer->encode(text, true);
  ImatrixOptions o;
  o.n_ctx = 256;
  o.n_chunks = 40;
  o.n_threads = 2;
  o.dataset = "calib.txt";
  const ImatrixSums sums = collect_imatrix(*m, tokens, o);
  EXPECT_EQ(sums.chunk_count, 40);
  TempDir dir;
  write_imatrix_gguf(sums, dir / "ours.gguf");
  const ImportanceMatrix ours = load_imatrix(dir / "ours.gguf");
  const ImportanceMatrix ref = load_imatrix(source("tests/data/imatrix/ts7-imatrix.gguf"));
  EXPECT_EQ(ours.chunk_count, 40);
  ASSERT_EQ(ours.datasets.size(), 1u);
  EXPECT_EQ(ours.datasets[0], "calib.txt");
  ASSERT_EQ(ours.entries.size(), ref.entries.size());
  for (const auto& [name, v] : ref.entries) {
    const std::vector<float>* w = ours.find(name);
    ASSERT_NE(w, nullptr) << name;
    ASSERT_EQ(w->size(), v.size()) << name;
    EXPECT_EQ(sums.entries.at(name).count, 40 * 256) << name;
    for (size_t i = 0; i < v.size(); ++i)
      ASSERT_NEAR((*w)[i], v[i], 2e-3f * v[i]) << name << " index " << i << ": expected " << v[i] << " actual " << (*w)[i];
  }
}
