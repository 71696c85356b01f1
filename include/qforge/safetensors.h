// safetensors: reader (mmap, zero-copy, hostile-input safe), sharded checkpoints, streaming writer.
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
// then the data section; data_offsets are relative to the start of the data section.
// Tensor data is used in place (zero-copy): TensorView::data points into the mapping and is only
// as aligned as the file makes it (files written by SafetensorsWriter or by Hugging Face keep the
// data section 8-byte aligned, but a reader must not assume it).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qforge/mmap.h"
#include "qforge/tensor.h"

namespace qforge {

// Largest header accepted (the limit of the reference implementation); anything larger is
// treated as hostile rather than parsed.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;
// Name of the header entry that holds the string->string metadata map.
inline constexpr const char* kSafetensorsMetadataKey = "__metadata__";

class SafetensorsFile {
 public:
  // Validates the whole header: size, JSON, dtypes, shapes vs byte counts, offsets inside the file,
  // no overlaps, no duplicates. Throws Error (BadInput) naming the file and the tensor at fault.
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Same checks on bytes already in memory (used by the fuzzer); `name` is used in messages.
  static std::unique_ptr<SafetensorsFile> parse(const uint8_t* data, size_t size, const std::string& name);

  // In data-section order (by begin offset, then name).
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }
  // Offset of the data section from the start of the file (8 + header length).
  uint64_t data_offset() const { return data_offset_; }
  // Null when the file was parse()d from caller-owned memory.
  const std::shared_ptr<MappedFile>& mapping() const { return map_; }

 private:
  void parse_into(const uint8_t* data, size_t size);
  std::string path_;
  uint64_t data_offset_ = 0;
  uint64_t size_ = 0;
  std::shared_ptr<MappedFile> map_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a Hugging Face checkpoint directory: model.safetensors, or the shards listed in
// model.safetensors.index.json (each shard opened once, every listed tensor checked present).
class SafetensorsCheckpoint {
 public:
  static SafetensorsCheckpoint open(const std::string& dir);
  const TensorView* find(const std::string& name) const;
  // Throws "safetensors: DIR: missing tensor 'name'".
  const TensorView& get(const std::string& name) const;
  std::vector<const TensorView*> tensors() const;  // sorted by name
  uint64_t size_on_disk() const;
  const std::string& dir() const { return dir_; }
  const std::vector<std::string>& files() const { return files_; }  // paths of the opened files

 private:
  std::string dir_;
  std::vector<std::string> files_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, const TensorView*> by_name_;
};

// Streaming writer: declare every tensor first (the header needs all offsets), then write data in
// declaration order, whole or in chunks. Output goes to a temp file and is renamed on finish();
// a writer destroyed (or throwing) before finish() leaves nothing at `path`. The header is padded
// with spaces so that the data section starts 8-byte aligned. Misuse (declare after the first
// write, too many bytes, finish() with bytes missing) throws.
class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata = {});
  ~SafetensorsWriter();
  void declare(const std::string& name, DType dtype, std::vector<int64_t> shape);
  // Appends bytes of the current tensor; moves to the next tensor once it is complete.
  void write(const void* data, size_t nbytes);
  void finish();  // checks all data was written, then fsync + rename
  uint64_t total_bytes() const;  // size of the finished file: 8 + padded header + data

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  void write_header();
  std::string header_text() const;  // the padded JSON header
  void skip_empty_tensors();
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
  std::unique_ptr<AtomicFile> out_;
  size_t current_ = 0;
  uint64_t written_in_current_ = 0;
  uint64_t data_bytes_ = 0;
  bool finished_ = false;
};

// Writes DIR/model.safetensors.index.json for a sharded checkpoint: {"metadata": {"total_size": N},
// "weight_map": {tensor name: shard file name}}. Shard names must be plain file names in DIR.
void write_safetensors_index(const std::string& dir, const std::map<std::string, std::string>& weight_map,
                             uint64_t total_size);

}  // namespace qforge
