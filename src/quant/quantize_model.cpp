// quantize_model: the streaming loop shared by every output format. Each output tensor is read
// from the (mapped) source in chunks of rows, converted to F32 row by row, quantized to its target
// type in parallel and handed to the format's writer; the source pages are then released, so the
// resident set stays at about one chunk plus one tensor's pages whatever the model's size.
#include "quant/quantize_model.h"

#include <fmt/format.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>

#include "qforge/error.h"

namespace qforge {

namespace {

// Rows per chunk: about 16 MiB of F32 input, never less than one row.
int64_t chunk_rows(int64_t cols) { return std::max<int64_t>(1, (int64_t(16) << 20) / int64_t(sizeof(float)) / cols); }

// Hints the kernel that the source pages of a finished tensor may go. MADV_PAGEOUT never changes
// contents (unlike MADV_DONTNEED on anonymous memory), so it is safe on owned buffers too.
void release_source(const ExportTensor& t) {
#ifdef MADV_PAGEOUT
  const uintptr_t page = 4096;
  for (const Weight& w : t.parts) {
    if (!w) continue;
    const uintptr_t b = reinterpret_cast<uintptr_t>(w.data) & ~(page - 1);
    const uintptr_t e = reinterpret_cast<uintptr_t>(w.data) + w.nbytes();
    madvise(reinterpret_cast<void*>(b), size_t(e - b), MADV_PAGEOUT);
  }
#endif
}

// The importance of a tensor's columns, or null when the matrix has none (llama-quantize then
// quantizes it without, as it does here). A size that does not match is an error, except for the
// token embedding, which llama-imatrix never measures as a matrix input.
const float* tensor_importance(const ImportanceMatrix* im, const ExportTensor& t, int64_t cols) {
  if (!im || t.vector) return nullptr;
  const std::vector<float>* v = im->find(t.name);
  if (!v) return nullptr;
  if (int64_t(v->size()) == cols) return v->data();
  if (t.name == "token_embd.weight") return nullptr;
  fail("quantize: --imatrix {}: entry '{}' has {} values, but the tensor's rows have {} (an importance matrix "
       "of another model?)",
       im->path, t.name, v->size(), cols);
}

}  // namespace

void stream_quantized(const std::vector<ExportTensor>& tensors, const std::vector<const QuantType*>& types,
                      TensorSink& sink, const QuantizeOptions& opt) {
  const auto t_start = std::chrono::steady_clock::now();
  uint64_t total = 0, done = 0;
  for (const ExportTensor& t : tensors) total += t.n_weights();
  const int nt = std::max(1, opt.n_threads);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ExportTensor& t = tensors[i];
    const QuantType& q = *types[i];
    const int64_t rows = t.stored_rows(), cols = t.stored_cols();
    const uint64_t out_row = q.row_bytes(cols);
    // Same type in and out: rows are copied (and reordered) as bytes, never rounded twice.
    const bool raw = t.raw_copy_possible(q.dtype);
    const float* importance = tensor_importance(opt.importance, t, cols);
    std::vector<float> whole;
    if (t.transpose) whole = t.materialize_f32();
    const int64_t chunk = std::min(rows, chunk_rows(cols));
    std::vector<uint8_t> out(size_t(chunk) * out_row);
    std::vector<float> in(size_t(chunk) * size_t(cols));
    auto report = [&] {
      if (!opt.on_progress) return;
      QuantizeProgress p;
      p.index = i;
      p.count = tensors.size();
      p.name = &t.name;
      p.type = q.name;
      p.weights_done = done;
      p.weights_total = total;
      p.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      opt.on_progress(p);
    };
    report();
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t nr = std::min(chunk, rows - r0);
      std::exception_ptr error;
      std::mutex error_mu;
      const int threads = nr * cols < (int64_t(1) << 16) ? 1 : nt;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
      for (int64_t r = 0; r < nr; ++r) {
        try {
          if (raw) {
            std::memcpy(out.data() + size_t(r) * out_row, t.row_raw(r0 + r), size_t(out_row));
            continue;
          }
          float* x = t.transpose ? whole.data() + (r0 + r) * cols : in.data() + r * cols;
          if (!t.transpose) t.row_f32(r0 + r, x);
          q.quantize_row(x, out.data() + size_t(r) * out_row, cols, importance);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (!error) error = std::current_exception();
        }
      }
      if (error) {
        try {
          std::rethrow_exception(error);
        } catch (const Error& e) {
          throw Error(e.kind(), fmt::format("quantize: tensor '{}' to {}: {}", t.name, q.name, e.what()));
        }
      }
      sink.write(out.data(), size_t(nr) * out_row);
      done += uint64_t(nr) * uint64_t(cols);
      report();
    }
    release_source(t);
  }
}

}  // namespace qforge

// ---- formats ----------------------------------------------------------------------------------
#include <filesystem>

#include "qforge/gguf_writer.h"
#include "qforge/quant_plan.h"
#include "qforge/safetensors.h"

namespace qforge {

namespace {

class GgufSink : public TensorSink {
 public:
  explicit GgufSink(GgufWriter& w) : w_(w) {}
  void write(const void* data, size_t n) override { w_.write(data, n); }

 private:
  GgufWriter& w_;
};

std::string model_name(const Model& m) {
  std::filesystem::path p(m.source_path);
  if (!p.has_filename()) p = p.parent_path();
  return std::filesystem::is_directory(m.source_path) ? p.filename().string() : p.stem().string();
}

uint64_t file_or_dir_size(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return fs::file_size(path, ec);
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(path, ec))
    if (e.is_regular_file(ec)) n += e.file_size(ec);
  return n;
}

void check_source(const Model& m, const std::vector<ExportTensor>& tensors, const QuantizeOptions& opt) {
  if (opt.allow_requantize) return;
  for (const ExportTensor& t : tensors)
    if (dtype_info(t.src_dtype()).block_elems > 1)
      fail("quantize: {}: tensor '{}' is already quantized ({}); quantizing it again compounds the error. "
           "Start from the f32/f16/bf16 model, or pass --allow-requantize",
           m.source_path, t.name, dtype_name(t.src_dtype()));
}

QuantizedTensor describe(const ExportTensor& t, const QuantType& q, std::string note) {
  QuantizedTensor d;
  d.name = t.name;
  d.src_type = dtype_name(t.src_dtype());
  d.type = q.name;
  d.shape = t.shape();
  d.n_weights = t.n_weights();
  for (const Weight& w : t.parts) d.src_bytes += w.nbytes();
  d.bytes = q.row_bytes(t.stored_cols()) * uint64_t(t.stored_rows());
  d.note = std::move(note);
  return d;
}

struct TensorTypePlan {
  std::vector<const QuantType*> types;
  std::vector<std::string> notes;
  std::vector<std::string> warnings;
  uint32_t file_type = 0;
};

// llama-quantize's choice of type per tensor (qforge/quant_plan.h), for the output's tensor names.
TensorTypePlan plan_types(const Model& m, const std::vector<ExportTensor>& tensors, const QuantizeOptions& opt,
                          bool hf) {
  std::vector<PlanTensor> pt;
  for (const ExportTensor& t : tensors) pt.push_back({t.name, t.shape()});
  const QuantPlan plan =
      plan_quantization(plan_model(m.cfg), pt, opt.type, opt.keep, opt.pure, opt.importance != nullptr);
  TensorTypePlan p;
  for (const PlannedTensor& t : plan.tensors) {
    p.types.push_back(t.type);
    p.notes.push_back(t.note);
  }
  p.warnings = plan.warnings;
  if (!hf && plan.file_type == kNoFileType)
    fail("quantize: --type {}: GGUF cannot hold it (no ggml type); use --format hf or another type", opt.type);
  p.file_type = plan.file_type == kNoFileType ? 0 : uint32_t(plan.file_type);
  return p;
}

void write_gguf(const Model& m, const std::string& path, const std::vector<ExportTensor>& tensors,
                const std::vector<const QuantType*>& types, const std::string& name, uint32_t file_type,
                uint32_t alignment, const QuantizeOptions& opt) {
  GgufWriter w(path, alignment);
  write_model_metadata(w, m.cfg, m.tokenizer.get(), name, file_type);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ExportTensor& t = tensors[i];
    if (types[i]->ggml_type == kNoGgmlType)
      fail_unsupported("gguf-writer: tensor '{}': {} has no ggml type, so GGUF cannot hold it", t.name,
                       types[i]->name);
    std::vector<uint64_t> ne = {uint64_t(t.cols)};
    if (!t.vector) ne.push_back(uint64_t(t.rows));
    w.add_tensor(t.name, uint32_t(types[i]->ggml_type), ne);
  }
  GgufSink sink(w);
  stream_quantized(tensors, types, sink, opt);
  w.commit();
}

}  // namespace

void write_gguf_model(const Model& m, const std::string& path, const GgufExportOptions& opt) {
  const std::vector<ExportTensor> tensors = gguf_export_tensors(m);
  std::vector<const QuantType*> types;
  for (const ExportTensor& t : tensors) types.push_back(&quant_type(t.vector ? DType::F32 : t.src_dtype()));
  const QuantType& embd = quant_type(m.tok_embd.dtype);
  if (embd.ggml_type == kNoGgmlType)
    fail_unsupported("gguf-writer: tensor '{}': {} has no ggml type, so GGUF cannot hold it", m.tok_embd.name, embd.name);
  const uint32_t file_type = opt.file_type >= 0 ? uint32_t(opt.file_type) : gguf_file_type_for(uint32_t(embd.ggml_type));
  write_gguf(m, path, tensors, types, opt.name.empty() ? model_name(m) : opt.name, file_type, opt.alignment, {});
}

void SafetensorsSinkAdapter::write(const void* data, size_t n) { w_.write(data, n); }

QuantizeReport quantize_model(const Model& m, const std::string& out_path, const QuantizeOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const bool hf = opt.format == QuantizeFormat::Hf;
  std::vector<ExportTensor> tensors = hf ? hf_export_tensors(m) : gguf_export_tensors(m);
  check_source(m, tensors, opt);
  const TensorTypePlan plan = plan_types(m, tensors, opt, hf);

  if (opt.importance && hf)
    fail("quantize: --imatrix names GGUF tensors and applies to GGUF output only (drop --format hf)");
  QuantizeReport r;
  if (opt.importance) {
    r.imatrix = opt.importance->path;
    // Checked before anything is written: a size mismatch fails here, not half-way through the file.
    for (size_t i = 0; i < tensors.size(); ++i) {
      const ExportTensor& t = tensors[i];
      const bool has = tensor_importance(opt.importance, t, t.stored_cols()) != nullptr;
      if (t.vector || !plan.types[i]->uses_importance) continue;
      if (has)
        ++r.imatrix_tensors;
      else if (plan.types[i]->dtype != t.src_dtype() && t.name != "token_embd.weight")  // never measured
        r.warnings.push_back(fmt::format("--imatrix has no entry for '{}': quantized to {} without one",
                                         t.name, plan.types[i]->name));
    }
  }
  r.output = out_path;
  r.format = hf ? "hf" : "gguf";
  r.type = opt.type;
  std::vector<const QuantType*> types;
  for (size_t i = 0; i < tensors.size(); ++i) {
    types.push_back(plan.types[i]);
    r.tensors.push_back(describe(tensors[i], *plan.types[i], plan.notes[i]));
    r.n_weights += tensors[i].n_weights();
    r.src_weight_bytes += r.tensors.back().src_bytes;
    r.out_weight_bytes += r.tensors.back().bytes;
  }
  r.src_file_bytes = m.size_on_disk;
  r.warnings.insert(r.warnings.begin(), plan.warnings.begin(), plan.warnings.end());

  if (!hf) {
    write_gguf(m, out_path, tensors, types, model_name(m), plan.file_type, kGgufDefaultAlignment, opt);
  } else {
    write_hf_directory(m, out_path, tensors, types, opt);
  }
  r.out_file_bytes = file_or_dir_size(out_path);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace qforge
