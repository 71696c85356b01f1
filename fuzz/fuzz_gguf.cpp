// libFuzzer target: the GGUF reader on arbitrary bytes, then the tokenizer its metadata describes.
// The reader must either reject the input with a qforge::Error (BadInput or Unsupported, message
// naming the input) or return tensors that lie inside the input, aligned, with byte counts that
// agree with type and shape, and metadata whose typed getters either answer or fail cleanly.
// Whatever tokenizer the metadata builds is made to encode, decode and stream a short text.
// Anything else (a crash, a sanitizer report, another exception type, a broken invariant) is a bug.
//
// fuzz-seeds: models/stories260K-gguf/stories260K.gguf
// fuzz-seeds: tokenizers/ggml-vocab-llama-spm.gguf tokenizers/ggml-vocab-gpt-2.gguf
// fuzz-max-len: 65536
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "qforge/error.h"
#include "qforge/gguf.h"

namespace {

const std::string kName = "<fuzz>";

[[noreturn]] void broken(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_gguf: invariant broken: %s: %s\n", what, detail.c_str());
  std::abort();
}

void check_error(const qforge::Error& e) {
  const std::string msg = e.what();
  if (e.kind() != qforge::ErrorKind::BadInput && e.kind() != qforge::ErrorKind::Unsupported)
    broken("error kind is not BadInput or Unsupported", msg);
  // Reader errors start "gguf: <fuzz>: "; tokenizer run-time errors "tokenizer: <fuzz>: ".
  if (msg.rfind("gguf: " + kName + ": ", 0) != 0 && msg.rfind("tokenizer: " + kName + ": ", 0) != 0)
    broken("message does not name the input", msg);
}

template <typename F>
void expect_answer_or_error(F&& f) {
  try {
    f();
  } catch (const qforge::Error& e) {
    check_error(e);
  }
}

void check_tensors(const qforge::GgufFile& file, const uint8_t* data, size_t size) {
  const uint8_t* end = data + size;
  uint64_t checksum = 0;
  for (const auto& t : file.tensors()) {
    const qforge::GgmlTypeInfo* ti = qforge::ggml_type_info(t.type);
    if (!ti) broken("unknown type accepted", t.name);
    if (t.data < data + file.data_offset() || t.data > end || t.nbytes > uint64_t(end - t.data))
      broken("tensor outside input", t.name);
    if (t.offset % file.alignment() != 0) broken("misaligned offset accepted", t.name);
    if (file.find_tensor(t.name) != &t) broken("find_tensor() disagrees with tensors()", t.name);
    if (t.ne.empty() || t.ne.size() > 4) broken("dimension count", t.name);
    uint64_t numel = 1;
    for (uint64_t n : t.ne) numel *= n;  // cannot overflow: the reader checked it
    if (numel != t.numel || numel / ti->block_elems * ti->block_bytes != t.nbytes) broken("byte count", t.name);
    if (t.shape().size() != t.ne.size()) broken("shape", t.name);
    for (int64_t d : t.shape())
      if (d < 0) broken("negative dimension", t.name);
    expect_answer_or_error([&] { (void)file.tensor_view(t); });
    // Read every byte so that AddressSanitizer sees a tensor that escapes the input.
    for (uint64_t i = 0; i < t.nbytes; ++i) checksum += t.data[i];
  }
  if (checksum == 0xdeadbeefcafeULL) std::fputc(' ', stderr);  // keep the reads alive
}

void check_metadata(const qforge::GgufFile& file) {
  for (const auto& entry : file.metadata()) {
    const std::string& key = entry.first;  // (clang 14 cannot capture structured bindings)
    const qforge::GgufValue& value = entry.second;
    if (file.find(key) != &value) broken("find() disagrees with metadata()", key);
    (void)value.type_str();
    expect_answer_or_error([&] { (void)file.get_u32(key); });
    expect_answer_or_error([&] { (void)file.get_u64(key); });
    expect_answer_or_error([&] { (void)file.get_f32(key); });
    expect_answer_or_error([&] { (void)file.get_bool(key); });
    expect_answer_or_error([&] { (void)file.get_string(key); });
    expect_answer_or_error([&] { (void)file.get_string_array(key); });
    expect_answer_or_error([&] { (void)file.get_f32_array(key); });
    expect_answer_or_error([&] { (void)file.get_i32_array(key); });
  }
}

void exercise(const qforge::Tokenizer& tok) {
  static const std::string kText = "Hello,  w\xC3\xB6rld! 123\n\t<s></s><|endoftext|> \xFF\xC3";
  for (bool parse_special : {false, true}) {
    const auto ids = tok.encode(kText, true, parse_special);
    (void)tok.decode(ids);
    int prev = -1;
    for (int id : ids) {
      (void)tok.token_text(id, prev);
      (void)tok.token_piece(id);
      prev = id;
    }
  }
  for (int id : {0, tok.vocab_size() - 1, tok.vocab_size(), -1}) {
    try {
      (void)tok.decode({id});
    } catch (const qforge::Error& e) {
      check_error(e);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<qforge::GgufFile> file;
  try {
    file = qforge::GgufFile::parse(data, size, kName);
  } catch (const qforge::Error& e) {
    check_error(e);
    return 0;
  }
  if (file->file_size() != size) broken("file size", std::to_string(file->file_size()));
  check_tensors(*file, data, size);
  check_metadata(*file);
  try {
    if (auto tok = qforge::make_gguf_tokenizer(*file)) exercise(*tok);
  } catch (const qforge::Error& e) {
    check_error(e);
  }
  return 0;
}
