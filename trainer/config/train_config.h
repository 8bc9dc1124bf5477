// train_config.h — the typed configuration of one cddp-train run, section by section, as
// parsed and validated by config_loader. Every default lives here and in docs/config.md; those
// the library shares (CompressedSGDOptions, CompressedAdamWOptions) come from option_defaults.h.
//
// Plain data: it will not parse TOML, validate, touch LibTorch or read the environment.
// Code outside trainer/config/ only ever sees these structs, never a TOML type.
#pragma once

#include <cddp/option_defaults.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace cddp::train {

// A plugin parameter value as written in [compression.params] (same alternatives, in the
// same order, as cddp::ParamValue so the conversion is a plain copy).
using ConfigParamValue = std::variant<bool, int64_t, double, std::string>;
using ConfigParamMap = std::map<std::string, ConfigParamValue>;

struct RunConfig {
  std::string name = "run";
  int64_t seed = 0;
  std::string output_dir;      // empty in the file: "runs/<name>"
  int64_t epochs = 1;
  int64_t max_steps = 0;       // 0: no limit (epochs decide)
  int64_t log_every = 50;      // optimizer steps between metric lines
  int64_t eval_every = 0;      // optimizer steps between evaluations; 0: at the end of each epoch
  int64_t threads = 0;         // intra-op threads per rank; 0: cores / local world size
  std::string device = "cpu";  // "cpu" | "cuda" | "auto"
  std::string log_level = "info";
  std::string precision = "fp32";  // "fp32" | "bf16": autocast of forward and backward (CPU)
};

struct ModelConfig {
  std::string name = "simple_cnn";
  std::vector<int64_t> hidden = {256, 128};  // widths of the mlp's hidden layers
};

struct DataConfig {
  std::string name = "fashion_mnist";  // "fashion_mnist" | "mnist" | "synthetic"
  std::string path;               // empty: the dataset's default directory
  int64_t batch_size = 64;        // per rank, per micro-batch
  int64_t test_batch_size = 1000;
  int64_t train_subset = 0;       // 0: the whole training set
  int64_t test_subset = 0;        // 0: the whole test set
  bool shuffle = true;
  bool drop_last = false;
  int64_t synthetic_train = 2048;  // sizes of the "synthetic" dataset
  int64_t synthetic_test = 512;
};

struct OptimizerConfig {
  std::string name = "sgd";  // "sgd" (CompressedSGD) | "adamw" (CompressedAdamW)
  double lr = 0.05;
  double momentum = 0.9;       // sgd only
  bool nesterov = false;       // sgd only
  double weight_decay = 0;     // sgd: added to the gradient; adamw: decoupled, p·(1 − lr·wd)
  std::string momentum_mode = defaults::kMomentumMode;  // sgd only: "dgc" | "global" (docs/results.md: why dgc)
  double beta1 = defaults::kAdamBeta1;  // adamw only: the momentum's decay
  double beta2 = defaults::kAdamBeta2;  // adamw only: the variance's decay
  double eps = defaults::kAdamEps;      // adamw only
  bool amsgrad = defaults::kAmsgrad;    // adamw only, adamw_mode "naive" only
  std::string adamw_mode = defaults::kAdamWMode;  // adamw only: "onebit" (1-bit Adam) | "naive" (the control)
  int64_t onebit_warmup_steps = defaults::kOnebitWarmupSteps;  // adamw "onebit": dense AdamW steps before the variance freezes
  std::string schedule = "constant";     // "constant" | "step" | "cosine"
  int64_t step_size = 1000;              // "step": steps between decays
  double gamma = 0.1;                    // "step": decay factor
  double min_lr = 0;                     // "cosine": final learning rate
  int64_t warmup_steps = 0;              // linear learning-rate warm-up
  int64_t grad_accumulation = 1;         // micro-batches per optimizer step
  std::string nonfinite = defaults::kNonfinite;  // "error" | "skip_step"
};

struct CompressionRuleConfig {
  std::string match;                   // glob over parameter names
  std::optional<std::string> plugin;   // "none": dense
  std::optional<double> ratio;
  std::optional<bool> error_feedback;
  ConfigParamMap params;               // parameters for `plugin` (ratio goes in unless given)
  std::string where;                   // "file:line:col" of the rule, for messages
};

struct CompressionConfig {
  std::string plugin = "topk";  // "topk", "randomk", a path to a .so, or "none" (dense)
  double ratio = 0.01;
  bool error_feedback = defaults::kErrorFeedback;
  bool residual_lr_scaling = defaults::kResidualLrScaling;  // residual kept in units of the current lr (CompressedSGDOptions)
  std::string scope = defaults::kScope;  // "layer" | "model"
  std::string index_coding = defaults::kIndexCoding;  // how sparse indices travel: "block16" | "plain" (int32)
  std::string value_dtype = defaults::kTrainerValueDtype;  // how sparse values travel: "fp32" | "bf16" | "fp16" (rounding kept in the residual)
  std::string exchange = defaults::kTrainerExchange;       // "allgather" | "sparse_allreduce" | "auto" (CompressedSGDOptions::exchange)
  int64_t min_numel = defaults::kTrainerMinNumel;  // smaller tensors go dense; why not 0: option_defaults.h
  bool compress_1d = defaults::kCompress1d;
  bool auto_dense = defaults::kAutoDense;
  std::vector<std::string> skip;  // parameter-name globs sent dense
  int64_t warmup_dense_steps = 0;   // DGC warm-up: dense for this many steps,
  int64_t warmup_decay_steps = 0;   // then density decays exponentially to `ratio` over these
  std::vector<std::string> plugin_dirs;
  ConfigParamMap params;            // [compression.params]
  std::vector<CompressionRuleConfig> rules;  // [[compression.rules]]

  bool dense() const { return plugin == "none"; }
};

struct DistributedConfig {
  std::string backend = "auto";  // "gloo" | "nccl" | "auto"
  int64_t nproc_per_node = 1;
  double timeout_s = 60;
  bool overlap = defaults::kOverlap;  // CompressedSGDOptions::overlap: the exchange overlaps backward
  double bucket_cap_mb = defaults::kBucketCapMb;             // with overlap: MiB a bucket (PyTorch DDP's)
  double first_bucket_cap_mb = defaults::kFirstBucketCapMb;  // and the first (last layers') bucket
};

struct CheckpointConfig {
  bool enabled = true;
  std::string dir;               // empty: "<output_dir>/checkpoints"
  int64_t every_steps = 0;       // 0: only at the end, at epoch ends and on interrupt
  bool every_epoch = true;
  int64_t keep = 3;              // checkpoints retained; 0: all
  std::string resume = "auto";   // "auto" | "never" | a path
};

struct MetricsConfig {
  std::string dir;               // empty: output_dir
  bool jsonl = true;
  bool csv = true;
  bool tensorboard = true;
  std::string progress = "auto";  // "auto" | "bar" | "log" | "off"
};

struct TrainConfig {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  OptimizerConfig optimizer;
  CompressionConfig compression;
  DistributedConfig distributed;
  CheckpointConfig checkpoint;
  MetricsConfig metrics;

  std::string source;  // the file it came from ("" for built-in defaults)

  // Resolved paths (defaults filled in by the loader).
  std::string output_dir() const { return run.output_dir; }
  std::string checkpoint_dir() const { return checkpoint.dir; }
  std::string metrics_dir() const { return metrics.dir; }
};

}  // namespace cddp::train
