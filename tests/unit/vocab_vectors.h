// Reading llama.cpp's vocabulary test vectors and text files, shared by the tokenizer tests.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace qforge::test {


inline std::string read_file(const std::string& path, size_t max_bytes = SIZE_MAX) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f) << "cannot open " << path;
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (s.size() > max_bytes) s.resize(max_bytes);
  return s;
}

// A prefix of a text file cut at a line end, so that no UTF-8 sequence is split.
inline std::string read_prefix(const std::string& path, size_t approx_bytes) {
  std::string s = read_file(path);
  if (s.size() > approx_bytes) {
    const size_t nl = s.find('\n', approx_bytes);
    if (nl != std::string::npos) s.resize(nl + 1);
  }
  return s;
}

struct Vector {
  std::string text;
  std::vector<int> ids;
};

// llama.cpp's vocabulary test files. FILE.inp holds the test strings, each followed by the line
// "__ggml_vocab_test__": the file is the concatenation of TEXT + "\n__ggml_vocab_test__\n" for each
// test, so splitting on that whole separator (newline before and after included) gives the strings
// exactly. A string may itself end in newlines ("\n\n" is one of the tests), which is why the
// newline in front of the separator belongs to the separator and not to the string. This is how
// llama.cpp's tests/test-tokenizer-0.cpp reads them. FILE.out has one line of space-separated ids
// per string (an empty line for the empty string).
inline std::vector<Vector> read_vectors(const std::string& base) {
  const std::string inp = read_file(base + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t next = inp.find(sep, pos);
    if (next == std::string::npos) {
      texts.push_back(inp.substr(pos));
      break;
    }
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream out(base + ".out");
  std::vector<Vector> vectors;
  std::string line;
  for (size_t i = 0; std::getline(out, line); ++i) {
    EXPECT_LT(i, texts.size());
    if (i >= texts.size()) break;
    Vector v{texts[i], {}};
    std::istringstream ids(line);
    for (int id; ids >> id;) v.ids.push_back(id);
    vectors.push_back(std::move(v));
  }
  EXPECT_EQ(vectors.size(), texts.size());
  return vectors;
}

inline std::string show(const std::vector<int>& ids) {
  std::string s;
  for (int id : ids) s += std::to_string(id) + " ";
  return s;
}

}  // namespace qforge::test
