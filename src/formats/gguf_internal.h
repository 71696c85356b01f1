// Pieces shared by the GGUF reader's files (not part of the public API).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "qforge/gguf.h"

namespace qforge::gguf_detail {

bool is_integer_type(GgufType t);  // U8..I64
bool is_signed_type(GgufType t);   // I8..I64
size_t fixed_size(GgufType t);     // bytes of a fixed-size type; 0 for STRING and ARRAY

// One fixed-size value, widened: `u` for unsigned types and BOOL, `i` for signed ones, `f` for floats.
struct Scalar {
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
};
Scalar read_scalar(GgufType t, const uint8_t* p);

// 'text' for messages: cut to a bounded length, control bytes escaped (names come from the file).
std::string quote(std::string_view s);

}  // namespace qforge::gguf_detail
