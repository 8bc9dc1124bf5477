// topk_kernels_emu_test.cpp — runs the CUDA top-k / random-k kernels (topk_kernels.cu, compiled
// as C++ over cuda_emu.h) on the CPU and checks them bit for bit against topk_reference.h.
// It exercises the device logic — the radix passes, the candidate buffer and its overflow
// fallback, the tie rule, the tile scan, unaligned and int64 paths — where no GPU exists. It
// says nothing about real concurrency (atomics, memory ordering) or speed: topk_cuda_test does.
#include "topk_kernels.cuh"
#include "topk_reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace ct = cddp::topk_cuda;
using cddp::testing::same_bits;

namespace {

struct Case {
  int64_t n;
  int64_t k;
  bool residual;
  bool idx64;
  bool misalign;  // pointers 4 bytes off a 16-byte boundary: the scalar paths
  int sms;        // emulated multiprocessors: grid sizes
};

// Floats with a 16-byte-aligned base, optionally shifted by one element.
struct Buf {
  std::vector<float> storage;
  float* p = nullptr;
  Buf(const std::vector<float>& v, bool misalign) : storage(v.size() + 8) {
    auto base = reinterpret_cast<uintptr_t>(storage.data());
    size_t skip = ((16 - (base & 15)) & 15) / sizeof(float);
    if (misalign) skip += 1;
    p = storage.data() + skip;
    std::memcpy(p, v.data(), v.size() * sizeof(float));
  }
};

void check_topk(const std::vector<float>& grad, const std::vector<float>& res, const Case& c) {
  SCOPED_TRACE(::testing::Message() << "n=" << c.n << " k=" << c.k << " residual=" << c.residual
                                    << " idx64=" << c.idx64 << " misalign=" << c.misalign
                                    << " sms=" << c.sms);
  cudaemu::set_sm_count(c.sms);
  const auto ref = cddp::testing::topk_reference(grad, c.residual ? res : std::vector<float>{}, c.k);
  Buf g(grad, c.misalign), r(res, c.misalign);
  std::vector<float> values(c.k, -7.0f);
  std::vector<int32_t> idx32(c.k, -1);
  std::vector<int64_t> idx64(c.k, -1);
  std::vector<unsigned char> ws(ct::workspace_bytes(c.n, c.idx64) + 256);
  void* wsp = ws.data() + ((256 - (reinterpret_cast<uintptr_t>(ws.data()) & 255)) & 255);
  unsigned int nan_flag = 0;
  ASSERT_EQ(ct::launch_topk(g.p, c.residual ? r.p : nullptr, c.n, c.k, values.data(),
                            c.idx64 ? static_cast<void*>(idx64.data()) : idx32.data(), c.idx64,
                            &nan_flag, wsp, ct::workspace_bytes(c.n, c.idx64), nullptr),
            cudaSuccess);
  for (int64_t i = 0; i < c.k; ++i) {
    const int64_t got = c.idx64 ? idx64[i] : idx32[i];
    ASSERT_EQ(got, ref.indices[i]) << "at output position " << i;
    ASSERT_TRUE(same_bits(values[i], ref.values[i])) << "value at output position " << i;
  }
  if (c.residual) {
    for (int64_t i = 0; i < c.n; ++i)
      ASSERT_TRUE(same_bits(r.p[i], ref.residual_after[i])) << "residual at " << i;
  }
  bool has_nan = false;
  for (float a : ref.acc) has_nan |= std::isnan(a);
  EXPECT_EQ(nan_flag, has_nan ? 1u : 0u);
}

std::vector<float> normal(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace

TEST(TopkKernelsEmu, RandomNormalMatchesReference) {
  const Case cases[] = {
      {1, 1, true, false, false, 2},          {3, 2, false, false, false, 1},
      {1000, 10, true, false, false, 2},      {8192, 82, true, false, false, 1},
      {8193, 8193, true, false, false, 2},    {20000, 1, false, false, false, 3},
      {20001, 200, true, false, true, 2},     {20003, 10001, true, true, false, 2},
      {40000, 400, true, false, false, 3},    {40001, 4000, false, true, true, 1},
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const auto g = normal(c.n, seed++);
    const auto r = normal(c.n, seed++, 0.5f);
    check_topk(g, r, c);
  }
}

// Many exact ties: a sparse gradient whose k exceeds its non-zeros selects the first zeros
// by index; ±0 tie with each other. Also values equal in magnitude with different signs.
TEST(TopkKernelsEmu, TiesGoToTheLowerIndex) {
  const int64_t n = 30000;
  std::vector<float> g(n, 0.0f), r(n, 0.0f);
  std::mt19937 rng(7);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 10 == 3) g[i] = (rng() & 1) ? 1.5f : -1.5f;       // 3000 equal magnitudes
    else if (i % 10 == 7) g[i] = -0.0f;                        // negative zeros
    else if (i % 97 == 0) g[i] = static_cast<float>(i) * 1e-3f;
  }
  // k inside the ±1.5 block, then k reaching into the zeros.
  for (int64_t k : {int64_t{50}, int64_t{400}, int64_t{3500}, int64_t{10000}, n}) {
    check_topk(g, r, Case{n, k, true, false, false, 2});
    check_topk(g, r, Case{n, k, false, false, true, 3});
  }
}

// Every magnitude in one 11-bit bucket: the candidate buffer (n/8 + 4096) overflows and the
// later passes read the whole array.
TEST(TopkKernelsEmu, CandidateOverflowFallsBackToFullPasses) {
  const int64_t n = 50000;
  std::vector<float> g(n), r(n, 0.0f);
  std::mt19937 rng(11);
  for (int64_t i = 0; i < n; ++i) {
    // [1, 1.25): same exponent, same top two mantissa bits; low bits random, many ties.
    const uint32_t bits = 0x3f800000u | (rng() & 0x001fff00u);
    std::memcpy(&g[i], &bits, 4);
    if (rng() & 1) g[i] = -g[i];
  }
  for (int64_t k : {int64_t{1}, int64_t{777}, int64_t{25000}, n - 1})
    check_topk(g, r, Case{n, k, true, (k & 1) != 0, k == 777, 2});
}

TEST(TopkKernelsEmu, SpecialValues) {
  const int64_t n = 9000;
  auto g = normal(n, 5);
  auto r = normal(n, 6);
  g[17] = std::numeric_limits<float>::infinity();
  g[8000] = -std::numeric_limits<float>::infinity();
  r[8000] = 0.0f;
  g[4] = std::numeric_limits<float>::denorm_min();
  r[4] = std::numeric_limits<float>::denorm_min();
  check_topk(g, r, Case{n, 90, true, false, false, 2});
  g[123] = std::numeric_limits<float>::quiet_NaN();  // flagged; sorts as the largest magnitude
  check_topk(g, r, Case{n, 90, true, false, false, 2});
}

TEST(TopkKernelsEmu, RandomkMatchesPhiloxReference) {
  struct R { uint64_t seed; int64_t step, param, n, k; bool idx64; int sms; };
  const R cases[] = {
      {42, 1, 0, 1, 1, false, 2},        {42, 1, 0, 10, 3, false, 1},
      {42, 7, 3, 20000, 200, false, 2},  {0xdeadbeefcafeull, 123456, -1, 33333, 333, true, 3},
      {1, 2, 5, 16384, 16384, false, 2}, {9, 9, 9, 25001, 12500, false, 2},
  };
  for (const R& c : cases) {
    SCOPED_TRACE(::testing::Message() << "n=" << c.n << " k=" << c.k << " step=" << c.step);
    cudaemu::set_sm_count(c.sms);
    const auto ref = cddp::testing::randomk_reference(c.seed, c.step, c.param, c.n, c.k);
    std::vector<int32_t> i32(c.k, -1);
    std::vector<int64_t> i64(c.k, -1);
    std::vector<unsigned char> ws(ct::workspace_bytes(c.n, c.idx64) + 256);
    void* wsp = ws.data() + ((256 - (reinterpret_cast<uintptr_t>(ws.data()) & 255)) & 255);
    ASSERT_EQ(ct::launch_randomk(c.seed, c.step, c.param, c.n, c.k,
                                 c.idx64 ? static_cast<void*>(i64.data()) : i32.data(), c.idx64,
                                 wsp, ct::workspace_bytes(c.n, c.idx64), nullptr),
              cudaSuccess);
    for (int64_t i = 0; i < c.k; ++i)
      ASSERT_EQ(c.idx64 ? i64[i] : i32[i], ref[i]) << "at output position " << i;
  }
}

TEST(TopkKernelsEmu, RejectsBadArguments) {
  std::vector<unsigned char> ws(ct::workspace_bytes(100, false));
  float g[100] = {};
  float v[100];
  int32_t idx[100];
  EXPECT_EQ(ct::launch_topk(g, nullptr, 100, -1, v, idx, false, nullptr, ws.data(), ws.size(),
                            nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(ct::launch_topk(g, nullptr, 100, 101, v, idx, false, nullptr, ws.data(), ws.size(),
                            nullptr),
            cudaErrorInvalidValue);
  EXPECT_NE(std::string(ct::last_error_detail()).find("out of range"), std::string::npos)
      << ct::last_error_detail();
  EXPECT_EQ(ct::launch_topk(g, nullptr, 100, 5, v, idx, false, nullptr, ws.data(), 8, nullptr),
            cudaErrorInvalidValue);
  EXPECT_NE(std::string(ct::last_error_detail()).find("workspace"), std::string::npos)
      << ct::last_error_detail();
  EXPECT_EQ(ct::launch_randomk(1, 1, 0, int64_t{1} << 31, 5, idx, false, ws.data(), ws.size(),
                               nullptr),
            cudaErrorInvalidValue);  // needs int64 indices
  EXPECT_TRUE(ct::needs_int64_indices(int64_t{1} << 31));
  EXPECT_FALSE(ct::needs_int64_indices((int64_t{1} << 31) - 1));
  // A good call clears the detail.
  EXPECT_EQ(ct::launch_topk(g, nullptr, 100, 5, v, idx, false, nullptr, ws.data(), ws.size(),
                            nullptr),
            cudaSuccess);
  EXPECT_STREQ(ct::last_error_detail(), "");
}

// The benchmark's stage-limited launcher: every prefix of the sequence runs; all five stages
// are launch_topk.
TEST(TopkKernelsEmu, StageLimitedLaunches) {
  const int64_t n = 12345, k = 123;
  const auto g = normal(n, 21);
  const auto r0 = normal(n, 22);
  const auto want = cddp::testing::topk_reference(g, r0, k);
  std::vector<unsigned char> ws(ct::workspace_bytes(n, false));
  for (int stages = 0; stages <= 5; ++stages) {
    std::vector<float> r = r0, v(k);
    std::vector<int32_t> idx(k);
    ASSERT_EQ(ct::launch_topk_stages(stages, g.data(), r.data(), n, k, v.data(), idx.data(), false,
                                     nullptr, ws.data(), ws.size(), nullptr),
              cudaSuccess);
    if (stages >= 1) {  // K0 wrote acc; K4 zeroes the selected positions
      const auto& expect = stages == 5 ? want.residual_after : want.acc;
      for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(same_bits(r[i], expect[i])) << "at " << i;
    }
    if (stages == 5) {
      EXPECT_EQ(std::vector<int64_t>(idx.begin(), idx.end()), want.indices);
    }
  }
}
