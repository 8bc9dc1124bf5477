// launch_check.h — the one check every kernel launch of topk_kernels.cu goes through: a grid,
// block and shared-memory size against the device limits the kernels assume, with a message
// that names the kernel and the limit it breaks. Plain host C++ (no CUDA header), so the CPU
// tests (tests/gpu/cuda_launch_emu_test.cpp) call it directly.
//
// It will not launch anything, query a device or cache anything: the caller passes the limits
// (topk_kernels.cu: the stated limits below, lowered to what cudaDeviceGetAttribute and
// cudaFuncGetAttributes report on the real device, or the emulator's settable ones).
#pragma once

#include <cstdint>
#include <string>

namespace cddp::topk_cuda {

// Device limits a launch must respect. The defaults are the ones these kernels are written
// for — CUDA's guarantees on every device since compute capability 3.0, and what an H100/H200
// (sm_90) reports: 1024 threads per block, gridDim.x < 2^31, gridDim.y/z <= 65535, and 48 KiB
// of shared memory per block unless a kernel opts into more with cudaFuncSetAttribute (none
// of ours does, so 48 KiB is the limit even where the device could give 227 KiB).
struct DeviceLimits {
  int64_t max_threads_per_block = 1024;
  int64_t max_grid_x = 2147483647;  // 2^31 - 1
  int64_t max_grid_y = 65535;
  int64_t max_grid_z = 65535;
  int64_t max_smem_per_block = 48 * 1024;  // static + dynamic, without an opt-in
  int64_t warp_size = 32;
};

// One launch as the host is about to make it.
struct LaunchConfig {
  const char* kernel = "?";    // name for messages, e.g. "k4_compact<read>"
  int64_t grid_x = 1, grid_y = 1, grid_z = 1;
  int64_t block_x = 1;
  int64_t static_smem = 0;     // bytes of __shared__ arrays (declared, or cudaFuncAttributes)
  int64_t dynamic_smem = 0;    // the third <<<>>> argument
  int64_t kernel_max_threads = 0;  // cudaFuncAttributes::maxThreadsPerBlock; 0: unknown
  bool full_warps = true;      // the kernel's warp collectives use the full 0xffffffff mask
};

// Empty when `c` is launchable under `lim`; otherwise one line naming the kernel, the value
// and the limit, e.g. "k4_compact<read>: gridDim.x = 3000000000 exceeds the device's
// maximum 2147483647".
inline std::string launch_config_error(const LaunchConfig& c, const DeviceLimits& lim) {
  const std::string who = std::string(c.kernel ? c.kernel : "?") + ": ";
  auto over = [&](const char* what, int64_t v, int64_t max) {
    return who + what + " = " + std::to_string(v) + " exceeds the device's maximum " +
           std::to_string(max);
  };
  if (c.grid_x < 1 || c.grid_y < 1 || c.grid_z < 1)
    return who + "empty grid (" + std::to_string(c.grid_x) + ", " + std::to_string(c.grid_y) +
           ", " + std::to_string(c.grid_z) + "): every dimension must be >= 1";
  if (c.grid_x > lim.max_grid_x) return over("gridDim.x", c.grid_x, lim.max_grid_x);
  if (c.grid_y > lim.max_grid_y) return over("gridDim.y", c.grid_y, lim.max_grid_y);
  if (c.grid_z > lim.max_grid_z) return over("gridDim.z", c.grid_z, lim.max_grid_z);
  if (c.block_x < 1) return who + "blockDim.x = " + std::to_string(c.block_x) + " (must be >= 1)";
  if (c.block_x > lim.max_threads_per_block)
    return over("blockDim.x", c.block_x, lim.max_threads_per_block);
  if (c.kernel_max_threads > 0 && c.block_x > c.kernel_max_threads)
    return who + "blockDim.x = " + std::to_string(c.block_x) + " exceeds this kernel's " +
           std::to_string(c.kernel_max_threads) +
           " threads per block (registers or __launch_bounds__)";
  if (c.full_warps && lim.warp_size > 0 && c.block_x % lim.warp_size != 0)
    return who + "blockDim.x = " + std::to_string(c.block_x) + " is not a multiple of the warp (" +
           std::to_string(lim.warp_size) + "): full-mask warp collectives would wait on lanes " +
           "that do not exist";
  if (c.static_smem < 0 || c.dynamic_smem < 0) return who + "negative shared memory size";
  if (c.static_smem + c.dynamic_smem > lim.max_smem_per_block)
    return who + "shared memory " + std::to_string(c.static_smem) + " static + " +
           std::to_string(c.dynamic_smem) + " dynamic = " +
           std::to_string(c.static_smem + c.dynamic_smem) + " bytes exceeds the " +
           std::to_string(lim.max_smem_per_block) +
           " bytes a block may use without cudaFuncSetAttribute";
  return {};
}

// Element-wise minimum: what a launch may use when both the stated limits and the device's
// apply.
inline DeviceLimits tighter(const DeviceLimits& a, const DeviceLimits& b) {
  auto mn = [](int64_t x, int64_t y) { return x < y ? x : y; };
  DeviceLimits r;
  r.max_threads_per_block = mn(a.max_threads_per_block, b.max_threads_per_block);
  r.max_grid_x = mn(a.max_grid_x, b.max_grid_x);
  r.max_grid_y = mn(a.max_grid_y, b.max_grid_y);
  r.max_grid_z = mn(a.max_grid_z, b.max_grid_z);
  r.max_smem_per_block = mn(a.max_smem_per_block, b.max_smem_per_block);
  r.warp_size = a.warp_size;  // 32 on every NVIDIA device; a device reporting otherwise is refused
  return r;
}

}  // namespace cddp::topk_cuda
