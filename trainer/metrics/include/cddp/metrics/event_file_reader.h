// event_file_reader.h — reads a TensorBoard event file (TFRecord-framed Event messages)
// back, verifying the masked CRC-32C of every record's length and data. For tests and
// debugging; it understands the subset of Event in proto/event.proto (file_version and
// scalar simple_value summaries) and reports other values as having no simple value.
//
// Any damage — truncated header or data, a length or data CRC mismatch, bytes that are not
// an Event — throws std::runtime_error naming the path, the record number and its byte
// offset. It will not skip damaged records or follow a file that is still growing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace cddp {

struct EventValue {
  std::string tag;
  bool has_simple_value = false;
  float simple_value = 0;
};

struct EventRecord {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;          // set for the file_version record, else empty
  std::vector<EventValue> values;    // summary values, empty for the file_version record
  uint64_t offset = 0;               // byte offset of the record in the file
};

class EventFileReader {
 public:
  explicit EventFileReader(std::filesystem::path path);

  // Every record, in file order. Throws std::runtime_error (see above).
  std::vector<EventRecord> read_all() const;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace cddp
