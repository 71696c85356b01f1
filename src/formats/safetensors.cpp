// safetensors reader and sharded-checkpoint loader. Every byte of the file is treated as hostile:
// the header is size-checked before it is parsed, the JSON is parsed with duplicate-key and
// nesting checks, and every tensor's offsets and byte count are checked against the file before a
// TensorView pointing into the mapping is handed out.
#include "qforge/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/safetensors_internal.h"
#include "qforge/error.h"

namespace qforge {

namespace {

using json = nlohmann::json;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

// What a bad JSON value looked like, without printing an unbounded amount of it.
std::string describe(const json& v) {
  switch (v.type()) {
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::null: return "null";
    case json::value_t::string: return "string " + safetensors_detail::quote_name(v.get_ref<const std::string&>());
    default: {
      std::string s = v.dump();
      return s.size() > 40 ? s.substr(0, 40) + "..." : s;
    }
  }
}

struct Range {
  uint64_t begin, end;
  size_t tensor;  // position in tensors_ before the final sort
};

}  // namespace

namespace safetensors_detail {

std::string quote_name(const std::string& name) {
  // Names come from the file: keep messages bounded even for a 100 MB name.
  constexpr size_t kMax = 200;
  if (name.size() <= kMax) return "'" + name + "'";
  return fmt::format("'{}...' ({} bytes)", name.substr(0, kMax), name.size());
}

json parse_json_strict(const char* begin, const char* end, const std::string& origin, size_t name_depth) {
  // nlohmann keeps the last of duplicate keys silently; a duplicate tensor name is an error we must
  // report, so track the keys of every open object. Nesting is capped: a valid header needs depth 3,
  // and deep nesting is only a way to make the parser allocate.
  struct Level {
    std::set<std::string> keys;
    std::string current_key;
  };
  std::vector<Level> stack;  // one per open object or array
  constexpr size_t kMaxDepth = 32;
  auto tensor_at = [&]() -> std::string {
    return stack.size() > name_depth ? " (in tensor " + quote_name(stack[name_depth - 1].current_key) + ")" : "";
  };
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (stack.size() >= kMaxDepth) fail("{}: JSON nested deeper than {} levels{}", origin, kMaxDepth, tensor_at());
        stack.emplace_back();
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case json::parse_event_t::key: {
        if (stack.empty()) break;
        const std::string& key = parsed.get_ref<const std::string&>();
        Level& level = stack.back();
        level.current_key = key;
        if (level.keys.insert(key).second) break;
        if (stack.size() == name_depth) fail("{}: tensor {}: appears twice", origin, quote_name(key));
        if (stack.size() > name_depth)
          fail("{}: tensor {}: duplicate key {}", origin, quote_name(stack[name_depth - 1].current_key), quote_name(key));
        fail("{}: duplicate key {}", origin, quote_name(key));
      }
      case json::parse_event_t::value: break;
    }
    return true;
  };
  try {
    return json::parse(begin, end, callback, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 3: ..."
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    fail("{}: header is not valid JSON: {}", origin, what);
  }
}

void check_shard_name(const std::string& shard, const std::string& origin, const std::string& tensor) {
  const bool bad = shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
                   shard.find('\\') != std::string::npos || shard.find('\0') != std::string::npos;
  if (bad)
    fail("{}: tensor {}: shard name {} must be a plain file name (no path separators, not '.' or '..')", origin,
         quote_name(tensor), quote_name(shard));
}

}  // namespace safetensors_detail

using safetensors_detail::quote_name;

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto map = MappedFile::open(path);
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map;
  f->parse_into(map->data(), map->size());
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(const uint8_t* data, size_t size, const std::string& name) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  f->parse_into(data, size);
  return f;
}

void SafetensorsFile::parse_into(const uint8_t* data, size_t size) {
  const std::string origin = "safetensors: " + path_;
  size_ = size;
  if (size < 8) fail("{}: file too short ({} bytes) to hold the 8-byte header length", origin, size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > kSafetensorsMaxHeaderBytes)
    fail("{}: header length {} exceeds the limit of {} bytes", origin, header_len, kSafetensorsMaxHeaderBytes);
  if (header_len > size - 8)
    fail("{}: header length {} past end of file (file size {}, room for {} header bytes)", origin, header_len,
         size, size - 8);
  data_offset_ = 8 + header_len;
  const uint64_t data_size = size - data_offset_;
  const uint8_t* data_section = data + data_offset_;

  const char* hb = reinterpret_cast<const char*>(data + 8);
  safetensors_detail::ParsedHeader header = safetensors_detail::parse_header(hb, hb + header_len, origin);
  metadata_ = std::move(header.metadata);

  // The header parser checked types and signs; what is left is checking sizes against the file.
  std::vector<Range> ranges;
  tensors_.reserve(header.tensors.size());
  ranges.reserve(header.tensors.size());
  for (auto& entry : header.tensors) {
    const std::string where = fmt::format("{}: tensor {}", origin, quote_name(entry.name));
    // Partial products must stay within int64 too: TensorView::numel() multiplies in int64.
    uint64_t numel = 1;
    for (int64_t d : entry.shape) {
      numel = checked_mul(numel, uint64_t(d), where + ": shape");
      if (numel > uint64_t(std::numeric_limits<int64_t>::max()))
        fail("{}: shape has more than 2^63 elements", where);
    }
    const char* dtype_name = dtype_info(entry.dtype).safetensors;
    const uint64_t need = checked_mul(numel, dtype_info(entry.dtype).block_bytes, where + ": shape x dtype size");
    const auto [begin, end] = entry.offsets;
    if (begin > end) fail("{}: data_offsets [{}, {}] have begin after end", where, begin, end);
    if (end > data_size)
      fail("{}: data_offsets [{}, {}] past end of data section ({} bytes; file size {})", where, begin, end,
           data_size, size);
    if (end - begin != need)
      fail("{}: shape [{}] of {} needs {} bytes but data_offsets [{}, {}] hold {}", where,
           fmt::join(entry.shape, ", "), dtype_name, need, begin, end, end - begin);

    ranges.push_back({begin, end, tensors_.size()});
    TensorView& view = tensors_.emplace_back();
    view.name = std::move(entry.name);
    view.dtype = entry.dtype;
    view.shape = std::move(entry.shape);
    view.data = data_section + begin;
    view.nbytes = need;
    view.file = path_;
  }

  // Overlaps: sort by start; every non-empty range must start at or after the furthest end so far.
  // Empty tensors occupy no bytes and cannot overlap anything.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Range* furthest = nullptr;
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;
    if (furthest && r.begin < furthest->end)
      fail("{}: tensor {}: data_offsets [{}, {}] overlap tensor {} [{}, {}]", origin, quote_name(tensors_[r.tensor].name),
           r.begin, r.end, quote_name(tensors_[furthest->tensor].name), furthest->begin, furthest->end);
    if (!furthest || r.end > furthest->end) furthest = &r;
  }

  // Data-section order makes sequential streaming over tensors() read the file front to back.
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorView& a, const TensorView& b) {
    return a.data != b.data ? a.data < b.data : a.name < b.name;
  });
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---- checkpoints -------------------------------------------------------------------------------

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& dir) {
  if (!is_directory(dir)) fail("safetensors: {}: not a directory", dir);
  SafetensorsCheckpoint ck;
  ck.dir_ = dir;
  // "ckpt/" and "ckpt" name the same folder; keep messages free of "ckpt//file".
  const std::string prefix = dir.back() == '/' ? dir : dir + "/";
  const std::string single = prefix + kSingleName;
  const std::string index_path = prefix + kIndexName;

  // Like transformers, a single model.safetensors wins over an index next to it.
  if (file_exists(single)) {
    ck.shards_.push_back(SafetensorsFile::open(single));
    ck.files_.push_back(single);
    for (const auto& t : ck.shards_.back()->tensors()) ck.by_name_.emplace(t.name, &t);
    return ck;
  }
  if (!file_exists(index_path)) fail("safetensors: {}: no {} or {}", dir, kSingleName, kIndexName);

  const std::string origin = "safetensors: " + index_path;
  // An index lists names only (about 100 bytes a tensor); 16 MB is far beyond any real one and
  // keeps the JSON document built from a hostile one small.
  const std::string text = read_text_file(index_path, size_t(16) << 20);
  json index = safetensors_detail::parse_json_strict(text.data(), text.data() + text.size(), origin, 2);
  if (!index.is_object()) fail("{}: index is {}, expected a JSON object", origin, describe(index));
  auto wm = index.find("weight_map");
  if (wm == index.end()) fail("{}: missing 'weight_map'", origin);
  if (!wm->is_object()) fail("{}: weight_map is {}, expected an object", origin, describe(*wm));

  // Validate every name before opening anything, then open each shard once.
  std::map<std::string, size_t> shard_index;  // shard file name -> position in shards_
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string& tensor = it.key();
    const json& shard = it.value();
    if (!shard.is_string())
      fail("{}: tensor {}: shard is {}, expected a file name", origin, quote_name(tensor), describe(shard));
    const std::string& file = shard.get_ref<const std::string&>();
    safetensors_detail::check_shard_name(file, origin, tensor);
    if (shard_index.count(file)) continue;
    if (!file_exists(prefix + file))
      fail("{}: tensor {}: shard {} does not exist in {}", origin, quote_name(tensor), quote_name(file), dir);
    shard_index.emplace(file, 0);
  }
  for (auto& [file, pos] : shard_index) {
    pos = ck.shards_.size();
    ck.files_.push_back(prefix + file);
    ck.shards_.push_back(SafetensorsFile::open(ck.files_.back()));
  }
  // Every tensor of every shard is available, listed or not; one tensor in two shards is ambiguous.
  for (const auto& shard : ck.shards_) {
    for (const auto& t : shard->tensors()) {
      auto [it, inserted] = ck.by_name_.emplace(t.name, &t);
      if (!inserted)
        fail("safetensors: {}: tensor {}: present in two shards, {} and {}", dir, quote_name(t.name), it->second->file,
             t.file);
    }
  }
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string& tensor = it.key();
    const auto& file = it.value().get_ref<const std::string&>();
    const auto& sf = *ck.shards_[shard_index.at(file)];
    if (!sf.find(tensor))
      fail("safetensors: {}: tensor {}: listed in {} but missing from this shard", sf.path(), quote_name(tensor),
           kIndexName);
  }
  return ck;
}

const TensorView* SafetensorsCheckpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorView& SafetensorsCheckpoint::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) fail("safetensors: {}: missing tensor {}", dir_, quote_name(name));
  return *t;
}

std::vector<const TensorView*> SafetensorsCheckpoint::tensors() const {
  std::vector<const TensorView*> out;
  out.reserve(by_name_.size());
  for (const auto& [name, t] : by_name_) out.push_back(t);
  return out;
}

uint64_t SafetensorsCheckpoint::size_on_disk() const {
  uint64_t total = 0;
  for (const auto& s : shards_) total += s->file_size();
  return total;
}

}  // namespace qforge
