// Inference speed of a model on a fixed workload, as medians of repeated runs (used by
// `qforge quantize` to compare the original with the quantized model).
#pragma once
#include <vector>

#include "qforge/model.h"

namespace qforge {

struct SpeedOptions {
  int n_prompt = 128;  // prompt tokens processed in one batch
  int n_gen = 32;      // tokens generated one at a time after the prompt (greedy)
  int runs = 3;        // repetitions; medians are reported
  int n_threads = 0;
};

struct SpeedResult {
  double prompt_s = 0, gen_s = 0;  // medians
  double prompt_tps = 0, gen_tps = 0;
  int runs = 0, n_prompt = 0, n_gen = 0;
  double total_s() const { return prompt_s + gen_s; }
};

// Runs the prompt (tokens, cut or repeated to n_prompt) then n_gen greedy tokens, opt.runs times.
SpeedResult measure_speed(const Model& model, const std::vector<int>& tokens, const SpeedOptions& opt);

}  // namespace qforge
