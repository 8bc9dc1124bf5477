// config_loader.h — reads a cddp-train TOML file (plus `--set section.key=value` overrides)
// into a validated TrainConfig, and writes a TrainConfig back out as TOML.
//
// Validation is strict and happens before any work: an unknown section or key (with a
// "did you mean" suggestion), a wrong type, a value out of range or a file that does not
// parse all fail with ConfigError, whose message names `file:line:col`, the key and what
// was expected. This is the only interface to TOML in the project: toml++ is included by
// config_loader.cpp alone. It will not create models, load plugins or read the environment.
#pragma once

#include "train_config.h"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace cddp::train {

// Every problem found, one per line, each "where: error: what".
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(const std::string& what) : std::runtime_error(what) {}
};

// Choices only known to other libraries (registered models, datasets); empty: not checked.
struct ConfigChoices {
  std::vector<std::string> model_names;
  std::vector<std::string> dataset_names;
};

// Loads `path`, applies `overrides` ("section.key=value"; the value is parsed as a TOML
// value, and taken as a string when it is not one), validates, fills derived defaults.
TrainConfig load_config_file(const std::string& path, const std::vector<std::string>& overrides = {},
                             const ConfigChoices& choices = {});

// The same from TOML text; `source_name` stands for the file in messages.
TrainConfig load_config_string(const std::string& toml_text, const std::string& source_name,
                               const std::vector<std::string>& overrides = {},
                               const ConfigChoices& choices = {});

// The complete effective configuration as TOML (every key, defaults included), which
// load_config_string reads back to an equal TrainConfig.
std::string render_config(const TrainConfig& config);

// What must not change across a resume, as readable text (so a refusal can show the
// difference) and as one 64-bit hash over both plus the world size.
std::string model_fingerprint(const TrainConfig& config);
std::string compressor_fingerprint(const TrainConfig& config);
uint64_t config_hash(const TrainConfig& config, int64_t world_size);

// Levenshtein distance, and the closest candidate within a small distance ("" if none).
size_t edit_distance(const std::string& a, const std::string& b);
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace cddp::train
