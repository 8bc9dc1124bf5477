// trainer_resume_test.cpp — a resumed run is bitwise the uninterrupted run: N steps straight
// versus N/2 steps, then resume = "auto" for the rest, in one process; every parameter,
// buffer, momentum buffer, residual and the RNG state must match bit for bit. Two set-ups:
// top-k with error feedback and global momentum; random-k with DGC momentum, gradient
// accumulation, density warm-up and a step schedule (resuming mid-epoch and mid-warm-up);
// PowerSGD, whose warm-start Q travels in the checkpoint as plugin state.
#include "checkpoint/checkpoint.h"
#include "trainer.h"
#include "train_test_util.h"
#include "bitwise_equal.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

namespace {

using namespace cddp::train;
using namespace cddp_test;

TrainResult train_to(const std::string& toml, const fs::path& out, int64_t max_steps) {
  TrainConfig cfg = load_config_string(toml, "resume_test.toml",
                                       {"run.output_dir=\"" + out.string() + "\"",
                                        "run.max_steps=" + std::to_string(max_steps)},
                                       config_choices());
  RunContext ctx;  // no environment: a single process
  preflight(cfg, ctx);
  return run_training(cfg, ctx);
}

using cddp::testing::bitwise_equal;

void expect_same_checkpoints(const fs::path& a, const fs::path& b, int expected_plugin_states) {
  auto ta = checkpoint_tensors(a), tb = checkpoint_tensors(b);
  ASSERT_EQ(ta.size(), tb.size());
  int residuals = 0, momenta = 0, plugin_states = 0;
  for (size_t i = 0; i < ta.size(); ++i) {
    ASSERT_EQ(ta[i].first, tb[i].first);
    EXPECT_TRUE(bitwise_equal(ta[i].second, tb[i].second)) << ta[i].first << " differs";
    residuals += ta[i].first.rfind("residual/", 0) == 0;
    momenta += ta[i].first.rfind("momentum/", 0) == 0;
    plugin_states += ta[i].first.rfind("plugin/", 0) == 0;
  }
  EXPECT_GT(residuals, 0);
  EXPECT_GT(momenta, 0);
  EXPECT_EQ(plugin_states, expected_plugin_states);
  CheckpointMeta ma = read_checkpoint_file(a), mb = read_checkpoint_file(b);
  EXPECT_EQ(ma.step, mb.step);
  EXPECT_EQ(ma.epoch, mb.epoch);
  EXPECT_EQ(ma.batch_in_epoch, mb.batch_in_epoch);
  EXPECT_EQ(ma.bytes_sent, mb.bytes_sent);
}

void check_resume_equivalence(const std::string& name, const std::string& toml, int64_t n,
                              int expected_plugin_states = 0) {
  const fs::path straight = scratch_dir(name + "-straight"), split = scratch_dir(name + "-split");
  TrainResult a = train_to(toml, straight, n);
  ASSERT_EQ(a.steps, n);
  TrainResult b1 = train_to(toml, split, n / 2);
  ASSERT_EQ(b1.steps, n / 2);
  TrainResult b2 = train_to(toml, split, n);  // resume = "auto" picks step n/2 up
  ASSERT_EQ(b2.steps, n);
  expect_same_checkpoints(straight / "checkpoints" / checkpoint_file_name(n, 0),
                          split / "checkpoints" / checkpoint_file_name(n, 0), expected_plugin_states);
  EXPECT_EQ(a.test_loss, b2.test_loss);
  EXPECT_EQ(a.test_accuracy, b2.test_accuracy);
  EXPECT_EQ(a.bytes_sent, b2.bytes_sent);
  fs::remove_all(straight);
  fs::remove_all(split);
}

const char* kCommon = R"(
[run]
seed = 7
epochs = 4
log_every = 5
threads = 1
[model]
name = "mlp"
hidden = [32]
[data]
name = "synthetic"
batch_size = 32
synthetic_train = 500
synthetic_test = 200
[checkpoint]
resume = "auto"
keep = 0
[metrics]
progress = "off"
tensorboard = false
)";

TEST(ResumeEquivalence, TopKErrorFeedbackGlobalMomentum) {
  check_resume_equivalence("topk", std::string(kCommon) + R"(
[optimizer]
lr = 0.05
momentum = 0.9
nesterov = true
weight_decay = 1e-4
[compression]
plugin = "topk"
ratio = 0.05
min_numel = 0  # the test model's tensors are all small: compress them anyway
)",
                           40);  // 16 steps an epoch: stops mid-epoch 2, ends mid-epoch 3
}

TEST(ResumeEquivalence, RandomKDgcAccumulationWarmupSchedule) {
  check_resume_equivalence("randomk", std::string(kCommon) + R"(
[optimizer]
lr = 0.05
momentum = 0.9
momentum_mode = "dgc"
grad_accumulation = 3
schedule = "step"
step_size = 7
gamma = 0.5
warmup_steps = 3
[compression]
plugin = "randomk"
ratio = 0.05
min_numel = 0  # the test model's tensors are all small: compress them anyway
warmup_dense_steps = 4
warmup_decay_steps = 8
skip = ["*.bias"]
)",
                           18);  // 6 steps an epoch; resumes at step 9, inside the density warm-up
}

TEST(ResumeEquivalence, PowerSgdWarmStartQ) {
  check_resume_equivalence("powersgd", std::string(kCommon) + R"(
[optimizer]
lr = 0.05
momentum = 0.9
[compression]
plugin = "powersgd"
min_numel = 0  # fc1.weight [32, 784] and fc2.weight [10, 32] are compressed at rank 2
[compression.params]
rank = 2
start_iter = 3
)",
                           40,  // resumes at step 20, 17 steps into compression
                           2);  // plugin/fc1.weight/q, plugin/fc2.weight/q
}

}  // namespace
