// compressed_optimizer.cpp — CompressedOptimizer: the bookkeeping CompressedSGD and
// CompressedAdamW share (compressed_optimizer.h).
#include <cddp/compressed_optimizer.h>
#include <cddp/local_communicator.h>

#include "payload_buffers.h"

namespace cddp {

CompressedOptimizer::CompressedOptimizer(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                                         std::unique_ptr<torch::optim::OptimizerOptions> defaults)
    : torch::optim::Optimizer(std::move(param_groups), std::move(defaults)) {}

CompressedOptimizer::~CompressedOptimizer() = default;

std::vector<at::Tensor> CompressedOptimizer::tensors_of(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<at::Tensor> out;
  for (const auto& [name, t] : named) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> CompressedOptimizer::auto_named(const std::vector<at::Tensor>& params) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params.size(); ++i) out.emplace_back("param" + std::to_string(i), params[i]);
  return out;
}

void CompressedOptimizer::connect_exchanges(std::shared_ptr<Communicator> communicator, const ExchangeWire& wire) {
  comm_ = communicator ? std::move(communicator) : std::make_shared<LocalCommunicator>();
  exchange_ = std::make_unique<GradientExchange>(*comm_, wire);
  payloads_ = std::make_unique<PayloadExchange>(*comm_);
  payload_buffers_ = std::make_unique<detail::PayloadBuffers>();
}

void CompressedOptimizer::record_step(const StepStats& st) {
  last_ = st;
  total_.add(st);
}

void CompressedOptimizer::record_skipped_step(StepStats& st) {
  st.step = step_;  // every state untouched, the step count too
  st.skipped = true;
  record_step(st);
}

}  // namespace cddp
