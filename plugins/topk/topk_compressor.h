// topk_compressor.h — top-k sparsification: keep the k = ceil(ratio·numel) entries of largest
// magnitude (Aji & Heafield 2017, "Sparse Communication for Distributed Gradient Descent";
// Stich et al. 2018, "Sparsified SGD with Memory"). Exact on the CPU; ties break by lower
// index so that runs are reproducible; the output is sorted by index.
//
// float32/float64 CPU tensors go through the radix selection of plugins/common (near memory
// bandwidth, error feedback fused into its passes, and for float32 DGC's momentum correction
// too); other dtypes use topk_reference.
//
// Parameters: ratio (0 < ratio <= 1, default 0.01); impl ("auto" | "cpu" | "cuda"):
// "auto" runs the implementation of the tensor's device, the others insist on theirs.
// CUDA tensors (when built against a CUDA LibTorch) use plugins/topk/cuda: a fused radix
// select on the current stream, bitwise equal to the CPU selection.
// It will not run on devices this build does not support: it refuses them by name.
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

#include "radix_topk_cpu.h"

#include <memory>

namespace cddp::topk {

class TopKCompressor final : public Compressor {
 public:
  explicit TopKCompressor(const ParamMap& params);

  std::string name() const override { return "topk"; }
  std::vector<c10::DeviceType> supported_devices() const override;
  Compressed compress(const at::Tensor& grad, const CompressContext& ctx) override;
  Compressed compress_with_feedback(const at::Tensor& grad, at::Tensor& residual,
                                    const CompressContext& ctx) override;
  bool has_fused_feedback() const noexcept override;
  // float32 CPU: DGC's velocity update rides on the selection's first pass (radix_topk_cpu.h).
  Compressed compress_with_momentum_feedback(const at::Tensor& grad, at::Tensor& velocity, double momentum,
                                             at::Tensor& residual, const CompressContext& ctx) override;
  double default_density() const noexcept override { return ratio_; }

  double ratio() const { return ratio_; }

 private:
  int64_t k_for(const at::Tensor& grad, const CompressContext& ctx) const;
  void check_input(const at::Tensor& grad, const CompressContext& ctx) const;

  double ratio_;
  std::string impl_;  // "auto" (follow the tensor's device), "cpu" or "cuda"
  kernels::RadixTopK radix_;  // its buffers are reused from step to step
};

}  // namespace cddp::topk
