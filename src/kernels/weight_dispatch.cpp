// Builds the weight-kernel set of each instruction set: scalar entries first, then the ISA's
// overrides (see weight_kernels.h).
#include <fmt/format.h>

#include "kernels/kernels.h"
#include "kernels/weight_kernels.h"
#include "qforge/error.h"

namespace qforge::kernels {

int64_t act_block_elems(ActFormat f) {
  switch (f) {
    case ActFormat::F32: return 1;
    case ActFormat::Q8x32: return 32;
    case ActFormat::Q8x256: return 256;
  }
  return 1;
}

size_t act_row_bytes(ActFormat f, int64_t n) {
  switch (f) {
    case ActFormat::F32: return size_t(n) * sizeof(float);
    case ActFormat::Q8x32: return size_t(n / 32) * sizeof(BlockQ8x32);
    case ActFormat::Q8x256: return size_t(n / 256) * sizeof(BlockQ8x256);
  }
  return 0;
}

namespace {

WeightKernelSet build(std::string_view isa) {
  WeightKernelSet s{};
  register_float_kernels_scalar(s);
  register_q32_kernels_scalar(s);
  register_qk_kernels_scalar(s);
  if (isa == "avx2" || isa == "avx512") {
    register_float_kernels_avx2(s);
    register_q32_kernels_avx2(s);
    register_qk_kernels_avx2(s);
  }
  if (isa == "avx512") {
    register_float_kernels_avx512(s);
    register_q32_kernels_avx512(s);
    register_qk_kernels_avx512(s);
  }
  return s;
}

const WeightKernelSet* set_for(std::string_view isa) {
  if (!table_for(isa)) return nullptr;  // unknown ISA or not supported by this CPU
  static const WeightKernelSet scalar = build("scalar");
  static const WeightKernelSet avx2 = build("avx2");
  static const WeightKernelSet avx512 = build("avx512");
  if (isa == "scalar") return &scalar;
  if (isa == "avx2") return &avx2;
  if (isa == "avx512") return &avx512;
  return nullptr;
}

const WeightKernels* pick(const WeightKernelSet* s, DType t) {
  if (!s || size_t(t) >= s->size()) return nullptr;
  const WeightKernels& k = (*s)[size_t(t)];
  return k ? &k : nullptr;
}

}  // namespace

const WeightKernels* weight_kernels(DType t, std::string_view isa) { return pick(set_for(isa), t); }

const WeightKernels* weight_kernels(DType t) {
  static const WeightKernelSet* best = set_for(table().isa);
  return pick(best, t);
}

}  // namespace qforge::kernels
