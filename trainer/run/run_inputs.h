// run_inputs.h — what a run trains on: the data set splits and the model built for them
// (or for the input shape a checkpoint recorded), the model's parameters by name, and its
// float buffers with their per-step broadcast.
//
// It will not train or evaluate. Errors: ConfigError for a bad data or model section,
// RuntimeFailure for a data set that cannot be read, CheckpointError for a checkpoint that
// does not record its input shape.
#pragma once

#include "config/train_config.h"

#include <cddp/communicator.h>
#include <cddp/data/dataset_loader.h>
#include <cddp/models/model_factory.h>

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cddp::train {

// The training (train = true) or test split the config describes.
Dataset load_split(const TrainConfig& config, bool train);

// The config's model for data shaped like `shape_from`.
std::shared_ptr<Classifier> build_model(const TrainConfig& config, const Dataset& shape_from);
// The config's model for a checkpoint's input_shape (channels, height, width, classes).
std::shared_ptr<Classifier> build_model(const TrainConfig& config, const std::vector<int64_t>& shape);

std::vector<std::pair<std::string, at::Tensor>> named_parameters(Classifier& model);

// Float buffers (BatchNorm running statistics), broadcast from rank 0 before each step as
// DistributedDataParallel does, so that every rank evaluates the same model.
std::vector<at::Tensor> float_buffers(Classifier& model);
void broadcast_buffers(std::vector<at::Tensor>& buffers, Communicator& comm);

}  // namespace cddp::train
