// A view of a stored tensor: name, element type, shape and where its bytes are.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "qforge/dtype.h"

namespace qforge {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;     // outermost first, as in safetensors / PyTorch
  const uint8_t* data = nullptr;  // points into a mapped file or an owned buffer
  uint64_t nbytes = 0;
  std::string file;  // the file it comes from (for messages)

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  std::string shape_str() const;  // "[64, 172]"
};

}  // namespace qforge
