// Typed access to GGUF metadata. Writers differ in the integer widths they use for the same key
// (u32 in llama.cpp's converter, i32 or u64 in others), so integer getters accept any integer type
// whose value fits; anything else of the wrong type is an error naming the key and what was found.
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "formats/gguf_internal.h"
#include "qforge/error.h"
#include "qforge/gguf.h"

namespace qforge {

using gguf_detail::is_integer_type;
using gguf_detail::is_signed_type;

namespace {

// The integer value of a scalar of integer type, as (negative?, magnitude-ish) pair: either
// `neg` with the signed value in `i`, or the unsigned value in `u`.
struct IntValue {
  bool neg = false;
  int64_t i = 0;
  uint64_t u = 0;
};

IntValue int_value(GgufType t, uint64_t u, int64_t i) {
  IntValue v;
  if (is_signed_type(t)) {
    if (i < 0) {
      v.neg = true;
      v.i = i;
    } else {
      v.u = uint64_t(i);
    }
  } else {
    v.u = u;
  }
  return v;
}

// Checks v against [0, max]; fails naming `where`, the value and `type_name`.
uint64_t unsigned_in_range(const IntValue& v, uint64_t max, const std::string& where, const char* type_name) {
  if (v.neg) fail("{}: value {} is out of range for {}", where, v.i, type_name);
  if (v.u > max) fail("{}: value {} is out of range for {}", where, v.u, type_name);
  return v.u;
}

int64_t signed_in_range(const IntValue& v, int64_t min, int64_t max, const std::string& where, const char* type_name) {
  if (v.neg) {
    if (v.i < min) fail("{}: value {} is out of range for {}", where, v.i, type_name);
    return v.i;
  }
  if (v.u > uint64_t(max)) fail("{}: value {} is out of range for {}", where, v.u, type_name);
  return int64_t(v.u);
}

}  // namespace

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

namespace {

const GgufValue& required(const GgufFile& f, std::string_view key) {
  const GgufValue* v = f.find(key);
  if (!v) fail("{}: missing", f.key_origin(key));
  return *v;
}

[[noreturn]] void wrong_type(const GgufFile& f, std::string_view key, const char* expected, const GgufValue& v) {
  fail("{}: expected {}, found {}", f.key_origin(key), expected, v.type_str());
}

uint64_t as_unsigned(const GgufFile& f, std::string_view key, const GgufValue& v, uint64_t max, const char* name) {
  if (!v.is_integer()) wrong_type(f, key, name, v);
  return unsigned_in_range(int_value(v.type, v.u, v.i), max, f.key_origin(key), name);
}

float as_f32(const GgufFile& f, std::string_view key, const GgufValue& v) {
  if (v.type != GgufType::F32 && v.type != GgufType::F64) wrong_type(f, key, "f32", v);
  // An f64 beyond float's range would become infinity; say so rather than pass it on.
  if (std::isfinite(v.f) && std::fabs(v.f) > double(std::numeric_limits<float>::max()))
    fail("{}: value {} is out of range for f32", f.key_origin(key), v.f);
  return float(v.f);
}

bool as_bool(const GgufFile& f, std::string_view key, const GgufValue& v) {
  if (v.type != GgufType::BOOL) wrong_type(f, key, "bool", v);
  return v.u != 0;
}

std::string as_string(const GgufFile& f, std::string_view key, const GgufValue& v) {
  if (v.type != GgufType::STRING) wrong_type(f, key, "string", v);
  return std::string(v.str);
}

}  // namespace

uint32_t GgufFile::get_u32(std::string_view key) const {
  return uint32_t(as_unsigned(*this, key, required(*this, key), UINT32_MAX, "u32"));
}
uint32_t GgufFile::get_u32(std::string_view key, uint32_t fallback) const {
  const GgufValue* v = find(key);
  return v ? uint32_t(as_unsigned(*this, key, *v, UINT32_MAX, "u32")) : fallback;
}
uint64_t GgufFile::get_u64(std::string_view key) const {
  return as_unsigned(*this, key, required(*this, key), UINT64_MAX, "u64");
}
uint64_t GgufFile::get_u64(std::string_view key, uint64_t fallback) const {
  const GgufValue* v = find(key);
  return v ? as_unsigned(*this, key, *v, UINT64_MAX, "u64") : fallback;
}
float GgufFile::get_f32(std::string_view key) const { return as_f32(*this, key, required(*this, key)); }
float GgufFile::get_f32(std::string_view key, float fallback) const {
  const GgufValue* v = find(key);
  return v ? as_f32(*this, key, *v) : fallback;
}
bool GgufFile::get_bool(std::string_view key) const { return as_bool(*this, key, required(*this, key)); }
bool GgufFile::get_bool(std::string_view key, bool fallback) const {
  const GgufValue* v = find(key);
  return v ? as_bool(*this, key, *v) : fallback;
}
std::string GgufFile::get_string(std::string_view key) const { return as_string(*this, key, required(*this, key)); }
std::string GgufFile::get_string(std::string_view key, const std::string& fallback) const {
  const GgufValue* v = find(key);
  return v ? as_string(*this, key, *v) : fallback;
}

const std::vector<std::string_view>& GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& v = required(*this, key);
  if (v.type != GgufType::ARRAY || v.elem_type != GgufType::STRING) wrong_type(*this, key, "an array of string", v);
  return v.strings;
}

std::vector<float> GgufFile::get_f32_array(std::string_view key) const {
  const GgufValue& v = required(*this, key);
  if (v.type != GgufType::ARRAY || (v.elem_type != GgufType::F32 && v.elem_type != GgufType::F64))
    wrong_type(*this, key, "an array of f32", v);
  std::vector<float> out(size_t(v.count));
  const size_t size = gguf_detail::fixed_size(v.elem_type);
  for (uint64_t k = 0; k < v.count; ++k) {
    const double d = gguf_detail::read_scalar(v.elem_type, v.raw + k * size).f;
    if (std::isfinite(d) && std::fabs(d) > double(std::numeric_limits<float>::max()))
      fail("{}: element {}: value {} is out of range for f32", key_origin(key), k, d);
    out[size_t(k)] = float(d);
  }
  return out;
}

std::vector<int32_t> GgufFile::get_i32_array(std::string_view key) const {
  const GgufValue& v = required(*this, key);
  if (v.type != GgufType::ARRAY || !is_integer_type(v.elem_type)) wrong_type(*this, key, "an array of i32", v);
  std::vector<int32_t> out(size_t(v.count));
  const size_t size = gguf_detail::fixed_size(v.elem_type);
  for (uint64_t k = 0; k < v.count; ++k) {
    const auto s = gguf_detail::read_scalar(v.elem_type, v.raw + k * size);
    const IntValue iv = int_value(v.elem_type, s.u, s.i);
    const bool fits = iv.neg ? iv.i >= INT32_MIN : iv.u <= uint64_t(INT32_MAX);
    if (!fits) signed_in_range(iv, INT32_MIN, INT32_MAX, fmt::format("{}: element {}", key_origin(key), k), "i32");
    out[size_t(k)] = iv.neg ? int32_t(iv.i) : int32_t(iv.u);
  }
  return out;
}

}  // namespace qforge
