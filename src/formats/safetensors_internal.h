// Pieces shared by the safetensors reader and writer (not part of the public API).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qforge/dtype.h"

namespace qforge::safetensors_detail {

// 'name' in quotes for messages, cut to a bounded length (names come from untrusted files).
std::string quote_name(const std::string& name);

// One tensor entry of a header, checked for types and signs but not yet against the file.
struct HeaderEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // every dimension >= 0
  std::array<uint64_t, 2> offsets{};
  size_t n_offsets = 0;
};
struct ParsedHeader {
  std::vector<HeaderEntry> tensors;  // in header order
  std::map<std::string, std::string> metadata;
};

// Parses a safetensors JSON header (SAX: no document is built). Fails (BadInput, prefixed by
// `origin`) on invalid JSON, a non-object header, duplicate names or keys, unknown dtypes, shapes
// that are not arrays of non-negative integers, and data_offsets that are not two of them.
ParsedHeader parse_header(const char* begin, const char* end, const std::string& origin);

// Parses JSON text, failing (BadInput, prefixed by `origin`) on syntax errors, duplicate keys at any
// level (nlohmann would silently keep the last one) and nesting deeper than a header can need.
// Keys of the objects at nesting level `name_depth` (1: the outermost object) are tensor names,
// which messages about duplicates name.
nlohmann::json parse_json_strict(const char* begin, const char* end, const std::string& origin, size_t name_depth);

// Shard names in an index must be plain file names inside the checkpoint directory.
void check_shard_name(const std::string& shard, const std::string& origin, const std::string& tensor);

}  // namespace qforge::safetensors_detail
