// checkpoint_tensors.cpp — checkpoint_tensors (declared in checkpoint.h): rebuilds the model
// and CompressedSGD a checkpoint was saved from (its saved config and input shape), loads
// the file into them and lists every tensor by name.
//
// It will not compare checkpoints (the tests do) or touch the training loop; it exists apart
// from checkpoint.cpp because it needs the model factory, which the file format does not.
#include "checkpoint/checkpoint.h"

#include "config/config_loader.h"
#include "run/run_inputs.h"
#include "trainer.h"

#include <cddp/compressed_sgd.h>

#include <ATen/CPUGeneratorImpl.h>

namespace cddp::train {

std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors(const std::filesystem::path& path) {
  std::string payload;
  CheckpointMeta meta = read_checkpoint_file(path, &payload);
  TrainConfig cfg;
  try {
    cfg = load_config_string(meta.config_toml, path.string() + " (saved config)", {}, config_choices());
  } catch (const ConfigError& e) {
    throw CheckpointError(path.string() + ": its saved config does not load: " + e.what());
  }
  std::shared_ptr<Classifier> model = build_model(cfg, meta.input_shape);
  CompressedSGD opt(named_parameters(*model), CompressedSGDOptions(cfg.optimizer.lr));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>();
  load_training_state(payload, *model, &opt, &gen);
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : model->named_parameters()) out.emplace_back("model/" + p.key(), p.value());
  for (const auto& b : model->named_buffers()) out.emplace_back("model/" + b.key(), b.value());
  for (const auto& p : model->named_parameters()) {
    const CompressedSGDParamState* st = opt.find_state(p.value());
    if (!st) continue;
    if (st->momentum_buffer().defined()) out.emplace_back("momentum/" + p.key(), st->momentum_buffer());
    if (st->residual().defined()) out.emplace_back("residual/" + p.key(), st->residual());
    for (const auto& [name, t] : st->plugin_state()) out.emplace_back("plugin/" + p.key() + "/" + name, t);
  }
  out.emplace_back("rng_state", gen.get_state());
  return out;
}

}  // namespace cddp::train
