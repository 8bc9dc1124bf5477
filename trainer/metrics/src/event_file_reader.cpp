// event_file_reader.cpp — strict TFRecord reader for event files: every CRC checked, any
// damage is an error. No recovery of partial files.
#include <cddp/metrics/event_file_reader.h>

#include <cddp/metrics/crc32c.h>

#include "event_codec.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace cddp {
namespace {

uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

void collect(void* context, const metrics_detail::DecodedEvent& event) {
  auto* record = static_cast<EventRecord*>(context);
  record->wall_time = event.wall_time;
  record->step = event.step;
  if (event.what == 1) record->file_version.assign(event.file_version, event.file_version_len);
  for (const auto& v : event.values) {
    record->values.push_back(EventValue{std::string(v.tag, v.tag_len), v.has_simple_value, v.simple_value});
  }
}

}  // namespace

EventFileReader::EventFileReader(std::filesystem::path path) : path_(std::move(path)) {}

std::vector<EventRecord> EventFileReader::read_all() const {
  const std::string src = path_.string();
  std::ifstream in(path_, std::ios::binary);
  if (!in) throw std::runtime_error(src + ": cannot open the event file: " + std::strerror(errno));
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<EventRecord> records;
  size_t pos = 0;
  for (size_t index = 0; pos < bytes.size(); ++index) {
    const std::string where = src + ": record " + std::to_string(index) + " at offset " + std::to_string(pos) + ": ";
    if (bytes.size() - pos < 12) {
      throw std::runtime_error(where + "truncated header (" + std::to_string(bytes.size() - pos) +
                               " bytes left, a record header is 12)");
    }
    const uint8_t* p = bytes.data() + pos;
    uint64_t length = 0;
    for (int i = 7; i >= 0; --i) length = (length << 8) | p[i];
    const uint32_t stored_len_crc = get_u32(p + 8), len_crc = masked_crc32c(p, 8);
    if (stored_len_crc != len_crc) {
      throw std::runtime_error(where + "length CRC mismatch (stored " + hex32(stored_len_crc) + ", computed " +
                               hex32(len_crc) + ")");
    }
    if (length > bytes.size() - pos - 12 || bytes.size() - pos - 12 - length < 4) {
      throw std::runtime_error(where + "truncated data (the header declares " + std::to_string(length) +
                               " bytes + 4 CRC bytes, " + std::to_string(bytes.size() - pos - 12) + " are left)");
    }
    const uint8_t* data = p + 12;
    const uint32_t stored_crc = get_u32(data + length), crc = masked_crc32c(data, size_t(length));
    if (stored_crc != crc) {
      throw std::runtime_error(where + "data CRC mismatch (stored " + hex32(stored_crc) + ", computed " + hex32(crc) +
                               ")");
    }
    EventRecord record;
    record.offset = pos;
    if (length > (uint64_t{1} << 31) - 1 || !metrics_detail::decode_event(data, size_t(length), &collect, &record)) {
      throw std::runtime_error(where + "data is not a valid Event message");
    }
    records.push_back(std::move(record));
    pos += 12 + size_t(length) + 4;
  }
  return records;
}

}  // namespace cddp
