// Picking the tokenizer of a model directory. tokenizer.json wins when both files are present:
// transformers writes it as the "fast" tokenizer and it carries the added tokens and the
// post-processor, which a bare tokenizer.model lacks.
#include "qforge/error.h"
#include "qforge/mmap.h"
#include "qforge/tokenizer.h"

namespace qforge {

std::unique_ptr<Tokenizer> load_tokenizer_dir(const std::string& dir) {
  if (file_exists(dir + "/tokenizer.json")) return load_hf_tokenizer_json(dir + "/tokenizer.json", dir);
  if (file_exists(dir + "/tokenizer.model")) return load_sentencepiece(dir + "/tokenizer.model", dir);
  if (!is_directory(dir)) fail("tokenizer: {}: not a directory", dir);
  fail("tokenizer: {}: no tokenizer.json or tokenizer.model in this directory", dir);
}

}  // namespace qforge
