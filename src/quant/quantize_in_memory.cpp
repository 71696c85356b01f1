// Load-time quantization: the model's matrices are quantized in memory right after loading, as
// bitsandbytes does for NF4. This is how qforge's engine runs types no file format holds (nf4) and
// how a type can be tried without writing a file. The choice of type per tensor is the same plan as
// `qforge quantize` (mix rules, fallbacks, --keep), keyed by the GGUF tensor names.
#include <fmt/format.h>

#include <map>

#include "kernels/matmul.h"
#include "qforge/error.h"
#include "qforge/quant_plan.h"
#include "qforge/quantize.h"
#include "quant/export_tensors.h"

namespace qforge {

namespace {

// Every matrix of the model (tied weights once), mutable.
std::vector<Weight*> model_matrices(Model& m) {
  std::vector<Weight*> out = {&m.tok_embd, &m.pos_embd, &m.output};
  for (LayerWeights& l : m.layers)
    for (Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) out.push_back(w);
  return out;
}

}  // namespace

InMemoryQuantizeReport quantize_in_memory(Model& m, const InMemoryQuantizeOptions& opt) {
  // The plan, on the tensors as a GGUF file would hold them.
  const std::vector<ExportTensor> tensors = gguf_export_tensors(m);
  std::vector<PlanTensor> pt;
  for (const ExportTensor& t : tensors) pt.push_back({t.name, t.shape()});
  const QuantPlan plan = plan_quantization(plan_model(m.cfg), pt, opt.type, opt.keep, opt.pure);
  // Source data pointer -> type: parts of one exported tensor (GPT-2's fused qkv) share a type.
  // nf4 follows bitsandbytes, which quantizes the blocks' linear layers and leaves the embeddings and
  // the output matrix alone (llama.cpp's mixes have their own rules for those two).
  const bool linear_only = plan.mix && std::string_view(plan.mix->name) == "nf4";
  std::map<const void*, const QuantType*> type_of;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].vector || (linear_only && tensors[i].layer < 0)) continue;
    for (const Weight& w : tensors[i].parts) type_of[w.data] = plan.tensors[i].type;
  }

  InMemoryQuantizeReport r;
  r.warnings = plan.warnings;
  std::map<const void*, Weight> done;  // tied weights and shared buffers are quantized once
  for (Weight* w : model_matrices(m)) {
    if (!*w) continue;
    auto it = type_of.find(w->data);
    if (it == type_of.end()) continue;
    const QuantType& q = *it->second;
    if (auto d = done.find(w->data); d != done.end()) {
      const std::string name = w->name;
      *w = d->second;
      w->name = name;
      continue;
    }
    r.bytes_before += w->nbytes();
    r.n_weights += uint64_t(w->rows) * uint64_t(w->cols);
    if (q.dtype == w->dtype) {
      r.bytes_after += w->nbytes();
      done[w->data] = *w;
      continue;
    }
    const uint64_t out_row = q.row_bytes(w->cols);
    uint8_t* dst = m.own_bytes(size_t(out_row * uint64_t(w->rows)));
    const int nt = std::max(1, opt.n_threads);
#pragma omp parallel num_threads(nt)
    {
      std::vector<float> x(static_cast<size_t>(w->cols));
#pragma omp for schedule(static)
      for (int64_t rr = 0; rr < w->rows; ++rr) {
        kernels::weight_row_to_f32(w->dtype, w->row(rr), x.data(), w->cols);
        q.quantize_row(x.data(), dst + size_t(rr) * out_row, w->cols, nullptr);
      }
    }
    if (opt.nf4_double_quant && q.dtype == DType::NF4) {
      // bitsandbytes' compress_statistics: the absmax values go through their 8-bit coding; the
      // blocks keep the decoded values, so the engine computes with what a double-quantized model has.
      const int64_t nblocks = w->rows * w->cols / kNf4BlockElems;
      const std::vector<float> absmax = nf4_block_absmax(dst, nblocks);
      const std::vector<float> decoded = nf4_double_dequantize(nf4_double_quantize(absmax));
      nf4_set_block_absmax(dst, nblocks, decoded.data());
      r.bytes_after += uint64_t(nblocks) * (kNf4BlockElems / 2 + 1) + uint64_t(nblocks / kNf4NestedGroup + 1) * 4;
    } else {
      r.bytes_after += out_row * uint64_t(w->rows);
    }
    Weight nw = *w;
    nw.dtype = q.dtype;
    nw.data = dst;
    done[w->data] = nw;
    *w = nw;
    ++r.n_tensors;
  }
  // GPT-2 views q, k and v as slices of one fused buffer: each slice was quantized on its own above.
  return r;
}

}  // namespace qforge
