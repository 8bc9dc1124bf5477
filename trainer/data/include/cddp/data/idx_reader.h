// idx_reader.h — reads IDX files, the format of MNIST and Fashion-MNIST, gzipped or not.
//
// Format: two zero bytes, a type code (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32,
// 0x0E f64), the number of dimensions, each dimension as a big-endian uint32, then the
// values in row-major order, big-endian. A file whose first bytes are the gzip magic
// (1f 8b) is decompressed with zlib whatever its name; any other file is read as is.
//
// Every failure — missing file, unreadable or corrupt gzip stream, bad magic, zero or absurd
// dimensions, too few or too many data bytes — throws std::runtime_error whose message
// names the path and what was expected. It will not guess at layouts or skip bad records.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace cddp {

enum class IdxType : uint8_t {
  UInt8 = 0x08,
  Int8 = 0x09,
  Int16 = 0x0B,
  Int32 = 0x0C,
  Float32 = 0x0D,
  Float64 = 0x0E,
};

// Bytes per element of `type`, or 0 for a code that is not an IdxType.
int idx_element_size(uint8_t type_code);

struct IdxArray {
  IdxType type = IdxType::UInt8;
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // the payload as stored: big-endian for multi-byte types

  int64_t numel() const;
};

// The whole file, decompressed when it starts with the gzip magic. Throws std::runtime_error.
std::vector<uint8_t> read_maybe_gzipped_file(const std::filesystem::path& path);

// Parses an IDX image already in memory; `source` names it in error messages.
IdxArray parse_idx(std::vector<uint8_t> bytes, const std::string& source);

// read_maybe_gzipped_file + parse_idx.
IdxArray read_idx(const std::filesystem::path& path);

// A contiguous CPU tensor of the matching dtype (uint8, int8, int16, int32, float32,
// float64) and shape, values converted to native byte order.
at::Tensor idx_to_tensor(const IdxArray& array);

// Writes `array` as an IDX file, gzipped when `gzip` is true (for tests and tools).
void write_idx(const std::filesystem::path& path, const IdxArray& array, bool gzip);

}  // namespace cddp
