// training_run.h — one rank's training run (run_training, declared in trainer.h): connect
// to the other ranks, set up data, model and optimizer, resume, then the loop of epochs and
// optimizer steps with the schedules, evaluations, metrics and checkpoints in between.
//
// Each concern it calls lives in its own file: compression_setup, optimizer_setup,
// lr_schedule, density_schedule, evaluation, run_inputs, record_sink. It will not parse
// configs, install signal handlers or exit: errors leave as ConfigError or RuntimeFailure.
#pragma once

#include "config/train_config.h"
#include "run/compression_setup.h"
#include "run/density_schedule.h"
#include "run/evaluation.h"
#include "run/lr_schedule.h"
#include "run/record_sink.h"
#include "run/run_support.h"
#include "trainer.h"

#include <cddp/compressed_sgd.h>
#include <cddp/data/batch_iterator.h>
#include <cddp/data/dataset_loader.h>
#include <cddp/data/distributed_sampler.h>
#include <cddp/models/model_factory.h>
#include <cddp/rendezvous.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cddp::train {

class TrainingRun {
 public:
  TrainingRun(const TrainConfig& config, const RunContext& ctx);
  ~TrainingRun();

  // Runs to the end (or to an interrupt) and says what was done.
  TrainResult go();

 private:
  // Loss, correct count and samples since the last log line (this rank's).
  struct Window {
    double loss = 0, correct = 0, samples = 0, ms = 0;
    int64_t steps = 0;
  };
  // One optimizer step's micro-batches, summed.
  struct StepSums {
    double loss = 0, correct = 0, samples = 0;
  };

  void connect();
  bool use_gloo_for_cuda() const;
  void setup();
  void setup_threads_and_device();
  void setup_data_and_model();
  void synchronise_start();
  void setup_optimizer();
  void plan_steps();
  void resume();
  void load_resume_file(const std::string& file);

  // Returns false when the run must stop (max_steps or an interrupt).
  bool run_epoch(bool* interrupted);
  // One optimizer step; true when an interrupt was agreed on.
  bool train_step(BatchIterator& batches);
  StepSums forward_backward(BatchIterator& batches);
  void apply_schedules(bool log_now);
  void record_step(const StepSums& sums, double step_ms, bool log_now);
  void end_epoch(Clock::time_point epoch_t0);
  TrainResult result(bool interrupted) const;

  void save_checkpoint(const char* why);
  void do_eval(bool epoch_end);
  bool stop_requested();
  void log_routing();
  void quiet_progress();  // clears the redrawn progress line before a log line

  const TrainConfig& cfg_;
  const RunContext& ctx_;
  std::shared_ptr<spdlog::logger> log_;
  Clock::time_point t0_ = Clock::now();
  double elapsed_before_ = 0;  // wall time of the runs this one resumes

  DistEnv denv_;
  std::shared_ptr<Communicator> comm_;
  int rank_ = 0, world_ = 1;
  std::string device_name_ = "cpu";
  at::Device device_{at::kCPU};

  Dataset train_, test_;
  std::shared_ptr<Classifier> model_;
  std::vector<at::Tensor> buffers_;
  Compression compression_;
  std::unique_ptr<CompressedSGD> opt_;
  std::unique_ptr<DistributedSampler> sampler_;
  std::unique_ptr<LrSchedule> lr_schedule_;
  DensitySchedule density_schedule_;

  int64_t step_ = 0, epoch_ = 0, batch_in_epoch_ = 0;
  int64_t batches_per_epoch_ = 0, steps_per_epoch_ = 0, total_steps_ = 0;
  int64_t bytes_sent_ = 0, bytes_received_ = 0, bytes_dense_ = 0;  // totals incl. resumed runs
  double current_lr_ = 0;
  double current_density_ = -2;  // -2: not set yet
  size_t routing_logged_ = 0;
  int64_t last_saved_step_ = -1;
  std::string last_checkpoint_;

  std::unique_ptr<RecordSink> sink_;
  Window window_;
  std::optional<EvalStats> last_eval_;
  int64_t last_eval_step_ = -1;
  double epoch_loss_ = 0, epoch_correct_ = 0, epoch_samples_ = 0;
};

}  // namespace cddp::train
