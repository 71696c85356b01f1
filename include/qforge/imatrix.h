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
#include <map>
#include <string>
#include <vector>

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

}  // namespace qforge
