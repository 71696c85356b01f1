// GGUF file (llama.cpp's format) -> Model, for the "llama" and "gpt2" architectures.
//
// Hyper-parameters come from the {arch}.* metadata keys, tensors go by llama.cpp's names
// (token_embd.weight, blk.N.attn_q.weight, ...). GGUF stores a matrix of `rows` outputs by `cols`
// inputs with ne = [cols, rows] (ggml lists the innermost size first), which is the row-major
// [rows, cols] layout the engine reads, so matrices are used in place from the mapping in their
// stored type (F32, F16, BF16 or a quantized block type): the kernels convert as they read. Vectors
// (norms, biases) and any matrix type without a kernel (F64) are widened to owned F32 buffers.
//
// llama.cpp's converter reorders the rows of llama's Q and K projections (and their biases) so
// that its rotary code can pair adjacent elements; the engine pairs element i with i + head_dim/2
// as Hugging Face does, so those rows are put back (model/rotary_permute.h). GPT-2's fused
// attn_qkv is viewed as three row blocks without copying.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "formats/gguf_internal.h"
#include "kernels/weight_kernels.h"
#include "model/rotary_permute.h"
#include "qforge/error.h"
#include "qforge/gguf.h"
#include "qforge/quant.h"
#include "qforge/model.h"

namespace qforge {
namespace {

constexpr int64_t kMaxDim = int64_t(1) << 30;  // as parse_hf_config: larger hyper-parameters are hostile

class GgufBinder {
 public:
  GgufBinder(Model& m, const GgufFile& f) : m_(m), f_(f) {}

  const GgufTensor* find(const std::string& name) const { return f_.find_tensor(name); }
  std::string origin(const std::string& name) const { return f_.tensor_origin(name); }

  // `name` as an F32 weight of rows x cols (rows == 0: a vector of cols), checked against that
  // shape. permute_heads > 0 reorders rows from adjacent-pair rotary order (see file comment).
  Weight bind(const std::string& name, int64_t rows, int64_t cols, int permute_heads = 0) {
    const GgufTensor* t = f_.find_tensor(name);
    if (!t) fail("gguf: {}: missing tensor '{}'", f_.path(), name);
    const std::vector<int64_t> want = rows == 0 ? std::vector<int64_t>{cols} : std::vector<int64_t>{rows, cols};
    if (t->shape() != want)
      fail("{}: shape {} (outermost first), expected [{}] from the metadata", f_.tensor_origin(name), t->shape_str(),
           fmt::join(want, ", "));
    used_.insert(name);

    Weight w;
    w.name = name;
    w.rows = rows == 0 ? 1 : rows;
    w.cols = cols;
    const size_t n = size_t(w.rows) * size_t(w.cols);
    const auto dtype = ggml_type_dtype(t->type);
    if (!dtype)
      fail_unsupported("{}: ggml type {} is not supported yet",
                       f_.tensor_origin(name), t->type_info().name);
    const bool quantized = dtype_info(*dtype).block_elems > 1;
    if (!quantized && !dtype_info(*dtype).is_float)
      fail("{}: ggml type {} is not a floating-point type", f_.tensor_origin(name), t->type_info().name);

    // Element reads need natural alignment; a file with general.alignment 1 may not give it.
    const uint8_t* bytes = t->data;
    const size_t align = quantized ? 4 : dtype_info(*dtype).block_bytes;
    if (reinterpret_cast<uintptr_t>(bytes) % align != 0) {
      uint8_t* copy = m_.own_bytes(size_t(t->nbytes));
      std::memcpy(copy, bytes, size_t(t->nbytes));
      bytes = copy;
    }
    // Matrices stay in their stored type when a kernel reads it; vectors (norms, biases) are F32.
    const bool native = rows != 0 && (*dtype == DType::F32 || kernels::weight_kernels(*dtype));
    if (native) {
      w.dtype = *dtype;
      if (permute_heads == 0) {
        w.data = bytes;
      } else {
        uint8_t* dst = m_.own_bytes(size_t(t->nbytes));
        adjacent_pairs_to_rotate_half_rows(bytes, dst, permute_heads, int(w.rows / permute_heads), w.row_bytes());
        w.data = dst;
      }
      return w;
    }
    w.dtype = DType::F32;
    float* dst = m_.own(n);
    std::vector<float> widened(permute_heads ? n : 0);
    float* out = permute_heads ? widened.data() : dst;
    if (quantized)
      dequantize_matrix(quant_type(*dtype), bytes, out, int64_t(n / size_t(w.cols)), w.cols);
    else
      convert_to_f32(*dtype, bytes, out, n);
    if (permute_heads) adjacent_pairs_to_rotate_half(out, dst, permute_heads, int(w.rows / permute_heads), w.cols);
    w.data = dst;
    return w;
  }

  Weight bind_optional(const std::string& name, int64_t rows, int64_t cols, int permute_heads = 0) {
    return find(name) ? bind(name, rows, cols, permute_heads) : Weight{};
  }

  // Tensors that the architecture as qforge implements it does not read: a variant it would get wrong.
  void check_all_used(const std::string& arch) const {
    for (const auto& t : f_.tensors()) {
      if (used_.count(t.name)) continue;
      fail_unsupported("{}: not used by qforge's {} model (an architecture variant qforge does not implement)",
                       f_.tensor_origin(t.name), arch);
    }
  }

 private:
  Model& m_;
  const GgufFile& f_;
  std::set<std::string> used_;
};

// {arch}.KEY lookups with range checks; messages name the key.
class ConfigReader {
 public:
  ConfigReader(const GgufFile& f, std::string arch) : f_(f), arch_(std::move(arch)) {}
  std::string key(const char* k) const { return arch_ + "." + k; }
  bool has(const char* k) const { return f_.has(key(k)); }
  int positive(const char* k) const { return check_positive(k, f_.get_u32(key(k))); }
  int positive_or(const char* k, int fallback) const { return has(k) ? positive(k) : fallback; }
  float finite_f32(const char* k, float fallback) const {
    const float v = f_.get_f32(key(k), fallback);
    if (!std::isfinite(v)) fail("{}: value {} is not a finite number", f_.key_origin(key(k)), v);
    return v;
  }
  const GgufFile& file() const { return f_; }

 private:
  int check_positive(const char* k, uint32_t v) const {
    if (v == 0 || v > kMaxDim) fail("{}: must be a positive integer up to 2^30, got {}", f_.key_origin(key(k)), v);
    return int(v);
  }
  const GgufFile& f_;
  std::string arch_;
};

// Token id named by a tokenizer key, or -1 when absent, "none" or out of range (the tokenizer,
// when loaded, reports bad ids itself).
int token_id_or_none(const GgufFile& f, const char* key, int vocab) {
  const GgufValue* v = f.find(key);
  if (!v || !v->is_integer()) return -1;
  const bool is_signed = v->type == GgufType::I8 || v->type == GgufType::I16 || v->type == GgufType::I32 ||
                         v->type == GgufType::I64;
  const int64_t id = is_signed ? v->i : (v->u < uint64_t(vocab) ? int64_t(v->u) : -1);
  return id >= 0 && id < vocab ? int(id) : -1;
}

ModelConfig read_config(const GgufFile& f, const std::string& arch_name, Arch arch) {
  const ConfigReader r(f, arch_name);
  ModelConfig c;
  c.arch = arch;
  c.model_type = arch_name;
  c.hf_architecture = arch == Arch::GPT2 ? "GPT2LMHeadModel" : "LlamaForCausalLM";
  c.n_embd = r.positive("embedding_length");
  c.n_ff = r.positive("feed_forward_length");
  c.n_layer = r.positive("block_count");
  c.n_head = r.positive("attention.head_count");
  c.n_head_kv = r.positive_or("attention.head_count_kv", c.n_head);
  c.max_ctx = r.positive_or("context_length", 2048);
  const std::string& path = f.path();

  if (r.has("attention.key_length")) {
    c.head_dim = r.positive("attention.key_length");
    const int value_length = r.positive_or("attention.value_length", c.head_dim);
    if (value_length != c.head_dim)
      fail_unsupported("{}: value heads of {} differ from key heads of {}; qforge needs them equal",
                       f.key_origin(r.key("attention.value_length")), value_length, c.head_dim);
  } else {
    if (c.n_embd % c.n_head != 0)
      fail("{}: {} does not divide {} ({})", f.key_origin(r.key("attention.head_count")), c.n_head,
           r.key("embedding_length"), c.n_embd);
    c.head_dim = c.n_embd / c.n_head;
  }
  if (c.n_head_kv > c.n_head || c.n_head % c.n_head_kv != 0)
    fail("{}: {} does not divide {} ({})", f.key_origin(r.key("attention.head_count_kv")), c.n_head_kv,
         r.key("attention.head_count"), c.n_head);

  if (arch == Arch::GPT2) {
    if (c.n_head_kv != c.n_head)
      fail("{}: GPT-2 has no grouped-query attention, but head_count_kv {} differs from head_count {}",
           f.key_origin(r.key("attention.head_count_kv")), c.n_head_kv, c.n_head);
    if (c.head_dim * c.n_head != c.n_embd)
      fail("{}: GPT-2 needs head_count x key_length = embedding_length ({} x {} != {})",
           f.key_origin(r.key("attention.key_length")), c.n_head, c.head_dim, c.n_embd);
    c.norm_eps = r.finite_f32("attention.layer_norm_epsilon", 1e-5f);
    c.act = Activation::GeluTanh;
    c.attn_qkv_bias = c.attn_out_bias = c.mlp_bias = true;
  } else {
    if (c.head_dim % 2 != 0)
      fail("gguf: {}: head size {} is odd; rotary embeddings need an even head size", path, c.head_dim);
    c.norm_eps = r.finite_f32("attention.layer_norm_rms_epsilon", 1e-5f);
    c.act = Activation::SiLU;
    const int rope_dims = r.positive_or("rope.dimension_count", c.head_dim);
    if (rope_dims != c.head_dim)
      fail_unsupported("{}: rotary embeddings over {} of {} head dimensions (partial rotary) are not supported",
                       f.key_origin(r.key("rope.dimension_count")), rope_dims, c.head_dim);
    c.rope_theta = r.finite_f32("rope.freq_base", 10000.0f);
    if (!(c.rope_theta > 0)) fail("{}: must be positive, got {}", f.key_origin(r.key("rope.freq_base")), c.rope_theta);
    const std::string scaling =
        f.get_string(r.key("rope.scaling.type"), r.has("rope.scale_linear") ? "linear" : "none");
    if (scaling == "linear") {
      // rope.scale_linear is the older spelling of the same factor.
      const char* factor_key = r.has("rope.scaling.factor") ? "rope.scaling.factor" : "rope.scale_linear";
      c.rope_scaling.type = RopeScaling::Type::Linear;
      c.rope_scaling.factor = r.finite_f32(factor_key, 1.0f);
      if (!(c.rope_scaling.factor > 0))
        fail("{}: must be positive, got {}", f.key_origin(r.key(factor_key)), c.rope_scaling.factor);
    } else if (scaling != "none") {
      fail_unsupported("{}: rope scaling {} is not supported (supported: none, linear)",
                       f.key_origin(r.key("rope.scaling.type")), gguf_detail::quote(scaling));
    }
  }
  return c;
}

void bind_llama(Model& m, GgufBinder& b) {
  const ModelConfig& c = m.cfg;
  const int64_t E = c.n_embd, Q = int64_t(c.n_head) * c.head_dim, KV = int64_t(c.n_head_kv) * c.head_dim, F = c.n_ff;
  m.tok_embd = b.bind("token_embd.weight", c.vocab_size, E);
  // Optional biases: the first layer says which ones the model has; every layer must then have them.
  m.cfg.attn_qkv_bias = b.find("blk.0.attn_q.bias") != nullptr;
  m.cfg.attn_out_bias = b.find("blk.0.attn_output.bias") != nullptr;
  m.cfg.mlp_bias = b.find("blk.0.ffn_up.bias") != nullptr;
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    LayerWeights& l = m.layers[size_t(i)];
    l.attn_norm = b.bind(p + "attn_norm.weight", 0, E);
    l.wq = b.bind(p + "attn_q.weight", Q, E, c.n_head);
    l.wk = b.bind(p + "attn_k.weight", KV, E, c.n_head_kv);
    l.wv = b.bind(p + "attn_v.weight", KV, E);
    l.wo = b.bind(p + "attn_output.weight", E, Q);
    if (c.attn_qkv_bias) {
      l.bq = b.bind(p + "attn_q.bias", 0, Q, c.n_head);
      l.bk = b.bind(p + "attn_k.bias", 0, KV, c.n_head_kv);
      l.bv = b.bind(p + "attn_v.bias", 0, KV);
    }
    if (c.attn_out_bias) l.bo = b.bind(p + "attn_output.bias", 0, E);
    l.ffn_norm = b.bind(p + "ffn_norm.weight", 0, E);
    l.w_gate = b.bind(p + "ffn_gate.weight", F, E);
    l.w_up = b.bind(p + "ffn_up.weight", F, E);
    l.w_down = b.bind(p + "ffn_down.weight", E, F);
    if (c.mlp_bias) {
      l.b_gate = b.bind_optional(p + "ffn_gate.bias", 0, F);
      l.b_up = b.bind(p + "ffn_up.bias", 0, F);
      l.b_down = b.bind(p + "ffn_down.bias", 0, E);
    }
  }
  m.out_norm = b.bind("output_norm.weight", 0, E);
  // Llama 3-style rope scaling: llama.cpp keeps the per-frequency divisors in a tensor.
  if (b.find("rope_freqs.weight")) {
    const Weight f = b.bind("rope_freqs.weight", 0, c.head_dim / 2);
    for (int64_t i = 0; i < f.cols; ++i)
      if (!(f.f32()[i] > 0) || !std::isfinite(f.f32()[i]))
        fail("{}: factor {} is {}, not a positive number", b.origin("rope_freqs.weight"), i, f.f32()[i]);
    m.cfg.rope_scaling.type = RopeScaling::Type::Factors;
    m.cfg.rope_scaling.freq_factors.assign(f.f32(), f.f32() + f.cols);
  }
}

void bind_gpt2(Model& m, GgufBinder& b) {
  const ModelConfig& c = m.cfg;
  const int64_t E = c.n_embd, F = c.n_ff;
  m.tok_embd = b.bind("token_embd.weight", c.vocab_size, E);
  m.pos_embd = b.bind("position_embd.weight", c.max_ctx, E);
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    LayerWeights& l = m.layers[size_t(i)];
    l.attn_norm = b.bind(p + "attn_norm.weight", 0, E);
    l.attn_norm_b = b.bind(p + "attn_norm.bias", 0, E);
    // attn_qkv stacks the q, k and v projections along the output axis: three row blocks.
    const Weight qkv = b.bind(p + "attn_qkv.weight", 3 * E, E);
    const Weight qkv_b = b.bind(p + "attn_qkv.bias", 0, 3 * E);
    Weight* parts[] = {&l.wq, &l.wk, &l.wv};
    Weight* biases[] = {&l.bq, &l.bk, &l.bv};
    for (int k = 0; k < 3; ++k) {
      *parts[k] = qkv.row_slice(k * E, E);
      *biases[k] = qkv_b;
      biases[k]->cols = E;
      biases[k]->data = qkv_b.f32() + k * E;
    }
    l.wo = b.bind(p + "attn_output.weight", E, E);
    l.bo = b.bind(p + "attn_output.bias", 0, E);
    l.ffn_norm = b.bind(p + "ffn_norm.weight", 0, E);
    l.ffn_norm_b = b.bind(p + "ffn_norm.bias", 0, E);
    l.w_up = b.bind(p + "ffn_up.weight", F, E);
    l.b_up = b.bind(p + "ffn_up.bias", 0, F);
    l.w_down = b.bind(p + "ffn_down.weight", E, F);
    l.b_down = b.bind(p + "ffn_down.bias", 0, E);
  }
  m.out_norm = b.bind("output_norm.weight", 0, E);
  m.out_norm_b = b.bind("output_norm.bias", 0, E);
}

std::unique_ptr<Tokenizer> load_tokenizer_override(const std::string& p) {
  namespace fs = std::filesystem;
  if (is_directory(p)) return load_tokenizer_dir(p);
  const std::string ext = fs::path(p).extension().string();
  const std::string dir = fs::path(p).parent_path().string();
  if (ext == ".gguf") return load_gguf_tokenizer(p);
  if (ext == ".json") return load_hf_tokenizer_json(p, dir);
  if (ext == ".model") return load_sentencepiece(p, dir);
  return load_llama2c_tokenizer(p);
}

const char* torch_dtype_of(uint32_t ggml_type) {
  if (ggml_type == kGgmlTypeF16) return "float16";
  if (ggml_type == kGgmlTypeBF16) return "bfloat16";
  return "float32";
}

}  // namespace

std::unique_ptr<Model> load_gguf_model(const std::string& path, const LoadOptions& opt) {
  const std::shared_ptr<GgufFile> file = GgufFile::open(path);
  const GgufFile& f = *file;
  const std::string arch_name = f.get_string("general.architecture");
  Arch arch;
  if (arch_name == "llama") arch = Arch::Llama;
  else if (arch_name == "gpt2") arch = Arch::GPT2;
  else
    fail_unsupported("{}: architecture {} is not supported (supported: llama, gpt2)",
                     f.key_origin("general.architecture"), gguf_detail::quote(arch_name));

  auto m = std::make_unique<Model>();
  m->cfg = read_config(f, arch_name, arch);
  ModelConfig& c = m->cfg;
  m->source_path = path;
  m->source_format = "gguf";
  m->size_on_disk = f.file_size();

  // The vocabulary size is the embedding's row count; {arch}.vocab_size, when present, must agree.
  const GgufTensor* embd = f.find_tensor("token_embd.weight");
  if (!embd) fail("gguf: {}: missing tensor 'token_embd.weight'", path);
  if (embd->ne.size() != 2 || embd->ne[1] == 0 || embd->ne[1] > uint64_t(kMaxDim))
    fail("{}: shape {}, expected [vocabulary size, {}]", f.tensor_origin(embd->name), embd->shape_str(), c.n_embd);
  c.vocab_size = int(embd->ne[1]);
  if (const std::string key = arch_name + ".vocab_size"; f.has(key) && f.get_u32(key) != uint32_t(c.vocab_size))
    fail("{}: {} differs from the {} rows of token_embd.weight", f.key_origin(key), f.get_u32(key), c.vocab_size);
  c.tie_embeddings = f.find_tensor("output.weight") == nullptr;
  c.torch_dtype = torch_dtype_of(embd->type);
  c.bos_token_id = token_id_or_none(f, "tokenizer.ggml.bos_token_id", c.vocab_size);
  c.eos_token_id = token_id_or_none(f, "tokenizer.ggml.eos_token_id", c.vocab_size);

  m->layers.resize(size_t(c.n_layer));
  GgufBinder b(*m, f);
  if (arch == Arch::GPT2) bind_gpt2(*m, b);
  else bind_llama(*m, b);
  m->output = c.tie_embeddings ? m->tok_embd : b.bind("output.weight", c.vocab_size, c.n_embd);
  b.check_all_used(arch_name);

  for (const auto& t : f.tensors()) m->file_tensors.push_back(f.tensor_view(t));
  m->mappings.push_back(f.mapping());

  if (opt.load_tokenizer) {
    m->tokenizer = opt.tokenizer_path.empty() ? make_gguf_tokenizer(f) : load_tokenizer_override(opt.tokenizer_path);
    if (m->tokenizer && m->tokenizer->vocab_size() > c.vocab_size)
      fail("gguf: {}: tokenizer has {} tokens but token_embd.weight has {} rows", path, m->tokenizer->vocab_size(),
           c.vocab_size);
  }
  return m;
}

}  // namespace qforge
