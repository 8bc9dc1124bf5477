// checkpoint.h — cddp-train's checkpoint files: one per rank and step
// (ckpt-step000000123-rank0.pt), written atomically, checked before use, and chosen for a
// resume only when a step's files are complete for the current world size.
//
// File layout (little-endian):
//   "CDDPCKPT"  u32 format version  u32 field count
//   fields: u32 key length, key, u64 value length, value   (the CheckpointMeta, as text)
//   u64 payload length, payload                             (a torch::serialize archive:
//                                                            model, optimizer, RNG state)
//   u64 FNV-1a 64 of everything above, "CKPTEND\0"
// A short file, a wrong magic or version, or a checksum mismatch is refused with a message
// that says which. It will not decide when to save, and never deletes another rank's files.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace cddp::train {

inline constexpr uint32_t kCheckpointFormatVersion = 1;

// A checkpoint that cannot be used (missing, truncated, corrupt, incompatible).
class CheckpointError : public std::runtime_error {
 public:
  explicit CheckpointError(const std::string& what) : std::runtime_error(what) {}
};
// A valid checkpoint of a different run shape (world size, model, compressor).
class CheckpointMismatch : public CheckpointError {
 public:
  using CheckpointError::CheckpointError;
};

struct CheckpointMeta {
  uint32_t format_version = kCheckpointFormatVersion;
  int64_t step = 0;            // optimizer steps done
  int64_t epoch = 0;           // the epoch in progress (0-based)
  int64_t batch_in_epoch = 0;  // micro-batches of `epoch` already consumed on this rank
  int64_t rank = 0, world_size = 1;
  uint64_t sampler_seed = 0;
  uint64_t config_hash = 0;
  std::string model_fingerprint, compressor_fingerprint;
  std::string config_toml;     // the effective config of the run that wrote it
  std::vector<int64_t> input_shape;  // channels, height, width, classes of the model's data
  std::string torch_version, cddp_version;
  // Running totals carried across a resume.
  int64_t bytes_sent = 0, bytes_received = 0, bytes_dense_equivalent = 0;
  double elapsed_s = 0;
};

std::string checkpoint_file_name(int64_t step, int64_t rank);
// Parses "ckpt-step<N>-rank<R>.pt"; false for any other name.
bool parse_checkpoint_file_name(const std::string& name, int64_t& step, int64_t& rank);

// Writes `meta` + `payload` to `path` through a temporary file in the same directory,
// fsync and rename. Throws CheckpointError.
void write_checkpoint_file(const std::filesystem::path& path, const CheckpointMeta& meta, const std::string& payload);

// Reads and checks the whole file (length, magic, version, checksum). Throws CheckpointError.
CheckpointMeta read_checkpoint_file(const std::filesystem::path& path, std::string* payload = nullptr);

// Model, optimizer (CompressedSGD::save: momentum and this rank's residual) and the state of
// `generator`, as one archive; and back. Loading checks every tensor's presence and shape.
std::string save_training_state(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer,
                                 const at::Generator& generator);
void load_training_state(const std::string& payload, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                         at::Generator* generator);

// The checkpoints of a directory, grouped by step (ascending), whatever their validity.
struct CheckpointSet {
  int64_t step = 0;
  std::map<int64_t, std::filesystem::path> files;  // rank -> file
};
std::vector<CheckpointSet> list_checkpoints(const std::filesystem::path& dir);

// Deletes this rank's files beyond the newest `keep` steps (keep = 0 keeps all). Returns
// the files removed.
std::vector<std::filesystem::path> prune_checkpoints(const std::filesystem::path& dir, int64_t rank, int64_t keep);

// What a resume must match.
struct ResumeExpectation {
  int64_t rank = 0, world_size = 1;
  std::string model_fingerprint, compressor_fingerprint;
};

struct ResumeChoice {
  bool resume = false;
  std::filesystem::path file;       // this rank's file
  CheckpointMeta meta;              // its header
  std::vector<std::string> notes;   // checkpoints skipped on the way, and why
};

// resume = "auto": the newest step whose files exist for every rank and are all valid;
// nothing to resume when the directory holds no checkpoint at all. resume = a path: that
// file (or the newest complete step of that directory), this rank's file of the same step.
// "never": nothing. Throws CheckpointError — never quietly starts from scratch — when
// checkpoints exist but none is usable, or when the chosen one differs in world size,
// model or compressor.
ResumeChoice choose_resume(const std::string& resume, const std::filesystem::path& dir,
                           const ResumeExpectation& expect);

// Every tensor a checkpoint holds, by name: "model/<parameter or buffer>",
// "momentum/<parameter>", "residual/<parameter>" (when the optimizer has one),
// "plugin/<parameter>/<state>" (what a plugin keeps, e.g. PowerSGD's Q) and
// "rng_state" — for comparing checkpoints bit by bit. In checkpoint_tensors.cpp, since it
// rebuilds the model and optimizer the file was saved from. Throws CheckpointError.
std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors(const std::filesystem::path& path);

}  // namespace cddp::train
