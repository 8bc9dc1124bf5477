// rounds_mean_plugin.cpp — the smallest real PayloadKind::Rounds plugin, to prove the kind:
// two rounds over the RoundCollective (the world size as a sum of ones, then the tensor), the
// average as their quotient, this rank's approximation exact (so the residual is zero), and
// one tensor of declared state ("calls", a counter the host keeps and checkpoints).
#include <cddp/plugin_abi.h>

#include <ATen/ATen.h>

namespace {

class TwoRoundMean final : public cddp::Compressor {
 public:
  explicit TwoRoundMean(const cddp::ParamMap& p) { cddp::ParamReader("rounds_mean", kSpecs, 1, p); }
  std::string name() const override { return "rounds_mean"; }
  void run_rounds(const at::Tensor& acc, cddp::PluginState& state, cddp::RoundCollective& coll,
                  const cddp::CompressContext&, at::Tensor& average, at::Tensor& approx) override {
    at::Tensor ranks = at::ones({1}, at::kFloat);
    coll.allreduce_sum_(ranks);  // round 1: how many took part
    at::Tensor sum = acc.reshape(-1).contiguous().clone();
    coll.allreduce_sum_(sum);  // round 2: the tensor
    average.view(-1).copy_(sum.div_(ranks.item<float>()));
    approx.view(-1).copy_(acc.reshape(-1));
    state.at("calls").add_(1);
  }
  std::vector<cddp::StateSpec> state_specs(const std::vector<int64_t>&, at::ScalarType) const override {
    return {{"calls", {1}, at::kFloat}};
  }
  // No cost model (-1): it moves more than a dense allreduce (one extra float), and auto_dense
  // would route it dense; -1 keeps it on the rounds route, which is what it is here to test.
  int64_t wire_bytes(const std::vector<int64_t>&, at::ScalarType, double) const override { return -1; }
  static constexpr cddp::ParamSpec kSpecs[] = {{"unused", cddp::ParamType::Bool, "false", 0, 0, "none"}};
};

}  // namespace

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(TwoRoundMean, "rounds_mean", "0.1.0", "test: the mean in two rounds",
                                 TwoRoundMean::kSpecs, CDDP_CAPS_ROUNDS("cpu"))
