// The safetensors header parser: a SAX handler over nlohmann's tokenizer that builds the tensor
// list directly. No JSON document is built, so memory stays a small multiple of the header size
// (a DOM costs 20x or more for hostile headers such as a 90 MB shape array), and every rule is
// checked the moment its token arrives: duplicate names and keys (a DOM would silently keep the
// last), types, signs and the rank limit.
#include <fmt/format.h>

#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <utility>

#include "formats/safetensors_internal.h"
#include "qforge/error.h"
#include "qforge/safetensors.h"

namespace qforge::safetensors_detail {

namespace {

using json = nlohmann::json;

std::string dtype_list() {
  std::string s;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I8, DType::U8, DType::I16, DType::I32,
                  DType::I64, DType::BOOL}) {
    if (!s.empty()) s += ", ";
    s += dtype_info(t).safetensors;
  }
  return s;
}

class HeaderHandler : public nlohmann::json_sax<json> {
 public:
  HeaderHandler(const std::string& origin, ParsedHeader& out) : origin_(origin), out_(out) {}

  // Scalars. Where a scalar is allowed depends on where we are; everything else is reported with
  // its text so that the message shows what the file says.
  bool null() override { return scalar("null"); }
  bool boolean(bool v) override { return scalar(v ? "true" : "false"); }
  bool number_integer(number_integer_t v) override { return number(false, 0, fmt::format("{}", v)); }
  bool number_unsigned(number_unsigned_t v) override { return number(true, v, fmt::format("{}", v)); }
  bool number_float(number_float_t, const string_t& text) override { return number(false, 0, text); }
  bool binary(binary_t&) override { return scalar("binary data"); }

  bool string(string_t& v) override {
    if (skip_depth_ > 0) return true;
    switch (state_) {
      case State::Field:
        if (field_ == Field::Dtype) {
          auto dt = dtype_from_safetensors(v);
          if (!dt) fail("{}: unknown dtype string {} (supported: {})", where(), quote_name(v), dtype_list());
          entry_.dtype = *dt;
          state_ = State::Entry;
          return true;
        }
        break;
      case State::MetadataValue:
        out_.metadata.emplace(std::move(key_), std::move(v));
        state_ = State::Metadata;
        return true;
      default: break;
    }
    return scalar("string " + quote_name(v));
  }

  bool start_object(std::size_t) override {
    enter();
    if (skip_depth_ > 0) return ++skip_depth_, true;
    switch (state_) {
      case State::Start: state_ = State::Root; return true;
      case State::EntryValue:
        seen_ = 0;
        state_ = is_metadata_ ? State::Metadata : State::Entry;
        return true;
      case State::Field:
        if (field_ == Field::Unknown) return ++skip_depth_, true;
        break;
      default: break;
    }
    return scalar("an object");
  }

  bool start_array(std::size_t) override {
    enter();
    if (skip_depth_ > 0) return ++skip_depth_, true;
    if (state_ == State::Field) {
      if (field_ == Field::Shape || field_ == Field::Offsets) {
        state_ = State::Numbers;
        return true;
      }
      if (field_ == Field::Unknown) return ++skip_depth_, true;
    }
    return scalar("an array");
  }

  bool key(string_t& k) override {
    if (skip_depth_ > 0) return true;
    switch (state_) {
      case State::Root:
        is_metadata_ = k == kSafetensorsMetadataKey;
        if (is_metadata_ ? std::exchange(metadata_seen_, true) : !names_.insert(k).second)
          fail("{}: tensor {}: appears twice", origin_, quote_name(k));
        entry_ = {};
        entry_.name = std::move(k);
        state_ = State::EntryValue;
        return true;
      case State::Entry: {
        field_ = k == "dtype" ? Field::Dtype : k == "shape" ? Field::Shape : k == "data_offsets" ? Field::Offsets
                                                                                               : Field::Unknown;
        const unsigned bit = field_ == Field::Unknown ? 0 : 1u << unsigned(field_);
        if ((seen_ & bit) || (field_ == Field::Unknown && !unknown_keys_.insert(k).second))
          fail("{}: duplicate key {}", where(), quote_name(k));
        seen_ |= bit;
        state_ = State::Field;
        return true;
      }
      case State::Metadata:
        if (out_.metadata.count(k)) fail("{}: duplicate key {}", where(), quote_name(k));
        key_ = std::move(k);
        state_ = State::MetadataValue;
        return true;
      default: return true;  // unreachable: keys only appear inside objects
    }
  }

  bool end_object() override {
    leave();
    if (skip_depth_ > 0) return end_skipped();
    if (state_ == State::Root) {
      state_ = State::Done;
    } else if (state_ == State::Metadata) {
      state_ = State::Root;
    } else if (state_ == State::Entry) {
      static constexpr std::pair<Field, const char*> kRequired[] = {
          {Field::Dtype, "dtype"}, {Field::Shape, "shape"}, {Field::Offsets, "data_offsets"}};
      for (auto [f, name] : kRequired)
        if (!(seen_ & (1u << unsigned(f)))) fail("{}: missing '{}'", where(), name);
      unknown_keys_.clear();
      out_.tensors.push_back(std::move(entry_));
      state_ = State::Root;
    }
    return true;
  }

  bool end_array() override {
    leave();
    if (skip_depth_ > 0) return end_skipped();
    // Only the arrays of shape and data_offsets get here.
    if (field_ == Field::Offsets && entry_.n_offsets != 2)
      fail("{}: data_offsets has {} values, expected [begin, end] of non-negative integers", where(),
           entry_.n_offsets);
    state_ = State::Entry;
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 3: ..."
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    fail("{}: header is not valid JSON: {}", origin_, what);
  }

 private:
  enum class State { Start, Root, EntryValue, Entry, Field, Numbers, Metadata, MetadataValue, Done };
  enum class Field : unsigned { Dtype, Shape, Offsets, Unknown };
  // Any real header needs 3 levels; deeper nesting only appears inside ignored keys, where it is
  // only a way to make the parser work.
  static constexpr int kMaxDepth = 32;
  // More dimensions than any framework supports; checked as they arrive, so that a huge shape
  // array costs nothing.
  static constexpr size_t kMaxRank = 64;

  std::string where() const { return fmt::format("{}: tensor {}", origin_, quote_name(entry_.name)); }

  void enter() {
    if (++depth_ > kMaxDepth)
      fail("{}: JSON nested deeper than {} levels{}", origin_, kMaxDepth,
           state_ == State::Start || state_ == State::Root ? "" : " (in tensor " + quote_name(entry_.name) + ")");
  }
  void leave() { --depth_; }

  bool end_skipped() {
    if (--skip_depth_ == 0) state_ = State::Entry;  // the ignored value is complete
    return true;
  }

  // A scalar (or a container, described by `what`) wherever the state does not expect one.
  bool scalar(const std::string& what) {
    if (skip_depth_ > 0) return true;
    switch (state_) {
      case State::Start: fail("{}: header is {}, expected a JSON object", origin_, what);
      case State::EntryValue:
        if (is_metadata_) fail("{}: expected an object of strings, got {}", where(), what);
        fail("{}: entry is {}, expected an object", where(), what);
      case State::Field:
        if (field_ == Field::Unknown) {  // ignored key: any value will do
          state_ = State::Entry;
          return true;
        }
        if (field_ == Field::Dtype) fail("{}: dtype is {}, expected a string", where(), what);
        if (field_ == Field::Shape) fail("{}: shape is {}, expected an array of non-negative integers", where(), what);
        fail("{}: data_offsets is {}, expected [begin, end] of non-negative integers", where(), what);
      case State::Numbers: return number(false, 0, what);
      case State::MetadataValue: fail("{}: value of key {} is {}, expected a string", where(), quote_name(key_), what);
      default: fail("{}: unexpected {}", origin_, what);
    }
  }

  // `ok`: a non-negative integer that fits in 64 bits (nlohmann reports those as unsigned).
  bool number(bool ok, uint64_t v, const std::string& text) {
    if (skip_depth_ > 0) return true;
    if (state_ != State::Numbers) return scalar(text);
    if (field_ == Field::Shape) {
      if (!ok || v > uint64_t(std::numeric_limits<int64_t>::max()))
        fail("{}: shape dimension {} is {}, expected a non-negative integer below 2^63", where(), entry_.shape.size(),
             text);
      if (entry_.shape.size() == kMaxRank) fail("{}: shape has more than {} dimensions", where(), kMaxRank);
      entry_.shape.push_back(int64_t(v));
    } else {
      if (!ok || entry_.n_offsets == 2)
        fail("{}: data_offsets value {} is {}, expected [begin, end] of non-negative integers", where(),
             entry_.n_offsets, text);
      entry_.offsets[entry_.n_offsets++] = v;
    }
    return true;
  }

  const std::string& origin_;
  ParsedHeader& out_;
  State state_ = State::Start;
  Field field_ = Field::Unknown;
  int depth_ = 0;
  int skip_depth_ = 0;  // > 0 while inside the value of an ignored key
  bool is_metadata_ = false, metadata_seen_ = false;
  unsigned seen_ = 0;  // bit per known field of the current entry
  std::string key_;  // the current metadata key
  HeaderEntry entry_;
  std::unordered_set<std::string> names_;         // tensor names seen so far
  std::unordered_set<std::string> unknown_keys_;  // ignored keys of the current entry
};

}  // namespace

ParsedHeader parse_header(const char* begin, const char* end, const std::string& origin) {
  ParsedHeader out;
  HeaderHandler handler(origin, out);
  // strict: trailing garbage after the object is an error (trailing spaces are whitespace).
  json::sax_parse(begin, end, &handler, nlohmann::detail::input_format_t::json, /*strict=*/true);
  return out;
}

}  // namespace qforge::safetensors_detail
