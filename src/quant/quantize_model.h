// Internals of quantize_model shared by its output formats.
#pragma once
#include <vector>

#include "qforge/quant.h"
#include "qforge/quantize.h"
#include "quant/export_tensors.h"

namespace qforge {

// Where the quantized bytes of the tensors go, in order.
class TensorSink {
 public:
  virtual ~TensorSink() = default;
  virtual void write(const void* data, size_t n) = 0;
};

class SafetensorsWriter;
// Adapts a SafetensorsWriter (declared tensors, written in order) to a sink.
class SafetensorsSinkAdapter : public TensorSink {
 public:
  explicit SafetensorsSinkAdapter(SafetensorsWriter& w) : w_(w) {}
  void write(const void* data, size_t n) override;

 private:
  SafetensorsWriter& w_;
};

// Quantizes tensors[i] to types[i] in chunks of rows and writes every byte to sink, tensor after
// tensor, calling opt.on_progress as it goes.
void stream_quantized(const std::vector<ExportTensor>& tensors, const std::vector<const QuantType*>& types,
                      TensorSink& sink, const QuantizeOptions& opt);

// The Hugging Face output (quantize_hf.cpp): OUT.tmp, renamed to OUT when complete.
void write_hf_directory(const Model& m, const std::string& out, const std::vector<ExportTensor>& tensors,
                        const std::vector<const QuantType*>& types, const QuantizeOptions& opt);

}  // namespace qforge
