// trainer.cpp — the cddp-train training loop and what surrounds it: plugin and device
// checks, the distributed wiring (rendezvous, initial broadcast, config agreement), data
// sharding, learning-rate and density schedules, evaluation, metrics, checkpoints and
// resume, local worker launch and the plugin listing.
//
// It will not parse TOML (config/), read or write checkpoint bytes itself (checkpoint/),
// install signal handlers or exit: errors leave as ConfigError (2) or RuntimeFailure (3).
#include "trainer.h"

#include "checkpoint/checkpoint.h"

#include <cddp/compressed_sgd.h>
#include <cddp/data/batch_iterator.h>
#include <cddp/data/dataset_loader.h>
#include <cddp/data/distributed_sampler.h>
#include <cddp/launcher.h>
#include <cddp/local_communicator.h>
#include <cddp/metrics/metrics_writer.h>
#include <cddp/metrics/progress_reporter.h>
#include <cddp/metrics/tensorboard_writer.h>
#include <cddp/models/model_factory.h>
#include <cddp/plugin_abi.h>
#include <cddp/plugin_loader.h>
#include <cddp/rendezvous.h>
#include <cddp/startup_sync.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <thread>

namespace cddp::train {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::shared_ptr<spdlog::logger> logger_of(const RunContext& ctx) {
  if (ctx.log) return ctx.log;
  return std::make_shared<spdlog::logger>("cddp-train", std::make_shared<spdlog::sinks::null_sink_mt>());
}

std::string error_text(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

// ---------------------------------------------------------------- plugins and compressors

ParamMap to_param_map(const ConfigParamMap& in) {
  ParamMap out;
  for (const auto& [k, v] : in) std::visit([&, key = k](const auto& x) { out[key] = x; }, v);
  return out;
}

const char* env_value(const EnvMap& env, const char* key) {
  auto it = env.find(key);
  return it == env.end() ? nullptr : it->second.c_str();
}

PluginSearchPath search_path(const std::vector<std::string>& dirs, const EnvMap& env) {
  std::vector<fs::path> configured(dirs.begin(), dirs.end());
  return PluginSearchPath::standard(configured, env_value(env, "CDDP_PLUGIN_PATH"));
}

// A plugin's compressor with `params`, plus the config's ratio when the plugin's schema has a
// `ratio` parameter and the params do not give one. Errors name `what` (the config key).
std::shared_ptr<Compressor> create_compressor(PluginLoader& loader, const TrainConfig& cfg, const std::string& what,
                                              const std::string& plugin, ConfigParamMap params, double ratio) {
  try {
    if (params.count("ratio") == 0)
      for (const auto& spec : loader.describe(plugin).params)
        if (spec.name == "ratio") params["ratio"] = ratio;
    return loader.create(plugin, to_param_map(params));
  } catch (const std::exception& e) {
    throw ConfigError(cfg.source + ": error: " + what + " = \"" + plugin + "\": " + error_text(e));
  }
}

struct Compression {
  std::shared_ptr<Compressor> compressor;  // null: dense training
  std::vector<CompressionRule> rules;
  std::vector<std::string> descriptions;   // for the log
};

Compression build_compression(const TrainConfig& cfg, const EnvMap& env, const std::string& device) {
  Compression out;
  const auto& c = cfg.compression;
  PluginLoader loader(search_path(c.plugin_dirs, env));
  auto check_device = [&](const std::shared_ptr<Compressor>& comp, const std::string& what) {
    const auto want = device == "cuda" ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
    const auto devs = comp->supported_devices();
    if (std::find(devs.begin(), devs.end(), want) == devs.end())
      throw ConfigError(cfg.source + ": error: " + what + " = \"" + comp->name() + "\" does not support device " +
                        device);
  };
  if (!c.dense()) {
    out.compressor = create_compressor(loader, cfg, "compression.plugin", c.plugin, c.params, c.ratio);
    check_device(out.compressor, "compression.plugin");
    out.descriptions.push_back("compressor " + out.compressor->name() + " ratio " + std::to_string(c.ratio) +
                               (c.error_feedback ? " with" : " without") + " error feedback, scope " + c.scope);
  }
  for (size_t i = 0; i < c.rules.size(); ++i) {
    const auto& r = c.rules[i];
    const std::string key = "compression.rules[" + std::to_string(i) + "]";
    CompressionRule rule;
    rule.match = r.match;
    if (r.ratio) rule.density = *r.ratio;
    if (r.error_feedback) rule.error_feedback = *r.error_feedback ? 1 : 0;
    const std::string plugin = r.plugin ? *r.plugin : c.plugin;
    if (plugin == "none") {
      rule.dense = true;
    } else if (r.plugin || !r.params.empty()) {
      const double ratio = r.ratio ? *r.ratio : c.ratio;
      rule.compressor = create_compressor(loader, cfg, key + ".plugin", plugin, r.params, ratio);
      check_device(rule.compressor, key + ".plugin");
      auto pr = r.params.find("ratio");
      if (!r.ratio && pr != r.params.end())
        rule.density = std::holds_alternative<double>(pr->second) ? std::get<double>(pr->second)
                                                                   : double(std::get<int64_t>(pr->second));
    }
    out.rules.push_back(rule);
    out.descriptions.push_back("rule '" + r.match + "': " + (rule.dense ? "dense" : plugin) +
                               (rule.density > 0 ? " ratio " + std::to_string(rule.density) : "") +
                               (rule.error_feedback >= 0 ? (rule.error_feedback ? " with" : " without") +
                                                               std::string(" error feedback")
                                                         : ""));
  }
  for (const auto& glob : c.skip) {
    CompressionRule rule;
    rule.match = glob;
    rule.dense = true;
    out.rules.push_back(rule);
    out.descriptions.push_back("skip '" + glob + "': dense");
  }
  return out;
}

// ---------------------------------------------------------------- device

std::string resolve_device(const TrainConfig& cfg, spdlog::logger* log) {
  const bool cuda = at::hasCUDA();
  if (cfg.run.device == "cuda" && !cuda)
    throw ConfigError(cfg.source + ": error: run.device = \"cuda\", but this process sees no usable GPU (LibTorch " + torch_version() +
                      " was built without CUDA, or no CUDA device is visible); use \"cpu\" or \"auto\"");
  if (cfg.run.device == "auto") {
    if (log) log->info("device \"auto\": {}", cuda ? "CUDA is available, using cuda" : "no CUDA device, using cpu");
    return cuda ? "cuda" : "cpu";
  }
  return cfg.run.device;
}

// ---------------------------------------------------------------- schedules

double lr_at(const OptimizerConfig& o, int64_t step, int64_t total_steps) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) return o.lr * double(step + 1) / double(o.warmup_steps);
  if (o.schedule == "step") return o.lr * std::pow(o.gamma, double(step / o.step_size));
  if (o.schedule == "cosine") {
    const double span = double(std::max<int64_t>(1, total_steps - o.warmup_steps));
    const double p = std::clamp(double(step - o.warmup_steps) / span, 0.0, 1.0);
    return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + std::cos(M_PI * p));
  }
  return o.lr;
}

// DGC warm-up: dense (1.0) for the first D steps, then ratio^((s-D+1)/M) for M steps, then
// the configured densities (-1).
double density_at(const CompressionConfig& c, int64_t step) {
  if (c.dense()) return -1;
  const int64_t D = c.warmup_dense_steps, M = c.warmup_decay_steps;
  if (step < D) return 1.0;
  if (step < D + M) return std::pow(c.ratio, double(step - D + 1) / double(M));
  return -1;
}

// ---------------------------------------------------------------- the run

struct EvalStats {
  double loss = 0, accuracy = 0;
  int64_t samples = 0;
};

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

// The optimizer state of `p` (LibTorch 1.13 keys it by the TensorImpl address as a string,
// 2.x by the address itself).
template <class StateMap>
const torch::optim::OptimizerParamState* state_of(const StateMap& state, const at::Tensor& p) {
  using Key = typename StateMap::key_type;
  Key key;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;  // what c10::guts::to_string(TensorImpl*) writes
    os << static_cast<const void*>(p.unsafeGetTensorImpl());
    key = os.str();
  } else {
    key = p.unsafeGetTensorImpl();
  }
  auto it = state.find(key);
  return it == state.end() ? nullptr : it->second.get();
}

std::vector<std::pair<std::string, at::Tensor>> named_parameters(Classifier& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

// Float buffers (BatchNorm running statistics), broadcast from rank 0 before each step as
// DistributedDataParallel does, so that every rank evaluates the same model.
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

class Run {
 public:
  Run(const TrainConfig& cfg, const RunContext& ctx) : cfg_(cfg), ctx_(ctx), log_(logger_of(ctx)) {}

  TrainResult go();

 private:
  void connect();
  void setup();
  void resume();
  void save_checkpoint(const char* why);
  void log_step_metrics(double window_loss, double window_correct, double window_samples, double step_ms);
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

  int64_t step_ = 0, epoch_ = 0, batch_in_epoch_ = 0;
  int64_t batches_per_epoch_ = 0, steps_per_epoch_ = 0, total_steps_ = 0;
  int64_t bytes_sent_ = 0, bytes_received_ = 0, bytes_dense_ = 0;  // totals incl. resumed runs
  double current_density_ = -2;
  size_t routing_logged_ = 0;
  int64_t last_saved_step_ = -1;
  std::string last_checkpoint_;

  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<TensorBoardWriter> tb_;
  std::unique_ptr<ProgressReporter> progress_;
  double last_acc_ = 0, last_lr_ = 0, last_density_ = 0;  // shown with the plain progress lines
  std::optional<EvalStats> last_eval_;
  int64_t last_eval_step_ = -1;
  double epoch_loss_ = 0, epoch_correct_ = 0, epoch_samples_ = 0;
};

void Run::connect() {
  try {
    denv_ = parse_dist_env(ctx_.env);
  } catch (const std::exception& e) {
    throw ConfigError("environment: error: " + error_text(e));
  }
  const auto timeout = std::chrono::milliseconds(int64_t(cfg_.distributed.timeout_s * 1000));
  // CUDA tensors between ranks: NCCL, unless the config says "gloo", or says "auto" and the
  // local ranks outnumber the GPUs — NCCL refuses two ranks on one device ("Duplicate GPU
  // detected"), so ranks sharing a GPU stage their CUDA tensors through the host over Gloo.
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

void Run::setup() {
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

  // Every rank starts from rank 0's parameters and checks that it runs the same config.
  std::vector<at::Tensor> state;
  for (const auto& p : model_->parameters()) state.push_back(p);
  for (const auto& b : model_->buffers()) state.push_back(b);
  const std::string effective = render_config(cfg_);
  try {
    if (world_ > 1) {
      at::NoGradGuard no_grad;
      broadcast_from_rank0(*comm_, state);
      verify_same_config(*comm_, {{"config", std::to_string(fnv1a64(effective.data(), effective.size()))},
                                  {"model", model_fingerprint(cfg_)},
                                  {"compressor", compressor_fingerprint(cfg_)},
                                  {"world_size", std::to_string(world_)}});
    }
  } catch (const std::exception& e) {
    throw RuntimeFailure("start-up synchronisation failed: " + error_text(e));
  }

  compression_ = build_compression(cfg_, ctx_.env, device_name_);
  for (const auto& d : compression_.descriptions) log_->info("compression: {}", d);
  if (cfg_.compression.dense()) log_->info("compression: none (dense gradient exchange)");
  const auto& o = cfg_.optimizer;
  CompressedSGDOptions opts(o.lr);
  opts.momentum(o.momentum)
      .nesterov(o.nesterov)
      .weight_decay(o.weight_decay)
      .momentum_mode(o.momentum_mode)
      .nonfinite(o.nonfinite)
      .compressor(compression_.compressor)
      .density(cfg_.compression.dense() ? -1.0 : cfg_.compression.ratio)
      .error_feedback(cfg_.compression.error_feedback)
      .residual_lr_scaling(cfg_.compression.residual_lr_scaling)
      .scope(cfg_.compression.scope)
      .index_coding(cfg_.compression.index_coding)
      .min_numel(cfg_.compression.min_numel)
      .compress_1d(cfg_.compression.compress_1d)
      .auto_dense(cfg_.compression.auto_dense)
      .rules(compression_.rules)
      .seed(cfg_.run.seed)
      .communicator(comm_);
  try {
    opt_ = std::make_unique<CompressedSGD>(named_parameters(*model_), opts);
  } catch (const c10::Error& e) {
    throw ConfigError(cfg_.source + ": error: optimizer: " + e.what_without_backtrace());
  }

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
  log_->info("schedule: {} steps per epoch ({} micro-batches of {} per rank, accumulation {}), {} steps in all",
             steps_per_epoch_, batches_per_epoch_, bs, acc, total_steps_);
}

void Run::resume() {
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
  std::string payload;
  try {
    CheckpointMeta meta = read_checkpoint_file(choice.file, &payload);
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
    throw RuntimeFailure(std::string("cannot resume from ") + choice.file.string() + ": " + e.what());
  }
  last_saved_step_ = step_;
  last_checkpoint_ = choice.file.string();
  log_->info("resumed from {} (step {}, epoch {}, batch {} of the epoch)", choice.file.string(), step_, epoch_ + 1,
             batch_in_epoch_);
}

void Run::save_checkpoint(const char* why) {
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

bool Run::stop_requested() {
  const bool local = ctx_.stop && ctx_.stop->load() != 0;
  if (world_ == 1) return local;
  at::Tensor flag = at::full({1}, local ? 1.0f : 0.0f, at::kFloat);
  comm_->allreduce_sum_(flag);
  return flag.item<float>() > 0;
}

void Run::log_routing() {
  const auto& routing = opt_->routing();
  if (routing_logged_ == routing.size()) return;
  quiet_progress();
  for (size_t i = routing_logged_; i < routing.size(); ++i) {
    const auto& r = routing[i];
    log_->info("routing{}: {} -> {} ({})", routing_logged_ ? " change" : "", r.name, route_name(r.route), r.reason);
  }
  routing_logged_ = routing.size();
}

void Run::quiet_progress() {
  if (progress_) progress_->clear();
}

void Run::do_eval(bool epoch_end) {
  if (last_eval_step_ == step_) return;
  auto t = Clock::now();
  EvalStats s = evaluate(*model_, test_, cfg_.data.test_batch_size, device_, *comm_);
  last_eval_ = s;
  last_eval_step_ = step_;
  quiet_progress();
  log_->info("eval at step {}{}: test loss {:.4f}, test accuracy {:.2f}% ({} samples, {:.1f} s)", step_,
             epoch_end ? " (end of epoch)" : "", s.loss, 100.0 * s.accuracy, s.samples, seconds_since(t));
  if (rank_ != 0) return;
  std::map<std::string, double> f = {{"step", double(step_)},
                                     {"epoch", double(std::min(epoch_ + 1, cfg_.run.epochs))},
                                     {"test_loss", s.loss},
                                     {"test_acc", s.accuracy}};
  if (metrics_) metrics_->log_step(f), metrics_->flush();
  if (tb_) {
    tb_->add_scalar("test/loss", s.loss, step_);
    tb_->add_scalar("test/accuracy", s.accuracy, step_);
    tb_->flush();
  }
}

TrainResult Run::go() {
  connect();
  setup();
  resume();
  if (rank_ == 0) {
    const bool fresh = step_ == 0;
    if (cfg_.metrics.jsonl || cfg_.metrics.csv) {
      metrics_ = std::make_unique<MetricsWriter>(cfg_.metrics.dir, cfg_.metrics.jsonl, cfg_.metrics.csv, !fresh);
      if (!fresh) metrics_->truncate_after(step_, epoch_);
    }
    if (cfg_.metrics.tensorboard) tb_ = std::make_unique<TensorBoardWriter>(fs::path(cfg_.metrics.dir) / "tb");
    if (cfg_.metrics.progress != "off") {
      ProgressOptions po;
      po.tty = cfg_.metrics.progress == "bar" ? 1 : cfg_.metrics.progress == "log" ? 0 : -1;
      po.log_every = cfg_.run.log_every;
      progress_ = std::make_unique<ProgressReporter>(total_steps_, po, [this](const std::string& line) {
        log_->info("{} | acc {:.2f}% | lr {:.4g} | density {:.4g}", line, 100.0 * last_acc_, last_lr_,
                   last_density_);
      });
      progress_->start(step_);
    }
  }

  TrainResult result;
  result.rank = rank_;
  result.world_size = world_;
  const int64_t acc = cfg_.optimizer.grad_accumulation;
  const int64_t bs = cfg_.data.batch_size;
  bool stopped = false, interrupted = false;
  double window_loss = 0, window_correct = 0, window_samples = 0, window_ms = 0;
  int64_t window_steps = 0;
  auto& defaults = static_cast<CompressedSGDOptions&>(opt_->defaults());

  try {
    while (epoch_ < cfg_.run.epochs && !stopped) {
      sampler_->set_epoch(epoch_);
      BatchIterator batches(sampler_->indices(), bs, cfg_.data.drop_last, 0);
      batches.seek(batch_in_epoch_);
      if (batch_in_epoch_ == 0) epoch_loss_ = epoch_correct_ = epoch_samples_ = 0;
      auto epoch_t0 = Clock::now();
      while (!batches.done()) {
        if (cfg_.run.max_steps > 0 && step_ >= cfg_.run.max_steps) {
          stopped = true;
          break;
        }
        auto step_t0 = Clock::now();
        // One optimizer step: `group` micro-batches (fewer at the end of an epoch).
        const int64_t group = std::min(acc, batches.num_batches() - batches.batch_index());
        for (auto& p : model_->parameters()) p.mutable_grad() = at::Tensor();
        broadcast_buffers(buffers_, *comm_);
        double loss_sum = 0, correct = 0, samples = 0;
        for (int64_t m = 0; m < group; ++m) {
          Batch b = gather_batch(train_, batches.next());
          at::Tensor images = b.images.to(device_), labels = b.labels.to(device_);
          at::Tensor logits = model_->forward(images);
          at::Tensor loss = at::cross_entropy_loss(logits, labels);
          (group > 1 ? loss / double(group) : loss).backward();
          const double n = double(labels.size(0));
          loss_sum += loss.item<double>() * n;
          correct += logits.detach().argmax(1).eq(labels).sum().item<double>();
          samples += n;
        }
        const bool log_now = (step_ + 1) % cfg_.run.log_every == 0;
        defaults.track_residual_norm(log_now);
        const double lr = lr_at(cfg_.optimizer, step_, total_steps_);
        for (auto& g : opt_->param_groups()) g.options().set_lr(lr);
        const double density = density_at(cfg_.compression, step_);
        if (density != current_density_) {
          opt_->set_density(density);
          // Info at the phase changes (dense, decaying, configured), debug for each step.
          const auto& k = cfg_.compression;
          const bool phase = step_ == 0 || step_ == k.warmup_dense_steps ||
                             step_ == k.warmup_dense_steps + k.warmup_decay_steps || current_density_ == -2;
          if (density > 0 || current_density_ > 0)
            log_->log(phase ? spdlog::level::info : spdlog::level::debug, "density warm-up: step {} uses {}{}",
                      step_ + 1,
                      density > 0 ? fmt::format("density {:.6g}", density) : std::string("the configured density"),
                      phase && density > 0 && density < 1
                          ? fmt::format(", decaying to {:.6g} by step {}", k.ratio,
                                        k.warmup_dense_steps + k.warmup_decay_steps)
                          : std::string());
          current_density_ = density;
        }
        opt_->step();
        ++step_;
        batch_in_epoch_ = batches.batch_index();
        const StepStats& st = opt_->last_step_stats();
        bytes_sent_ += st.bytes_sent;
        bytes_received_ += st.bytes_received;
        bytes_dense_ += st.bytes_dense_equivalent;
        if (rank_ == 0) log_routing();
        double shown_loss = samples > 0 ? loss_sum / samples : std::nan("");
        const double step_ms = seconds_since(step_t0) * 1000.0;
        window_loss += loss_sum, window_correct += correct, window_samples += samples, window_ms += step_ms;
        ++window_steps;
        epoch_loss_ += loss_sum, epoch_correct_ += correct, epoch_samples_ += samples;

        if (log_now) {
          // Loss and accuracy over the window, summed over ranks.
          at::Tensor w = at::tensor({window_loss, window_correct, window_samples}, at::kDouble);
          comm_->allreduce_sum_(w);
          if (rank_ == 0) {
            const double ws = std::max(1.0, w[2].item<double>());
            const double loss = w[0].item<double>() / ws, accuracy = w[1].item<double>() / ws;
            std::map<std::string, double> f = {{"step", double(step_)},
                                               {"epoch", double(epoch_ + 1)},
                                               {"loss", loss},
                                               {"train_acc", accuracy},
                                               {"lr", lr},
                                               {"density", st.density()},
                                               {"bytes_sent", double(st.bytes_sent)},
                                               {"bytes_received", double(st.bytes_received)},
                                               {"bytes_dense_equivalent", double(st.bytes_dense_equivalent)},
                                               {"compress_ms", st.compress_ms},
                                               {"comm_ms", st.comm_ms},
                                               {"step_ms", window_ms / double(window_steps)},
                                               {"residual_norm", st.residual_norm}};
            if (metrics_) metrics_->log_step(f);
            if (tb_) tb_->add_scalars(f, step_, "train/");
            last_acc_ = accuracy, last_lr_ = lr, last_density_ = st.density();
            shown_loss = loss;
          }
          window_loss = window_correct = window_samples = window_ms = 0;
          window_steps = 0;
        }
        if (progress_) {
          ProgressUpdate u;
          u.step = step_;
          u.epoch = epoch_ + 1;
          u.loss = shown_loss;
          u.bytes_sent_total = double(bytes_sent_);
          u.bytes_dense_equivalent_total = double(bytes_dense_);
          progress_->update(u);
        }
        if (cfg_.run.eval_every > 0 && step_ % cfg_.run.eval_every == 0) do_eval(false);
        if (cfg_.checkpoint.every_steps > 0 && step_ % cfg_.checkpoint.every_steps == 0) save_checkpoint("periodic");
        if (stop_requested()) {
          stopped = interrupted = true;
          break;
        }
      }
      if (stopped) break;
      // End of the epoch: evaluate, summarize, and checkpoint pointing at the next epoch.
      do_eval(true);
      if (rank_ == 0 && metrics_) {
        const double es = std::max(1.0, epoch_samples_);
        metrics_->log_epoch({{"epoch", double(epoch_ + 1)},
                             {"step", double(step_)},
                             {"loss", epoch_loss_ / es},
                             {"train_acc", epoch_correct_ / es},
                             {"test_loss", last_eval_->loss},
                             {"test_acc", last_eval_->accuracy},
                             {"bytes_sent", double(bytes_sent_)},
                             {"bytes_received", double(bytes_received_)},
                             {"bytes_dense_equivalent", double(bytes_dense_)},
                             {"epoch_s", seconds_since(epoch_t0)}});
        metrics_->flush();
      }
      ++epoch_;
      batch_in_epoch_ = 0;
      if (cfg_.checkpoint.every_epoch && epoch_ < cfg_.run.epochs) save_checkpoint("end of epoch");
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
  if (metrics_) metrics_->flush();
  if (tb_) tb_->flush();
  if (progress_) progress_->finish();

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
  if (metrics_ && cfg_.metrics.jsonl) result.metrics_files.push_back(metrics_->jsonl_path().string());
  if (metrics_ && cfg_.metrics.csv) result.metrics_files.push_back(metrics_->csv_path().string());
  if (tb_) result.metrics_files.push_back(tb_->path().string());
  result.last_checkpoint = last_checkpoint_;
  return result;
}

}  // namespace

// ---------------------------------------------------------------- public API

std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors(const fs::path& path) {
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
    const auto* st = static_cast<const CompressedSGDParamState*>(state_of(opt.state(), p.value()));
    if (!st) continue;
    if (st->momentum_buffer().defined()) out.emplace_back("momentum/" + p.key(), st->momentum_buffer());
    if (st->residual().defined()) out.emplace_back("residual/" + p.key(), st->residual());
    for (const auto& [name, t] : st->plugin_state()) out.emplace_back("plugin/" + p.key() + "/" + name, t);
  }
  out.emplace_back("rng_state", gen.get_state());
  return out;
}

EnvMap env_from(char** envp) { return environment_map(envp); }

ConfigChoices config_choices() { return {model_names(), dataset_names()}; }

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  return load_config_file(path, overrides, config_choices());
}

void preflight(const TrainConfig& cfg, const RunContext& ctx) {
  const std::string device = resolve_device(cfg, nullptr);
  build_compression(cfg, ctx.env, device);
}

bool is_distributed_worker(const EnvMap& env) {
  // torchrun/our launcher set WORLD_SIZE; srun sets SLURM_PROCID for each task (an salloc
  // shell alone does not, so `--nproc-per-node` still launches there).
  return env.count("WORLD_SIZE") || env.count("SLURM_PROCID");
}

int64_t local_world_size(const TrainConfig& cfg, const EnvMap& env) {
  if (is_distributed_worker(env)) {
    try {
      return parse_dist_env(env).local_world_size;
    } catch (const std::exception&) {
    }
  }
  return cfg.distributed.nproc_per_node;
}

int launch_workers(const TrainConfig& cfg, const RunContext& ctx) {
  auto log = logger_of(ctx);
  LaunchOptions o;
  o.nproc = int(cfg.distributed.nproc_per_node);
  o.argv = ctx.argv;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && !o.argv.empty()) o.argv[0] = self.string();
  o.env = ctx.env;
  o.extra_env["CDDP_LAUNCHED_BY"] = "cddp-train";
  o.grace = std::chrono::milliseconds(int64_t(std::max(5.0, cfg.distributed.timeout_s) * 1000));
  o.on_event = [log](const std::string& m) { log->info("launcher: {}", m); };
  log->info("launching {} local workers", o.nproc);
  LaunchReport report;
  int rc;
  try {
    rc = launch_local(o, &report);
  } catch (const std::exception& e) {
    throw RuntimeFailure("cannot launch workers: " + error_text(e));
  }
  if (rc == 0) return kExitOk;
  log->error("workers failed: {}", report.summary);
  if (rc == kExitInterrupted || rc == 128 + SIGINT || rc == 128 + SIGTERM) return kExitInterrupted;
  if (rc == kExitUsage) return kExitUsage;
  return kExitRuntime;
}

TrainResult run_training(const TrainConfig& cfg, const RunContext& ctx) {
  Run run(cfg, ctx);
  return run.go();
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

std::string describe_plugins(const std::vector<std::string>& extra_dirs, const RunContext& ctx, bool verbose) {
  PluginLoader loader(search_path(extra_dirs, ctx.env));
  std::ostringstream os;
  os << "search path:\n";
  const auto& sp = loader.search_path();
  for (size_t i = 0; i < sp.dirs.size(); ++i)
    os << "  " << sp.dirs[i].string() << "  (" << (i < sp.origins.size() ? sp.origins[i] : "") << ")\n";
  const auto listing = loader.list();
  int usable = 0, refused = 0;
  for (const auto& l : listing) (l.usable ? usable : refused)++;
  os << "\nplugins (" << usable << " usable, " << refused << " refused):\n";
  for (const auto& l : listing) {
    const auto& d = l.description;
    if (l.usable) {
      os << "  " << d.name << "  " << d.version << "  " << l.path.string() << "  [" << l.origin << "]\n";
      if (!d.description.empty()) os << "      " << d.description << "\n";
      if (verbose) {
        os << "      LibTorch " << d.torch_version << ", plugin ABI " << d.abi_version
           << (d.abi_version == CDDP_PLUGIN_ABI_VERSION_V1 ? " (adapted)" : "") << ", C++11 ABI " << d.cxx11_abi
           << ", devices: " << d.devices << "\n";
        os << "      payload: " << payload_kind_name(d.caps.kind) << (d.caps.selection ? " (sparse selection" : " (")
           << (d.caps.shared_indices ? ", shared indices" : "") << (d.caps.selection ? ")" : "codec)") << "\n";
        os << "      parameters:\n";
        if (d.params.empty()) os << "        (none)\n";
        for (const auto& p : d.params) {
          os << "        " << p.name << " (" << param_type_name(p.type) << ", default " << p.default_value;
          if (p.type == ParamType::Int || p.type == ParamType::Double) os << ", range [" << p.min << ", " << p.max << "]";
          os << ")  " << p.help << "\n";
        }
      }
    } else {
      os << "  REFUSED  " << l.path.string() << "  [" << l.origin << "]\n      reason: " << l.refusal << "\n";
    }
  }
  if (listing.empty()) os << "  (none found)\n";
  return os.str();
}

}  // namespace cddp::train
