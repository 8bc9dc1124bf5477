// threshold_compressor.h — magnitude threshold sparsification (Strom, Interspeech 2015,
// "Scalable distributed DNN training using commodity GPU cloud computing"): every entry with
// |x| ≥ τ is sent, in index order. The count depends on the data and differs between ranks and
// steps, so the host exchanges the counts first (PluginCaps: a selection, default density −1).
// With error feedback the residual keeps everything under τ until it grows past it, as in the
// paper. Deterministic, no RNG.
//
// It will not pick τ adaptively, cap the count, or run on GPU; NaN is a clear error naming the
// parameter (an Inf is ≥ τ and would be sent: the optimizer's non-finite guard stops it first).
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

namespace cddp::threshold {

class ThresholdCompressor final : public Compressor {
 public:
  explicit ThresholdCompressor(const ParamMap& params);

  std::string name() const override { return "threshold"; }
  Compressed compress(const at::Tensor& grad, const CompressContext& ctx) override;
  double tau() const { return tau_; }

 private:
  double tau_;
};

}  // namespace cddp::threshold
