// Placeholder: filled in by the float kernel work.
#include "kernels/weight_kernels.h"

namespace qforge::kernels {

void register_float_kernels_avx512(WeightKernelSet&) {}

}  // namespace qforge::kernels
