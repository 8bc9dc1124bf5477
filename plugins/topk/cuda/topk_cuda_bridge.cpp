// topk_cuda_bridge.cpp — see topk_cuda_bridge.h. The top level of the CUDA path: the one place
// that reads CDDP_CUDA_TRACE (once per process) and turns it into set_trace().
#include "topk_cuda_bridge.h"

#include "topk_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace cddp::topk_cuda {

namespace {

at::ScalarType index_type(int64_t n) {
  return needs_int64_indices(n) ? at::ScalarType::Long : at::ScalarType::Int;
}

// CDDP_CUDA_TRACE=1 (or any value but "" and "0"): every CUDA call of the launchers is logged
// to stderr, one flushed line before and one after (tools/gpu/check.sh sets it, with
// CUDA_LAUNCH_BLOCKING=1, when it reruns a failed or hung GPU test). Read once.
void configure_trace_once() {
  static const bool on = [] {
    const char* v = std::getenv("CDDP_CUDA_TRACE");
    const bool enabled = v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
    if (enabled) set_trace(stderr);
    return enabled;
  }();
  (void)on;
}

void check_launch(cudaError_t e, const char* what) {
  TORCH_CHECK(e == cudaSuccess, what, ": CUDA error: ", cudaGetErrorString(e), " (",
              last_error_detail(), ")");
}

}  // namespace

Compressed topk_cuda_compress_with_feedback(const at::Tensor& grad, at::Tensor* residual_or_null,
                                            int64_t k, at::Tensor* nan_flag_out) {
  configure_trace_once();
  TORCH_CHECK(grad.defined(), "topk_cuda: undefined gradient");
  TORCH_CHECK(grad.is_cuda(), "topk_cuda: gradient is on ", grad.device(), ", expected CUDA");
  TORCH_CHECK(grad.scalar_type() == at::ScalarType::Float,
              "topk_cuda: only float32 is supported on CUDA, got ", grad.scalar_type());
  const int64_t n = grad.numel();
  TORCH_CHECK(k >= 0 && k <= n, "topk_cuda: k = ", k, " out of range [0, ", n, "]");
  at::Tensor* residual = residual_or_null;
  if (residual != nullptr) {
    TORCH_CHECK(residual->defined() && residual->is_cuda() &&
                    residual->device() == grad.device(),
                "topk_cuda: residual must be a CUDA tensor on ", grad.device());
    TORCH_CHECK(residual->scalar_type() == at::ScalarType::Float,
                "topk_cuda: residual must be float32, got ", residual->scalar_type());
    TORCH_CHECK(residual->is_contiguous(), "topk_cuda: residual must be contiguous");
    TORCH_CHECK(residual->numel() == n, "topk_cuda: residual has ", residual->numel(),
                " elements, the gradient ", n);
  }
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor g = grad.contiguous();
  if (residual != nullptr && n > 0)
    TORCH_CHECK(g.data_ptr() != residual->data_ptr(), "topk_cuda: residual aliases the gradient");

  const auto opts = grad.options();
  Compressed out;
  out.numel = n;
  out.shape = grad.sizes().vec();
  out.dtype = at::ScalarType::Float;
  out.values = at::empty({k}, opts);
  out.indices = at::empty({k}, opts.dtype(index_type(n)));
  unsigned int* nan_ptr = nullptr;
  if (nan_flag_out != nullptr) {
    *nan_flag_out = at::zeros({1}, opts.dtype(at::ScalarType::Int));
    nan_ptr = reinterpret_cast<unsigned int*>(nan_flag_out->data_ptr<int32_t>());
  }
  if (n == 0) return out;

  // k == 0 needs no workspace: the launcher only writes acc into the residual (or does nothing).
  const bool idx64 = needs_int64_indices(n);
  const size_t ws_bytes = k > 0 ? workspace_bytes(n, idx64) : 0;
  at::Tensor ws = at::empty({static_cast<int64_t>(ws_bytes)}, opts.dtype(at::ScalarType::Byte));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(grad.device().index()).stream();
  check_launch(launch_topk(g.data_ptr<float>(),
                           residual != nullptr ? residual->data_ptr<float>() : nullptr, n, k,
                           k > 0 ? out.values.data_ptr<float>() : nullptr,
                           k > 0 ? out.indices.data_ptr() : nullptr, idx64, nan_ptr,
                           k > 0 ? ws.data_ptr() : nullptr, ws_bytes, stream),
               "topk_cuda");
  return out;  // ws goes back to the caching allocator, stream-ordered: safe.
}

at::Tensor randomk_cuda_indices(uint64_t seed, int64_t step, int64_t param_index, int64_t n,
                                int64_t k, c10::Device device) {
  configure_trace_once();
  TORCH_CHECK(device.is_cuda(), "randomk_cuda: device ", device, " is not a CUDA device");
  TORCH_CHECK(n >= 0 && k >= 0 && k <= n, "randomk_cuda: k = ", k, " out of range [0, ", n, "]");
  const c10::cuda::CUDAGuard guard(device);
  const auto opts = at::TensorOptions().device(device);
  at::Tensor idx = at::empty({k}, opts.dtype(index_type(n)));
  if (k == 0) return idx;
  const bool idx64 = needs_int64_indices(n);
  const size_t ws_bytes = workspace_bytes(n, idx64);
  at::Tensor ws = at::empty({static_cast<int64_t>(ws_bytes)}, opts.dtype(at::ScalarType::Byte));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(device.index()).stream();
  check_launch(launch_randomk(seed, step, param_index, n, k, idx.data_ptr(), idx64,
                              ws.data_ptr(), ws_bytes, stream),
               "randomk_cuda");
  return idx;
}

}  // namespace cddp::topk_cuda
