// Importer for llama2.c's legacy checkpoint format (karpathy/llama2.c, export "version 0"):
//
//   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//   f32   token_embedding[vocab][dim]
//   f32   rms_att[L][dim], wq[L][dim][dim], wk[L][kv_dim][dim], wv[L][kv_dim][dim], wo[L][dim][dim]
//   f32   rms_ffn[L][dim], w1[L][hidden][dim], w2[L][dim][hidden], w3[L][hidden][dim]
//   f32   rms_final[dim], freq_cis_real[seq_len][head_size/2], freq_cis_imag[seq_len][head_size/2]
//   f32   wcls[vocab][dim]  (only when vocab_size was written negative: an untied classifier)
//
// Everything is used in place from the mapping except wq and wk: llama2.c rotates adjacent pairs
// (x[2i], x[2i+1]) while the engine follows Hugging Face's rotate_half (x[i], x[i+hd/2]), so the
// rows of those two matrices are reordered into owned buffers. The stored freq_cis tables are
// not used: the engine computes the same frequencies from rope_theta = 10000.
#include <cstdint>
#include <cstring>
#include <filesystem>

#include "model/rotary_permute.h"
#include "qforge/error.h"
#include "qforge/model.h"

namespace qforge {
namespace {

constexpr uint32_t kVersionedMagic = 0x616b3432;  // "ak42": llama2.c's newer export formats

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

// Walks the file in order, handing out one array at a time and recording it in file_tensors.
class ArrayCursor {
 public:
  ArrayCursor(Model& model, const MappedFile& file, uint64_t offset)
      : model_(model), file_(file), offset_(offset) {}

  // Takes the next array of the given shape; returns a pointer to its first float.
  const float* take(const std::string& name, std::vector<int64_t> shape) {
    uint64_t n = 1;
    for (int64_t d : shape) n = checked_mul(n, uint64_t(d), "llama2c: " + file_.path() + ": " + name);
    const uint64_t nbytes = checked_mul(n, sizeof(float), "llama2c: " + file_.path() + ": " + name);
    const uint64_t end = checked_add(offset_, nbytes, "llama2c: " + file_.path() + ": " + name);
    // The caller has already checked the exact total size; this guards the walk itself.
    if (end > file_.size())
      fail("llama2c: {}: array '{}' ends at byte {} past the end of the file ({} bytes)", file_.path(), name,
           end, file_.size());
    TensorView v;
    v.name = name;
    v.dtype = DType::F32;
    v.shape = std::move(shape);
    v.data = file_.data() + offset_;
    v.nbytes = nbytes;
    v.file = file_.path();
    model_.file_tensors.push_back(std::move(v));
    const float* p = reinterpret_cast<const float*>(file_.data() + offset_);
    offset_ = end;
    return p;
  }
  uint64_t offset() const { return offset_; }

 private:
  Model& model_;
  const MappedFile& file_;
  uint64_t offset_;
};

Weight make_weight(std::string name, const float* data, int64_t rows, int64_t cols) {
  Weight w;
  w.name = std::move(name);
  w.dtype = DType::F32;
  w.rows = rows;
  w.cols = cols;
  w.data = data;
  return w;
}

// Copies a [n_heads*hd, cols] projection into an owned buffer in rotate_half row order, so that
// rotate_half pairs the same two features llama2.c's adjacent-pair rotary pairs.
const float* adjacent_pairs_to_rotate_half(Model& model, const float* src, int n_heads, int hd, int64_t cols) {
  float* dst = model.own(size_t(n_heads) * size_t(hd) * size_t(cols));
  qforge::adjacent_pairs_to_rotate_half(src, dst, n_heads, hd, cols);
  return dst;
}

void check_positive(const std::string& path, const char* field, int32_t v) {
  if (v <= 0) fail("llama2c: {}: header field '{}' is {}, must be positive", path, field, v);
}

// Validates the header and returns the exact file size it implies.
uint64_t validate_header(const std::string& path, const Header& h, bool shared_classifier) {
  check_positive(path, "dim", h.dim);
  check_positive(path, "hidden_dim", h.hidden_dim);
  check_positive(path, "n_layers", h.n_layers);
  check_positive(path, "n_heads", h.n_heads);
  check_positive(path, "n_kv_heads", h.n_kv_heads);
  if (h.vocab_size == 0 || h.vocab_size == INT32_MIN)
    fail("llama2c: {}: header field 'vocab_size' is {}, must be non-zero", path, h.vocab_size);
  check_positive(path, "seq_len", h.seq_len);
  if (h.dim % h.n_heads != 0)
    fail("llama2c: {}: header field 'n_heads' ({}) does not divide 'dim' ({})", path, h.n_heads, h.dim);
  if (h.n_kv_heads > h.n_heads || h.n_heads % h.n_kv_heads != 0)
    fail("llama2c: {}: header field 'n_kv_heads' ({}) does not divide 'n_heads' ({})", path, h.n_kv_heads,
         h.n_heads);
  const int64_t head_size = h.dim / h.n_heads;
  if (head_size % 2 != 0)
    fail("llama2c: {}: head size dim/n_heads = {} is odd; rotary embeddings need an even head size", path,
         head_size);

  const uint64_t vocab = uint64_t(h.vocab_size < 0 ? -int64_t(h.vocab_size) : h.vocab_size);
  const uint64_t dim = uint64_t(h.dim), hidden = uint64_t(h.hidden_dim), layers = uint64_t(h.n_layers);
  const uint64_t kv_dim = dim / uint64_t(h.n_heads) * uint64_t(h.n_kv_heads);
  const std::string what = "llama2c: " + path + ": size implied by the header";
  auto mul = [&](uint64_t a, uint64_t b) { return checked_mul(a, b, what); };
  auto add = [&](uint64_t a, uint64_t b) { return checked_add(a, b, what); };

  uint64_t per_layer = 0;
  per_layer = add(per_layer, mul(2, dim));                   // rms_att, rms_ffn
  per_layer = add(per_layer, mul(2, mul(dim, dim)));         // wq, wo
  per_layer = add(per_layer, mul(2, mul(kv_dim, dim)));      // wk, wv
  per_layer = add(per_layer, mul(3, mul(hidden, dim)));      // w1, w2, w3
  uint64_t floats = mul(vocab, dim);                         // token_embedding
  floats = add(floats, mul(layers, per_layer));
  floats = add(floats, dim);                                 // rms_final
  floats = add(floats, mul(2, mul(uint64_t(h.seq_len), uint64_t(head_size / 2))));  // freq_cis
  if (!shared_classifier) floats = add(floats, mul(vocab, dim));  // wcls
  return add(sizeof(Header), mul(floats, sizeof(float)));
}

std::unique_ptr<Tokenizer> load_tokenizer_by_extension(const std::string& path) {
  namespace fs = std::filesystem;
  if (is_directory(path)) return load_tokenizer_dir(path);
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".json") return load_hf_tokenizer_json(path, fs::path(path).parent_path().string());
  if (ext == ".model") return load_sentencepiece(path, fs::path(path).parent_path().string());
  return load_llama2c_tokenizer(path);  // tokenizer.bin, tok512.bin, ...
}

// The tokenizer that belongs to a llama2.c checkpoint: the one named in the options, else
// tokenizer.bin or tok<vocab>.bin (llama2.c's naming) or a SentencePiece tokenizer.model beside it.
std::unique_ptr<Tokenizer> find_tokenizer(const std::string& bin_path, int vocab, const LoadOptions& opt) {
  namespace fs = std::filesystem;
  if (!opt.tokenizer_path.empty()) return load_tokenizer_by_extension(opt.tokenizer_path);
  const fs::path dir = fs::path(bin_path).parent_path();
  for (const std::string& name : {std::string("tokenizer.bin"), "tok" + std::to_string(vocab) + ".bin"}) {
    const std::string p = (dir / name).string();
    if (file_exists(p)) return load_llama2c_tokenizer(p);
  }
  const std::string spm = (dir / "tokenizer.model").string();
  if (file_exists(spm)) return load_sentencepiece(spm, dir.string());
  return nullptr;
}

}  // namespace

std::unique_ptr<Model> load_llama2c_model(const std::string& bin_path, const LoadOptions& opt) {
  auto file = MappedFile::open(bin_path);
  const std::string& path = file->path();
  if (file->size() < sizeof(Header))
    fail("llama2c: {}: file is {} bytes, shorter than the {}-byte header", path, file->size(), sizeof(Header));
  uint32_t magic;
  std::memcpy(&magic, file->data(), sizeof(magic));
  if (magic == kVersionedMagic)
    fail_unsupported("llama2c: {}: versioned llama2.c export (magic 'ak42'); only the legacy format is supported",
                     path);
  Header h;
  std::memcpy(&h, file->data(), sizeof(h));
  const bool shared_classifier = h.vocab_size > 0;
  const uint64_t expected = validate_header(path, h, shared_classifier);
  if (file->size() != expected)
    fail("llama2c: {}: file is {} bytes but the header (dim {}, hidden_dim {}, n_layers {}, n_heads {}, "
         "n_kv_heads {}, vocab_size {}, seq_len {}) implies {} bytes",
         path, file->size(), h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len,
         expected);

  const int vocab = h.vocab_size < 0 ? -h.vocab_size : h.vocab_size;
  const int head_dim = h.dim / h.n_heads;
  const int kv_dim = head_dim * h.n_kv_heads;
  const int64_t L = h.n_layers, dim = h.dim, hidden = h.hidden_dim;

  auto model = std::make_unique<Model>();
  ModelConfig& c = model->cfg;
  c.arch = Arch::Llama;
  c.hf_architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.n_embd = h.dim;
  c.n_ff = h.hidden_dim;
  c.n_layer = h.n_layers;
  c.n_head = h.n_heads;
  c.n_head_kv = h.n_kv_heads;
  c.head_dim = head_dim;
  c.vocab_size = vocab;
  c.max_ctx = h.seq_len;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tie_embeddings = shared_classifier;
  c.act = Activation::SiLU;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  c.torch_dtype = "float32";

  model->source_path = bin_path;
  model->source_format = "llama2c";
  model->size_on_disk = file->size();

  ArrayCursor cur(*model, *file, sizeof(Header));
  const float* tok = cur.take("llama2c.token_embedding", {vocab, dim});
  const float* rms_att = cur.take("llama2c.rms_att", {L, dim});
  const float* wq = cur.take("llama2c.wq", {L, dim, dim});
  const float* wk = cur.take("llama2c.wk", {L, kv_dim, dim});
  const float* wv = cur.take("llama2c.wv", {L, kv_dim, dim});
  const float* wo = cur.take("llama2c.wo", {L, dim, dim});
  const float* rms_ffn = cur.take("llama2c.rms_ffn", {L, dim});
  const float* w1 = cur.take("llama2c.w1", {L, hidden, dim});
  const float* w2 = cur.take("llama2c.w2", {L, dim, hidden});
  const float* w3 = cur.take("llama2c.w3", {L, hidden, dim});
  const float* rms_final = cur.take("llama2c.rms_final", {dim});
  cur.take("llama2c.freq_cis_real", {int64_t(h.seq_len), head_dim / 2});
  cur.take("llama2c.freq_cis_imag", {int64_t(h.seq_len), head_dim / 2});
  const float* wcls = shared_classifier ? tok : cur.take("llama2c.wcls", {vocab, dim});
  if (cur.offset() != file->size())  // cannot happen after the size check; kept as a cheap invariant
    fail("llama2c: {}: {} trailing bytes after the last array", path, file->size() - cur.offset());

  model->tok_embd = make_weight("llama2c.token_embedding", tok, vocab, dim);
  model->out_norm = make_weight("llama2c.rms_final", rms_final, 1, dim);
  model->output = make_weight(shared_classifier ? "llama2c.token_embedding" : "llama2c.wcls", wcls, vocab, dim);

  model->layers.resize(size_t(L));
  for (int64_t l = 0; l < L; ++l) {
    LayerWeights& lw = model->layers[size_t(l)];
    auto name = [&](const char* base) { return fmt::format("llama2c.{}[{}]", base, l); };
    lw.attn_norm = make_weight(name("rms_att"), rms_att + l * dim, 1, dim);
    lw.wq = make_weight(name("wq"),
                        adjacent_pairs_to_rotate_half(*model, wq + l * dim * dim, h.n_heads, head_dim, dim), dim,
                        dim);
    lw.wk = make_weight(name("wk"),
                        adjacent_pairs_to_rotate_half(*model, wk + l * kv_dim * dim, h.n_kv_heads, head_dim, dim),
                        kv_dim, dim);
    lw.wv = make_weight(name("wv"), wv + l * kv_dim * dim, kv_dim, dim);
    lw.wo = make_weight(name("wo"), wo + l * dim * dim, dim, dim);
    lw.ffn_norm = make_weight(name("rms_ffn"), rms_ffn + l * dim, 1, dim);
    lw.w_gate = make_weight(name("w1"), w1 + l * hidden * dim, hidden, dim);
    lw.w_down = make_weight(name("w2"), w2 + l * dim * hidden, dim, hidden);
    lw.w_up = make_weight(name("w3"), w3 + l * hidden * dim, hidden, dim);
  }
  model->mappings.push_back(std::move(file));

  if (opt.load_tokenizer) {
    model->tokenizer = find_tokenizer(bin_path, vocab, opt);
    if (model->tokenizer && model->tokenizer->vocab_size() > vocab)
      fail("llama2c: {}: tokenizer has {} tokens but the model's vocab_size is {}", bin_path,
           model->tokenizer->vocab_size(), vocab);
  }
  return model;
}

}  // namespace qforge
