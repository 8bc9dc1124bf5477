// optimizer_setup.cpp — see optimizer_setup.h. It will not pick defaults of its own: every
// option comes from the config, whose defaults docs/config.md lists.
#include "run/optimizer_setup.h"

#include "config/config_loader.h"

#include <cddp/compressed_adamw.h>
#include <cddp/compressed_sgd.h>

#include <c10/util/Exception.h>

namespace cddp::train {
namespace {

std::unique_ptr<CompressedOptimizer> make_adamw(const TrainConfig& cfg, const Compression& compression,
                                                std::vector<std::pair<std::string, at::Tensor>> named_params,
                                                std::shared_ptr<Communicator> comm) {
  const auto& o = cfg.optimizer;
  const auto& c = cfg.compression;
  CompressedAdamWOptions opts(o.lr);
  opts.betas({o.beta1, o.beta2})
      .eps(o.eps)
      .weight_decay(o.weight_decay)
      .amsgrad(o.amsgrad)
      .mode(o.adamw_mode)
      .warmup_steps(o.onebit_warmup_steps)
      .nonfinite(o.nonfinite)
      .compressor(compression.compressor)
      .density(c.dense() ? -1.0 : c.ratio)
      .error_feedback(c.error_feedback)
      .index_coding(c.index_coding)
      .min_numel(c.min_numel)
      .compress_1d(c.compress_1d)
      .auto_dense(c.auto_dense)
      .rules(compression.rules)
      .seed(cfg.run.seed)
      .communicator(std::move(comm));
  return std::make_unique<CompressedAdamW>(std::move(named_params), opts);
}

std::unique_ptr<CompressedOptimizer> make_sgd(const TrainConfig& cfg, const Compression& compression,
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
      .value_dtype(c.value_dtype)
      .exchange(c.exchange)
      .min_numel(c.min_numel)
      .compress_1d(c.compress_1d)
      .auto_dense(c.auto_dense)
      .rules(compression.rules)
      .seed(cfg.run.seed)
      .overlap(cfg.distributed.overlap)
      .bucket_cap_mb(cfg.distributed.bucket_cap_mb)
      .first_bucket_cap_mb(cfg.distributed.first_bucket_cap_mb)
      .communicator(std::move(comm));
  return std::make_unique<CompressedSGD>(std::move(named_params), opts);
}

}  // namespace

std::unique_ptr<CompressedOptimizer> make_optimizer(const TrainConfig& cfg, const Compression& compression,
                                                    std::vector<std::pair<std::string, at::Tensor>> named_params,
                                                    std::shared_ptr<Communicator> comm) {
  try {
    if (cfg.optimizer.name == "adamw") return make_adamw(cfg, compression, std::move(named_params), std::move(comm));
    return make_sgd(cfg, compression, std::move(named_params), std::move(comm));
  } catch (const c10::Error& e) {
    throw ConfigError(cfg.source + ": error: optimizer: " + e.what_without_backtrace());
  }
}

}  // namespace cddp::train
