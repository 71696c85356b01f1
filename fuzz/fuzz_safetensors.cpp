// libFuzzer target: the safetensors header parser on arbitrary bytes. The reader must either
// reject the input with a qforge::Error (BadInput, message naming the input) or return views that
// lie entirely inside the input and agree with their dtype and shape. Anything else (a crash, a
// sanitizer report, another exception type, a broken invariant) is a bug.
//
// fuzz-seeds: models/stories260K-hf/model.safetensors
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "qforge/error.h"
#include "qforge/safetensors.h"

namespace {

[[noreturn]] void broken(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_safetensors: invariant broken: %s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "<fuzz>";
  try {
    auto file = qforge::SafetensorsFile::parse(data, size, name);
    const uint8_t* end = data + size;
    const uint8_t* data_section = data + file->data_offset();
    uint64_t checksum = 0;
    for (const auto& t : file->tensors()) {
      if (t.data < data_section || t.data > end || t.nbytes > uint64_t(end - t.data)) broken("view outside input", t.name);
      if (t.file != name) broken("file name", t.file);
      if (file->find(t.name) != &t) broken("find() disagrees with tensors()", t.name);
      uint64_t numel = 1;
      for (int64_t d : t.shape) {
        if (d < 0) broken("negative dimension", t.name);
        numel *= uint64_t(d);  // cannot overflow: the reader checked it
      }
      if (int64_t(numel) != t.numel() || numel * qforge::dtype_info(t.dtype).block_bytes != t.nbytes)
        broken("byte count disagrees with shape", t.name);
      // Read every byte so that AddressSanitizer sees any view that escapes the input.
      for (uint64_t i = 0; i < t.nbytes; ++i) checksum += t.data[i];
    }
    if (checksum == 0xdeadbeefcafeULL) std::fputc(' ', stderr);  // keep the reads alive
  } catch (const qforge::Error& e) {
    const std::string msg = e.what();
    if (e.kind() != qforge::ErrorKind::BadInput) broken("error kind is not BadInput", msg);
    if (msg.rfind("safetensors: " + name + ": ", 0) != 0) broken("message does not name the input", msg);
  }
  return 0;
}
