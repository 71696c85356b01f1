// Placeholder: filled in by the q32 kernel work.
#include "kernels/weight_kernels.h"

namespace qforge::kernels {

void register_q32_kernels_avx512(WeightKernelSet&) {}

}  // namespace qforge::kernels
