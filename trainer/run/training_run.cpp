// training_run.cpp — see training_run.h. The order of operations within a step (buffer
// broadcast, micro-batches, schedules, optimizer step, metrics allreduce, evaluation,
// checkpoint, stop vote) is part of the bitwise resume guarantee: keep it when editing.
#include "run/training_run.h"

#include "checkpoint/checkpoint.h"
#include "precision/autocast_scope.h"
#include "run/optimizer_setup.h"
#include "run/run_inputs.h"

#include <cddp/fnv1a64.h>
#include <cddp/startup_sync.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>

namespace cddp::train {
namespace fs = std::filesystem;

TrainingRun::TrainingRun(const TrainConfig& cfg, const RunContext& ctx)
    : cfg_(cfg), ctx_(ctx), log_(logger_of(ctx)), density_schedule_(cfg.compression) {}

TrainingRun::~TrainingRun() = default;

// ---------------------------------------------------------------- connecting

// CUDA tensors between ranks: NCCL, unless the config says "gloo", or says "auto" and the
// local ranks outnumber the GPUs — NCCL refuses two ranks on one device ("Duplicate GPU
// detected"), so ranks sharing a GPU stage their CUDA tensors through the host over Gloo.
bool TrainingRun::use_gloo_for_cuda() const {
  bool cuda_over_gloo = cfg_.distributed.backend == "gloo";
  if (denv_.world_size > 1 && resolve_device(cfg_, nullptr) == "cuda") {
    const int gpus = std::max(1, int(at::getNumGPUs()));
    if (denv_.local_world_size > gpus) {
      if (cfg_.distributed.backend == "nccl")
        throw ConfigError(cfg_.source + ": error: distributed.backend = \"nccl\" with " +
                          std::to_string(denv_.local_world_size) + " local ranks on " + std::to_string(gpus) +
                          " GPU(s): NCCL refuses two ranks on one device; use \"gloo\" (or \"auto\"), which "
                          "stages CUDA tensors through the host");
      if (cfg_.distributed.backend == "auto") cuda_over_gloo = true;
    }
  }
  return cuda_over_gloo;
}

void TrainingRun::connect() {
  try {
    denv_ = parse_dist_env(ctx_.env);
  } catch (const std::exception& e) {
    throw ConfigError("environment: error: " + error_text(e));
  }
  const auto timeout = std::chrono::milliseconds(int64_t(cfg_.distributed.timeout_s * 1000));
  const bool cuda_over_gloo = use_gloo_for_cuda();
  if (denv_.world_size > 1)
    log_->info("rendezvous: {} waiting for {} ranks (distributed.timeout_s = {})", denv_.describe(),
               denv_.world_size, cfg_.distributed.timeout_s);
  try {
    comm_ = cddp::connect(denv_, timeout, ctx_.stop, cuda_over_gloo);
  } catch (const std::exception& e) {
    throw RuntimeFailure("rendezvous failed (" + denv_.describe() + "): " + error_text(e));
  }
  rank_ = comm_->rank();
  world_ = comm_->world_size();
  if (world_ > 1)
    log_->info("connected: {} over {} (distributed.backend = \"{}\")", denv_.describe(), comm_->backend_name(),
               cfg_.distributed.backend);
}

// ---------------------------------------------------------------- setting up

void TrainingRun::setup() {
  setup_threads_and_device();
  setup_data_and_model();
  synchronise_start();
  setup_optimizer();
  plan_steps();
}

void TrainingRun::setup_threads_and_device() {
  // Threads: the configured count, else this machine's cores shared by the local ranks.
  const int64_t local = std::max(1, denv_.local_world_size);
  const int64_t cores = std::max<int64_t>(1, int64_t(std::thread::hardware_concurrency()));
  const int64_t threads = cfg_.run.threads > 0 ? cfg_.run.threads : std::max<int64_t>(1, cores / local);
  at::set_num_threads(int(threads));
  device_name_ = resolve_device(cfg_, rank_ == 0 ? log_.get() : nullptr);
  // One GPU per local rank when there are enough; otherwise ranks share them round-robin
  // (local rank r on cuda:r % GPUs — two processes on one H200 in tools/gpu/check.sh).
  const int gpus = device_name_ == "cuda" ? std::max(1, int(at::getNumGPUs())) : 1;
  device_ = at::Device(device_name_ == "cuda" ? at::kCUDA : at::kCPU,
                       device_name_ == "cuda" ? static_cast<c10::DeviceIndex>(denv_.local_rank % gpus) : -1);
  log_->info("rank {}/{}: {} intra-op threads, device {}", rank_, world_, threads, device_.str());
}

void TrainingRun::setup_data_and_model() {
  auto t = Clock::now();
  train_ = load_split(cfg_, true);
  test_ = load_split(cfg_, false);
  log_->info("data: {} — {} training and {} test samples ({}x{}x{}, {} classes) in {:.1f} s", train_.name,
             train_.size(), test_.size(), train_.channels(), train_.height(), train_.width(), train_.num_classes,
             seconds_since(t));

  at::manual_seed(uint64_t(cfg_.run.seed));
  model_ = build_model(cfg_, train_);
  model_->to(device_);
  model_->train();
  buffers_ = float_buffers(*model_);
  int64_t nparams = 0;
  for (const auto& p : model_->parameters()) nparams += p.numel();
  log_->info("model: {} with {} parameters", cfg_.model.name, nparams);
}

// Every rank starts from rank 0's parameters and checks that it runs the same config.
void TrainingRun::synchronise_start() {
  if (world_ == 1) return;
  std::vector<at::Tensor> state;
  for (const auto& p : model_->parameters()) state.push_back(p);
  for (const auto& b : model_->buffers()) state.push_back(b);
  const std::string effective = render_config(cfg_);
  try {
    at::NoGradGuard no_grad;
    broadcast_from_rank0(*comm_, state);
    verify_same_config(*comm_, {{"config", std::to_string(fnv1a64(effective.data(), effective.size()))},
                                {"model", model_fingerprint(cfg_)},
                                {"compressor", compressor_fingerprint(cfg_)},
                                {"world_size", std::to_string(world_)}});
  } catch (const std::exception& e) {
    throw RuntimeFailure("start-up synchronisation failed: " + error_text(e));
  }
}

void TrainingRun::setup_optimizer() {
  compression_ = build_compression(cfg_, ctx_.env, device_name_);
  for (const auto& d : compression_.descriptions) log_->info("compression: {}", d);
  if (cfg_.compression.dense()) log_->info("compression: none (dense gradient exchange)");
  opt_ = make_optimizer(cfg_, compression_, named_parameters(*model_), comm_);
}

void TrainingRun::plan_steps() {
  sampler_ = std::make_unique<DistributedSampler>(train_.size(), world_, rank_, cfg_.data.shuffle,
                                                  uint64_t(cfg_.run.seed), cfg_.data.drop_last);
  const int64_t n = sampler_->num_samples(), bs = cfg_.data.batch_size;
  batches_per_epoch_ = cfg_.data.drop_last ? n / bs : (n + bs - 1) / bs;
  if (batches_per_epoch_ == 0)
    throw ConfigError(cfg_.source + ": error: data.batch_size = " + std::to_string(bs) + " leaves no batch: each rank has " +
                      std::to_string(n) + " samples and data.drop_last = true");
  const int64_t acc = cfg_.optimizer.grad_accumulation;
  steps_per_epoch_ = (batches_per_epoch_ + acc - 1) / acc;
  total_steps_ = steps_per_epoch_ * cfg_.run.epochs;
  if (cfg_.run.max_steps > 0) total_steps_ = std::min(total_steps_, cfg_.run.max_steps);
  lr_schedule_ = std::make_unique<LrSchedule>(cfg_.optimizer, total_steps_);
  log_->info("schedule: {} steps per epoch ({} micro-batches of {} per rank, accumulation {}), {} steps in all",
             steps_per_epoch_, batches_per_epoch_, bs, acc, total_steps_);
}

// ---------------------------------------------------------------- resume and checkpoints

void TrainingRun::resume() {
  const fs::path dir = cfg_.checkpoint.dir;
  ResumeExpectation expect;
  expect.rank = rank_;
  expect.world_size = world_;
  expect.model_fingerprint = model_fingerprint(cfg_);
  expect.compressor_fingerprint = compressor_fingerprint(cfg_);
  ResumeChoice choice;
  try {
    choice = choose_resume(cfg_.checkpoint.resume, dir, expect);
  } catch (const CheckpointError& e) {
    throw RuntimeFailure(std::string("cannot resume: ") + e.what());
  }
  for (const auto& n : choice.notes) log_->warn("resume: {}", n);
  // Every rank must resume from the same step (or all start fresh).
  if (world_ > 1) {
    try {
      verify_same_config(*comm_, {{"resume_step", choice.resume ? std::to_string(choice.meta.step) : "none"}});
    } catch (const std::exception& e) {
      throw RuntimeFailure("ranks disagree on the checkpoint to resume from: " + error_text(e));
    }
  }
  if (!choice.resume) {
    if (cfg_.checkpoint.resume == "never" && !list_checkpoints(dir).empty())
      log_->warn("checkpoint.resume = \"never\": ignoring the checkpoints in {} (new ones may replace them)",
                 dir.string());
    return;
  }
  load_resume_file(choice.file.string());
  last_saved_step_ = step_;
  last_checkpoint_ = choice.file.string();
  log_->info("resumed from {} (step {}, epoch {}, batch {} of the epoch)", choice.file.string(), step_, epoch_ + 1,
             batch_in_epoch_);
}

void TrainingRun::load_resume_file(const std::string& file) {
  std::string payload;
  try {
    CheckpointMeta meta = read_checkpoint_file(file, &payload);
    auto gen = at::detail::getDefaultCPUGenerator();
    load_training_state(payload, *model_, opt_.get(), &gen);
    model_->to(device_);
    step_ = meta.step;
    epoch_ = meta.epoch;
    batch_in_epoch_ = meta.batch_in_epoch;
    bytes_sent_ = meta.bytes_sent;
    bytes_received_ = meta.bytes_received;
    bytes_dense_ = meta.bytes_dense_equivalent;
    elapsed_before_ = meta.elapsed_s;
    if (meta.sampler_seed != uint64_t(cfg_.run.seed))
      log_->warn("resume: the checkpoint's sampler seed {} differs from run.seed {}; data order will differ",
                 meta.sampler_seed, cfg_.run.seed);
  } catch (const CheckpointError& e) {
    throw RuntimeFailure(std::string("cannot resume from ") + file + ": " + e.what());
  }
}

void TrainingRun::save_checkpoint(const char* why) {
  if (!cfg_.checkpoint.enabled || step_ == last_saved_step_) return;
  auto t = Clock::now();
  CheckpointMeta meta;
  meta.step = step_;
  meta.epoch = epoch_;
  meta.batch_in_epoch = batch_in_epoch_;
  meta.rank = rank_;
  meta.world_size = world_;
  meta.sampler_seed = uint64_t(cfg_.run.seed);
  meta.config_hash = config_hash(cfg_, world_);
  meta.model_fingerprint = model_fingerprint(cfg_);
  meta.compressor_fingerprint = compressor_fingerprint(cfg_);
  meta.config_toml = render_config(cfg_);
  meta.torch_version = torch_version();
  meta.cddp_version = CDDP_VERSION_STRING;
  meta.bytes_sent = bytes_sent_;
  meta.bytes_received = bytes_received_;
  meta.bytes_dense_equivalent = bytes_dense_;
  meta.elapsed_s = elapsed_before_ + seconds_since(t0_);
  meta.input_shape = {train_.channels(), train_.height(), train_.width(), train_.num_classes};
  const fs::path path = fs::path(cfg_.checkpoint.dir) / checkpoint_file_name(step_, rank_);
  try {
    auto gen = at::detail::getDefaultCPUGenerator();
    write_checkpoint_file(path, meta, save_training_state(*model_, *opt_, gen));
    for (const auto& gone : prune_checkpoints(cfg_.checkpoint.dir, rank_, cfg_.checkpoint.keep))
      log_->debug("checkpoint: removed {}", gone.string());
  } catch (const std::exception& e) {
    throw RuntimeFailure("cannot save a checkpoint: " + error_text(e));
  }
  last_saved_step_ = step_;
  last_checkpoint_ = path.string();
  quiet_progress();
  log_->info("checkpoint ({}) step {} -> {} ({:.2f} s)", why, step_, path.string(), seconds_since(t));
}

// ---------------------------------------------------------------- between steps

bool TrainingRun::stop_requested() {
  const bool local = ctx_.stop && ctx_.stop->load() != 0;
  if (world_ == 1) return local;
  at::Tensor flag = at::full({1}, local ? 1.0f : 0.0f, at::kFloat);
  comm_->allreduce_sum_(flag);
  return flag.item<float>() > 0;
}

void TrainingRun::log_routing() {
  const auto& routing = opt_->routing();
  if (routing_logged_ == routing.size()) return;
  quiet_progress();
  for (size_t i = routing_logged_; i < routing.size(); ++i) {
    const auto& r = routing[i];
    log_->info("routing{}: {} -> {} ({})", routing_logged_ ? " change" : "", r.name, route_name(r.route), r.reason);
  }
  routing_logged_ = routing.size();
  if (!exchange_logged_ && !opt_->exchange_decision().empty()) {  // exchange "auto": once
    log_->info("{}", opt_->exchange_decision());
    exchange_logged_ = true;
  }
}

void TrainingRun::quiet_progress() {
  if (sink_) sink_->clear_progress();
}

void TrainingRun::do_eval(bool epoch_end) {
  if (last_eval_step_ == step_) return;
  auto t = Clock::now();
  EvalStats s = evaluate(*model_, test_, cfg_.data.test_batch_size, device_, *comm_);
  last_eval_ = s;
  last_eval_step_ = step_;
  quiet_progress();
  log_->info("eval at step {}{}: test loss {:.4f}, test accuracy {:.2f}% ({} samples, {:.1f} s)", step_,
             epoch_end ? " (end of epoch)" : "", s.loss, 100.0 * s.accuracy, s.samples, seconds_since(t));
  StepRecord r;
  r.kind = StepRecord::Kind::Eval;
  r.step = step_;
  r.epoch = std::min(epoch_ + 1, cfg_.run.epochs);
  r.test_loss = s.loss;
  r.test_acc = s.accuracy;
  sink_->write(r);
}

// ---------------------------------------------------------------- the loop

TrainingRun::StepSums TrainingRun::forward_backward(BatchIterator& batches) {
  // One optimizer step: `group` micro-batches (fewer at the end of an epoch).
  const int64_t group = std::min(cfg_.optimizer.grad_accumulation, batches.num_batches() - batches.batch_index());
  for (auto& p : model_->parameters()) p.mutable_grad() = at::Tensor();
  broadcast_buffers(buffers_, *comm_);
  StepSums sums;
  for (int64_t m = 0; m < group; ++m) {
    Batch b = gather_batch(train_, batches.next());
    at::Tensor images = b.images.to(device_), labels = b.labels.to(device_);
    at::Tensor logits, loss;
    {
      AutocastScope autocast(cfg_.run.precision);  // run.precision "bf16": forward in bf16 (backward follows)
      logits = model_->forward(images);
      loss = at::cross_entropy_loss(logits, labels);
    }
    opt_->set_last_micro_batch(m == group - 1);  // with overlap: only the last one sends
    (group > 1 ? loss / double(group) : loss).backward();
    const double n = double(labels.size(0));
    sums.loss += loss.item<double>() * n;
    sums.correct += logits.detach().argmax(1).eq(labels).sum().item<double>();
    sums.samples += n;
  }
  return sums;
}

void TrainingRun::apply_schedules(bool log_now) {
  opt_->set_track_residual_norm(log_now);
  current_lr_ = lr_schedule_->at(step_);
  for (auto& g : opt_->param_groups()) g.options().set_lr(current_lr_);
  const double density = density_schedule_.at(step_);
  if (density == current_density_) return;
  opt_->set_density(density);
  if (auto change = density_schedule_.describe_change(step_, current_density_, density))
    log_->log(change->phase ? spdlog::level::info : spdlog::level::debug, "{}", change->text);
  current_density_ = density;
}

void TrainingRun::record_step(const StepSums& sums, double step_ms, bool log_now) {
  const StepStats& st = opt_->last_step_stats();
  window_.loss += sums.loss, window_.correct += sums.correct, window_.samples += sums.samples, window_.ms += step_ms;
  ++window_.steps;
  epoch_loss_ += sums.loss, epoch_correct_ += sums.correct, epoch_samples_ += sums.samples;

  StepRecord r;
  r.kind = StepRecord::Kind::Step;
  r.step = step_;
  r.epoch = epoch_ + 1;
  r.loss = sums.samples > 0 ? sums.loss / sums.samples : std::nan("");
  r.bytes_sent_total = double(bytes_sent_);
  r.bytes_dense_equivalent_total = double(bytes_dense_);
  if (log_now) {
    // Loss and accuracy over the window, summed over ranks (every rank joins the allreduce).
    at::Tensor w = at::tensor({window_.loss, window_.correct, window_.samples}, at::kDouble);
    comm_->allreduce_sum_(w);
    const double ws = std::max(1.0, w[2].item<double>());
    r.logged = true;
    r.loss = w[0].item<double>() / ws;
    r.train_acc = w[1].item<double>() / ws;
    r.lr = current_lr_;
    r.density = st.density();
    r.bytes_sent = double(st.bytes_sent);
    r.bytes_received = double(st.bytes_received);
    r.bytes_dense_equivalent = double(st.bytes_dense_equivalent);
    r.compress_ms = st.compress_ms;
    r.comm_ms = st.comm_ms;
    r.step_ms = window_.ms / double(window_.steps);
    r.residual_norm = st.residual_norm;
    window_ = Window{};
  }
  sink_->write(r);
}

bool TrainingRun::train_step(BatchIterator& batches) {
  auto step_t0 = Clock::now();
  const bool log_now = (step_ + 1) % cfg_.run.log_every == 0;
  apply_schedules(log_now);  // before backward: with overlap, buckets leave during it
  const StepSums sums = forward_backward(batches);
  opt_->step();
  ++step_;
  batch_in_epoch_ = batches.batch_index();
  const StepStats& st = opt_->last_step_stats();
  bytes_sent_ += st.bytes_sent;
  bytes_received_ += st.bytes_received;
  bytes_dense_ += st.bytes_dense_equivalent;
  if (rank_ == 0) log_routing();
  record_step(sums, seconds_since(step_t0) * 1000.0, log_now);
  if (cfg_.run.eval_every > 0 && step_ % cfg_.run.eval_every == 0) do_eval(false);
  if (cfg_.checkpoint.every_steps > 0 && step_ % cfg_.checkpoint.every_steps == 0) save_checkpoint("periodic");
  return stop_requested();
}

bool TrainingRun::run_epoch(bool* interrupted) {
  sampler_->set_epoch(epoch_);
  BatchIterator batches(sampler_->indices(), cfg_.data.batch_size, cfg_.data.drop_last, 0);
  batches.seek(batch_in_epoch_);
  if (batch_in_epoch_ == 0) epoch_loss_ = epoch_correct_ = epoch_samples_ = 0;
  auto epoch_t0 = Clock::now();
  while (!batches.done()) {
    if (cfg_.run.max_steps > 0 && step_ >= cfg_.run.max_steps) return false;
    if (train_step(batches)) {
      *interrupted = true;
      return false;
    }
  }
  end_epoch(epoch_t0);
  return true;
}

// End of the epoch: evaluate, summarize, and checkpoint pointing at the next epoch.
void TrainingRun::end_epoch(Clock::time_point epoch_t0) {
  do_eval(true);
  const double es = std::max(1.0, epoch_samples_);
  StepRecord r;
  r.kind = StepRecord::Kind::Epoch;
  r.step = step_;
  r.epoch = epoch_ + 1;
  r.loss = epoch_loss_ / es;
  r.train_acc = epoch_correct_ / es;
  r.test_loss = last_eval_->loss;
  r.test_acc = last_eval_->accuracy;
  r.bytes_sent = double(bytes_sent_);
  r.bytes_received = double(bytes_received_);
  r.bytes_dense_equivalent = double(bytes_dense_);
  r.epoch_s = seconds_since(epoch_t0);  // the end-of-epoch evaluation included
  sink_->write(r);
  ++epoch_;
  batch_in_epoch_ = 0;
  if (cfg_.checkpoint.every_epoch && epoch_ < cfg_.run.epochs) save_checkpoint("end of epoch");
}

TrainResult TrainingRun::go() {
  connect();
  setup();
  resume();
  sink_ = std::make_unique<RecordSink>(cfg_, rank_ == 0, total_steps_, step_, epoch_,
                                       [log = log_](const std::string& line) { log->info("{}", line); });
  bool interrupted = false;
  try {
    while (epoch_ < cfg_.run.epochs && run_epoch(&interrupted)) {
    }
    if (!interrupted) do_eval(false);
    save_checkpoint(interrupted ? "interrupted" : "final");
  } catch (const ConfigError&) {
    throw;
  } catch (const RuntimeFailure&) {
    throw;
  } catch (const std::exception& e) {
    throw RuntimeFailure("rank " + std::to_string(rank_) + " at step " + std::to_string(step_ + 1) + ": " +
                         error_text(e));
  }
  sink_->finish();
  return result(interrupted);
}

TrainResult TrainingRun::result(bool interrupted) const {
  TrainResult result;
  result.rank = rank_;
  result.world_size = world_;
  result.steps = step_;
  result.epochs = std::min(epoch_, cfg_.run.epochs);
  result.interrupted = interrupted;
  if (last_eval_) {
    result.evaluated = true;
    result.test_loss = last_eval_->loss;
    result.test_accuracy = last_eval_->accuracy;
  }
  result.bytes_sent = bytes_sent_;
  result.bytes_received = bytes_received_;
  result.bytes_dense_equivalent = bytes_dense_;
  result.wall_s = seconds_since(t0_);
  result.output_dir = cfg_.run.output_dir;
  result.metrics_dir = cfg_.metrics.dir;
  result.metrics_files = sink_->files();
  result.last_checkpoint = last_checkpoint_;
  return result;
}

}  // namespace cddp::train
