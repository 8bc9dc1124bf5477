// optimizer_setup.h — the run's optimizer from [optimizer] and [compression]: CompressedSGD
// with the compressors compression_setup created and the run's communicator.
//
// It will not create compressors (compression_setup) or set the per-step learning rate and
// density (the schedules, applied by the run loop).
#pragma once

#include "config/train_config.h"
#include "run/compression_setup.h"

#include <cddp/communicator.h>
#include <cddp/compressed_sgd.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cddp::train {

// ConfigError "optimizer: ..." when CompressedSGD refuses the options.
std::unique_ptr<CompressedSGD> make_optimizer(const TrainConfig& config, const Compression& compression,
                                              std::vector<std::pair<std::string, at::Tensor>> named_params,
                                              std::shared_ptr<Communicator> comm);

}  // namespace cddp::train
