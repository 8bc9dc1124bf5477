// randomk_compressor.h — random-k sparsification (Stich et al. 2018, "Sparsified SGD with
// Memory"; Wangni et al. 2018, "Gradient Sparsification for Communication-Efficient
// Distributed Optimization"). Keeps k = ceil(ratio·numel) distinct entries chosen by the
// plugin's own counter-based generator (Philox4x32-10) keyed by (seed, step, parameter
// index): every rank picks the same indices, so ranks may sum values directly
// (shared_indices() is true). The global RNG is never touched. Output sorted by index.
// Selection: the k smallest Philox priorities (ties: lower index) by the radix selection of
// plugins/common — O(n), no permutation of n is ever built, identical to the GPU plugin's.
//
// Parameters: ratio (0 < ratio <= 1, default 0.01); scale (bool, default false): multiply
// the kept values by numel/k, which makes the compressor unbiased, E[D(C(x))] = x.
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

#include "radix_topk_cpu.h"

#include <cstdint>
#include <vector>

namespace cddp::randomk {

class RandomKCompressor final : public Compressor {
 public:
  explicit RandomKCompressor(const ParamMap& params);

  std::string name() const override { return "randomk"; }
  std::vector<c10::DeviceType> supported_devices() const override {
#if defined(CDDP_TOPK_WITH_CUDA)
    return {c10::DeviceType::CPU, c10::DeviceType::CUDA};
#else
    return {c10::DeviceType::CPU};
#endif
  }
  Compressed compress(const at::Tensor& grad, const CompressContext& ctx) override;
  bool shared_indices() const noexcept override { return true; }
  double default_density() const noexcept override { return ratio_; }

 private:
  double ratio_;
  bool scale_;
  kernels::RadixTopK radix_;  // buffers reused between steps
};

}  // namespace cddp::randomk
