// run_inputs.cpp — see run_inputs.h. It will not cache data sets between runs.
#include "run/run_inputs.h"

#include "checkpoint/checkpoint.h"
#include "run/run_support.h"
#include "trainer.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace cddp::train {
namespace {

DataSpec data_spec(const TrainConfig& cfg) {
  DataSpec s;
  s.name = cfg.data.name;
  s.path = cfg.data.path;
  s.train_subset = cfg.data.train_subset;
  s.test_subset = cfg.data.test_subset;
  s.seed = uint64_t(cfg.run.seed);
  s.synthetic_train = cfg.data.synthetic_train;
  s.synthetic_test = cfg.data.synthetic_test;
  return s;
}

}  // namespace

Dataset load_split(const TrainConfig& cfg, bool train) {
  try {
    return load_dataset(data_spec(cfg), train);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(cfg.source + ": error: data: " + e.what());
  } catch (const std::exception& e) {
    throw RuntimeFailure(std::string("cannot load the ") + (train ? "training" : "test") + " set: " + error_text(e));
  }
}

std::shared_ptr<Classifier> build_model(const TrainConfig& cfg, const Dataset& shape_from) {
  ModelSpec spec;
  spec.name = cfg.model.name;
  spec.hidden = cfg.model.hidden;
  spec.in_channels = shape_from.channels();
  spec.height = shape_from.height();
  spec.width = shape_from.width();
  spec.num_classes = shape_from.num_classes;
  try {
    return make_model(spec);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(cfg.source + ": error: model: " + e.what());
  }
}

std::shared_ptr<Classifier> build_model(const TrainConfig& cfg, const std::vector<int64_t>& shape) {
  if (shape.size() != 4) throw CheckpointError("checkpoint does not record its model's input shape");
  ModelSpec spec;
  spec.name = cfg.model.name;
  spec.hidden = cfg.model.hidden;
  spec.in_channels = shape[0];
  spec.height = shape[1];
  spec.width = shape[2];
  spec.num_classes = shape[3];
  return make_model(spec);
}

std::vector<std::pair<std::string, at::Tensor>> named_parameters(Classifier& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

std::vector<at::Tensor> float_buffers(Classifier& model) {
  std::vector<at::Tensor> out;
  for (const auto& b : model.buffers())
    if (b.is_floating_point()) out.push_back(b);
  return out;
}

void broadcast_buffers(std::vector<at::Tensor>& buffers, Communicator& comm) {
  if (buffers.empty() || comm.world_size() == 1) return;
  std::vector<at::Tensor> flat;
  for (auto& b : buffers) flat.push_back(b.reshape(-1));
  at::Tensor all = at::cat(flat);
  comm.broadcast_(all, 0);
  int64_t off = 0;
  for (auto& b : buffers) {
    b.copy_(all.narrow(0, off, b.numel()).view(b.sizes()));
    off += b.numel();
  }
}

}  // namespace cddp::train
