// safetensors: writer/reader round trips, sharded checkpoints, the real stories260K file, and
// hostile input (every rejection must name the file and, where there is one, the tensor).
#include "qforge/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "qforge/error.h"
#include "test_util.h"

namespace qforge {
namespace {

using test::TempDir;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Writes a file by hand: the length field, then `header` as given, then `data_bytes` bytes.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes,
               std::optional<uint64_t> length_field = std::nullopt) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = length_field.value_or(header.size());
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(header.data(), std::streamsize(header.size()));
  std::vector<char> zeros(data_bytes, 0);
  f.write(zeros.data(), std::streamsize(zeros.size()));
}

// Runs `fn`, expects a BadInput error whose message contains every one of `parts`.
template <typename Fn>
void expect_bad_input(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown; expected one mentioning " << parts.front();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput) << e.what();
    EXPECT_EQ(e.exit_code(), 2);
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\n  lacks: " << p;
  }
}

void expect_file_error(const std::string& path, const std::vector<std::string>& parts) {
  auto all = parts;
  all.insert(all.begin(), "safetensors: " + path + ": ");
  expect_bad_input([&] { SafetensorsFile::open(path); }, all);
}

TEST(Safetensors, RoundTripAllDtypes) {
  TempDir tmp;
  const std::string path = tmp / "all.safetensors";
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Spec> specs = {
      {"f32", DType::F32, {3, 5}},  {"f16", DType::F16, {7}},      {"bf16", DType::BF16, {2, 3, 4}},
      {"i8", DType::I8, {13}},      {"u8", DType::U8, {1, 9}},     {"i32", DType::I32, {6}},
      {"i64", DType::I64, {2, 2}},  {"bool", DType::BOOL, {5}},    {"f64", DType::F64, {3}},
      {"i16", DType::I16, {4, 1}},
  };
  std::vector<std::vector<uint8_t>> payloads;
  {
    SafetensorsWriter w(path, {{"format", "pt"}, {"source", "qforge test"}});
    for (const auto& s : specs) w.declare(s.name, s.dtype, s.shape);
    for (size_t i = 0; i < specs.size(); ++i) {
      TensorView v;
      v.shape = specs[i].shape;
      payloads.push_back(random_bytes(size_t(v.numel()) * dtype_info(specs[i].dtype).block_bytes, uint32_t(i)));
      w.write(payloads.back().data(), payloads.back().size());
    }
    const uint64_t expected_size = w.total_bytes();
    w.finish();
    EXPECT_EQ(file_size(path), expected_size);
  }
  EXPECT_EQ(dir_entries(tmp.path.string()), std::vector<std::string>{"all.safetensors"});  // no temp file left

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->data_offset() % 8, 0u) << "data section must start 8-byte aligned";
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("source"), "qforge test");
  ASSERT_EQ(f->tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(f->tensors()[i].name, specs[i].name) << "tensors() must be in data-section (declaration) order";
    const TensorView* t = f->find(specs[i].name);
    ASSERT_NE(t, nullptr) << specs[i].name;
    EXPECT_EQ(t->dtype, specs[i].dtype);
    EXPECT_EQ(t->shape, specs[i].shape);
    EXPECT_EQ(t->file, path);
    ASSERT_EQ(t->nbytes, payloads[i].size());
    EXPECT_EQ(std::memcmp(t->data, payloads[i].data(), t->nbytes), 0) << specs[i].name;
    // Zero-copy: the view points into the mapping.
    EXPECT_GE(t->data, f->mapping()->data());
    EXPECT_LE(t->data + t->nbytes, f->mapping()->data() + f->mapping()->size());
  }
  EXPECT_EQ(f->find("nope"), nullptr);
}

TEST(Safetensors, ChunkedWritesAcrossTensorBoundaries) {
  TempDir tmp;
  const std::string path = tmp / "chunks.safetensors";
  const auto a = random_bytes(4 * 37, 1), b = random_bytes(2 * 11, 2), c = random_bytes(8 * 5, 3);
  std::vector<uint8_t> all;
  for (const auto* v : {&a, &b, &c}) all.insert(all.end(), v->begin(), v->end());
  {
    SafetensorsWriter w(path);
    w.declare("a", DType::F32, {37});
    w.declare("b", DType::BF16, {11});
    w.declare("c", DType::I64, {5});
    // Odd chunk sizes, some spanning two tensors at once.
    size_t pos = 0, chunk = 1;
    while (pos < all.size()) {
      size_t k = std::min(chunk, all.size() - pos);
      w.write(all.data() + pos, k);
      pos += k;
      chunk = chunk * 3 + 1;
    }
    w.finish();
  }
  auto f = SafetensorsFile::open(path);
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_EQ(std::memcmp(f->find("a")->data, a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(f->find("b")->data, b.data(), b.size()), 0);
  EXPECT_EQ(std::memcmp(f->find("c")->data, c.data(), c.size()), 0);
}

TEST(Safetensors, ZeroDimAndEmptyTensors) {
  TempDir tmp;
  const std::string path = tmp / "odd.safetensors";
  const float scalar = 3.5f, after = -1.25f;
  {
    SafetensorsWriter w(path);
    w.declare("empty_first", DType::F32, {0});
    w.declare("scalar", DType::F32, {});
    w.declare("empty_2d", DType::F16, {3, 0});
    w.declare("after", DType::F32, {1});
    w.declare("empty_last", DType::I8, {0, 4});
    w.write(&scalar, 4);
    w.write(&after, 4);
    w.finish();
  }
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), 5u);
  const TensorView* s = f->find("scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->numel(), 1);
  EXPECT_EQ(s->nbytes, 4u);
  float got;
  std::memcpy(&got, s->data, 4);
  EXPECT_EQ(got, scalar);
  std::memcpy(&got, f->find("after")->data, 4);
  EXPECT_EQ(got, after);
  EXPECT_EQ(f->find("empty_2d")->shape, (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(f->find("empty_2d")->nbytes, 0u);
  EXPECT_EQ(f->find("empty_first")->numel(), 0);
  EXPECT_EQ(f->find("empty_last")->nbytes, 0u);
}

TEST(Safetensors, EmptyFileWithNoTensors) {
  TempDir tmp;
  const std::string path = tmp / "none.safetensors";
  {
    SafetensorsWriter w(path);
    w.finish();
  }
  auto f = SafetensorsFile::open(path);
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->file_size(), 16u);  // "{}" padded to 8 bytes
}

TEST(Safetensors, WriterWithoutFinishLeavesNothing) {
  TempDir tmp;
  {
    SafetensorsWriter w(tmp / "a.safetensors");
    w.declare("x", DType::F32, {4});
  }
  {
    SafetensorsWriter w(tmp / "b.safetensors");
    w.declare("x", DType::F32, {4});
    float v[2] = {1, 2};
    w.write(v, sizeof v);  // half of the data, then destroyed
  }
  EXPECT_TRUE(dir_entries(tmp.path.string()).empty());
}

TEST(Safetensors, WriterMisuseThrows) {
  TempDir tmp;
  float v[4] = {};
  {
    SafetensorsWriter w(tmp / "short.safetensors");
    w.declare("x", DType::F32, {4});
    w.write(v, 8);
    try {
      w.finish();
      ADD_FAILURE() << "finish() with missing bytes must throw";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor 'x': only 8 of 16 bytes written"), std::string::npos) << e.what();
    }
  }
  {
    SafetensorsWriter w(tmp / "long.safetensors");
    w.declare("x", DType::F32, {2});
    EXPECT_THROW(w.write(v, 12), Error);
  }
  {
    SafetensorsWriter w(tmp / "late.safetensors");
    w.declare("x", DType::F32, {1});
    w.write(v, 4);
    EXPECT_THROW(w.declare("y", DType::F32, {1}), Error);
  }
  {
    SafetensorsWriter w(tmp / "dup.safetensors");
    w.declare("x", DType::F32, {1});
    EXPECT_THROW(w.declare("x", DType::F32, {1}), Error);
    EXPECT_THROW(w.declare("__metadata__", DType::F32, {1}), Error);
    EXPECT_THROW(w.declare("neg", DType::F32, {-1}), Error);
  }
  EXPECT_TRUE(dir_entries(tmp.path.string()).empty());
}

// ---- sharded checkpoints -----------------------------------------------------------------------

void write_shard(const std::string& path, const std::vector<std::pair<std::string, float>>& tensors) {
  SafetensorsWriter w(path);
  for (const auto& t : tensors) w.declare(t.first, DType::F32, {2});
  for (const auto& t : tensors) {
    float v[2] = {t.second, t.second + 1};
    w.write(v, sizeof v);
  }
  w.finish();
}

TEST(SafetensorsCheckpoint, TwoShardsAndIndex) {
  TempDir tmp;
  const std::string dir = tmp.path.string();
  write_shard(tmp / "model-00001-of-00002.safetensors", {{"a", 1}, {"b", 2}, {"unlisted", 9}});
  write_shard(tmp / "model-00002-of-00002.safetensors", {{"c", 3}});
  write_safetensors_index(dir, {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00001-of-00002.safetensors"},
                                {"c", "model-00002-of-00002.safetensors"}},
                          48);
  auto ck = SafetensorsCheckpoint::open(dir);
  EXPECT_EQ(ck.dir(), dir);
  ASSERT_EQ(ck.files().size(), 2u);  // each shard opened once
  auto all = ck.tensors();
  ASSERT_EQ(all.size(), 4u);
  std::vector<std::string> names;
  for (auto* t : all) names.push_back(t->name);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c", "unlisted"}));
  float v;
  std::memcpy(&v, ck.get("c").data, 4);
  EXPECT_EQ(v, 3.0f);
  EXPECT_EQ(ck.get("c").file, tmp / "model-00002-of-00002.safetensors");
  EXPECT_NE(ck.find("unlisted"), nullptr);
  EXPECT_EQ(ck.find("zzz"), nullptr);
  expect_bad_input([&] { ck.get("zzz"); }, {"safetensors: " + dir + ": missing tensor 'zzz'"});
  EXPECT_EQ(ck.size_on_disk(), file_size(ck.files()[0]) + file_size(ck.files()[1]));
}

TEST(SafetensorsCheckpoint, SingleFile) {
  TempDir tmp;
  write_shard(tmp / "model.safetensors", {{"w", 5}});
  auto ck = SafetensorsCheckpoint::open(tmp.path.string() + "/");
  ASSERT_EQ(ck.files().size(), 1u);
  EXPECT_EQ(ck.files()[0], tmp / "model.safetensors");  // no "dir//model.safetensors"
  EXPECT_EQ(ck.get("w").nbytes, 8u);
}

TEST(SafetensorsCheckpoint, Stories260K) {
  const std::string dir = test::shared("models/stories260K-hf");
  auto ck = SafetensorsCheckpoint::open(dir);
  ASSERT_EQ(ck.tensors().size(), 47u);
  const auto& emb = ck.get("model.embed_tokens.weight");
  EXPECT_EQ(emb.dtype, DType::F32);
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(ck.get("model.layers.0.mlp.down_proj.weight").shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(ck.get("model.layers.4.self_attn.k_proj.weight").shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(ck.get("model.norm.weight").shape, (std::vector<int64_t>{64}));
  // Values as Python's struct module reads them from the same file.
  float v[2];
  std::memcpy(v, emb.data, 8);
  EXPECT_FLOAT_EQ(v[0], -0.29474878311157227f);
  EXPECT_FLOAT_EQ(v[1], 0.5618956089019775f);
  std::vector<float> norm(64);
  std::memcpy(norm.data(), ck.get("model.norm.weight").data, 256);
  EXPECT_NEAR(std::accumulate(norm.begin(), norm.end(), 0.0), 115.95276230573654, 1e-3);
  auto f = SafetensorsFile::open(dir + "/model.safetensors");
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->data_offset(), 8u + 4856u);
  EXPECT_EQ(ck.size_on_disk(), 1044992u);
}

// ---- hostile input -----------------------------------------------------------------------------

const std::string kOneTensor = R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";

TEST(SafetensorsBadInput, Truncated) {
  TempDir tmp;
  const std::string path = tmp / "t.safetensors";
  write_raw(path, kOneTensor, 24);
  ASSERT_NO_THROW(SafetensorsFile::open(path));
  const uint64_t full = file_size(path);
  std::filesystem::resize_file(path, full - 1);  // cut into the data
  expect_file_error(path, {"tensor 'w': data_offsets [0, 24] past end of data section (23 bytes"});
  std::filesystem::resize_file(path, 20);  // cut into the header
  expect_file_error(path, {"header length", "past end of file (file size 20"});
  std::filesystem::resize_file(path, 5);  // cut into the length
  expect_file_error(path, {"file too short (5 bytes)"});
  std::filesystem::resize_file(path, 0);
  expect_file_error(path, {"file too short (0 bytes)"});
}

TEST(SafetensorsBadInput, HeaderLength) {
  TempDir tmp;
  const std::string path = tmp / "h.safetensors";
  write_raw(path, kOneTensor, 24, kOneTensor.size() + 100);
  expect_file_error(path, {"header length", "past end of file"});
  write_raw(path, kOneTensor, 24, uint64_t(1) << 62);
  expect_file_error(path, {"header length 4611686018427387904 exceeds the limit of 100000000 bytes"});
  write_raw(path, kOneTensor, 24, ~uint64_t(0));
  expect_file_error(path, {"exceeds the limit"});
}

TEST(SafetensorsBadInput, InvalidJson) {
  TempDir tmp;
  const std::string path = tmp / "j.safetensors";
  write_raw(path, R"({"w":{"dtype":"F32",)", 0);
  expect_file_error(path, {"header is not valid JSON"});
  write_raw(path, "[1, 2]", 0);
  expect_file_error(path, {"header is an array, expected a JSON object"});
  write_raw(path, R"({"w":{"extra":)" + std::string(100, '[') + std::string(100, ']') + "}}", 0);
  expect_file_error(path, {"JSON nested deeper than 32 levels (in tensor 'w')"});
  write_raw(path, kOneTensor + "x", 24);
  expect_file_error(path, {"header is not valid JSON"});
  write_raw(path, "", 0);
  expect_file_error(path, {"header is not valid JSON"});
  write_raw(path, "{\"w\xff\":1}", 0);  // invalid UTF-8
  expect_file_error(path, {"header is not valid JSON"});
}

TEST(SafetensorsBadInput, EntryFields) {
  TempDir tmp;
  const std::string path = tmp / "e.safetensors";
  write_raw(path, R"({"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': unknown dtype string 'F33' (supported: F32, F16, BF16"});
  write_raw(path, R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': unknown dtype"});
  write_raw(path, R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': missing 'dtype'"});
  write_raw(path, R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': missing 'shape'"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2]}})", 8);
  expect_file_error(path, {"tensor 'w': missing 'data_offsets'"});
  write_raw(path, R"({"w":[1,2]})", 8);
  expect_file_error(path, {"tensor 'w': entry is an array, expected an object"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":1}})", 8);
  expect_file_error(path, {"tensor '__metadata__': value of key 'k' is 1, expected a string"});
  write_raw(path, R"({"__metadata__":"x"})", 0);
  expect_file_error(path, {"tensor '__metadata__': expected an object of strings"});
}

TEST(SafetensorsBadInput, Shapes) {
  TempDir tmp;
  const std::string path = tmp / "s.safetensors";
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': shape dimension 1 is -3, expected a non-negative integer"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': shape dimension 0 is 2.0"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': shape dimension 0 is string '2'"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': shape is 2, expected an array"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': shape: size overflows 64 bits"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': shape dimension 0 is 18446744073709551615"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8);
  expect_file_error(path, {"tensor 'w': shape x dtype size: size overflows 64 bits"});
}

TEST(SafetensorsBadInput, RankLimit) {
  TempDir tmp;
  const std::string path = tmp / "r.safetensors";
  std::string dims(64 * 2 - 1, ',');
  for (size_t i = 0; i < dims.size(); i += 2) dims[i] = '1';
  write_raw(path, R"({"w":{"dtype":"U8","shape":[)" + dims + R"(],"data_offsets":[0,1]}})", 1);
  EXPECT_EQ(SafetensorsFile::open(path)->find("w")->shape.size(), 64u);
  write_raw(path, R"({"w":{"dtype":"U8","shape":[)" + dims + R"(,1],"data_offsets":[0,1]}})", 1);
  expect_file_error(path, {"tensor 'w': shape has more than 64 dimensions"});
}

TEST(SafetensorsBadInput, ShapeBytesMismatch) {
  TempDir tmp;
  const std::string path = tmp / "m.safetensors";
  write_raw(path, R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,24]}})", 24);
  expect_file_error(path, {"tensor 'w': shape [2, 3] of BF16 needs 12 bytes but data_offsets [0, 24] hold 24"});
}

TEST(SafetensorsBadInput, Offsets) {
  TempDir tmp;
  const std::string path = tmp / "o.safetensors";
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 12);
  expect_file_error(path, {"tensor 'w': data_offsets [8, 16] past end of data section (12 bytes"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 12);
  expect_file_error(path, {"tensor 'w': data_offsets [8, 0] have begin after end"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 12);
  expect_file_error(path, {"tensor 'w': data_offsets has 1 values, expected [begin, end]"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}})", 12);
  expect_file_error(path, {"tensor 'w': data_offsets value 2 is 16, expected [begin, end]"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 12);
  expect_file_error(path, {"tensor 'w': data_offsets value 0 is -8, expected [begin, end]"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":{"a":1}}})", 12);
  expect_file_error(path, {"tensor 'w': data_offsets is an object, expected [begin, end]"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}})", 12);
  expect_file_error(path, {"tensor 'w': data_offsets"});
}

TEST(SafetensorsBadInput, Overlap) {
  TempDir tmp;
  const std::string path = tmp / "ov.safetensors";
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},)"
            R"("c":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
            20);
  expect_file_error(path, {"tensor 'b': data_offsets [12, 20] overlap tensor 'a' [0, 16]"});
  // Same range twice.
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
            4);
  expect_file_error(path, {"overlap tensor '"});
  // An empty tensor inside another's range is not an overlap; holes are allowed.
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("c":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
            R"("d":{"dtype":"U8","shape":[2],"data_offsets":[18,20]}})",
            20);
  EXPECT_NO_THROW(SafetensorsFile::open(path));
}

TEST(SafetensorsBadInput, DuplicateNames) {
  TempDir tmp;
  const std::string path = tmp / "d.safetensors";
  write_raw(path,
            R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            8);
  expect_file_error(path, {"tensor 'w': appears twice"});
  write_raw(path, R"({"w":{"dtype":"F32","shape":[1],"dtype":"F16","data_offsets":[0,4]}})", 4);
  expect_file_error(path, {"tensor 'w': duplicate key 'dtype'"});
  write_raw(path, R"({"w":{"dtype":"F32","x":[1],"shape":[1],"x":2,"data_offsets":[0,4]}})", 4);
  expect_file_error(path, {"tensor 'w': duplicate key 'x'"});
  write_raw(path, R"({"__metadata__":{"a":"1","a":"2"}})", 0);
  expect_file_error(path, {"tensor '__metadata__': duplicate key 'a'"});
  write_raw(path, R"({"__metadata__":{},"__metadata__":{}})", 0);
  expect_file_error(path, {"tensor '__metadata__': appears twice"});
}

TEST(Safetensors, UnknownKeysAreIgnored) {
  TempDir tmp;
  const std::string path = tmp / "u.safetensors";
  write_raw(path,
            R"({"w":{"note":{"a":[1,{"b":null}],"c":"x"},"dtype":"F32","shape":[1],"more":[true,1.5],)"
            R"("data_offsets":[0,4],"last":null},"__metadata__":{"k":"v"}}   )",
            4);
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->find("w")->shape, std::vector<int64_t>{1});
  EXPECT_EQ(f->metadata().at("k"), "v");
}

TEST(SafetensorsBadInput, LongNamesAreCutInMessages) {
  TempDir tmp;
  const std::string path = tmp / "n.safetensors";
  const std::string name(100000, 'x');
  write_raw(path, "{\"" + name + R"(":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", 8);
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_LT(std::string(e.what()).size(), 1000u);
    EXPECT_NE(std::string(e.what()).find("(100000 bytes)"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsBadInput, ParseFromMemoryUsesName) {
  const std::string bad = "\x04\0\0\0\0\0\0\0{}";
  expect_bad_input(
      [&] { SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(bad.data()), 10, "<mem>"); },
      {"safetensors: <mem>: header length 4 past end of file"});
  std::string good = std::string("\x02\0\0\0\0\0\0\0", 8) + "{}";
  auto f = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(good.data()), good.size(), "<mem>");
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->mapping(), nullptr);
}

TEST(SafetensorsCheckpointBadInput, NoModelFiles) {
  TempDir tmp;
  const std::string dir = tmp.path.string();
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); },
                   {"safetensors: " + dir + ": no model.safetensors or model.safetensors.index.json"});
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir + "/nope"); }, {"not a directory"});
}

void write_index_text(const std::string& dir, const std::string& text) {
  std::ofstream(dir + "/model.safetensors.index.json") << text;
}

TEST(SafetensorsCheckpointBadInput, MissingShard) {
  TempDir tmp;
  const std::string dir = tmp.path.string();
  write_shard(tmp / "s1.safetensors", {{"a", 1}});
  write_safetensors_index(dir, {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}, 0);
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); },
                   {"safetensors: " + dir + "/model.safetensors.index.json: tensor 'b': shard 's2.safetensors' does "
                    "not exist"});
}

TEST(SafetensorsCheckpointBadInput, TensorMissingFromShard) {
  TempDir tmp;
  const std::string dir = tmp.path.string();
  write_shard(tmp / "s1.safetensors", {{"a", 1}});
  write_shard(tmp / "s2.safetensors", {{"c", 1}});
  write_safetensors_index(dir, {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}, 0);
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); },
                   {"safetensors: " + dir + "/s2.safetensors: tensor 'b': listed in model.safetensors.index.json "
                    "but missing from this shard"});
}

TEST(SafetensorsCheckpointBadInput, TensorInTwoShards) {
  TempDir tmp;
  const std::string dir = tmp.path.string();
  write_shard(tmp / "s1.safetensors", {{"a", 1}, {"b", 2}});
  write_shard(tmp / "s2.safetensors", {{"b", 1}});
  write_safetensors_index(dir, {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}, 0);
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); },
                   {"safetensors: " + dir + ": tensor 'b': present in two shards", "s1.safetensors",
                    "s2.safetensors"});
}

TEST(SafetensorsCheckpointBadInput, BadIndex) {
  TempDir tmp;
  const std::string dir = tmp.path.string();
  const std::string index = dir + "/model.safetensors.index.json";
  write_shard(tmp / "s1.safetensors", {{"a", 1}});
  write_index_text(dir, R"({"weight_map": {"a": "../s1.safetensors"}})");
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); },
                   {"safetensors: " + index + ": tensor 'a': shard name '../s1.safetensors' must be a plain file name"});
  write_index_text(dir, R"({"weight_map": {"a": ".."}})");
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); }, {index, "tensor 'a'", "plain file name"});
  write_index_text(dir, R"({"weight_map": {"a": 3}})");
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); }, {index, "tensor 'a': shard is 3"});
  write_index_text(dir, R"({"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}})");
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); }, {index, "tensor 'a': appears twice"});
  write_index_text(dir, R"({"metadata": {}})");
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); }, {index, "missing 'weight_map'"});
  write_index_text(dir, R"({"weight_map": )");
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); }, {index, "not valid JSON"});
  expect_bad_input([&] { write_safetensors_index(dir, {{"a", "x/y.safetensors"}}, 0); }, {"plain file name"});
}

TEST(SafetensorsCheckpointBadInput, BadShardContentNamesShard) {
  TempDir tmp;
  const std::string dir = tmp.path.string();
  write_raw(tmp / "s1.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  write_safetensors_index(dir, {{"a", "s1.safetensors"}}, 0);
  expect_bad_input([&] { SafetensorsCheckpoint::open(dir); },
                   {"safetensors: " + dir + "/s1.safetensors: tensor 'a': shape [3] of F32 needs 12 bytes"});
}

}  // namespace
}  // namespace qforge
