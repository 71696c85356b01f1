// Sampler: greedy is argmax, seeds reproduce, each filter does what it says.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "qforge/sampler.h"

namespace qforge {
namespace {

std::vector<float> logits_peaked() { return {0.1f, 2.0f, -1.0f, 1.5f, 0.3f, 1.9f, -3.0f, 0.0f}; }

TEST(Sampler, GreedyIsArgmax) {
  Sampler s({.temperature = 0.0f, .repeat_penalty = 1.0f});
  auto l = logits_peaked();
  EXPECT_EQ(s.sample(l.data(), int(l.size()), {}), 1);
}

TEST(Sampler, GreedyTieGoesToLowestId) {
  Sampler s({.temperature = 0.0f, .repeat_penalty = 1.0f});
  std::vector<float> l = {1.0f, 3.0f, 3.0f};
  EXPECT_EQ(s.sample(l.data(), 3, {}), 1);
}

TEST(Sampler, SameSeedSameSequenceDifferentSeedDiffers) {
  auto run = [](uint64_t seed) {
    Sampler s({.temperature = 1.5f, .top_k = 0, .top_p = 1.0f, .repeat_penalty = 1.0f, .seed = seed});
    auto l = logits_peaked();
    std::vector<int> out;
    for (int i = 0; i < 200; ++i) out.push_back(s.sample(l.data(), int(l.size()), {}));
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(Sampler, TopKOneIsGreedy) {
  Sampler s({.temperature = 5.0f, .top_k = 1, .top_p = 1.0f, .repeat_penalty = 1.0f, .seed = 3});
  auto l = logits_peaked();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(s.sample(l.data(), int(l.size()), {}), 1);
}

TEST(Sampler, TopKLimitsTheCandidates) {
  Sampler s({.temperature = 10.0f, .top_k = 3, .top_p = 1.0f, .repeat_penalty = 1.0f, .seed = 11});
  auto l = logits_peaked();  // the three largest are ids 1, 5, 3
  std::map<int, int> seen;
  for (int i = 0; i < 2000; ++i) seen[s.sample(l.data(), int(l.size()), {})]++;
  EXPECT_EQ(seen.size(), 3u);
  for (int id : {1, 5, 3}) EXPECT_GT(seen[id], 300) << "id " << id;
}

TEST(Sampler, TinyTopPIsGreedy) {
  Sampler s({.temperature = 1.0f, .top_k = 0, .top_p = 1e-6f, .repeat_penalty = 1.0f, .seed = 5});
  auto l = logits_peaked();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(s.sample(l.data(), int(l.size()), {}), 1);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingTheMass) {
  // Probabilities 0.5, 0.3, 0.2 at temperature 1: top_p 0.7 keeps the first two only.
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler s({.temperature = 1.0f, .top_k = 0, .top_p = 0.7f, .repeat_penalty = 1.0f, .seed = 9});
  std::map<int, int> seen;
  for (int i = 0; i < 3000; ++i) seen[s.sample(l.data(), 3, {})]++;
  EXPECT_EQ(seen.count(2), 0u);
  // Renormalised 0.5/0.8 = 0.625 for id 0: allow 5 standard deviations (~0.044).
  EXPECT_NEAR(seen[0] / 3000.0, 0.625, 0.045);
}

TEST(Sampler, RepeatPenaltyDemotesRecentTokens) {
  Sampler s({.temperature = 0.0f, .repeat_penalty = 1.5f, .repeat_last_n = 2});
  auto l = logits_peaked();  // id 1 (2.0) beats id 5 (1.9) until penalised: 2.0 / 1.5 < 1.9
  EXPECT_EQ(s.sample(l.data(), int(l.size()), {1}), 5);
  // Outside the window of the last 2 tokens, id 1 is not penalised.
  EXPECT_EQ(s.sample(l.data(), int(l.size()), {1, 4, 4}), 1);
  // Negative logits are multiplied, pushing them further down.
  std::vector<float> neg = {-1.0f, -1.2f};
  EXPECT_EQ(s.sample(neg.data(), 2, {0}), 1);
}

}  // namespace
}  // namespace qforge
