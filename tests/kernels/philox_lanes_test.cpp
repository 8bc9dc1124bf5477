// philox_lanes_test.cpp — cddp::philox::fill_lanes and each of its paths (portable, AVX2,
// AVX-512F) against the scalar Philox4x32-10 of philox.h, word for word: block counts that are
// and are not multiples of the vector width, block numbers whose low counter word carries into
// the high one inside a call, and keys, steps and parameters whose every word matters. A path
// the CPU lacks says so and is skipped, by name.
#include "philox.h"
#include "philox_lanes.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

using cddp::philox::Key;

std::vector<uint32_t> reference(Key key, uint64_t block0, int64_t step, int64_t param, int blocks) {
  std::vector<uint32_t> out(4 * size_t(blocks));
  for (int j = 0; j < blocks; ++j) {
    const cddp::philox::Block b =
        cddp::philox::philox4x32_10(cddp::philox::randomk_counter(block0 + uint64_t(j), step, param), key);
    for (int l = 0; l < 4; ++l) out[size_t(l) * blocks + j] = b.c[l];
  }
  return out;
}

using Fill = bool (*)(Key, uint64_t, int64_t, int64_t, int, uint32_t*);

void expect_matches(const char* path, Fill fill) {
  struct Case { Key key; uint64_t block0; int64_t step, param; int blocks; };
  const Case cases[] = {
      {{0, 0}, 0, 0, 0, 64},
      {{0x12345678u, 0x9abcdef0u}, 7, 3, 11, 1},
      {{1, 2}, 64, 5, 6, 31},
      {{1, 2}, 128, 5, 6, 32},
      {{1, 2}, 192, 5, 6, 33},
      {{0xdeadbeefu, 0x01234567u}, 1000003, 1ll << 33, -1, 100},
      {{3, 4}, 0xFFFFFFF0ull, 9, 2, 64},            // the low word carries into the high one mid-call
      {{3, 4}, (5ull << 32) | 0xFFFFFFC0ull, 9, 2, 64},  // ...ending on the last low word before it
      {{3, 4}, 0x7FFFFFFFFFull, 1, 1, 17},
      {{5, 6}, 42, 1, 1, 0},
  };
  for (const Case& c : cases) {
    const std::vector<uint32_t> want = reference(c.key, c.block0, c.step, c.param, c.blocks);
    std::vector<uint32_t> got(want.size() + 1, 0xA5A5A5A5u);  // one word past the end: untouched
    if (!fill(c.key, c.block0, c.step, c.param, c.blocks, got.data())) {
      GTEST_SKIP() << path << ": this CPU lacks the instructions";
    }
    for (size_t w = 0; w < want.size(); ++w)
      ASSERT_EQ(got[w], want[w]) << path << " block0=" << c.block0 << " blocks=" << c.blocks << " word " << w;
    EXPECT_EQ(got.back(), 0xA5A5A5A5u) << path << ": wrote past the end";
  }
}

TEST(PhiloxLanes, PortablePathMatchesTheScalarGenerator) {
  expect_matches("portable", [](Key k, uint64_t b, int64_t s, int64_t p, int n, uint32_t* out) {
    cddp::philox::fill_lanes_portable(k, b, s, p, n, out);
    return true;
  });
}

TEST(PhiloxLanes, Avx2PathMatchesTheScalarGenerator) { expect_matches("avx2", &cddp::philox::fill_lanes_avx2); }

TEST(PhiloxLanes, Avx512PathMatchesTheScalarGenerator) {
  expect_matches("avx512", &cddp::philox::fill_lanes_avx512);
}

TEST(PhiloxLanes, DispatchMatchesTheScalarGenerator) {
  expect_matches("fill_lanes", [](Key k, uint64_t b, int64_t s, int64_t p, int n, uint32_t* out) {
    cddp::philox::fill_lanes(k, b, s, p, n, out);
    return true;
  });
}

}  // namespace
