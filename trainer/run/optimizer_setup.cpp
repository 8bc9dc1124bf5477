// optimizer_setup.cpp — see optimizer_setup.h. It will not pick defaults of its own: every
// option comes from the config, whose defaults docs/config.md lists.
#include "run/optimizer_setup.h"

#include "config/config_loader.h"

#include <c10/util/Exception.h>

namespace cddp::train {

std::unique_ptr<CompressedSGD> make_optimizer(const TrainConfig& cfg, const Compression& compression,
                                              std::vector<std::pair<std::string, at::Tensor>> named_params,
                                              std::shared_ptr<Communicator> comm) {
  const auto& o = cfg.optimizer;
  const auto& c = cfg.compression;
  CompressedSGDOptions opts(o.lr);
  opts.momentum(o.momentum)
      .nesterov(o.nesterov)
      .weight_decay(o.weight_decay)
      .momentum_mode(o.momentum_mode)
      .nonfinite(o.nonfinite)
      .compressor(compression.compressor)
      .density(c.dense() ? -1.0 : c.ratio)
      .error_feedback(c.error_feedback)
      .residual_lr_scaling(c.residual_lr_scaling)
      .scope(c.scope)
      .index_coding(c.index_coding)
      .min_numel(c.min_numel)
      .compress_1d(c.compress_1d)
      .auto_dense(c.auto_dense)
      .rules(compression.rules)
      .seed(cfg.run.seed)
      .overlap(cfg.distributed.overlap)
      .communicator(std::move(comm));
  try {
    return std::make_unique<CompressedSGD>(std::move(named_params), opts);
  } catch (const c10::Error& e) {
    throw ConfigError(cfg.source + ": error: optimizer: " + e.what_without_backtrace());
  }
}

}  // namespace cddp::train
