// Placeholder: filled in by the float kernel work.
#include "kernels/weight_kernels.h"

namespace qforge::kernels {

void register_float_kernels_scalar(WeightKernelSet&) {}

}  // namespace qforge::kernels
