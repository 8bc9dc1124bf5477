// compression_setup.h — turns the config's [compression] table into what CompressedSGD
// takes: the default compressor and the per-tensor rules, each created through the plugin
// loader with its parameters and checked against the run's device.
//
// Whether a plugin is handed compression.ratio is decided from its declared parameter schema
// (PluginLoader::describe): only a plugin that declares a `ratio` parameter gets it, and only
// when the config's params do not set one. It will not build the optimizer (optimizer_setup)
// or list plugins (plugin_listing).
#pragma once

#include "config/train_config.h"
#include "trainer.h"

#include <cddp/compressed_sgd.h>
#include <cddp/plugin_loader.h>

#include <memory>
#include <string>
#include <vector>

namespace cddp::train {

struct Compression {
  std::shared_ptr<Compressor> compressor;  // null: dense training
  std::vector<CompressionRule> rules;
  std::vector<std::string> descriptions;   // one line each, for the log
};

// The plugin search path: `dirs` (plugin_dirs of the config, or --plugin-dir), then
// CDDP_PLUGIN_PATH from `env`, then the install and build trees.
PluginSearchPath plugin_search_path(const std::vector<std::string>& dirs, const EnvMap& env);

// Creates every compressor the config names, on `device` ("cpu" or "cuda"). ConfigError
// naming the config key (compression.plugin, compression.rules[i].plugin) when a plugin is
// missing, refuses its parameters or does not support the device.
Compression build_compression(const TrainConfig& config, const EnvMap& env, const std::string& device);

}  // namespace cddp::train
