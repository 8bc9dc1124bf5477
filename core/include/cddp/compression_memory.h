// compression_memory.h — what error feedback keeps for one parameter on one rank, whichever
// optimizer compresses it: the residual e (what compression held back, this rank only), the lr
// it is expressed at, and the compressor plugin's own state (payload.h: PowerSGD's Q, a running
// scale). CompressedSGDParamState and CompressedAdamWParamState both carry one, so the stages
// in core/src/optim/ (error feedback, compression, payloads) work on either.
//
// write_memory/read_memory are the one serialization of these fields: "residual",
// "residual_lr", and the plugin state as its names joined by '\n' ("plugin_state_names") plus
// one tensor each ("plugin_state.<i>", in name order). A state without the names loads empty.
//
// It will not create the residual (error_feedback.h does, at a tensor's first compressed step),
// reset it on load, or know which optimizer owns it.
#pragma once

#include <cddp/payload.h>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <string>

namespace torch::serialize {
class InputArchive;
class OutputArchive;
}  // namespace torch::serialize

namespace cddp {

struct CompressionMemory {
  TORCH_ARG(at::Tensor, residual);     // error-feedback memory e, this rank only
  TORCH_ARG(double, residual_lr) = 0;  // the lr residual is expressed at (0: none yet)
  TORCH_ARG(PluginState, plugin_state) = {};

 protected:
  // `owner` names the optimizer in errors ("CompressedSGD state").
  void write_memory(torch::serialize::OutputArchive& archive) const;
  void read_memory(torch::serialize::InputArchive& archive, const char* owner);
};

}  // namespace cddp
