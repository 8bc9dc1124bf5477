// evaluation.cpp — see evaluation.h. It will not shuffle or drop test samples: every sample
// counts once over the ranks.
#include "run/evaluation.h"

#include "checkpoint/checkpoint.h"
#include "run/run_inputs.h"
#include "run/run_support.h"
#include "trainer.h"

#include <cddp/data/batch_iterator.h>
#include <cddp/local_communicator.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace cddp::train {

EvalStats evaluate(Classifier& model, const Dataset& test, int64_t batch, const at::Device& device,
                   Communicator& comm) {
  at::NoGradGuard no_grad;
  model.eval();
  const int W = comm.world_size(), rank = comm.rank();
  std::vector<int64_t> shard;
  for (int64_t i = rank; i < test.size(); i += W) shard.push_back(i);
  double loss_sum = 0, correct = 0;
  for (size_t at_i = 0; at_i < shard.size(); at_i += size_t(batch)) {
    std::vector<int64_t> idx(shard.begin() + at_i, shard.begin() + std::min(shard.size(), at_i + size_t(batch)));
    Batch b = gather_batch(test, idx);
    at::Tensor logits = model.forward(b.images.to(device));
    at::Tensor labels = b.labels.to(device);
    loss_sum += at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum).item<double>();
    correct += logits.argmax(1).eq(labels).sum().item<double>();
  }
  at::Tensor t = at::tensor({loss_sum, correct, double(shard.size())}, at::kDouble);
  comm.allreduce_sum_(t);
  EvalStats s;
  s.samples = int64_t(t[2].item<double>());
  if (s.samples > 0) {
    s.loss = t[0].item<double>() / double(s.samples);
    s.accuracy = t[1].item<double>() / double(s.samples);
  }
  model.train();
  return s;
}

EvalResult evaluate_checkpoint(const std::string& path, const std::optional<TrainConfig>& given,
                               const RunContext& ctx) {
  auto log = logger_of(ctx);
  std::string payload;
  CheckpointMeta meta;
  try {
    meta = read_checkpoint_file(path, &payload);
  } catch (const CheckpointError& e) {
    throw RuntimeFailure(e.what());
  }
  TrainConfig cfg = given ? *given : load_config_string(meta.config_toml, path + " (saved config)", {}, config_choices());
  if (model_fingerprint(cfg) != meta.model_fingerprint)
    throw RuntimeFailure(path + " holds a different model: checkpoint '" + meta.model_fingerprint + "', config '" +
                         model_fingerprint(cfg) + "'");
  const std::string device = resolve_device(cfg, log.get());
  const at::Device dev(device == "cuda" ? at::kCUDA : at::kCPU);
  if (cfg.run.threads > 0) at::set_num_threads(int(cfg.run.threads));
  Dataset test = load_split(cfg, false);
  std::shared_ptr<Classifier> model = build_model(cfg, test);
  try {
    load_training_state(payload, *model, nullptr, nullptr);
  } catch (const CheckpointError& e) {
    throw RuntimeFailure(path + ": " + e.what());
  }
  model->to(dev);
  LocalCommunicator local;
  EvalStats s = evaluate(*model, test, cfg.data.test_batch_size, dev, local);
  EvalResult r;
  r.loss = s.loss;
  r.accuracy = s.accuracy;
  r.samples = s.samples;
  r.step = meta.step;
  r.epoch = meta.epoch;
  r.model = cfg.model.name;
  return r;
}

}  // namespace cddp::train
