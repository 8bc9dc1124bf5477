// crc32c.h — CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) in portable software, and
// the "masked" form that TFRecord framing stores. Table-driven, byte at a time: plenty for
// logging. It will not use SSE4.2/ARM CRC instructions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cddp {

// CRC-32C of `size` bytes, continuing from `crc` (0 to start; pass a previous result to extend).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
inline uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t unmask_crc32c(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}
inline uint32_t masked_crc32c(const void* data, size_t size) { return mask_crc32c(crc32c(data, size)); }

}  // namespace cddp
