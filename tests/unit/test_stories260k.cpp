// The real stories260K model, end to end: its Hugging Face and llama2.c forms give the same logits,
// those logits match an independent float64 PyTorch forward pass, and greedy decoding from BOS
// reproduces llama2.c's run.c output token for token (../shared/models/stories260K-hf/reference).
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "qforge/model.h"
#include "qforge/session.h"
#include "test_util.h"

namespace qforge {
namespace {

const int kBos = 1;
const int kGreedySteps = 256;

std::string hf_dir() { return test::shared("models/stories260K-hf"); }
std::string llama2c_bin() { return test::shared("models/stories260K-llama2c/stories260K.bin"); }

std::unique_ptr<Model> load_without_tokenizer(const std::string& path) {
  LoadOptions lo;
  lo.load_tokenizer = false;
  return load_model(path, lo);
}

// greedy-from-bos.ids: the 256 generated ids (BOS not included), separated by white space.
std::vector<int> reference_greedy_ids() {
  std::ifstream f(test::shared("models/stories260K-hf/reference/greedy-from-bos.ids"));
  std::vector<int> ids;
  for (int id; f >> id;) ids.push_back(id);
  return ids;
}

// BOS and then 29 tokens of real text (the start of the reference story).
std::vector<int> prompt_tokens() {
  std::vector<int> ids = reference_greedy_ids();
  std::vector<int> t = {kBos};
  t.insert(t.end(), ids.begin(), ids.begin() + std::min<size_t>(29, ids.size()));
  return t;
}

// |actual - expected| <= 1e-4 * max(1, |expected|) for every logit; at most a few reports per row.
void expect_rows_near(const std::vector<std::vector<float>>& actual, const std::vector<std::vector<float>>& expected,
                      const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_EQ(actual[i].size(), expected[i].size()) << what;
    int reported = 0;
    for (size_t v = 0; v < actual[i].size(); ++v) {
      const double a = actual[i][v], b = expected[i][v];
      const double tol = 1e-4 * std::max(1.0, std::fabs(b));
      if (!(std::fabs(a - b) <= tol) && reported++ < 5)
        ADD_FAILURE() << what << ": token index " << i << ", vocab index " << v << ": expected " << b << ", actual "
                      << a << " (diff " << a - b << ")";
    }
  }
}

std::vector<std::vector<float>> all_logits(const Model& m, const std::vector<int>& tokens, int n_threads = 2) {
  SessionOptions o;
  o.n_threads = n_threads;
  Session s(m, o);
  s.eval(tokens, /*all_logits=*/true);
  std::vector<std::vector<float>> rows;
  for (size_t i = 0; i < tokens.size(); ++i) rows.emplace_back(s.logits(int(i)), s.logits(int(i)) + s.n_vocab());
  return rows;
}

// Greedy decoding as run.c does it: eval [BOS], take the argmax (first index on ties), eval it, ...
std::vector<int> greedy_from_bos(const Model& m, int steps) {
  SessionOptions o;
  o.n_threads = 2;
  Session s(m, o);
  std::vector<int> out;
  int token = kBos;
  for (int step = 0; step < steps; ++step) {
    s.eval(std::span<const int>(&token, 1));
    const float* l = s.logits();
    token = int(std::max_element(l, l + s.n_vocab()) - l);
    out.push_back(token);
  }
  return out;
}

void expect_same_ids(const std::vector<int>& actual, const std::vector<int>& expected, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  auto mismatch = std::mismatch(actual.begin(), actual.end(), expected.begin());
  if (mismatch.first != actual.end()) {
    const size_t pos = size_t(mismatch.first - actual.begin());
    FAIL() << what << ": first mismatch at generated position " << pos << ": expected id " << *mismatch.second
           << ", got " << *mismatch.first;
  }
}

TEST(Stories260K, ReferenceFileIsWhatTheTestsAssume) {
  std::vector<int> ids = reference_greedy_ids();
  ASSERT_EQ(ids.size(), size_t(kGreedySteps));
  for (int id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 512);
  }
}

TEST(Stories260K, HfAndLlama2cFormsGiveTheSameLogits) {
  auto hf = load_without_tokenizer(hf_dir());
  auto l2c = load_without_tokenizer(llama2c_bin());
  EXPECT_EQ(hf->source_format, "hf-safetensors");
  EXPECT_EQ(l2c->source_format, "llama2c");
  const std::vector<int> tokens = prompt_tokens();
  ASSERT_EQ(tokens.size(), 30u);
  expect_rows_near(all_logits(*l2c, tokens), all_logits(*hf, tokens), "llama2c form vs HF form");
}

TEST(Stories260K, HfFormMatchesTorchReference) {
  const std::string python = QFORGE_TORCH_PYTHON;
  if (python.empty() || python.find("NOTFOUND") != std::string::npos) GTEST_SKIP() << "no python with torch";
  test::TempDir dir;
  const std::vector<int> tokens = prompt_tokens();
  std::string ids;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) ids += ',';
    ids += std::to_string(tokens[i]);
  }
  const std::string out = dir / "ref.logits";
  const std::string cmd = "'" + python + "' '" + test::source("tests/python/torch_reference.py") + "' '" + hf_dir() +
                          "' --tokens " + ids + " --out '" + out + "'";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << "failed: " << cmd;

  auto hf = load_without_tokenizer(hf_dir());
  const size_t vocab = size_t(hf->cfg.vocab_size);
  std::ifstream f(out, std::ios::binary);
  std::vector<std::vector<float>> expected(tokens.size(), std::vector<float>(vocab));
  for (auto& row : expected) f.read(reinterpret_cast<char*>(row.data()), std::streamsize(vocab * sizeof(float)));
  ASSERT_TRUE(f && f.peek() == EOF) << out << " is not " << tokens.size() << " x " << vocab << " float32";
  expect_rows_near(all_logits(*hf, tokens, 1), expected, "qforge (HF form) vs torch reference");
}

TEST(Stories260K, GreedyFromBosMatchesRunCHfForm) {
  auto hf = load_without_tokenizer(hf_dir());
  expect_same_ids(greedy_from_bos(*hf, kGreedySteps), reference_greedy_ids(), "HF form");
}

TEST(Stories260K, GreedyFromBosMatchesRunCLlama2cForm) {
  auto l2c = load_without_tokenizer(llama2c_bin());
  expect_same_ids(greedy_from_bos(*l2c, kGreedySteps), reference_greedy_ids(), "llama2.c form");
}

}  // namespace
}  // namespace qforge
