// threshold_plugin.cpp — an example third-party plugin: keeps every entry with |x| >= tau
// (Strom 2015, "Scalable distributed DNN training using commodity GPU cloud computing").
// Its selection size varies per rank and per step, which exercises the count exchange.
#include <cddp/plugin_abi.h>

#include <ATen/ATen.h>

namespace {

const cddp::ParamSpec kParams[] = {
    {"tau", cddp::ParamType::Double, "0.001", 0.0, 1e30, "keep entries with |x| >= tau"},
};

class ThresholdCompressor final : public cddp::Compressor {
 public:
  explicit ThresholdCompressor(const cddp::ParamMap& params) {
    cddp::ParamReader reader("threshold", kParams, 1, params);
    tau_ = reader.get_double("tau", 1e-3);
  }
  std::string name() const override { return "threshold"; }
  std::vector<c10::DeviceType> supported_devices() const override { return {c10::DeviceType::CPU}; }
  cddp::Compressed compress(const at::Tensor& grad, const cddp::CompressContext& ctx) override {
    TORCH_CHECK(!at::isnan(grad).any().item<bool>(), "threshold: NaN in parameter '", ctx.param_name, "'");
    cddp::Compressed out;
    at::Tensor flat = grad.reshape(-1);
    at::Tensor idx = at::nonzero(flat.abs() >= tau_).view(-1);
    out.values = flat.index_select(0, idx);
    out.indices = idx.to(cddp::index_dtype_for(flat.numel()));
    out.numel = flat.numel();
    out.shape = grad.sizes().vec();
    out.dtype = grad.scalar_type();
    return out;
  }

 private:
  double tau_ = 1e-3;
};

}  // namespace

CDDP_DEFINE_COMPRESSOR_PLUGIN(ThresholdCompressor, "threshold", "0.1.0",
                              "example out-of-tree plugin: magnitude threshold", kParams, "cpu")
