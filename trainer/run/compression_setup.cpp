// compression_setup.cpp — see compression_setup.h. It will not retry a plugin with other
// parameters after an error: the schema says what it takes, and an error is the user's to fix.
#include "run/compression_setup.h"

#include "run/run_support.h"

#include <algorithm>
#include <filesystem>
#include <variant>

namespace cddp::train {
namespace {

ParamMap to_param_map(const ConfigParamMap& in) {
  ParamMap out;
  for (const auto& [k, v] : in) std::visit([&, key = k](const auto& x) { out[key] = x; }, v);
  return out;
}

bool declares_ratio(PluginLoader& loader, const std::string& plugin) {
  const auto params = loader.describe(plugin).params;
  return std::any_of(params.begin(), params.end(), [](const auto& s) { return s.name == "ratio"; });
}

// A plugin's compressor with `params`, plus `ratio` when the plugin's schema has a `ratio`
// parameter and the params do not give one. Errors name `what` (the config key).
std::shared_ptr<Compressor> create_compressor(PluginLoader& loader, const TrainConfig& cfg, const std::string& what,
                                              const std::string& plugin, ConfigParamMap params, double ratio) {
  try {
    if (params.count("ratio") == 0 && declares_ratio(loader, plugin)) params["ratio"] = ratio;
    return loader.create(plugin, to_param_map(params));
  } catch (const std::exception& e) {
    throw ConfigError(cfg.source + ": error: " + what + " = \"" + plugin + "\": " + error_text(e));
  }
}

void check_device(const TrainConfig& cfg, const std::shared_ptr<Compressor>& comp, const std::string& what,
                  const std::string& device) {
  const auto want = device == "cuda" ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  const auto devs = comp->supported_devices();
  if (std::find(devs.begin(), devs.end(), want) == devs.end())
    throw ConfigError(cfg.source + ": error: " + what + " = \"" + comp->name() + "\" does not support device " +
                      device);
}

std::string describe_rule(const CompressionRuleConfig& r, const CompressionRule& rule, const std::string& plugin) {
  std::string feedback;
  if (rule.error_feedback >= 0) feedback = (rule.error_feedback ? " with" : " without") + std::string(" error feedback");
  return "rule '" + r.match + "': " + (rule.dense ? "dense" : plugin) +
         (rule.density > 0 ? " ratio " + std::to_string(rule.density) : "") + feedback;
}

CompressionRule build_rule(PluginLoader& loader, const TrainConfig& cfg, size_t i, const std::string& device,
                           std::string* plugin_out) {
  const auto& c = cfg.compression;
  const auto& r = c.rules[i];
  const std::string key = "compression.rules[" + std::to_string(i) + "]";
  CompressionRule rule;
  rule.match = r.match;
  if (r.ratio) rule.density = *r.ratio;
  if (r.error_feedback) rule.error_feedback = *r.error_feedback ? 1 : 0;
  const std::string plugin = r.plugin ? *r.plugin : c.plugin;
  *plugin_out = plugin;
  if (plugin == "none") {
    rule.dense = true;
  } else if (r.plugin || !r.params.empty()) {
    const double ratio = r.ratio ? *r.ratio : c.ratio;
    rule.compressor = create_compressor(loader, cfg, key + ".plugin", plugin, r.params, ratio);
    check_device(cfg, rule.compressor, key + ".plugin", device);
    // A ratio given among the plugin's params is also the rule's density (the cost model's).
    auto pr = r.params.find("ratio");
    if (!r.ratio && pr != r.params.end())
      rule.density = std::holds_alternative<double>(pr->second) ? std::get<double>(pr->second)
                                                                 : double(std::get<int64_t>(pr->second));
  }
  return rule;
}

}  // namespace

PluginSearchPath plugin_search_path(const std::vector<std::string>& dirs, const EnvMap& env) {
  std::vector<std::filesystem::path> configured(dirs.begin(), dirs.end());
  return PluginSearchPath::standard(configured, env_value(env, "CDDP_PLUGIN_PATH"));
}

Compression build_compression(const TrainConfig& cfg, const EnvMap& env, const std::string& device) {
  Compression out;
  const auto& c = cfg.compression;
  PluginLoader loader(plugin_search_path(c.plugin_dirs, env));
  if (!c.dense()) {
    out.compressor = create_compressor(loader, cfg, "compression.plugin", c.plugin, c.params, c.ratio);
    check_device(cfg, out.compressor, "compression.plugin", device);
    out.descriptions.push_back("compressor " + out.compressor->name() + " ratio " + std::to_string(c.ratio) +
                               (c.error_feedback ? " with" : " without") + " error feedback, scope " + c.scope);
  }
  for (size_t i = 0; i < c.rules.size(); ++i) {
    std::string plugin;
    out.rules.push_back(build_rule(loader, cfg, i, device, &plugin));
    out.descriptions.push_back(describe_rule(c.rules[i], out.rules.back(), plugin));
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

}  // namespace cddp::train
