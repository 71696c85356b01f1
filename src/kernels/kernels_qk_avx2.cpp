// Placeholder: filled in by the qk kernel work.
#include "kernels/weight_kernels.h"

namespace qforge::kernels {

void register_qk_kernels_avx2(WeightKernelSet&) {}

}  // namespace qforge::kernels
