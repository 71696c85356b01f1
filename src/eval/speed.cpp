#include "qforge/speed.h"

#include <algorithm>
#include <chrono>

#include "qforge/error.h"
#include "qforge/session.h"

namespace qforge {

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

SpeedResult measure_speed(const Model& model, const std::vector<int>& tokens, const SpeedOptions& opt) {
  if (tokens.empty()) fail("speed: no prompt tokens");
  if (opt.n_prompt < 1 || opt.runs < 1 || opt.n_gen < 0) fail("speed: prompt, runs must be positive");
  std::vector<int> prompt;
  while (int(prompt.size()) < opt.n_prompt) prompt.push_back(tokens[prompt.size() % tokens.size()]);
  SessionOptions so;
  so.n_threads = opt.n_threads;
  so.n_ctx = std::min(model.cfg.max_ctx, opt.n_prompt + opt.n_gen);
  so.n_batch = std::max(opt.n_prompt, 1);
  if (opt.n_prompt + opt.n_gen > so.n_ctx) prompt.resize(size_t(std::max(1, so.n_ctx - opt.n_gen)));
  Session s(model, so);
  std::vector<double> tp, tg;
  for (int r = 0; r < opt.runs + 1; ++r) {  // run 0 warms caches and page mappings; not counted
    s.reset();
    auto t0 = std::chrono::steady_clock::now();
    s.eval(prompt);
    const double p = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    for (int g = 0; g < opt.n_gen && s.n_past() < s.n_ctx(); ++g) {
      const float* l = s.logits();
      const int next = int(std::max_element(l, l + s.n_vocab()) - l);
      s.eval(std::span<const int>(&next, 1));
    }
    const double g = seconds_since(t0);
    if (r > 0) {
      tp.push_back(p);
      tg.push_back(g);
    }
  }
  SpeedResult res;
  res.runs = opt.runs;
  res.n_prompt = int(prompt.size());
  res.n_gen = opt.n_gen;
  res.prompt_s = median(tp);
  res.gen_s = median(tg);
  res.prompt_tps = res.prompt_s > 0 ? res.n_prompt / res.prompt_s : 0;
  res.gen_tps = res.gen_s > 0 ? res.n_gen / res.gen_s : 0;
  return res;
}

}  // namespace qforge
