// cuda_launch_emu_test.cpp — the GPU-only paths of plugins/topk/cuda that can run without a GPU:
// the launch-configuration check (launch_check.h) on its own, and the real kernels
// (topk_kernels.cu over cuda_emu.h) at the edges where launches go wrong — k = 0, k = numel,
// numel smaller than one block, grids the device limits cap, launches the limits refuse — each
// compared bit for bit with what the CPU plugins return (their shared kernels,
// cddp::kernels::RadixTopK, and the topk / randomk plugins loaded as the trainer loads them).
// Also the single-pass design (launch_topk_single_pass) through both of its tails, the
// CUDA-call trace and the stale-error clearing.
//
// It will not say anything about real concurrency, memory ordering, the CUDA driver or speed
// (topk_cuda_test, compressed_sgd_cuda_test and bench_topk_cuda do, on a GPU): in particular
// the emulator runs blocks one after another, so the single-pass look-back never waits here.
// Label unit.
#include "launch_check.h"
#include "radix_topk_cpu.h"
#include "topk_kernels.cuh"

#include <cddp/compressor.h>
#include <cddp/plugin_loader.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace ct = cddp::topk_cuda;

namespace {

// ---------------------------------------------------------------------------------------------
// The checked-launch helper on its own.

ct::LaunchConfig good(const char* name = "k_test") {
  ct::LaunchConfig c;
  c.kernel = name;
  c.grid_x = 528;
  c.block_x = 512;
  c.static_smem = 8400;
  return c;
}

TEST(LaunchCheck, AcceptsTheKernelsConfigurations) {
  EXPECT_EQ(ct::launch_config_error(good(), ct::DeviceLimits{}), "");
  ct::LaunchConfig c = good();
  c.grid_x = 2147483647;  // the largest gridDim.x there is
  c.static_smem = 48 * 1024;
  EXPECT_EQ(ct::launch_config_error(c, ct::DeviceLimits{}), "");
}

TEST(LaunchCheck, NamesTheKernelAndTheLimit) {
  const ct::DeviceLimits lim;
  struct Bad {
    const char* what;
    void (*edit)(ct::LaunchConfig&);
    const char* expect;
  };
  const Bad bad[] = {
      {"k = 0 style empty grid", [](ct::LaunchConfig& c) { c.grid_x = 0; }, "empty grid"},
      {"gridDim.x over 2^31-1", [](ct::LaunchConfig& c) { c.grid_x = int64_t{1} << 31; },
       "gridDim.x = 2147483648 exceeds the device's maximum 2147483647"},
      {"gridDim.y over 65535", [](ct::LaunchConfig& c) { c.grid_y = 65536; }, "gridDim.y = 65536"},
      {"gridDim.z over 65535", [](ct::LaunchConfig& c) { c.grid_z = 70000; }, "gridDim.z = 70000"},
      {"block over 1024", [](ct::LaunchConfig& c) { c.block_x = 2048; }, "blockDim.x = 2048"},
      {"block of 0", [](ct::LaunchConfig& c) { c.block_x = 0; }, "blockDim.x = 0"},
      {"partial warp", [](ct::LaunchConfig& c) { c.block_x = 500; }, "not a multiple of the warp"},
      {"over the kernel's register limit",
       [](ct::LaunchConfig& c) { c.kernel_max_threads = 256; }, "this kernel's 256 threads"},
      {"dynamic smem over 48 KiB without opt-in",
       [](ct::LaunchConfig& c) { c.dynamic_smem = 48 * 1024; }, "without cudaFuncSetAttribute"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    ct::LaunchConfig c = good("k4_compact<read>");
    b.edit(c);
    const std::string msg = ct::launch_config_error(c, lim);
    EXPECT_EQ(msg.rfind("k4_compact<read>: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(b.expect), std::string::npos) << msg;
  }
}

TEST(LaunchCheck, TighterTakesTheSmallerOfEachLimit) {
  ct::DeviceLimits dev;
  dev.max_grid_x = 100;
  dev.max_smem_per_block = 227 * 1024;  // what sm_90 allows with an opt-in: ours stays at 48 KiB
  const ct::DeviceLimits t = ct::tighter(ct::DeviceLimits{}, dev);
  EXPECT_EQ(t.max_grid_x, 100);
  EXPECT_EQ(t.max_smem_per_block, 48 * 1024);
  EXPECT_EQ(t.max_threads_per_block, 1024);
}

// ---------------------------------------------------------------------------------------------
// The kernels under the emulator against the CPU plugins.

// 256-byte aligned storage, optionally shifted by one float (the unaligned paths).
template <typename T>
struct Aligned {
  std::vector<unsigned char> raw;
  T* p = nullptr;
  explicit Aligned(size_t n, size_t shift_bytes = 0) : raw(n * sizeof(T) + 512) {
    auto base = reinterpret_cast<uintptr_t>(raw.data());
    p = reinterpret_cast<T*>(raw.data() + ((256 - (base & 255)) & 255) + shift_bytes);
  }
};

std::vector<float> normal(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const float* b, int64_t n) {
  return static_cast<int64_t>(a.size()) == n && (n == 0 || std::memcmp(a.data(), b, n * 4) == 0);
}

struct Emu {
  explicit Emu(int sms, cudaemu::Limits lim = {}) : saved_(cudaemu::limits()) {
    cudaemu::set_sm_count(sms);
    cudaemu::set_limits(lim);
  }
  ~Emu() { cudaemu::set_limits(saved_); }
  cudaemu::Limits saved_;
};

// Emulated fused top-k vs RadixTopK::select_float (what the CPU topk plugin runs): values,
// indices and the residual afterwards, bit for bit. Returns the kernels launched.
unsigned long long expect_topk_like_cpu(int64_t n, int64_t k, bool misalign, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "topk n=" << n << " k=" << k << " misalign=" << misalign);
  const auto g = normal(n, seed);
  auto r = normal(n, seed + 1);
  for (auto& x : r) x *= 0.5f;
  // CPU plugin's kernels.
  std::vector<float> r_cpu = r, v_cpu(k);
  std::vector<int32_t> i_cpu(k);
  cddp::kernels::RadixTopK cpu;
  cpu.select_float(g.data(), r_cpu.data(), n, k, v_cpu.data(), i_cpu.data());
  // Emulated CUDA kernels.
  const size_t shift = misalign ? 4 : 0;
  Aligned<float> gd(n, shift), rd(n, shift), vd(k + 1);
  Aligned<int32_t> id(k + 1);
  std::memcpy(gd.p, g.data(), n * 4);
  std::memcpy(rd.p, r.data(), n * 4);
  Aligned<unsigned char> ws(ct::workspace_bytes(n, false));
  unsigned int nan_flag = 0;
  const unsigned long long before = cudaemu::launches();
  const cudaError_t e = ct::launch_topk(gd.p, rd.p, n, k, k ? vd.p : nullptr, k ? id.p : nullptr,
                                        false, &nan_flag, k ? ws.p : nullptr,
                                        k ? ct::workspace_bytes(n, false) : 0, nullptr);
  EXPECT_EQ(e, cudaSuccess) << ct::last_error_detail();
  EXPECT_TRUE(same_bits(v_cpu, vd.p, k)) << "values differ from RadixTopK";
  EXPECT_EQ(std::vector<int32_t>(id.p, id.p + k), i_cpu) << "indices differ from RadixTopK";
  EXPECT_TRUE(same_bits(r_cpu, rd.p, n)) << "residual differs from RadixTopK";
  EXPECT_EQ(nan_flag, 0u);
  return cudaemu::launches() - before;
}

unsigned long long expect_randomk_like_cpu(uint64_t seed, int64_t step, int64_t param, int64_t n,
                                           int64_t k, bool idx64) {
  SCOPED_TRACE(::testing::Message() << "randomk n=" << n << " k=" << k << " idx64=" << idx64);
  std::vector<int64_t> want(k);
  cddp::kernels::RadixTopK cpu;
  cpu.select_smallest_philox(seed, step, param, n, k, want.data());
  Aligned<int64_t> out(k + 1);
  Aligned<unsigned char> ws(ct::workspace_bytes(n, idx64));
  const unsigned long long before = cudaemu::launches();
  const cudaError_t e =
      ct::launch_randomk(seed, step, param, n, k, k ? static_cast<void*>(out.p) : nullptr, idx64,
                         k ? ws.p : nullptr, k ? ct::workspace_bytes(n, idx64) : 0, nullptr);
  EXPECT_EQ(e, cudaSuccess) << ct::last_error_detail();
  std::vector<int64_t> got(k);
  for (int64_t i = 0; i < k; ++i)
    got[i] = idx64 ? out.p[i] : reinterpret_cast<const int32_t*>(out.p)[i];
  EXPECT_EQ(got, want) << "differs from RadixTopK::select_smallest_philox (the CPU plugin's)";
  return cudaemu::launches() - before;
}

// k = 0: nothing selected, no selection kernel and no workspace; the residual still becomes
// acc = g + r (one elementwise add), as on the CPU.
TEST(CudaEmuEdges, KZero) {
  const Emu emu(2);
  for (int64_t n : {int64_t{1}, int64_t{100}, int64_t{9000}}) {
    EXPECT_EQ(expect_topk_like_cpu(n, 0, false, 3), 1u) << "k = 0 with a residual: one add kernel";
    EXPECT_EQ(expect_topk_like_cpu(n, 0, true, 4), 1u);
    EXPECT_EQ(expect_randomk_like_cpu(42, 1, 0, n, 0, false), 0u) << "random-k k = 0 launches nothing";
  }
  // n = 0, k = 0: nothing at all, and no pointer is needed.
  EXPECT_EQ(ct::launch_topk(nullptr, nullptr, 0, 0, nullptr, nullptr, false, nullptr, nullptr, 0,
                            nullptr),
            cudaSuccess);
  EXPECT_EQ(ct::launch_randomk(1, 1, 0, 0, 0, nullptr, false, nullptr, 0, nullptr), cudaSuccess);
  // No residual, k = 0: a no-op.
  float g[3] = {1, 2, 3};
  const unsigned long long before = cudaemu::launches();
  EXPECT_EQ(ct::launch_topk(g, nullptr, 3, 0, nullptr, nullptr, false, nullptr, nullptr, 0, nullptr),
            cudaSuccess);
  EXPECT_EQ(cudaemu::launches(), before);
}

TEST(CudaEmuEdges, KEqualsNumel) {
  const Emu emu(3);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{2048}, int64_t{8193}, int64_t{20001}}) {
    expect_topk_like_cpu(n, n, n % 2 == 1, 10 + static_cast<uint32_t>(n));
    expect_randomk_like_cpu(9, 3, 2, n, n, false);
  }
}

// Fewer elements than one block has threads (512), and than one round of it (2048).
TEST(CudaEmuEdges, NumelSmallerThanOneBlock) {
  const Emu emu(2);
  for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{5}, int64_t{31}, int64_t{100},
                    int64_t{511}, int64_t{512}, int64_t{513}, int64_t{2047}}) {
    for (int64_t k : {int64_t{1}, (n + 1) / 2, n}) {
      expect_topk_like_cpu(n, k, n % 3 == 0, 100 + static_cast<uint32_t>(n));
      expect_randomk_like_cpu(0xdeadbeefull, 5, 1, n, k, n % 2 == 0);
    }
  }
}

// The device takes fewer blocks than the kernels would like (gridDim.x capped at 2 here; on
// an H200 the same code path starts at 2^31 blocks, i.e. n > 1.7e13): every kernel must run
// capped and loop, K4 over several tiles per block, with the same result.
TEST(CudaEmuEdges, GridCappedByTheDeviceLimit) {
  cudaemu::Limits lim;
  lim.max_grid_x = 2;
  const Emu emu(64, lim);  // 64 SMs: without the cap K0 would ask for 64 * 4 blocks
  for (int64_t n : {int64_t{40000}, int64_t{65537}}) {  // 5 and 9 tiles of 8192
    expect_topk_like_cpu(n, n / 100, false, 7);
    expect_topk_like_cpu(n, n - 3, true, 8);
    expect_randomk_like_cpu(1, 2, 3, n, n / 50, true);
  }
  // One block for everything.
  lim.max_grid_x = 1;
  cudaemu::set_limits(lim);
  expect_topk_like_cpu(30000, 300, false, 9);
  expect_randomk_like_cpu(5, 6, 7, 30000, 3000, false);
}

// A device that takes fewer threads per block than the kernels are written for: every launch
// is refused by the check before it is made (nothing runs), with the kernel's name.
TEST(CudaEmuEdges, LaunchRefusedByTheLimitsNamesTheKernel) {
  cudaemu::Limits lim;
  lim.max_threads_per_block = 256;
  const Emu emu(2, lim);
  const int64_t n = 5000, k = 50;
  Aligned<float> g(n), r(n), v(k);
  Aligned<int32_t> idx(k);
  std::memset(g.p, 0, n * 4);
  std::memset(r.p, 0, n * 4);
  Aligned<unsigned char> ws(ct::workspace_bytes(n, false));
  const unsigned long long before = cudaemu::launches();
  EXPECT_EQ(ct::launch_topk(g.p, r.p, n, k, v.p, idx.p, false, nullptr, ws.p,
                            ct::workspace_bytes(n, false), nullptr),
            cudaErrorInvalidConfiguration);
  const std::string msg = ct::last_error_detail();
  EXPECT_NE(msg.find("k0_hist<fused>: blockDim.x = 512 exceeds the device's maximum 256"),
            std::string::npos)
      << msg;
  EXPECT_EQ(ct::launch_randomk(1, 1, 0, n, k, idx.p, false, ws.p, ct::workspace_bytes(n, false),
                               nullptr),
            cudaErrorInvalidConfiguration);
  EXPECT_NE(std::string(ct::last_error_detail()).find("k0_hist<randomk>"), std::string::npos)
      << ct::last_error_detail();
  EXPECT_EQ(cudaemu::launches(), before) << "a refused launch must not run";
}

// The emulator itself refuses what a device refuses, independently of the check above.
TEST(CudaEmuEdges, EmulatorRefusesOverLimitLaunches) {
  cudaemu::Limits lim;
  lim.max_grid_x = 4;
  const Emu emu(2, lim);
  bool ran = false;
  EXPECT_EQ(cudaemu::launch(5, 32, [&] { ran = true; }), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaemu::launch(0, 32, [&] { ran = true; }), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaemu::launch(1, 2048, [&] { ran = true; }), cudaErrorInvalidConfiguration);
  EXPECT_FALSE(ran);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "cudaGetLastError clears";
}

// ---------------------------------------------------------------------------------------------
// The CPU plugins themselves (loaded as the trainer loads them) agree with the emulated
// kernels: what a CUDA rank would select is what a CPU rank selects.

TEST(CudaEmuVsPlugins, RandomkAndTopkPluginsSelectTheSame) {
  const Emu emu(2);
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_PLUGIN_DIR}, nullptr));
  auto randomk = loader.create("randomk", {{"ratio", 0.01}});
  auto topk = loader.create("topk", {{"ratio", 0.01}});
  for (int64_t n : {int64_t{300}, int64_t{10000}, int64_t{33333}}) {
    for (double ratio : {0.01, 0.5, 1.0}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " ratio=" << ratio);
      const int64_t k = cddp::k_for_ratio(ratio, n);
      cddp::CompressContext ctx;
      ctx.step = 17;
      ctx.param_index = 4;
      ctx.seed = 1234567;
      ctx.ratio = ratio;
      // random-k
      const at::Tensor x = at::randn({n});
      const cddp::Compressed rc = randomk->compress(x, ctx);
      std::vector<int64_t> plugin_idx(k);
      const at::Tensor ri = rc.indices.to(at::kLong);
      std::memcpy(plugin_idx.data(), ri.data_ptr<int64_t>(), k * 8);
      Aligned<int32_t> out(k);
      Aligned<unsigned char> ws(ct::workspace_bytes(n, false));
      ASSERT_EQ(ct::launch_randomk(ctx.seed, ctx.step, ctx.param_index, n, k, out.p, false, ws.p,
                                   ct::workspace_bytes(n, false), nullptr),
                cudaSuccess)
          << ct::last_error_detail();
      EXPECT_EQ(std::vector<int64_t>(out.p, out.p + k), plugin_idx) << "random-k";
      // top-k with error feedback
      at::Tensor residual = at::randn({n}).mul_(0.3);
      Aligned<float> gd(n), rd(n), vd(k);
      Aligned<int32_t> id(k);
      std::memcpy(gd.p, x.data_ptr<float>(), n * 4);
      std::memcpy(rd.p, residual.data_ptr<float>(), n * 4);
      const cddp::Compressed tc = topk->compress_with_feedback(x, residual, ctx);
      ASSERT_EQ(ct::launch_topk(gd.p, rd.p, n, k, vd.p, id.p, false, nullptr, ws.p,
                                ct::workspace_bytes(n, false), nullptr),
                cudaSuccess)
          << ct::last_error_detail();
      const at::Tensor ti = tc.indices.to(at::kLong);
      EXPECT_EQ(std::vector<int64_t>(id.p, id.p + k),
                std::vector<int64_t>(ti.data_ptr<int64_t>(), ti.data_ptr<int64_t>() + k));
      EXPECT_EQ(std::memcmp(vd.p, tc.values.data_ptr<float>(), k * 4), 0) << "top-k values";
      EXPECT_EQ(std::memcmp(rd.p, residual.data_ptr<float>(), n * 4), 0) << "top-k residual";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The single-pass design (launch_topk_single_pass): the same selection, values and residual as
// the CPU plugin's RadixTopK and as launch_topk, bit for bit, through either of its tails.

// Returns the tail taken: 1 exact over the candidates, 2 the multi-pass fallback.
int expect_single_pass_like_cpu(const std::vector<float>& g, const std::vector<float>& r,
                                int64_t k, bool misalign) {
  const int64_t n = static_cast<int64_t>(g.size());
  SCOPED_TRACE(::testing::Message() << "single pass n=" << n << " k=" << k << " misalign=" << misalign);
  std::vector<float> r_cpu = r, v_cpu(k);
  std::vector<int32_t> i_cpu(k);
  cddp::kernels::RadixTopK cpu;
  cpu.select_float(g.data(), r_cpu.data(), n, k, v_cpu.data(), i_cpu.data());
  const size_t shift = misalign ? 4 : 0;
  Aligned<float> gd(n, shift), rd(n, shift), vd(k);
  Aligned<int32_t> id(k);
  std::memcpy(gd.p, g.data(), n * 4);
  std::memcpy(rd.p, r.data(), n * 4);
  const size_t wsb = ct::workspace_bytes_single_pass(n, k, false);
  EXPECT_GE(wsb, ct::workspace_bytes(n, false));
  Aligned<unsigned char> ws(wsb);
  unsigned int nan_flag = 0;
  const cudaError_t e = ct::launch_topk_single_pass(gd.p, rd.p, n, k, vd.p, id.p, false,
                                                    &nan_flag, ws.p, wsb, nullptr);
  EXPECT_EQ(e, cudaSuccess) << ct::last_error_detail();
  EXPECT_EQ(std::vector<int32_t>(id.p, id.p + k), i_cpu) << "indices differ from RadixTopK";
  EXPECT_TRUE(same_bits(v_cpu, vd.p, k)) << "values differ from RadixTopK";
  EXPECT_TRUE(same_bits(r_cpu, rd.p, n)) << "residual differs from RadixTopK";
  EXPECT_EQ(nan_flag, 0u);
  return ct::single_pass_tail_for_tests(ws.p, n, k);
}

std::vector<float> scaled_normal(int64_t n, uint32_t seed, float scale) {
  auto v = normal(n, seed);
  for (auto& x : v) x *= scale;
  return v;
}

TEST(CudaEmuSinglePass, RandomGradientsTakeTheExactTail) {
  const Emu emu(3);
  struct C { int64_t n, k; bool misalign; };
  const C cases[] = {{1, 1, false},        {100, 7, true},       {8192, 82, false},
                     {8193, 8193, false},  {40000, 400, false},  {40001, 4000, true},
                     {100000, 1000, false}, {100000, 25000, true}};
  uint32_t seed = 50;
  for (const C& c : cases) {
    const auto g = normal(c.n, seed++);
    const auto r = scaled_normal(c.n, seed++, 0.3f);
    const int tail = expect_single_pass_like_cpu(g, r, c.k, c.misalign);
    if (c.n >= 40000) EXPECT_EQ(tail, 1) << "n=" << c.n << ": a normal gradient should not need the fallback";
  }
}

// The sample sees only large values (they sit exactly at the sampled positions), so its
// threshold lies above the k-th largest key: fewer than k candidates, the device takes the
// multi-pass tail — and the result is still exact.
TEST(CudaEmuSinglePass, MisleadingSampleFallsBackOnTheDevice) {
  const Emu emu(2);
  const int64_t n = 100000, m = 8192, k = 20000;
  std::vector<float> g(n, 0.125f), r(n, 0.0f);
  for (int64_t s = 0; s < m; ++s) g[(s * n) / m] = 10.0f + static_cast<float>(s % 7);
  EXPECT_EQ(expect_single_pass_like_cpu(g, r, k, false), 2);
}

// Every magnitude equal: every element is a candidate, far more than the list holds (4k +
// 8192): the fallback again, ties to the lower index.
TEST(CudaEmuSinglePass, CandidateOverflowFallsBackOnTheDevice) {
  const Emu emu(2);
  const int64_t n = 60000, k = 1000;
  std::vector<float> g(n, -1.5f), r(n, 0.0f);
  for (int64_t i = 0; i < n; i += 3) g[i] = 1.5f;
  EXPECT_EQ(expect_single_pass_like_cpu(g, r, k, true), 2);
}

// Few blocks for many tiles (gridDim.x capped at 2): the tile counter hands tiles out and the
// look-back chains their offsets; ties spread over many tiles.
TEST(CudaEmuSinglePass, ManyTilesFewBlocksAndTies) {
  cudaemu::Limits lim;
  lim.max_grid_x = 2;
  const Emu emu(8, lim);
  const int64_t n = 90001;  // 11 tiles
  std::vector<float> g(n), r(n, 0.0f);
  std::mt19937 rng(3);
  for (int64_t i = 0; i < n; ++i) g[i] = static_cast<float>(static_cast<int>(rng() % 64)) * 0.25f;
  for (int64_t k : {int64_t{900}, int64_t{9000}, int64_t{22000}})
    expect_single_pass_like_cpu(g, r, k, k == 9000);
}

TEST(CudaEmuSinglePass, NanIsFlaggedAndOtherCasesAreTheMultiPass) {
  const Emu emu(2);
  const int64_t n = 50000, k = 500;
  auto g = normal(n, 77);
  auto r = scaled_normal(n, 78, 0.2f);
  g[4321] = std::numeric_limits<float>::quiet_NaN();
  Aligned<float> gd(n), rd(n), vd(k), rd2(n), vd2(k);
  Aligned<int32_t> id(k), id2(k);
  std::memcpy(gd.p, g.data(), n * 4);
  std::memcpy(rd.p, r.data(), n * 4);
  std::memcpy(rd2.p, r.data(), n * 4);
  const size_t wsb = ct::workspace_bytes_single_pass(n, k, false);
  Aligned<unsigned char> ws(wsb);
  unsigned int nan1 = 0, nan2 = 0;
  ASSERT_EQ(ct::launch_topk_single_pass(gd.p, rd.p, n, k, vd.p, id.p, false, &nan1, ws.p, wsb,
                                        nullptr),
            cudaSuccess);
  ASSERT_EQ(ct::launch_topk(gd.p, rd2.p, n, k, vd2.p, id2.p, false, &nan2, ws.p, wsb, nullptr),
            cudaSuccess);
  EXPECT_EQ(nan1, 1u);
  EXPECT_EQ(nan2, 1u);
  EXPECT_EQ(std::vector<int32_t>(id.p, id.p + k), std::vector<int32_t>(id2.p, id2.p + k))
      << "NaN sorts as the largest magnitude in both designs";
  EXPECT_EQ(std::memcmp(rd.p, rd2.p, n * 4), 0);
  // k = 0 and no residual: launch_topk's paths (one add kernel; nothing).
  const unsigned long long before = cudaemu::launches();
  EXPECT_EQ(ct::launch_topk_single_pass(gd.p, rd.p, n, 0, nullptr, nullptr, false, nullptr,
                                        nullptr, 0, nullptr),
            cudaSuccess);
  EXPECT_EQ(cudaemu::launches() - before, 1u);
}

// ---------------------------------------------------------------------------------------------
// Tracing and the stale-error clearing.

std::string read_all(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, got);
  return s;
}

TEST(CudaEmuTrace, EveryCallIsLoggedBeforeAndAfterInOrder) {
  const Emu emu(2);
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ct::set_trace(f);
  const int64_t n = 20000, k = 200;
  Aligned<int32_t> out(k);
  Aligned<unsigned char> ws(ct::workspace_bytes(n, false));
  ASSERT_EQ(ct::launch_randomk(3, 4, 5, n, k, out.p, false, ws.p, ct::workspace_bytes(n, false),
                               nullptr),
            cudaSuccess);
  ASSERT_EQ(ct::launch_randomk(3, 4, 5, n, 0, nullptr, false, nullptr, 0, nullptr), cudaSuccess);
  ct::set_trace(nullptr);
  const std::string log = read_all(f);
  std::fclose(f);
  const char* expect[] = {
      "cddp-cuda: launch_randomk n=20000 k=200",
      "cddp-cuda: > cudaMemsetAsync(randomk state+histogram",
      "cddp-cuda: < cudaMemsetAsync(randomk state+histogram): no error",
      "cddp-cuda: > k0_hist<randomk> grid=",
      "cddp-cuda: < k0_hist<randomk>: no error",
      "cddp-cuda: > k1_hist<randomk> grid=",
      "cddp-cuda: < k1_hist<randomk>: no error",
      "cddp-cuda: > k2_hist<randomk>",
      "cddp-cuda: > k3_tiles<randomk>",
      "cddp-cuda: > k4_compact<randomk>",
      "cddp-cuda: < k4_compact<randomk>: no error",
      "cddp-cuda: launch_randomk n=20000 k=0",
  };
  size_t at = 0;
  for (const char* e : expect) {
    const size_t pos = log.find(e, at);
    ASSERT_NE(pos, std::string::npos) << "missing, or out of order: " << e << "\nlog:\n" << log;
    at = pos + 1;
  }
  EXPECT_EQ(log.find("cddp-cuda: >", at), std::string::npos) << "k = 0 launched something:\n" << log;
}

TEST(CudaEmuTrace, StaleErrorOfSomeoneElseIsClearedAndReported) {
  const Emu emu(2);
  // A failed launch that is not ours leaves an error behind for cudaGetLastError().
  (void)cudaemu::launch(0, 32, [] {});
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ct::set_trace(f);
  const int64_t n = 1000, k = 10;
  Aligned<int32_t> out(k);
  Aligned<unsigned char> ws(ct::workspace_bytes(n, false));
  EXPECT_EQ(ct::launch_randomk(1, 1, 0, n, k, out.p, false, ws.p, ct::workspace_bytes(n, false),
                               nullptr),
            cudaSuccess)
      << ct::last_error_detail();
  ct::set_trace(nullptr);
  const std::string log = read_all(f);
  std::fclose(f);
  EXPECT_NE(log.find("launch_randomk: cleared a stale error left by an earlier CUDA call (not "
                     "ours): invalid configuration argument"),
            std::string::npos)
      << log;
}

}  // namespace
