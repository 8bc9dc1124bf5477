// topk_cuda_test.cpp — the CUDA top-k (fused error feedback) and random-k selections against
// CPU references, bit for bit: topk_reference.h (a plain sort under the tie rule) and, when
// the CPU kernels library is built, cddp::kernels::RadixTopK (what the CPU plugins run).
// Label `gpu`. Every test skips, saying why, when no CUDA device is visible.
#include "topk_cuda_bridge.h"
#include "topk_kernels.cuh"
#include "topk_reference.h"

#if defined(CDDP_TEST_HAVE_KERNELS_CPU)
#include "radix_topk_cpu.h"
#endif

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace ct = cddp::topk_cuda;
namespace ref = cddp::testing;

#define CDDP_REQUIRE_CUDA()                                                          \
  do {                                                                               \
    if (!torch::cuda::is_available()) {                                              \
      GTEST_SKIP() << "skipped: no CUDA device visible (torch::cuda::is_available() " \
                      "is false)";                                                   \
    }                                                                                \
  } while (0)

namespace {

std::vector<float> floats(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).contiguous().view({-1});
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

std::vector<int64_t> longs(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Bitwise, except that any NaN equals any NaN: the GPU's fp32 add returns the canonical NaN
// (0x7fffffff) while x86 SSE propagates the input's payload (quiet_NaN() + r == 0x7fc00000),
// so acc = g + r cannot match bit for bit where it is NaN. Everything else must.
bool same_bits_or_nan(float a, float b) {
  return ref::same_bits(a, b) || (std::isnan(a) && std::isnan(b));
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!same_bits_or_nan(a[i], b[i])) return false;
  return true;
}

size_t first_bit_difference(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (!same_bits_or_nan(a[i], b[i])) return i;
  return std::min(a.size(), b.size());
}

at::Tensor randn_cpu(int64_t n, uint64_t seed, double scale = 1.0) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randn({n}, gen, at::TensorOptions().dtype(at::kFloat)).mul_(scale);
}

// Runs the fused CUDA path on (grad, residual) and checks it against the references.
void expect_topk_matches(const at::Tensor& grad_cpu, const at::Tensor& residual_cpu, int64_t k,
                         bool with_residual) {
  const int64_t n = grad_cpu.numel();
  SCOPED_TRACE(::testing::Message() << "n=" << n << " k=" << k << " residual=" << with_residual);
  const std::vector<float> g = floats(grad_cpu);
  const std::vector<float> r = with_residual ? floats(residual_cpu) : std::vector<float>{};
  const ref::TopkRef want = ref::topk_reference(g, r, k);

  at::Tensor grad = grad_cpu.to(at::kCUDA);
  at::Tensor residual = with_residual ? residual_cpu.to(at::kCUDA).contiguous() : at::Tensor();
  at::Tensor nan_flag;
  cddp::Compressed c = ct::topk_cuda_compress_with_feedback(
      grad, with_residual ? &residual : nullptr, k, &nan_flag);

  ASSERT_EQ(c.numel, n);
  ASSERT_EQ(c.count(), k);
  ASSERT_EQ(c.indices.scalar_type(), ct::needs_int64_indices(n) ? at::kLong : at::kInt);
  ASSERT_TRUE(c.values.is_cuda() && c.indices.is_cuda());
  const std::vector<int64_t> got_idx = longs(c.indices);
  const std::vector<float> got_val = floats(c.values);
  ASSERT_EQ(got_idx, want.indices);
  ASSERT_TRUE(bits_equal(got_val, want.values))
      << "first value difference at output position " << first_bit_difference(got_val, want.values);
  if (with_residual) {
    const std::vector<float> got_res = floats(residual);
    ASSERT_TRUE(bits_equal(got_res, want.residual_after))
        << "first residual difference at " << first_bit_difference(got_res, want.residual_after);
  } else {
    EXPECT_TRUE(bits_equal(floats(grad), g)) << "the gradient was modified";
  }
  bool has_nan = false;
  for (float a : want.acc) has_nan |= std::isnan(a);
  EXPECT_EQ(nan_flag.item<int32_t>(), has_nan ? 1 : 0);

#if defined(CDDP_TEST_HAVE_KERNELS_CPU)
  if (!has_nan) {  // the CPU kernels refuse NaN
    std::vector<float> res_cpu = r;
    std::vector<float> cpu_val(k);
    std::vector<int32_t> cpu_idx32(k);
    std::vector<int64_t> cpu_idx64(k);
    cddp::kernels::RadixTopK cpu;
    if (ct::needs_int64_indices(n))
      cpu.select_float(g.data(), with_residual ? res_cpu.data() : nullptr, n, k, cpu_val.data(),
                       cpu_idx64.data());
    else
      cpu.select_float(g.data(), with_residual ? res_cpu.data() : nullptr, n, k, cpu_val.data(),
                       cpu_idx32.data());
    if (!ct::needs_int64_indices(n)) cpu_idx64.assign(cpu_idx32.begin(), cpu_idx32.end());
    EXPECT_EQ(got_idx, cpu_idx64) << "differs from cddp::kernels::RadixTopK (the CPU plugin)";
    EXPECT_TRUE(bits_equal(got_val, cpu_val)) << "values differ from RadixTopK";
    if (with_residual) {
      EXPECT_TRUE(bits_equal(floats(residual), res_cpu)) << "residual differs from RadixTopK";
    }
  }
#endif
}

}  // namespace

TEST(TopkCuda, FusedFeedbackMatchesCpuReference) {
  CDDP_REQUIRE_CUDA();
  uint64_t seed = 100;
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{8192}, int64_t{8193},
                    int64_t{100003}, int64_t{1} << 20, int64_t{3000001}}) {
    for (double ratio : {0.0, 0.001, 0.01, 0.1, 1.0}) {
      const int64_t k = ratio == 0.0 ? 1 : cddp::k_for_ratio(ratio, n);
      const at::Tensor g = randn_cpu(n, seed++);
      const at::Tensor r = randn_cpu(n, seed++, 0.5);
      expect_topk_matches(g, r, k, true);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(TopkCuda, WithoutResidualSelectsFromTheGradient) {
  CDDP_REQUIRE_CUDA();
  for (int64_t n : {int64_t{5}, int64_t{65537}, int64_t{2000003}}) {
    const at::Tensor g = randn_cpu(n, 7 + n);
    expect_topk_matches(g, at::Tensor(), cddp::k_for_ratio(0.01, n), false);
    if (HasFatalFailure()) return;
  }
}

// A non-contiguous gradient (copied by the bridge) and a residual 4 bytes off a 16-byte
// boundary (the kernels' scalar path).
TEST(TopkCuda, NonContiguousGradientAndUnalignedResidual) {
  CDDP_REQUIRE_CUDA();
  const at::Tensor g2d = randn_cpu(1000 * 301, 3).view({1000, 301});
  const at::Tensor g = g2d.t();  // [301, 1000], non-contiguous
  const int64_t n = g.numel(), k = cddp::k_for_ratio(0.01, n);
  const at::Tensor big = randn_cpu(n + 1, 4).to(at::kCUDA);
  at::Tensor residual = big.narrow(0, 1, n);  // storage offset 1 float
  const float before_view = big[0].item<float>();
  ASSERT_TRUE(residual.is_contiguous());
  ASSERT_NE(reinterpret_cast<uintptr_t>(residual.data_ptr()) % 16, 0u);

  const std::vector<float> gv = floats(g.contiguous());
  const ref::TopkRef want = ref::topk_reference(gv, floats(residual), k);
  const at::Tensor g_cuda = g.to(at::kCUDA);  // keeps the transposed strides
  ASSERT_FALSE(g_cuda.is_contiguous());
  cddp::Compressed c = ct::topk_cuda_compress_with_feedback(g_cuda, &residual, k);
  EXPECT_EQ(c.shape, (std::vector<int64_t>{301, 1000}));
  EXPECT_EQ(longs(c.indices), want.indices);
  EXPECT_TRUE(bits_equal(floats(c.values), want.values));
  EXPECT_TRUE(bits_equal(floats(residual), want.residual_after));
  EXPECT_TRUE(ref::same_bits(big[0].item<float>(), before_view)) << "wrote before the view";
}

// Exact ties: equal magnitudes of either sign, negative zeros, and k reaching into the zeros,
// so that the first zeros by index are taken.
TEST(TopkCuda, TiesGoToTheLowerIndex) {
  CDDP_REQUIRE_CUDA();
  const int64_t n = 1 << 20;
  std::vector<float> g(n, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 10 == 3) g[i] = (i % 20 == 3) ? 1.5f : -1.5f;
    else if (i % 10 == 7) g[i] = -0.0f;
    else if (i % 97 == 0) g[i] = static_cast<float>(i % 1000) * 1e-3f;
  }
  const at::Tensor gt = at::from_blob(g.data(), {n}, at::kFloat).clone();
  const at::Tensor zeros = at::zeros({n}, at::kFloat);
  for (int64_t k : {int64_t{10}, int64_t{50000}, int64_t{104858}, int64_t{300000}, n})
    expect_topk_matches(gt, zeros, k, true);
}

// Every magnitude in one top-11-bit bucket: the candidate buffer overflows and the later
// passes read the whole array.
TEST(TopkCuda, CandidateOverflowFallback) {
  CDDP_REQUIRE_CUDA();
  const int64_t n = 2000000;
  at::Tensor bits = at::randint(0, 0x001fffff, {n}, at::TensorOptions().dtype(at::kInt))
                        .bitwise_or_(0x3f800000);
  at::Tensor g = bits.view(at::kFloat).clone();
  g.mul_(at::randint(0, 2, {n}).to(at::kFloat).mul_(2).sub_(1));  // random signs
  for (int64_t k : {int64_t{1}, int64_t{20000}, int64_t{1000000}})
    expect_topk_matches(g, at::zeros({n}), k, true);
}

TEST(TopkCuda, NanIsFlaggedLazily) {
  CDDP_REQUIRE_CUDA();
  at::Tensor g = randn_cpu(100000, 9);
  g[4242] = std::numeric_limits<float>::quiet_NaN();
  g[7] = std::numeric_limits<float>::infinity();
  expect_topk_matches(g, randn_cpu(100000, 10), 1000, true);  // checks the flag is 1
}

TEST(TopkCuda, RepeatedCallsAreBitwiseIdentical) {
  CDDP_REQUIRE_CUDA();
  const int64_t n = 25000000, k = cddp::k_for_ratio(0.01, n);
  const at::Tensor g = randn_cpu(n, 11).to(at::kCUDA);
  const at::Tensor r0 = randn_cpu(n, 12).to(at::kCUDA);
  at::Tensor r1 = r0.clone(), r2 = r0.clone();
  cddp::Compressed a = ct::topk_cuda_compress_with_feedback(g, &r1, k);
  cddp::Compressed b = ct::topk_cuda_compress_with_feedback(g, &r2, k);
  EXPECT_TRUE(at::equal(a.indices, b.indices));
  EXPECT_TRUE(at::equal(a.values.view(at::kInt), b.values.view(at::kInt)));
  EXPECT_TRUE(at::equal(r1.view(at::kInt), r2.view(at::kInt)));
  // And the 25M case against the CPU reference.
  const ref::TopkRef want = ref::topk_reference(floats(g), floats(r0), k);
  EXPECT_EQ(longs(a.indices), want.indices);
  EXPECT_TRUE(bits_equal(floats(a.values), want.values));
  EXPECT_TRUE(bits_equal(floats(r1), want.residual_after));
}

TEST(TopkCuda, KZeroAndEmpty) {
  CDDP_REQUIRE_CUDA();
  at::Tensor g = randn_cpu(1000, 1).to(at::kCUDA);
  at::Tensor r = randn_cpu(1000, 2).to(at::kCUDA);
  const at::Tensor acc = g + r;
  cddp::Compressed c = ct::topk_cuda_compress_with_feedback(g, &r, 0);
  EXPECT_EQ(c.count(), 0);
  EXPECT_TRUE(at::equal(r, acc));
  at::Tensor e = at::empty({0}, g.options());
  EXPECT_EQ(ct::topk_cuda_compress_with_feedback(e, nullptr, 0).count(), 0);
  EXPECT_THROW(ct::topk_cuda_compress_with_feedback(g, nullptr, 1001), c10::Error);
  EXPECT_THROW(ct::topk_cuda_compress_with_feedback(g.to(at::kDouble), nullptr, 1), c10::Error);
}

// n >= 2^31: int64 indices. Planted values at known positions, the rest zeros (so k beyond the
// planted ones takes the lowest-index zeros, through the candidate-overflow fallback).
TEST(TopkCuda, Int64IndicesBeyond2To31) {
  CDDP_REQUIRE_CUDA();
  const int64_t n = (int64_t{1} << 31) + 1000;
  at::Tensor g, r;
  try {
    g = at::zeros({n}, at::TensorOptions().device(at::kCUDA).dtype(at::kFloat));
    r = at::zeros({n}, at::TensorOptions().device(at::kCUDA).dtype(at::kFloat));
  } catch (const c10::Error& e) {
    GTEST_SKIP() << "skipped: cannot allocate 2 x " << n * 4 / (1 << 20) << " MiB on the GPU";
  }
  const std::vector<int64_t> planted = {5, (int64_t{1} << 31) - 1, (int64_t{1} << 31) + 7, n - 1};
  for (size_t j = 0; j < planted.size(); ++j) g[planted[j]] = static_cast<float>(j + 1);
  r[(int64_t{1} << 31) + 7] = -10.0f;  // acc there = 3 - 10 = -7: the largest magnitude
  {
    cddp::Compressed c = ct::topk_cuda_compress_with_feedback(g, &r, 4);
    ASSERT_EQ(c.indices.scalar_type(), at::kLong);
    EXPECT_EQ(longs(c.indices), planted);
    EXPECT_EQ(floats(c.values), (std::vector<float>{1.0f, 2.0f, -7.0f, 4.0f}));
    for (int64_t p : planted) EXPECT_EQ(r[p].item<float>(), 0.0f);
  }
  {
    r.zero_();
    cddp::Compressed c = ct::topk_cuda_compress_with_feedback(g, &r, 6);
    EXPECT_EQ(longs(c.indices), (std::vector<int64_t>{0, 1, 5, (int64_t{1} << 31) - 1,
                                                      (int64_t{1} << 31) + 7, n - 1}));
  }
  {
    at::Tensor idx = ct::randomk_cuda_indices(77, 3, 1, n, 5, g.device());
    ASSERT_EQ(idx.scalar_type(), at::kLong);
    const std::vector<int64_t> got = longs(idx);
    // A cheap check on the priorities themselves (a full CPU reference over 2^31 elements
    // would take minutes): ascending, and no sampled unpicked index has a smaller priority.
    for (size_t j = 1; j < got.size(); ++j) EXPECT_LT(got[j - 1], got[j]);
    uint32_t worst = 0;
    for (int64_t i : got) worst = std::max(worst, ref::randomk_priority(77, 3, 1, i));
    for (int64_t i = 0; i < n; i += 104729) {
      if (std::find(got.begin(), got.end(), i) == got.end()) {
        EXPECT_GE(ref::randomk_priority(77, 3, 1, i), worst) << "index " << i;
      }
    }
  }
}

TEST(TopkCuda, RandomkMatchesCpuPhilox) {
  CDDP_REQUIRE_CUDA();
  struct C { uint64_t seed; int64_t step, param, n, k; };
  const C cases[] = {{42, 1, 0, 1, 1},          {42, 1, 0, 10, 3},
                     {42, 7, 3, 100000, 1000},  {0xdeadbeefcafeull, 123456, -1, 1000003, 10001},
                     {1, 2, 5, 16384, 16384},   {9, 9, 9, 25000000, 250000}};
  for (const C& c : cases) {
    SCOPED_TRACE(::testing::Message() << "n=" << c.n << " k=" << c.k << " seed=" << c.seed);
    at::Tensor idx = ct::randomk_cuda_indices(c.seed, c.step, c.param, c.n, c.k,
                                              at::Device(at::kCUDA, 0));
    ASSERT_EQ(idx.scalar_type(), at::kInt);
    const std::vector<int64_t> got = longs(idx);
    EXPECT_EQ(got, ref::randomk_reference(c.seed, c.step, c.param, c.n, c.k));
#if defined(CDDP_TEST_HAVE_KERNELS_CPU)
    std::vector<int32_t> cpu(c.k);
    cddp::kernels::RadixTopK sel;
    sel.select_smallest_philox(c.seed, c.step, c.param, c.n, c.k, cpu.data());
    EXPECT_EQ(got, std::vector<int64_t>(cpu.begin(), cpu.end()))
        << "differs from cddp::kernels::RadixTopK (the CPU random-k plugin)";
#endif
  }
}

// The same stream discipline a training step has: several calls queued without a sync.
TEST(TopkCuda, NoHostSyncBetweenCalls) {
  CDDP_REQUIRE_CUDA();
  const int64_t n = 1 << 22, k = cddp::k_for_ratio(0.01, n);
  at::Tensor g = at::randn({n}, at::TensorOptions().device(at::kCUDA));
  at::Tensor r = at::zeros({n}, g.options());
  std::vector<cddp::Compressed> outs;
  for (int i = 0; i < 8; ++i) outs.push_back(ct::topk_cuda_compress_with_feedback(g, &r, k));
  torch::cuda::synchronize();
  for (const auto& c : outs) {
    EXPECT_EQ(c.count(), k);
    EXPECT_TRUE(at::all(c.indices.slice(0, 1).gt(c.indices.slice(0, 0, -1))).item<bool>());
  }
}
