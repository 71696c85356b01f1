// Importance matrices as llama.cpp's llama-imatrix writes them: for every matrix of a model, the mean
// of the squared input activations per column (input feature), gathered on calibration text. The
// k-quant and 32-block quantizers weight their error by it (`qforge quantize --imatrix FILE`), as
// llama-quantize does.
//
// Two file formats, both read:
//   GGUF (llama-imatrix's default): per matrix NAME, an f32 tensor "NAME.in_sum2" (sums of squares,
//       [n_expert][n_cols]) and "NAME.counts" ([n_expert], tokens seen); keys imatrix.datasets,
//       imatrix.chunk_count, imatrix.chunk_size. Importance = in_sum2 / count (1 where count is 0).
//   legacy .dat: i32 n_entries; per entry i32 name length, name, i32 ncall, i32 n_values, f32
//       values (sums already divided by the tokens of each call and summed over ncall calls); then
//       optionally i32 chunk count, i32 dataset-name length, dataset name. Importance = value / ncall.
// Both are hostile input: every length is checked against the bytes left, and a value that is not
// finite or is negative is an error naming the file and the entry.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "qforge/model.h"

namespace qforge {

struct ImportanceMatrix {
  std::string path;
  bool legacy = false;                    // the .dat format
  int chunk_count = 0;                    // calibration chunks, when the file says
  std::vector<std::string> datasets;      // calibration files, when the file says
  std::map<std::string, std::vector<float>> entries;  // GGUF tensor name -> importance per column

  const std::vector<float>* find(const std::string& name) const {
    auto it = entries.find(name);
    return it == entries.end() ? nullptr : &it->second;
  }
};

ImportanceMatrix load_imatrix(const std::string& path);
// The same from bytes in memory (fuzzing); `name` stands for the path in messages.
ImportanceMatrix parse_imatrix(const uint8_t* data, size_t size, const std::string& name);

// ---- computing one (`qforge imatrix`) ---------------------------------------------------------

struct ImatrixOptions {
  int n_ctx = 512;             // tokens per chunk (the first set to BOS, as llama-imatrix does)
  int n_chunks = -1;           // at most this many chunks (-1 = the whole text)
  int n_threads = 0;
  bool process_output = false; // also measure the output matrix (llama-imatrix --process-output)
  std::string dataset;         // the calibration file's name, stored in the output
};

// Sums of squared activations per column and the tokens seen, per matrix (GGUF names), as
// llama-imatrix's GGUF output stores them.
struct ImatrixSums {
  struct Entry {
    std::vector<double> sum2;
    int64_t count = 0;
  };
  std::map<std::string, Entry> entries;
  int chunk_count = 0, chunk_size = 0;
  std::string dataset;
};

// Runs the model over chunks of `tokens` and accumulates, for every weight matrix, the squares of
// its input activations. progress(chunk, n_chunks) after each chunk.
ImatrixSums collect_imatrix(const Model& model, const std::vector<int>& tokens, const ImatrixOptions& opt,
                            const std::function<void(int, int)>& progress = {});

// Writes llama-imatrix's GGUF format (NAME.in_sum2, NAME.counts, imatrix.* keys) through a temporary
// file renamed into place; llama-quantize --imatrix and load_imatrix read it.
void write_imatrix_gguf(const ImatrixSums& sums, const std::string& path);

}  // namespace qforge
