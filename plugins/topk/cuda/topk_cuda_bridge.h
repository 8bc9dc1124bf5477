// topk_cuda_bridge.h — the LibTorch-facing glue over topk_kernels.cuh (built only when
// LibTorch has CUDA: CDDP_TORCH_HAS_CUDA). Outputs and scratch come from the caching
// allocator, work is enqueued on at::cuda::getCurrentCUDAStream(), and nothing here
// synchronises the host: k is known on the host, so every output size is too.
#pragma once

#include <cddp/compressor.h>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace cddp::topk_cuda {

// Exact top-k by magnitude of a float32 CUDA tensor, fused with error feedback.
//   grad               float32 on a CUDA device, any shape and strides (made contiguous).
//   residual_or_null   nullptr: select from acc = grad. Otherwise a contiguous float32 tensor
//                      of grad's numel on grad's device, not aliasing grad: on return it holds
//                      acc - decompress(C(acc)) with acc = grad + residual, i.e. acc with the
//                      selected positions set to +0.0f (the Compressor::compress_with_feedback
//                      contract, bit for bit).
//   k                  0 <= k <= numel (the caller computes it, e.g. k_for_ratio).
//   nan_flag_out       optional: receives a 1-element int32 CUDA tensor that becomes 1 when
//                      acc holds a NaN (NaN then sorts as the largest magnitude). Reading it
//                      (.item()) synchronises the stream, so a caller checks it lazily — e.g.
//                      every N steps, or once before an optimizer step commits — never here.
// Returns values [k] float32 (acc with its sign) and indices [k] int32 (int64 when
// numel >= 2^31), sorted by index ascending; ties in |acc| go to the lower index. Bitwise equal
// to the CPU plugin's selection on the same input. Throws c10::Error on bad arguments.
Compressed topk_cuda_compress_with_feedback(const at::Tensor& grad, at::Tensor* residual_or_null,
                                            int64_t k, at::Tensor* nan_flag_out = nullptr);

// Seeded random-k on `device` (a CUDA device): the k indices of [0, n) with the smallest
// Philox priorities (plugins/common/philox.h; ties: lower index), ascending, as an int32
// tensor (int64 when n >= 2^31) on `device`. Identical on every rank and to the CPU plugin.
at::Tensor randomk_cuda_indices(uint64_t seed, int64_t step, int64_t param_index, int64_t n,
                                int64_t k, c10::Device device);

}  // namespace cddp::topk_cuda
