// Streaming safetensors writer and the sharded-checkpoint index writer. The header must hold every
// tensor's offsets, so tensors are declared first; then data streams through in declaration order
// and never has to be held in memory as a whole.
#include <nlohmann/json.hpp>
#include <set>

#include "formats/safetensors_internal.h"
#include "qforge/error.h"
#include "qforge/safetensors.h"

namespace qforge {

namespace {

using json = nlohmann::json;

[[noreturn]] void misuse(const std::string& message) { throw Error(ErrorKind::Internal, message); }

}  // namespace

using safetensors_detail::quote_name;

SafetensorsWriter::SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata)
    : path_(std::move(path)), metadata_(std::move(metadata)) {}

// out_ (an AtomicFile) removes its temporary file unless finish() committed it.
SafetensorsWriter::~SafetensorsWriter() = default;

void SafetensorsWriter::declare(const std::string& name, DType dtype, std::vector<int64_t> shape) {
  const std::string where = fmt::format("safetensors writer: {}: tensor {}", path_, quote_name(name));
  if (out_ || finished_) misuse(where + ": declared after data writing started");
  if (name == kSafetensorsMetadataKey) misuse(where + ": name is reserved for metadata");
  for (const auto& e : entries_)
    if (e.name == name) misuse(where + ": declared twice");
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) misuse(fmt::format("{}: negative dimension {}", where, d));
    numel = checked_mul(numel, uint64_t(d), where + ": shape");
  }
  const uint64_t bytes = dtype_bytes(dtype, numel);
  const uint64_t end = checked_add(data_bytes_, bytes, where + ": data section");
  entries_.push_back({name, dtype, std::move(shape), data_bytes_, end});
  data_bytes_ = end;
}

std::string SafetensorsWriter::header_text() const {
  json header = json::object();
  if (!metadata_.empty()) header[kSafetensorsMetadataKey] = metadata_;
  for (const auto& e : entries_) {
    header[e.name] = {{"dtype", dtype_info(e.dtype).safetensors},
                      {"shape", e.shape},
                      {"data_offsets", {e.begin, e.end}}};
  }
  std::string text = header.dump();
  // Spaces after the JSON are allowed by the format; they put the data section on an 8-byte
  // boundary so that readers can use the mapped data in place.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

uint64_t SafetensorsWriter::total_bytes() const { return 8 + header_text().size() + data_bytes_; }

void SafetensorsWriter::skip_empty_tensors() {
  while (current_ < entries_.size() && written_in_current_ == entries_[current_].end - entries_[current_].begin) {
    ++current_;
    written_in_current_ = 0;
  }
}

void SafetensorsWriter::write_header() {
  const std::string text = header_text();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  out_ = std::make_unique<AtomicFile>(path_);
  out_->write(len, 8);
  out_->write(text.data(), text.size());
  skip_empty_tensors();
}

void SafetensorsWriter::write(const void* data, size_t nbytes) {
  if (finished_) misuse(fmt::format("safetensors writer: {}: write after finish()", path_));
  if (!out_) write_header();
  auto* p = static_cast<const uint8_t*>(data);
  while (nbytes > 0) {
    if (current_ >= entries_.size())
      misuse(fmt::format("safetensors writer: {}: {} bytes written past the last declared tensor", path_, nbytes));
    const Entry& e = entries_[current_];
    const uint64_t left = (e.end - e.begin) - written_in_current_;
    const size_t k = nbytes < left ? nbytes : size_t(left);
    out_->write(p, k);
    p += k;
    nbytes -= k;
    written_in_current_ += k;
    skip_empty_tensors();
  }
}

void SafetensorsWriter::finish() {
  if (finished_) misuse(fmt::format("safetensors writer: {}: finish() called twice", path_));
  if (!out_) write_header();
  if (current_ < entries_.size()) {
    const Entry& e = entries_[current_];
    misuse(fmt::format("safetensors writer: {}: tensor {}: only {} of {} bytes written ({} tensors incomplete)",
                       path_, quote_name(e.name), written_in_current_, e.end - e.begin, entries_.size() - current_));
  }
  const uint64_t expected = total_bytes();
  if (out_->offset() != expected)
    misuse(fmt::format("safetensors writer: {}: wrote {} bytes, expected {}", path_, out_->offset(), expected));
  out_->commit();
  finished_ = true;
}

void write_safetensors_index(const std::string& dir, const std::map<std::string, std::string>& weight_map,
                             uint64_t total_size) {
  const std::string path = dir + "/model.safetensors.index.json";
  for (const auto& [tensor, shard] : weight_map)
    safetensors_detail::check_shard_name(shard, "safetensors writer: " + path, tensor);
  json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  const std::string text = index.dump(2) + "\n";
  AtomicFile out(path);
  out.write(text.data(), text.size());
  out.commit();
}

}  // namespace qforge
