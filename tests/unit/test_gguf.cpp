// The GGUF reader: real files from llama.cpp (stories260K, the vocabulary-only test files), typed
// metadata access, and hostile input (truncation at every cut point, bad headers, huge counts,
// bad offsets, overlaps, duplicates, wrong types), each of which must be a qforge::Error that
// names the file and the key or tensor at fault.
#include <cstring>
#include <fstream>

#include "qforge/error.h"
#include "qforge/gguf.h"
#include "test_gguf_writer.h"
#include "test_util.h"

namespace qforge {
namespace {

using test::GgufBuilder;
using test::shared;

std::string stories_gguf() { return shared("models/stories260K-gguf/stories260K.gguf"); }

std::unique_ptr<GgufFile> parse(const std::string& bytes, const std::string& name = "hostile.gguf") {
  return GgufFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
}

// Parses bytes that must be rejected; returns the message (empty, with a test failure, if accepted).
std::string parse_error(const std::string& bytes, ErrorKind kind = ErrorKind::BadInput) {
  try {
    parse(bytes);
  } catch (const Error& e) {
    EXPECT_EQ(int(e.kind()), int(kind)) << e.what();
    EXPECT_NE(std::string(e.what()).find("gguf: hostile.gguf: "), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "accepted";
  return "";
}

#define EXPECT_CONTAINS(haystack, needle) EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

std::string floats(size_t n, float start = 0.0f) {
  std::string s;
  for (size_t i = 0; i < n; ++i) GgufBuilder::put(s, start + float(i));
  return s;
}

// A small valid file with one value of every type and two tensors.
GgufBuilder every_type_file() {
  GgufBuilder b;
  b.str("general.architecture", "llama");
  b.u8("t.u8", 200);
  b.i8("t.i8", -5);
  b.u16("t.u16", 60000);
  b.i16("t.i16", -30000);
  b.u32("t.u32", 4000000000u);
  b.i32("t.i32", -7);
  b.f32("t.f32", 0.25f);
  b.boolean("t.bool", true);
  b.u64("t.u64", uint64_t(1) << 40);
  b.i64("t.i64", -(int64_t(1) << 40));
  b.f64("t.f64", 1e-6);
  b.str_array("t.strs", {"a", "", "ccc"});
  b.f32_array("t.f32s", {1.5f, -2.0f});
  b.i32_array("t.i32s", {3, -4, 5});
  b.tensor("w", 0, {4, 2}, floats(8));
  b.tensor("v", 1, {4}, std::string(8, '\x3c'));
  return b;
}

// ---- real files -------------------------------------------------------------------------------

TEST(GgufReader, Stories260K) {
  const auto f = GgufFile::open(stories_gguf());
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->metadata().size(), 19u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_u32("llama.block_count"), 5u);
  EXPECT_EQ(f->get_u32("llama.attention.head_count_kv"), 4u);
  EXPECT_FLOAT_EQ(f->get_f32("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").size(), 512u);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens")[1], "<s>");
  EXPECT_EQ(f->get_f32_array("tokenizer.ggml.scores").size(), 512u);
  EXPECT_EQ(f->get_i32_array("tokenizer.ggml.token_type")[0], 2);
  ASSERT_EQ(f->tensors().size(), 48u);
  const GgufTensor* t = f->find_tensor("blk.0.ffn_down.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->ne, (std::vector<uint64_t>{172, 64}));
  EXPECT_EQ(t->shape(), (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(t->nbytes, 172u * 64u * 4u);
  EXPECT_EQ(t->type, kGgmlTypeF32);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  EXPECT_EQ(t->data, f->mapping()->data() + f->data_offset() + t->offset);
  const TensorView v = f->tensor_view(*t);
  EXPECT_EQ(v.shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(v.dtype, DType::F32);
  EXPECT_EQ(v.nbytes, t->nbytes);
  // The last tensor ends exactly at the end of the file.
  uint64_t end = 0;
  for (const auto& x : f->tensors()) end = std::max(end, f->data_offset() + x.offset + x.nbytes);
  EXPECT_EQ(end, f->file_size());
}

TEST(GgufReader, VocabularyOnlyFilesEndBeforeTheDataSection) {
  for (const char* name : {"ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf"}) {
    const auto f = GgufFile::open(shared(std::string("tokenizers/") + name));
    EXPECT_TRUE(f->tensors().empty());
    EXPECT_GT(f->data_offset(), f->file_size()) << name;  // no padding written after the metadata
    EXPECT_GT(f->get_string_array("tokenizer.ggml.tokens").size(), 30000u);
  }
}

TEST(GgufReader, GgmlTypeTable) {
  EXPECT_STREQ(ggml_type_info(12)->name, "Q4_K");
  EXPECT_EQ(ggml_type_info(12)->block_elems, 256u);
  EXPECT_EQ(ggml_type_info(12)->block_bytes, 144u);
  EXPECT_EQ(ggml_type_info(8)->block_bytes, 34u);   // Q8_0: f16 scale + 32 int8
  EXPECT_EQ(ggml_type_info(14)->block_bytes, 210u);  // Q6_K
  EXPECT_EQ(ggml_type_info(4), nullptr);  // retired Q4_2
  EXPECT_EQ(ggml_type_info(31), nullptr);
  EXPECT_EQ(ggml_type_info(1000), nullptr);
  EXPECT_EQ(ggml_type_dtype(30), DType::BF16);
  EXPECT_EQ(ggml_type_dtype(2), DType::Q4_0);
  EXPECT_FALSE(ggml_type_dtype(9).has_value());  // Q8_1 has no qforge storage type
  // The reader's block sizes and the quantizers' agree for every type both know.
  for (uint32_t id = 0; id < 64; ++id) {
    const auto dt = ggml_type_dtype(id);
    if (!dt || !ggml_type_info(id)) continue;
    EXPECT_EQ(ggml_type_info(id)->block_elems, dtype_info(*dt).block_elems) << "ggml type " << id;
    EXPECT_EQ(ggml_type_info(id)->block_bytes, dtype_info(*dt).block_bytes) << "ggml type " << id;
  }
}

// ---- metadata access --------------------------------------------------------------------------

TEST(GgufReader, TypedGetters) {
  const std::string bytes = every_type_file().build();
  const auto f = parse(bytes);
  EXPECT_EQ(f->get_u32("t.u8"), 200u);
  EXPECT_EQ(f->get_u32("t.u16"), 60000u);
  EXPECT_EQ(f->get_u32("t.u32"), 4000000000u);
  EXPECT_EQ(f->get_u64("t.u64"), uint64_t(1) << 40);
  EXPECT_FLOAT_EQ(f->get_f32("t.f32"), 0.25f);
  EXPECT_FLOAT_EQ(f->get_f32("t.f64"), 1e-6f);
  EXPECT_TRUE(f->get_bool("t.bool"));
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_string_array("t.strs"), (std::vector<std::string_view>{"a", "", "ccc"}));
  EXPECT_EQ(f->get_f32_array("t.f32s"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f->get_i32_array("t.i32s"), (std::vector<int32_t>{3, -4, 5}));
  EXPECT_EQ(f->get_u32("absent", 7u), 7u);
  EXPECT_EQ(f->get_string("absent", "x"), "x");
  EXPECT_EQ(f->find("t.strs")->type_str(), "array of 3 string");

  const auto error_of = [&](auto&& call) -> std::string {
    try {
      call();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error_of([&] { f->get_u32("missing.key"); }), "gguf: hostile.gguf: key 'missing.key': missing");
  EXPECT_EQ(error_of([&] { f->get_u32("general.architecture"); }),
            "gguf: hostile.gguf: key 'general.architecture': expected u32, found string");
  EXPECT_EQ(error_of([&] { f->get_u32("t.i8"); }), "gguf: hostile.gguf: key 't.i8': value -5 is out of range for u32");
  EXPECT_EQ(error_of([&] { f->get_u32("t.u64"); }),
            "gguf: hostile.gguf: key 't.u64': value 1099511627776 is out of range for u32");
  EXPECT_EQ(error_of([&] { f->get_f32("t.u32"); }), "gguf: hostile.gguf: key 't.u32': expected f32, found u32");
  EXPECT_EQ(error_of([&] { f->get_bool("t.u8"); }), "gguf: hostile.gguf: key 't.u8': expected bool, found u8");
  EXPECT_EQ(error_of([&] { f->get_string("t.strs"); }),
            "gguf: hostile.gguf: key 't.strs': expected string, found array of 3 string");
  EXPECT_EQ(error_of([&] { f->get_string_array("t.f32s"); }),
            "gguf: hostile.gguf: key 't.f32s': expected an array of string, found array of 2 f32");
  EXPECT_EQ(error_of([&] { f->get_f32_array("t.i32s"); }),
            "gguf: hostile.gguf: key 't.i32s': expected an array of f32, found array of 3 i32");
  EXPECT_EQ(error_of([&] { f->get_i32_array("t.strs"); }),
            "gguf: hostile.gguf: key 't.strs': expected an array of i32, found array of 3 string");

  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensors()[1].name, "v");
  EXPECT_EQ(f->tensor_view(f->tensors()[1]).dtype, DType::F16);
  EXPECT_EQ(f->tensors()[1].offset, 32u);  // placed at the next multiple of the alignment
}

TEST(GgufReader, Version2AndCustomAlignmentAndEmptyTensors) {
  GgufBuilder b;
  b.version = 2;
  b.alignment = 64;
  b.u32("general.alignment", 64);
  b.tensor("a", 0, {3}, floats(3));
  b.tensor("empty", 0, {0, 5}, "");
  b.tensor("b", 0, {2}, floats(2));
  const std::string bytes = b.build();
  const auto f = parse(bytes);
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->find_tensor("b")->offset, 64u);
  EXPECT_EQ(f->find_tensor("empty")->nbytes, 0u);
  float x;
  std::memcpy(&x, f->find_tensor("b")->data + 4, 4);
  EXPECT_EQ(x, 1.0f);
}

TEST(GgufReader, QuantizedTensorsMapToQforgeBlockTypes) {
  GgufBuilder b;
  b.tensor("q", 12, {512, 2}, std::string(2 * 2 * 144, '\0'));  // Q4_K: 2 rows of 2 blocks
  const std::string bytes = b.build();
  const auto f = parse(bytes);
  EXPECT_EQ(f->tensors()[0].nbytes, 576u);
  EXPECT_EQ(f->tensors()[0].type_info().name, std::string("Q4_K"));
  const TensorView v = f->tensor_view(f->tensors()[0]);
  EXPECT_EQ(v.dtype, DType::Q4_K);
  EXPECT_EQ(v.shape, (std::vector<int64_t>{2, 512}));
  EXPECT_EQ(v.nbytes, 576u);
}

TEST(GgufReader, TypesWithoutAQforgeRowHaveNoTensorView) {
  GgufBuilder b;
  b.tensor("q", 9, {64, 2}, std::string(2 * 2 * 36, '\0'));  // Q8_1: 2 rows of 2 blocks
  const auto f = parse(b.build());
  try {
    f->tensor_view(f->tensors()[0]);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported);
    EXPECT_CONTAINS(e.what(), "tensor 'q': ggml type Q8_1");
  }
}

// ---- hostile input ----------------------------------------------------------------------------

TEST(GgufHostile, TruncatedAtEveryCutPoint) {
  const std::string bytes = every_type_file().build();
  ASSERT_NO_THROW(parse(bytes));
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    parse_error(bytes.substr(0, cut));
  }
}

TEST(GgufHostile, RealFileTruncated) {
  std::ifstream in(stories_gguf(), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), 1185376u);
  // Every 37th cut through the metadata and tensor infos, then a few through the data.
  std::vector<size_t> cuts;
  for (size_t c = 0; c < 14400; c += 37) cuts.push_back(c);
  for (size_t c : {20000ul, 500000ul, bytes.size() - 1}) cuts.push_back(c);
  for (size_t cut : cuts) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    const std::string msg = parse_error(bytes.substr(0, cut));
    if (cut > 14400) {
      EXPECT_CONTAINS(msg, "runs past the end of the data section");
    }
  }
}

TEST(GgufHostile, BadMagicAndVersion) {
  GgufBuilder b;
  b.magic = "GGUG";
  EXPECT_CONTAINS(parse_error(b.build()), "not a GGUF file (magic is 47475547");
  EXPECT_CONTAINS(parse_error("GG"), "not a GGUF file (magic is 4747");
  b.magic = "GGUF";
  b.version = 7;
  EXPECT_CONTAINS(parse_error(b.build()), "gguf: hostile.gguf: unknown GGUF version 7");
  b.version = 1;
  EXPECT_CONTAINS(parse_error(b.build(), ErrorKind::Unsupported), "GGUF version 1 is not supported");
  b.version = 0x03000000;
  EXPECT_CONTAINS(parse_error(b.build(), ErrorKind::Unsupported), "big-endian");
}

TEST(GgufHostile, HugeCountsFailBeforeAllocating) {
  GgufBuilder b;
  b.kv_count_override = uint64_t(1) << 60;
  EXPECT_CONTAINS(parse_error(b.build()), "header: kv_count 1152921504606846976 exceeds the limit");
  b.kv_count_override = 1000;
  EXPECT_CONTAINS(parse_error(b.build()), "header: kv_count 1000 cannot fit");
  b.kv_count_override.reset();
  b.tensor_count_override = uint64_t(1) << 60;
  EXPECT_CONTAINS(parse_error(b.build()), "header: tensor_count 1152921504606846976 cannot fit");

  // Arrays of 2^60 elements, of a fixed-size type and of strings.
  for (uint32_t elem : {0u, 12u, 8u, 9u}) {
    GgufBuilder a;
    std::string v;
    GgufBuilder::put(v, uint32_t(9));
    GgufBuilder::put(v, elem);
    GgufBuilder::put(v, uint64_t(1) << 60);
    v += std::string(64, '\0');
    a.raw_kv("big.array", v);
    EXPECT_CONTAINS(parse_error(a.build()), "key 'big.array': array of 1152921504606846976");
  }
  // Strings of 2^63 bytes.
  GgufBuilder s;
  std::string v;
  GgufBuilder::put(v, uint32_t(8));
  GgufBuilder::put(v, uint64_t(1) << 63);
  s.raw_kv("big.string", v + "abc");
  EXPECT_CONTAINS(parse_error(s.build()), "key 'big.string': string value length 9223372036854775808 runs past the end");
  // A key of 2^64 - 1 bytes.
  std::string key;
  GgufBuilder::put(key, uint64_t(-1));
  std::string bytes = "GGUF";
  GgufBuilder::put(bytes, uint32_t(3));
  GgufBuilder::put(bytes, uint64_t(0));
  GgufBuilder::put(bytes, uint64_t(1));
  bytes += key + std::string(20, 'x');
  EXPECT_CONTAINS(parse_error(bytes), "metadata entry 0 (of 1): key length 18446744073709551615 runs past the end");
}

TEST(GgufHostile, StringPastEnd) {
  GgufBuilder b;
  std::string v;
  GgufBuilder::put(v, uint32_t(8));
  GgufBuilder::put(v, uint64_t(1000));
  b.raw_kv("general.name", v + "abc");
  EXPECT_CONTAINS(parse_error(b.build()), "key 'general.name': string value length 1000 runs past the end of the file");
  // Inside an array of strings.
  GgufBuilder a;
  std::string arr;
  GgufBuilder::put(arr, uint32_t(9));
  GgufBuilder::put(arr, uint32_t(8));
  GgufBuilder::put(arr, uint64_t(2));
  GgufBuilder::put(arr, uint64_t(1));
  arr += "x";
  GgufBuilder::put(arr, uint64_t(50));
  a.raw_kv("tokenizer.ggml.tokens", arr + std::string(10, 'y'));
  EXPECT_CONTAINS(parse_error(a.build()), "key 'tokenizer.ggml.tokens': array element string length 50 runs past");
}

TEST(GgufHostile, UnknownTypes) {
  GgufBuilder b;
  std::string v;
  GgufBuilder::put(v, uint32_t(13));
  b.raw_kv("x.y", v + std::string(16, '\0'));
  EXPECT_CONTAINS(parse_error(b.build()), "key 'x.y': value type 13 is not a GGUF value type");
  GgufBuilder a;
  std::string arr;
  GgufBuilder::put(arr, uint32_t(9));
  GgufBuilder::put(arr, uint32_t(77));
  a.raw_kv("x.arr", arr + std::string(16, '\0'));
  EXPECT_CONTAINS(parse_error(a.build()), "key 'x.arr': array element type 77 is not a GGUF value type");
  GgufBuilder t;
  t.tensor("w", 99, {4}, floats(4));
  EXPECT_CONTAINS(parse_error(t.build()), "tensor 'w': unknown ggml type id 99");
  GgufBuilder retired;
  retired.tensor("w", 4, {32}, std::string(20, '\0'));  // Q4_2, removed from ggml
  EXPECT_CONTAINS(parse_error(retired.build()), "tensor 'w': unknown ggml type id 4");
}

TEST(GgufHostile, BadValues) {
  GgufBuilder b;
  b.raw_kv("flag", std::string("\x07\x00\x00\x00\x02", 5));
  EXPECT_CONTAINS(parse_error(b.build()), "key 'flag': bool value 2 is not 0 or 1");
  GgufBuilder dup;
  dup.u32("a.b", 1);
  dup.u32("a.b", 2);
  EXPECT_CONTAINS(parse_error(dup.build()), "key 'a.b': appears twice");
  // Arrays nested 9 deep.
  GgufBuilder nest;
  std::string v;
  GgufBuilder::put(v, uint32_t(9));
  for (int i = 0; i < 9; ++i) {
    GgufBuilder::put(v, uint32_t(9));
    GgufBuilder::put(v, uint64_t(1));
  }
  nest.raw_kv("deep", v + std::string(64, '\0'));
  EXPECT_CONTAINS(parse_error(nest.build()), "key 'deep': arrays nested deeper than 8 levels");
  // Two levels are fine (and are not exposed as typed arrays).
  GgufBuilder two;
  std::string w;
  GgufBuilder::put(w, uint32_t(9));
  GgufBuilder::put(w, uint32_t(9));
  GgufBuilder::put(w, uint64_t(1));
  GgufBuilder::put(w, uint32_t(4));
  GgufBuilder::put(w, uint64_t(2));
  GgufBuilder::put(w, uint64_t(0x0000000200000001));
  two.raw_kv("nested", w);
  const std::string bytes = two.build();
  EXPECT_EQ(parse(bytes)->find("nested")->type_str(), "array of 1 array");
}

TEST(GgufHostile, WrongTypeForAlignment) {
  GgufBuilder b;
  b.str("general.alignment", "32");
  EXPECT_CONTAINS(parse_error(b.build()), "key 'general.alignment': expected u32, found string");
  GgufBuilder z;
  z.u32("general.alignment", 48);
  EXPECT_CONTAINS(parse_error(z.build()), "key 'general.alignment': alignment 48 is not a power of two");
  GgufBuilder zero;
  zero.u32("general.alignment", 0);
  EXPECT_CONTAINS(parse_error(zero.build()), "alignment 0 is not a power of two");
}

TEST(GgufHostile, TensorInfos) {
  {
    GgufBuilder b;
    b.tensor("w", 0, {1, 1, 1, 1, 1}, floats(1));
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'w': n_dims is 5, must be 1..4");
  }
  {
    GgufBuilder b;
    b.tensor("w", 0, {}, floats(1));
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'w': n_dims is 0");
  }
  {
    GgufBuilder b;
    b.tensor("w", 0, {uint64_t(1) << 40, uint64_t(1) << 40}, floats(1));
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'w': shape: size overflows 64 bits");
  }
  {
    GgufBuilder b;
    b.tensor("w", 0, {uint64_t(1) << 31, uint64_t(1) << 31, 2}, floats(1));
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'w': shape [2, 2147483648, 2147483648] has more than 2^63 elements");
  }
  {
    GgufBuilder b;
    b.tensor("w", 0, {0, uint64_t(-1)}, "");
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'w': dimension 1 has size 18446744073709551615");
  }
  {
    GgufBuilder b;
    b.tensor("w", 8, {33}, std::string(34, '\0'));  // Q8_0 rows are whole 32-element blocks
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'w': row length ne[0] = 33 is not a multiple of the Q8_0 block size 32");
  }
  {
    GgufBuilder b;
    b.tensor("w", 0, {4}, floats(4));
    b.tensor("w", 0, {4}, floats(4));
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'w': appears twice (tensor infos 0 and 1)");
  }
}

TEST(GgufHostile, TensorData) {
  {
    GgufBuilder b;
    b.tensor("w", 0, {4}, floats(4));
    b.tensor("far", 0, {4}, "", uint64_t(1) << 20);
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'far': data at offset 1048576 (16 bytes of F32 [4]) runs past the end of the data section");
  }
  {
    GgufBuilder b;
    b.tensor("huge", 0, {4}, "", uint64_t(-32));
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'huge': data at offset 18446744073709551584");
  }
  {
    GgufBuilder b;
    b.tensor("w", 0, {16}, floats(16));
    b.tensor("long", 0, {17}, "", 0);  // one float more than the data section holds
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'long': data at offset 0 (68 bytes of F32 [17]) runs past");
  }
  {
    GgufBuilder b;
    b.tensor("w", 0, {4}, floats(4));
    b.tensor("odd", 0, {1}, "", 4);
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'odd': data offset 4 is not a multiple of the alignment 32");
  }
  {
    GgufBuilder b;
    b.tensor("a", 0, {16}, floats(16));
    b.tensor("b", 0, {8}, "", 32);       // inside a's 64 bytes
    b.tensor("c", 0, {8}, floats(8));    // placed after a's data (offset 64)
    EXPECT_CONTAINS(parse_error(b.build()), "tensor 'b': data [32, 64) overlaps tensor 'a' [0, 64)");
  }
  {
    // Empty tensors occupy nothing and may sit anywhere inside the data section.
    GgufBuilder b;
    b.tensor("a", 0, {16}, floats(16));
    b.tensor("e", 0, {0}, "", 32);
    const std::string bytes = b.build();
    EXPECT_NO_THROW(parse(bytes));
  }
}

TEST(GgufHostile, NamesInMessagesAreBounded) {
  GgufBuilder b;
  const std::string name = "bad\nname" + std::string(1000, 'z');
  b.tensor(name, 99, {4}, floats(4));
  const std::string msg = parse_error(b.build());
  EXPECT_CONTAINS(msg, "tensor 'bad\\x0aname");
  EXPECT_CONTAINS(msg, "(cut; 1008 bytes)");
  EXPECT_LT(msg.size(), 400u);
}

TEST(GgufHostile, OpenNamesThePath) {
  test::TempDir dir;
  const std::string path = dir / "broken.gguf";
  GgufBuilder b;
  b.tensor("w", 99, {4}, floats(4));
  b.write(path);
  try {
    GgufFile::open(path);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "gguf: " + path + ": tensor 'w': unknown ggml type id 99");
  }
}

}  // namespace
}  // namespace qforge
