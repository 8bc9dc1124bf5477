// fnv1a64.h — 64-bit FNV-1a (Fowler, Noll, Vo): h = (h XOR byte) · 0x100000001b3 over the
// bytes, from the offset basis 0xcbf29ce484222325. Used where bytes must be compared cheaply
// across ranks or files (start-up config agreement, checkpoint checksums); not a
// cryptographic hash, and it will not detect deliberate tampering.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cddp {

inline uint64_t fnv1a64(const void* data, size_t size, uint64_t seed = 0xcbf29ce484222325ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace cddp
