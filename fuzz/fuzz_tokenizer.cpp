// libFuzzer entry point for the tokenizer loaders: the input is tried as a tokenizer.json and as a
// llama2.c tokenizer.bin; whatever parses is made to encode, decode and stream a short text.
// qforge::Error is the expected outcome for bad input; any other exception, crash, hang or huge
// allocation is a bug.
//
// fuzz-seeds: models/stories260K-llama2c/tok512.bin models/llama2-tokenizer/tokenizer.bin
// fuzz-seeds: tokenizers/gpt2-hf/tokenizer.json tokenizers/gpt2-hf/tokenizer_config.json
// fuzz-max-len: 16384
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "qforge/error.h"
#include "qforge/tokenizer.h"

namespace {

void exercise(const qforge::Tokenizer& tok, std::string_view input) {
  // Plain text, a space run, bytes that are not UTF-8, and special-token spellings; then the
  // start of the input itself, as arbitrary bytes to encode.
  static const std::string kText = "Hello,  w\xC3\xB6rld! 123\n\t<s></s><|endoftext|> \xFF\xC3";
  for (std::string_view text : {std::string_view(kText), input.substr(0, 256)}) {
    for (bool parse_special : {false, true}) {
      const auto ids = tok.encode(text, true, parse_special);
      (void)tok.decode(ids);
      int prev = -1;
      for (int id : ids) {
        (void)tok.token_text(id, prev);
        (void)tok.token_piece(id);
        prev = id;
      }
    }
  }
  (void)tok.encode("", false);
  // Ids at and past the ends of the vocabulary must be rejected cleanly.
  for (int id : {0, tok.vocab_size() - 1, tok.vocab_size(), -1}) {
    try {
      (void)tok.decode({id});
    } catch (const qforge::Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  try {
    const auto tok = qforge::parse_hf_tokenizer_json(std::string(input), "fuzz.json");
    exercise(*tok, input);
  } catch (const qforge::Error&) {
  }
  try {
    const auto tok = qforge::parse_llama2c_tokenizer(data, size, "fuzz.bin");
    exercise(*tok, input);
  } catch (const qforge::Error&) {
  }
  return 0;
}
