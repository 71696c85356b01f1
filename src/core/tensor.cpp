#include "qforge/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace qforge {

std::string TensorView::shape_str() const { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace qforge
