// libFuzzer target: the importance-matrix reader (llama-imatrix's GGUF and legacy .dat formats) on
// arbitrary bytes. It must either reject the input with a qforge::Error of kind BadInput or
// Unsupported whose message names the input, or return entries whose values are all finite and
// >= 0 (what the quantizers are promised). Anything else (a crash, a sanitizer report, another
// exception type, a broken invariant) is a bug.
//
// fuzz-seeds: repo:tests/data/imatrix/ts7-imatrix.gguf repo:tests/data/imatrix/ts7-imatrix.dat
// fuzz-max-len: 131072
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "qforge/error.h"
#include "qforge/imatrix.h"

namespace {

const std::string kName = "<fuzz>";

[[noreturn]] void broken(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_imatrix: invariant broken: %s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const qforge::ImportanceMatrix m = qforge::parse_imatrix(data, size, kName);
    if (m.entries.empty()) broken("accepted a file without entries", std::to_string(size) + " bytes");
    for (const auto& [name, v] : m.entries) {
      if (v.empty()) broken("empty entry", name);
      for (float x : v)
        if (!std::isfinite(x) || x < 0) broken("a value the quantizers would refuse", name);
    }
  } catch (const qforge::Error& e) {
    const std::string msg = e.what();
    if (e.kind() != qforge::ErrorKind::BadInput && e.kind() != qforge::ErrorKind::Unsupported)
      broken("error kind is not BadInput or Unsupported", msg);
    if (msg.rfind("imatrix: " + kName + ": ", 0) != 0 && msg.rfind("gguf: " + kName + ": ", 0) != 0)
      broken("message does not name the input", msg);
  }
  return 0;
}
