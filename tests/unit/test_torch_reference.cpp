// The engine against an independent float64 PyTorch forward pass (tests/python/torch_reference.py)
// on tiny random checkpoints that exercise what real models use: GQA, q/k/v/o biases, llama3 and
// linear rope scaling, tied and untied heads (llama-gqa, qwen2), and GPT-2's LayerNorm, learned
// positions, Conv1D layout and tanh GELU. Every logit of every position must agree to 1e-4 relative,
// for one batched eval, token-by-token decoding through the KV cache, and a mix of the two.
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "qforge/error.h"
#include "qforge/model.h"
#include "qforge/session.h"
#include "test_util.h"

namespace qforge {
namespace {

// 20 ids below every tiny model's vocabulary (89, 97, 101), with repeats and both ends of the range.
const std::vector<int> kTokens = {1, 5, 17, 42, 86, 3, 3, 60, 88, 12, 0, 71, 33, 9, 50, 64, 2, 80, 27, 45};

std::string quote(const std::string& s) { return "'" + s + "'"; }

// Runs a shell command; returns "" on success or a description of the failure.
std::string run_command(const std::string& cmd) {
  int status = std::system(cmd.c_str());
  if (status == -1) return "could not start: " + cmd;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "failed (status " + std::to_string(status) + "): " + cmd;
  return "";
}

std::string join_ids(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

// Raw little-endian float32 [n_rows, n_cols], as torch_reference.py writes it.
std::vector<float> read_logits(const std::string& path, size_t n_rows, size_t n_cols) {
  std::ifstream f(path, std::ios::binary);
  std::vector<float> v(n_rows * n_cols);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  if (!f || f.peek() != EOF) return {};
  return v;
}

// Compares one row of logits; reports at most a few mismatches per row so a wrong model does not
// flood the log. |actual - expected| <= 1e-4 * max(1, |expected|).
void expect_row_near(const float* actual, const float* expected, int vocab, int token_index, const std::string& what) {
  int reported = 0, bad = 0;
  for (int v = 0; v < vocab; ++v) {
    const double a = actual[v], b = expected[v];
    const double tol = 1e-4 * std::max(1.0, std::fabs(b));
    if (!(std::fabs(a - b) <= tol)) {  // also catches NaN
      ++bad;
      if (reported++ < 5)
        ADD_FAILURE() << what << ": token index " << token_index << ", vocab index " << v << ": expected " << b
                      << ", actual " << a << " (diff " << a - b << ", tolerance " << tol << ")";
    }
  }
  if (bad > reported) ADD_FAILURE() << what << ": token index " << token_index << ": " << bad << " logits differ in all";
}

// One test per model (ctest runs each in its own process, and a python start with torch costs
// ~1.5 s): the model and its reference logits are made in SetUp, then every eval mode runs with
// 1 and 2 threads.
class TorchReferenceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string python = QFORGE_TORCH_PYTHON;
    if (python.empty() || python.find("NOTFOUND") != std::string::npos)
      GTEST_SKIP() << "no python with torch (QFORGE_TORCH_PYTHON)";
    const std::string name = GetParam();
    ASSERT_EQ(run_command(quote(python) + " " + quote(test::source("tests/python/make_tiny_models.py")) + " " +
                          quote(dir_.path.string()) + " --only " + name),
              "");
    ASSERT_EQ(run_command(quote(python) + " " + quote(test::source("tests/python/torch_reference.py")) + " " +
                          quote(dir_ / name) + " --tokens " + join_ids(kTokens) + " --out " +
                          quote(dir_ / "reference.logits")),
              "");
    LoadOptions lo;
    lo.load_tokenizer = false;
    model_ = load_model(dir_ / name, lo);
    vocab_ = model_->cfg.vocab_size;
    expected_ = read_logits(dir_ / "reference.logits", kTokens.size(), size_t(vocab_));
    ASSERT_FALSE(expected_.empty()) << "reference logits of " << name << " missing or not " << kTokens.size()
                                    << " x " << vocab_ << " float32";
  }

  const float* expected(size_t i) const { return expected_.data() + i * size_t(vocab_); }
  std::string label(const char* mode, int n_threads) const {
    return GetParam() + " (" + mode + ", " + std::to_string(n_threads) + " threads)";
  }
  static SessionOptions with_threads(int n_threads, int n_batch = 512) {
    SessionOptions o;
    o.n_threads = n_threads;
    o.n_batch = n_batch;
    return o;
  }

  test::TempDir dir_;
  std::unique_ptr<Model> model_;
  int vocab_ = 0;
  std::vector<float> expected_;
};

TEST_P(TorchReferenceTest, LogitsMatchInEveryEvalMode) {
  const size_t n = kTokens.size();
  for (int threads : {1, 2}) {
    {  // (a) the whole sequence as one batched eval
      Session s(*model_, with_threads(threads));
      s.eval(kTokens, /*all_logits=*/true);
      EXPECT_EQ(s.n_past(), int(n));
      for (size_t i = 0; i < n; ++i) expect_row_near(s.logits(int(i)), expected(i), vocab_, int(i), label("batched", threads));
    }
    {  // (b) token by token through the KV cache
      Session s(*model_, with_threads(threads));
      for (size_t i = 0; i < n; ++i) {
        s.eval(std::span<const int>(&kTokens[i], 1));
        expect_row_near(s.logits(), expected(i), vocab_, int(i), label("one by one", threads));
      }
      EXPECT_EQ(s.n_past(), int(n));
    }
    {  // (c) 7 tokens batched, then the rest one by one
      Session s(*model_, with_threads(threads));
      const size_t prefix = 7;
      s.eval(std::span<const int>(kTokens.data(), prefix), /*all_logits=*/true);
      for (size_t i = 0; i < prefix; ++i)
        expect_row_near(s.logits(int(i)), expected(i), vocab_, int(i), label("split, batched part", threads));
      for (size_t i = prefix; i < n; ++i) {
        s.eval(std::span<const int>(&kTokens[i], 1));
        expect_row_near(s.logits(), expected(i), vocab_, int(i), label("split, one-by-one part", threads));
      }
    }
    {  // (d) a prompt longer than n_batch goes through several forward calls; all its logits are kept
      Session s(*model_, with_threads(threads, /*n_batch=*/6));
      s.eval(kTokens, /*all_logits=*/true);
      for (size_t i = 0; i < n; ++i) expect_row_near(s.logits(int(i)), expected(i), vocab_, int(i), label("n_batch 6", threads));
    }
    {  // (e) after reset() the cache is reused from position 0 and gives the same answer again
      Session s(*model_, with_threads(threads));
      s.eval(std::span<const int>(kTokens.data() + 3, 5));
      s.reset();
      EXPECT_EQ(s.n_past(), 0);
      s.eval(kTokens, /*all_logits=*/true);
      for (size_t i = 0; i < n; ++i) expect_row_near(s.logits(int(i)), expected(i), vocab_, int(i), label("after reset", threads));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, TorchReferenceTest, ::testing::Values("llama-gqa", "qwen2", "gpt2"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace qforge
