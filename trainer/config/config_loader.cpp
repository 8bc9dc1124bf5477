// config_loader.cpp — the TOML schema of cddp-train and its strict validation; the only
// translation unit in the project that includes toml++ (header-only mode).
//
// The schema is a table of sections and fields (key, type, range or choices, and a getter
// and setter into TrainConfig), used both to read a file and to write the effective config
// back out, so the two cannot drift apart. It will not touch LibTorch, plugins or the
// environment; plugin parameters are checked against the plugin's own schema later, by
// whoever loads the plugin.
#include "config_loader.h"

#include <cddp/fnv1a64.h>

#ifndef TOML_HEADER_ONLY
#define TOML_HEADER_ONLY 1
#endif
#ifndef TOML_ENABLE_FORMATTERS
#define TOML_ENABLE_FORMATTERS 1
#endif
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <sstream>

namespace cddp::train {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

enum class Kind { Bool, Int, Float, String, Enum, StringList, IntList };
using Val = std::variant<bool, int64_t, double, std::string, std::vector<std::string>, std::vector<int64_t>>;

enum class Dynamic { None, Models, Datasets };

struct Field {
  std::string key;
  Kind kind = Kind::String;
  double lo = -kInf, hi = kInf;
  bool lo_open = false, hi_open = false;
  std::vector<std::string> choices;
  Dynamic dynamic = Dynamic::None;
  bool non_empty = false;  // strings that must not be empty
  std::function<void(TrainConfig&, const Val&)> set;
  std::function<Val(const TrainConfig&)> get;
};

struct Section {
  std::string name;
  std::vector<Field> fields;
  std::vector<std::string> subtables;  // extra keys handled by hand ("params", "rules", "device")
};

template <class S, class T>
Field field(const char* key, Kind kind, S TrainConfig::*sec, T S::*mem) {
  Field f;
  f.key = key;
  f.kind = kind;
  f.set = [sec, mem](TrainConfig& c, const Val& v) { (c.*sec).*mem = std::get<T>(v); };
  f.get = [sec, mem](const TrainConfig& c) { return Val((c.*sec).*mem); };
  return f;
}
template <class S>
Field int_field(const char* key, S TrainConfig::*sec, int64_t S::*mem, double lo, double hi = kInf) {
  Field f = field(key, Kind::Int, sec, mem);
  f.lo = lo;
  f.hi = hi;
  return f;
}
template <class S>
Field float_field(const char* key, S TrainConfig::*sec, double S::*mem, double lo, double hi, bool lo_open = false,
                  bool hi_open = false) {
  Field f = field(key, Kind::Float, sec, mem);
  f.lo = lo;
  f.hi = hi;
  f.lo_open = lo_open;
  f.hi_open = hi_open;
  return f;
}
template <class S>
Field enum_field(const char* key, S TrainConfig::*sec, std::string S::*mem, std::vector<std::string> choices) {
  Field f = field(key, Kind::Enum, sec, mem);
  f.choices = std::move(choices);
  return f;
}
template <class S>
Field string_field(const char* key, S TrainConfig::*sec, std::string S::*mem, bool non_empty = false) {
  Field f = field(key, Kind::String, sec, mem);
  f.non_empty = non_empty;
  return f;
}

// [optimizer] keys that only one optimizer reads: set for the other one they are errors
// (check_optimizer_keys), and the effective configuration leaves them out.
const std::vector<std::string>& sgd_only_keys() {
  static const std::vector<std::string> keys = {"momentum", "nesterov", "momentum_mode"};
  return keys;
}
const std::vector<std::string>& adamw_only_keys() {
  static const std::vector<std::string> keys = {"beta1", "beta2", "eps", "amsgrad", "adamw_mode", "onebit_warmup_steps"};
  return keys;
}
bool optimizer_reads(const std::string& optimizer, const std::string& key) {
  const auto& other = optimizer == "adamw" ? sgd_only_keys() : adamw_only_keys();
  return std::find(other.begin(), other.end(), key) == other.end();
}

// Longer than 80 lines on purpose: it is a table (one line per config key, grouped by
// section), not logic; one place to read every key, type, range and default.
const std::vector<Section>& schema() {
  static const std::vector<Section> sections = [] {
    using C = TrainConfig;
    std::vector<Section> s;
    s.push_back({"run",
                 {string_field("name", &C::run, &RunConfig::name, true),
                  int_field("seed", &C::run, &RunConfig::seed, 0),
                  string_field("output_dir", &C::run, &RunConfig::output_dir),
                  int_field("epochs", &C::run, &RunConfig::epochs, 1),
                  int_field("max_steps", &C::run, &RunConfig::max_steps, 0),
                  int_field("log_every", &C::run, &RunConfig::log_every, 1),
                  int_field("eval_every", &C::run, &RunConfig::eval_every, 0),
                  int_field("threads", &C::run, &RunConfig::threads, 0, 1024),
                  enum_field("device", &C::run, &RunConfig::device, {"cpu", "cuda", "auto"}),
                  enum_field("log_level", &C::run, &RunConfig::log_level,
                             {"trace", "debug", "info", "warn", "error", "off"}),
                  enum_field("precision", &C::run, &RunConfig::precision, {"fp32", "bf16"})},
                 {}});
    Field model_name = field("name", Kind::Enum, &C::model, &ModelConfig::name);
    model_name.dynamic = Dynamic::Models;
    Field hidden = field("hidden", Kind::IntList, &C::model, &ModelConfig::hidden);
    hidden.lo = 1;
    hidden.hi = 1 << 20;
    s.push_back({"model", {model_name, hidden}, {"device"}});
    Field data_name = field("name", Kind::Enum, &C::data, &DataConfig::name);
    data_name.dynamic = Dynamic::Datasets;
    s.push_back({"data",
                 {data_name, string_field("path", &C::data, &DataConfig::path),
                  int_field("batch_size", &C::data, &DataConfig::batch_size, 1, 1 << 20),
                  int_field("test_batch_size", &C::data, &DataConfig::test_batch_size, 1, 1 << 20),
                  int_field("train_subset", &C::data, &DataConfig::train_subset, 0),
                  int_field("test_subset", &C::data, &DataConfig::test_subset, 0),
                  field("shuffle", Kind::Bool, &C::data, &DataConfig::shuffle),
                  field("drop_last", Kind::Bool, &C::data, &DataConfig::drop_last),
                  int_field("synthetic_train", &C::data, &DataConfig::synthetic_train, 1),
                  int_field("synthetic_test", &C::data, &DataConfig::synthetic_test, 1)},
                 {}});
    s.push_back({"optimizer",
                 {enum_field("name", &C::optimizer, &OptimizerConfig::name, {"sgd", "adamw"}),
                  float_field("lr", &C::optimizer, &OptimizerConfig::lr, 0, kInf, true),
                  float_field("momentum", &C::optimizer, &OptimizerConfig::momentum, 0, 1, false, true),
                  field("nesterov", Kind::Bool, &C::optimizer, &OptimizerConfig::nesterov),
                  float_field("weight_decay", &C::optimizer, &OptimizerConfig::weight_decay, 0, kInf),
                  enum_field("momentum_mode", &C::optimizer, &OptimizerConfig::momentum_mode, {"global", "dgc"}),
                  enum_field("schedule", &C::optimizer, &OptimizerConfig::schedule, {"constant", "step", "cosine"}),
                  int_field("step_size", &C::optimizer, &OptimizerConfig::step_size, 1),
                  float_field("gamma", &C::optimizer, &OptimizerConfig::gamma, 0, 1, true, false),
                  float_field("min_lr", &C::optimizer, &OptimizerConfig::min_lr, 0, kInf),
                  int_field("warmup_steps", &C::optimizer, &OptimizerConfig::warmup_steps, 0),
                  int_field("grad_accumulation", &C::optimizer, &OptimizerConfig::grad_accumulation, 1, 1 << 16),
                  enum_field("nonfinite", &C::optimizer, &OptimizerConfig::nonfinite, {"error", "skip_step"}),
                  float_field("beta1", &C::optimizer, &OptimizerConfig::beta1, 0, 1, false, true),
                  float_field("beta2", &C::optimizer, &OptimizerConfig::beta2, 0, 1, false, true),
                  float_field("eps", &C::optimizer, &OptimizerConfig::eps, 0, kInf),
                  field("amsgrad", Kind::Bool, &C::optimizer, &OptimizerConfig::amsgrad),
                  enum_field("adamw_mode", &C::optimizer, &OptimizerConfig::adamw_mode, {"onebit", "naive"}),
                  int_field("onebit_warmup_steps", &C::optimizer, &OptimizerConfig::onebit_warmup_steps, 1)},
                 {}});
    s.push_back({"compression",
                 {string_field("plugin", &C::compression, &CompressionConfig::plugin, true),
                  float_field("ratio", &C::compression, &CompressionConfig::ratio, 0, 1, true, false),
                  field("error_feedback", Kind::Bool, &C::compression, &CompressionConfig::error_feedback),
                  field("residual_lr_scaling", Kind::Bool, &C::compression, &CompressionConfig::residual_lr_scaling),
                  enum_field("scope", &C::compression, &CompressionConfig::scope, {"layer", "model"}),
                  enum_field("index_coding", &C::compression, &CompressionConfig::index_coding, {"block16", "plain"}),
                  enum_field("value_dtype", &C::compression, &CompressionConfig::value_dtype, {"fp32", "bf16", "fp16"}),
                  enum_field("exchange", &C::compression, &CompressionConfig::exchange,
                             {"allgather", "sparse_allreduce", "auto"}),
                  int_field("min_numel", &C::compression, &CompressionConfig::min_numel, 0),
                  field("compress_1d", Kind::Bool, &C::compression, &CompressionConfig::compress_1d),
                  field("auto_dense", Kind::Bool, &C::compression, &CompressionConfig::auto_dense),
                  field("skip", Kind::StringList, &C::compression, &CompressionConfig::skip),
                  int_field("warmup_dense_steps", &C::compression, &CompressionConfig::warmup_dense_steps, 0),
                  int_field("warmup_decay_steps", &C::compression, &CompressionConfig::warmup_decay_steps, 0),
                  field("plugin_dirs", Kind::StringList, &C::compression, &CompressionConfig::plugin_dirs)},
                 {"params", "rules"}});
    s.push_back({"distributed",
                 {enum_field("backend", &C::distributed, &DistributedConfig::backend, {"gloo", "nccl", "auto"}),
                  int_field("nproc_per_node", &C::distributed, &DistributedConfig::nproc_per_node, 1, 1024),
                  float_field("timeout_s", &C::distributed, &DistributedConfig::timeout_s, 0, 86400, true),
                  field("overlap", Kind::Bool, &C::distributed, &DistributedConfig::overlap),
                  float_field("bucket_cap_mb", &C::distributed, &DistributedConfig::bucket_cap_mb, 0, 1 << 20, true),
                  float_field("first_bucket_cap_mb", &C::distributed, &DistributedConfig::first_bucket_cap_mb, 0,
                              1 << 20, true)},
                 {}});
    s.push_back({"checkpoint",
                 {field("enabled", Kind::Bool, &C::checkpoint, &CheckpointConfig::enabled),
                  string_field("dir", &C::checkpoint, &CheckpointConfig::dir),
                  int_field("every_steps", &C::checkpoint, &CheckpointConfig::every_steps, 0),
                  field("every_epoch", Kind::Bool, &C::checkpoint, &CheckpointConfig::every_epoch),
                  int_field("keep", &C::checkpoint, &CheckpointConfig::keep, 0),
                  string_field("resume", &C::checkpoint, &CheckpointConfig::resume, true)},
                 {}});
    s.push_back({"metrics",
                 {string_field("dir", &C::metrics, &MetricsConfig::dir),
                  field("jsonl", Kind::Bool, &C::metrics, &MetricsConfig::jsonl),
                  field("csv", Kind::Bool, &C::metrics, &MetricsConfig::csv),
                  field("tensorboard", Kind::Bool, &C::metrics, &MetricsConfig::tensorboard),
                  enum_field("progress", &C::metrics, &MetricsConfig::progress, {"auto", "bar", "log", "off"})},
                 {}});
    return s;
  }();
  return sections;
}

// ------------------------------------------------------------------ text helpers

std::string fmt_double(double x) {
  char buf[64];
  if (x == std::floor(x) && std::fabs(x) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.1f", x);
    return buf;
  }
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

// A bare TOML key when possible, else quoted.
std::string toml_key(const std::string& k) {
  bool bare = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  return bare ? k : quote(k);
}

std::string render_val(const Val& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, int64_t>) return std::to_string(x);
        else if constexpr (std::is_same_v<T, double>) return fmt_double(x);
        else if constexpr (std::is_same_v<T, std::string>) return quote(x);
        else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::string out = "[";
          for (size_t i = 0; i < x.size(); ++i) out += (i ? ", " : "") + quote(x[i]);
          return out + "]";
        } else {
          std::string out = "[";
          for (size_t i = 0; i < x.size(); ++i) out += (i ? ", " : "") + std::to_string(x[i]);
          return out + "]";
        }
      },
      v);
}

std::string render_param(const ConfigParamValue& v) {
  // A plugin parameter is one of render_val's scalar kinds: render it the same way.
  return std::visit([](const auto& x) { return render_val(Val(x)); }, v);
}

std::string render_params_inline(const ConfigParamMap& m) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : m) {
    out += (first ? " " : ", ") + toml_key(k) + " = " + render_param(v);
    first = false;
  }
  return out + (first ? "}" : " }");
}

std::string range_text(const Field& f) {
  std::ostringstream os;
  auto num = [&](double x) { return f.kind == Kind::Float ? fmt_double(x) : std::to_string(int64_t(x)); };
  if (f.lo == -kInf && f.hi == kInf) return "";
  if (f.hi == kInf) os << (f.lo_open ? " > " : " >= ") << num(f.lo);
  else if (f.lo == -kInf) os << (f.hi_open ? " < " : " <= ") << num(f.hi);
  else os << " in " << (f.lo_open ? "(" : "[") << num(f.lo) << ", " << num(f.hi) << (f.hi_open ? ")" : "]");
  return os.str();
}

std::string choice_list(const std::vector<std::string>& choices) {
  std::string out;
  for (size_t i = 0; i < choices.size(); ++i) out += (i ? ", " : "") + quote(choices[i]);
  return out;
}

std::string expected_text(const Field& f, const std::vector<std::string>& choices) {
  switch (f.kind) {
    case Kind::Bool: return "a boolean (true or false)";
    case Kind::Int: return "an integer" + range_text(f);
    case Kind::Float: return "a number" + range_text(f);
    case Kind::String: return f.non_empty ? "a non-empty string" : "a string";
    case Kind::Enum: return choices.empty() ? "a string" : "one of " + choice_list(choices);
    case Kind::StringList: return "an array of strings";
    case Kind::IntList: return "an array of integers" + range_text(f);
  }
  return "?";
}

const char* node_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

std::string node_text(const toml::node& n) {
  std::ostringstream os;
  if (n.is_string()) os << quote(*n.value<std::string>());
  else n.visit([&](const auto& x) { os << x; });
  std::string s = os.str();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// ------------------------------------------------------------------ the reader

class Reader {
 public:
  Reader(std::string source, const ConfigChoices& choices) : source_(std::move(source)), choices_(choices) {}

  void apply_override(toml::table& root, const std::string& spec) {
    const std::string origin = "--set " + spec;
    const auto eq = spec.find('=');
    if (eq == std::string::npos || eq == 0) {
      errors_.push_back(origin + ": error: expected section.key=value");
      return;
    }
    const std::string path = spec.substr(0, eq), text = spec.substr(eq + 1);
    std::vector<std::string> parts;
    std::stringstream ss(path);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    if (parts.size() < 2 || std::any_of(parts.begin(), parts.end(), [](auto& p) { return p.empty(); })) {
      errors_.push_back(origin + ": error: expected section.key=value, with a dotted key such as run.epochs");
      return;
    }
    toml::table parsed;
    bool as_toml = false;
    try {
      parsed = toml::parse("v = " + text, std::string_view(origin));
      as_toml = parsed.size() == 1 && parsed.get("v") != nullptr;
    } catch (const toml::parse_error&) {
      as_toml = false;
    }
    if (!as_toml) {
      parsed = toml::table{};
      parsed.insert_or_assign("v", text);
    }
    toml::table* t = &root;
    std::string walked;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      walked += (i ? "." : "") + parts[i];
      toml::node* n = t->get(parts[i]);
      if (!n) {
        t->insert_or_assign(parts[i], toml::table{});
        n = t->get(parts[i]);
      }
      if (!n->is_table()) {
        errors_.push_back(origin + ": error: '" + walked + "' is " + node_type_name(*n) + ", not a table");
        return;
      }
      t = n->as_table();
    }
    parsed.get("v")->visit([&](auto&& concrete) { t->insert_or_assign(parts.back(), std::move(concrete)); });
    overrides_[path] = origin;
  }

  TrainConfig read(const toml::table& root) {
    TrainConfig cfg;
    cfg.source = source_;
    std::vector<std::string> section_names;
    for (const auto& s : schema()) section_names.push_back(s.name);

    for (auto&& [k, node] : root) {
      const std::string key(k.str());
      auto it = std::find_if(schema().begin(), schema().end(), [&](const Section& s) { return s.name == key; });
      if (it == schema().end()) {
        unknown(where_key(key, k), "unknown section [" + key + "]", key, section_names, "sections");
        continue;
      }
      if (!node.is_table()) {
        error(where(key, node), "'" + key + "' must be a table ([" + key + "]), got " + node_type_name(node));
        continue;
      }
      read_section(*it, *node.as_table(), cfg);
    }
    finish(cfg);
    if (!errors_.empty()) {
      std::string all;
      for (const auto& e : errors_) all += (all.empty() ? "" : "\n") + e;
      throw ConfigError(all);
    }
    return cfg;
  }

 private:
  std::string pos_text(const toml::source_region& src) const {
    std::string file = src.path ? std::string(*src.path) : source_;
    if (!src.begin) return file;
    return file + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column);
  }
  std::string override_for(const std::string& path) const {
    for (const auto& [p, origin] : overrides_)
      if (path == p || path.rfind(p + ".", 0) == 0 || path.rfind(p + "[", 0) == 0 || p.rfind(path + ".", 0) == 0)
        return origin;
    return "";
  }
  std::string where(const std::string& path, const toml::node& n) {
    std::string o = override_for(path);
    if (!o.empty()) return o;
    locations_[path] = pos_text(n.source());
    return locations_[path];
  }
  std::string where_key(const std::string& path, const toml::key& k) {
    std::string o = override_for(path);
    return o.empty() ? pos_text(k.source()) : o;
  }
  void error(const std::string& where, const std::string& what) { errors_.push_back(where + ": error: " + what); }
  void unknown(const std::string& where, const std::string& what, const std::string& word,
               const std::vector<std::string>& candidates, const char* noun) {
    std::string hint = closest_match(word, candidates);
    if (!hint.empty()) error(where, what + "; did you mean '" + hint + "'?");
    else error(where, what + "; valid " + noun + ": " + [&] {
                        std::string out;
                        for (size_t i = 0; i < candidates.size(); ++i) out += (i ? ", " : "") + candidates[i];
                        return out;
                      }());
  }

  const std::vector<std::string>& choices_for(const Field& f) const {
    if (f.dynamic == Dynamic::Models) return choices_.model_names;
    if (f.dynamic == Dynamic::Datasets) return choices_.dataset_names;
    return f.choices;
  }

  bool in_range(const Field& f, double x) const {
    if (f.lo_open ? !(x > f.lo) : !(x >= f.lo)) return false;
    if (f.hi_open ? !(x < f.hi) : !(x <= f.hi)) return false;
    return true;
  }

  // Longer than 80 lines on purpose: one case per field kind, each a few lines that share the
  // bad_type/bad_value error wording; splitting would spread the kind dispatch over files.
  // Converts `n` for `f`; nullopt (with an error recorded) when it does not fit.
  std::optional<Val> convert(const Field& f, const std::string& path, const toml::node& n) {
    const auto& choices = choices_for(f);
    auto bad_type = [&] {
      error(where(path, n), path + ": expected " + expected_text(f, choices) + ", got " + node_type_name(n) + " " +
                                node_text(n));
      return std::nullopt;
    };
    auto out_of_range = [&](const std::string& text) {
      error(where(path, n), path + " = " + text + " is out of range; expected " + expected_text(f, choices));
      return std::nullopt;
    };
    switch (f.kind) {
      case Kind::Bool:
        if (!n.is_boolean()) return bad_type();
        return Val(*n.value<bool>());
      case Kind::Int: {
        if (!n.is_integer()) return bad_type();
        int64_t x = *n.value<int64_t>();
        if (!in_range(f, double(x))) return out_of_range(std::to_string(x));
        return Val(x);
      }
      case Kind::Float: {
        if (!n.is_number()) return bad_type();
        double x = n.is_integer() ? double(*n.value<int64_t>()) : *n.value<double>();
        if (!std::isfinite(x) || !in_range(f, x)) return out_of_range(node_text(n));
        return Val(x);
      }
      case Kind::String: {
        if (!n.is_string()) return bad_type();
        std::string s = *n.value<std::string>();
        if (f.non_empty && s.empty()) {
          error(where(path, n), path + ": expected a non-empty string");
          return std::nullopt;
        }
        return Val(s);
      }
      case Kind::Enum: {
        if (!n.is_string()) return bad_type();
        std::string s = *n.value<std::string>();
        if (!choices.empty() && std::find(choices.begin(), choices.end(), s) == choices.end()) {
          std::string hint = closest_match(s, choices);
          error(where(path, n), path + ": unknown value " + quote(s) + "; expected one of " + choice_list(choices) +
                                    (hint.empty() ? "" : "; did you mean '" + hint + "'?"));
          return std::nullopt;
        }
        return Val(s);
      }
      case Kind::StringList: {
        if (!n.is_array()) return bad_type();
        std::vector<std::string> out;
        const auto& arr = *n.as_array();
        for (size_t i = 0; i < arr.size(); ++i) {
          if (!arr[i].is_string()) {
            error(where(path + "[" + std::to_string(i) + "]", arr[i]),
                  path + "[" + std::to_string(i) + "]: expected a string, got " + node_type_name(arr[i]) + " " +
                      node_text(arr[i]));
            return std::nullopt;
          }
          out.push_back(*arr[i].value<std::string>());
        }
        return Val(out);
      }
      case Kind::IntList: {
        if (!n.is_array()) return bad_type();
        std::vector<int64_t> out;
        const auto& arr = *n.as_array();
        for (size_t i = 0; i < arr.size(); ++i) {
          const std::string p = path + "[" + std::to_string(i) + "]";
          if (!arr[i].is_integer()) {
            error(where(p, arr[i]), p + ": expected an integer" + range_text(f) + ", got " +
                                        node_type_name(arr[i]) + " " + node_text(arr[i]));
            return std::nullopt;
          }
          int64_t x = *arr[i].value<int64_t>();
          if (!in_range(f, double(x))) {
            error(where(p, arr[i]), p + " = " + std::to_string(x) + " is out of range; expected an integer" +
                                        range_text(f));
            return std::nullopt;
          }
          out.push_back(x);
        }
        return Val(out);
      }
    }
    return std::nullopt;
  }

  std::optional<ConfigParamMap> read_params(const std::string& path, const toml::node& n) {
    if (!n.is_table()) {
      error(where(path, n), path + ": expected a table of plugin parameters, got " + node_type_name(n));
      return std::nullopt;
    }
    ConfigParamMap out;
    bool ok = true;
    for (auto&& [k, v] : *n.as_table()) {
      const std::string key(k.str()), p = path + "." + key;
      where(p, v);  // remember the location for later checks
      if (v.is_boolean()) out[key] = *v.value<bool>();
      else if (v.is_integer()) out[key] = *v.value<int64_t>();
      else if (v.is_floating_point()) out[key] = *v.value<double>();
      else if (v.is_string()) out[key] = *v.value<std::string>();
      else {
        error(where(p, v), p + ": plugin parameters must be booleans, integers, floats or strings, got " +
                               node_type_name(v));
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    return out;
  }

  void read_rules(const std::string& path, const toml::node& n, TrainConfig& cfg) {
    if (!n.is_array() || !n.as_array()->is_array_of_tables()) {
      error(where(path, n), path + ": expected an array of tables ([[compression.rules]] with match = \"glob\"), got " +
                                node_type_name(n));
      return;
    }
    static const std::vector<std::string> keys = {"match", "plugin", "ratio", "error_feedback", "dense", "params"};
    const auto& arr = *n.as_array();
    for (size_t i = 0; i < arr.size(); ++i) {
      const std::string rp = path + "[" + std::to_string(i) + "]";
      const auto& t = *arr[i].as_table();
      CompressionRuleConfig rule;
      rule.where = where(rp, arr[i]);
      bool ok = true;
      for (auto&& [k, v] : t) {
        const std::string key(k.str()), p = rp + "." + key;
        if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
          unknown(where_key(p, k), "unknown key '" + key + "' in " + rp, key, keys, "keys");
          ok = false;
        } else if (key == "match" || key == "plugin") {
          if (!v.is_string() || v.value<std::string>()->empty()) {
            error(where(p, v), p + ": expected a non-empty string, got " + node_type_name(v) + " " + node_text(v));
            ok = false;
          } else if (key == "match") {
            rule.match = *v.value<std::string>();
          } else {
            rule.plugin = *v.value<std::string>();
          }
        } else if (key == "ratio") {
          Field f;
          f.kind = Kind::Float;
          f.lo = 0, f.hi = 1, f.lo_open = true;
          if (auto x = convert(f, p, v)) rule.ratio = std::get<double>(*x);
          else ok = false;
        } else if (key == "error_feedback" || key == "dense") {
          if (!v.is_boolean()) {
            error(where(p, v), p + ": expected a boolean (true or false), got " + node_type_name(v) + " " + node_text(v));
            ok = false;
          } else if (key == "error_feedback") {
            rule.error_feedback = *v.value<bool>();
          } else if (*v.value<bool>()) {
            if (rule.plugin && *rule.plugin != "none") {
              error(where(p, v), rp + ": dense = true contradicts plugin = " + quote(*rule.plugin));
              ok = false;
            }
            rule.plugin = "none";
          }
        } else if (key == "params") {
          if (auto m = read_params(p, v)) rule.params = *m;
          else ok = false;
        }
      }
      if (rule.match.empty() && ok) {
        error(rule.where, rp + ": a rule needs match = \"glob\" (a parameter-name pattern such as \"fc*.weight\")");
        ok = false;
      }
      if (ok && !rule.plugin && !rule.ratio && !rule.error_feedback && rule.params.empty()) {
        error(rule.where, rp + " (match = " + quote(rule.match) +
                              ") changes nothing; give plugin, ratio, error_feedback, dense or params");
        ok = false;
      }
      if (ok) cfg.compression.rules.push_back(std::move(rule));
    }
  }

  void read_section(const Section& s, const toml::table& t, TrainConfig& cfg) {
    std::vector<std::string> keys;
    for (const auto& f : s.fields) keys.push_back(f.key);
    for (const auto& k : s.subtables) keys.push_back(k);
    for (auto&& [k, node] : t) {
      const std::string key(k.str()), path = s.name + "." + key;
      auto f = std::find_if(s.fields.begin(), s.fields.end(), [&](const Field& x) { return x.key == key; });
      if (f != s.fields.end()) {
        if (auto v = convert(*f, path, node)) {
          f->set(cfg, *v);
          where(path, node);  // remember the location for cross-field messages
        }
      } else if (s.name == "compression" && key == "params") {
        if (auto m = read_params(path, node)) cfg.compression.params = *m;
      } else if (s.name == "compression" && key == "rules") {
        read_rules(path, node, cfg);
      } else if (s.name == "model" && key == "device") {
        Field dev;
        dev.kind = Kind::Enum;
        dev.choices = {"cpu", "cuda", "auto"};
        if (auto v = convert(dev, path, node)) {
          model_device_ = std::get<std::string>(*v);
          model_device_where_ = where(path, node);
        }
      } else {
        unknown(where_key(path, k), "unknown key '" + key + "' in [" + s.name + "]", key, keys, "keys");
      }
    }
  }

  std::string loc(const std::string& path) const {
    std::string o = override_for(path);
    if (!o.empty()) return o;
    auto it = locations_.find(path);
    return it != locations_.end() ? it->second : source_;
  }

  // Keys of one optimizer set while the other is chosen are errors, not silently ignored.
  void check_optimizer_keys(const TrainConfig& cfg) {
    const auto& o = cfg.optimizer;
    const bool adamw = o.name == "adamw";
    const char* other = adamw ? "\"sgd\"" : "\"adamw\"";
    for (const auto& key : adamw ? sgd_only_keys() : adamw_only_keys())
      if (locations_.count("optimizer." + key))
        error(loc("optimizer." + key), "optimizer." + key + " applies to optimizer.name = " + other +
                                           ", but optimizer.name = " + quote(o.name) +
                                           (adamw && key == "momentum" ? " (AdamW's momentum decay is beta1)" : ""));
    if (!adamw) return;
    if (o.amsgrad && o.adamw_mode == "onebit")
      error(loc("optimizer.amsgrad"), "optimizer.amsgrad = true needs optimizer.adamw_mode = \"naive\" (in "
                                      "\"onebit\" the variance is frozen, so it has no running max)");
    if (cfg.compression.scope == "model")
      error(loc("compression.scope"), "compression.scope = \"model\" is not available with optimizer.name = "
                                      "\"adamw\" (it selects per tensor); use \"layer\"");
    if (cfg.compression.residual_lr_scaling)
      error(loc("compression.residual_lr_scaling"), "compression.residual_lr_scaling applies to optimizer.name = "
                                                    "\"sgd\" (AdamW's residual is of the gradient or momentum, not "
                                                    "of an lr-scaled update)");
  }

  // Cross-field checks and derived defaults.
  void finish(TrainConfig& cfg) {
    if (model_device_) {
      if (locations_.count("run.device") && *model_device_ != cfg.run.device)
        error(*model_device_where_, "model.device = " + quote(*model_device_) + " contradicts run.device = " +
                                        quote(cfg.run.device) + "; give the device in one place");
      cfg.run.device = *model_device_;
    }
    const auto& o = cfg.optimizer;
    check_optimizer_keys(cfg);
    if (o.nesterov && o.momentum == 0)
      error(loc("optimizer.nesterov"), "optimizer.nesterov = true needs optimizer.momentum > 0");
    if (o.schedule == "cosine" && o.min_lr > o.lr)
      error(loc("optimizer.min_lr"), "optimizer.min_lr = " + fmt_double(o.min_lr) + " is above optimizer.lr = " +
                                          fmt_double(o.lr));
    if (cfg.compression.scope == "model" && o.momentum_mode == "dgc" && o.momentum != 0)
      error(loc(locations_.count("optimizer.momentum_mode") ? "optimizer.momentum_mode" : "compression.scope"),
            "compression.scope = \"model\" with optimizer.momentum > 0 needs optimizer.momentum_mode = \"global\" "
            "(DGC's momentum correction is kept per tensor; momentum_mode defaults to \"dgc\")");
    if (cfg.distributed.backend == "nccl" && cfg.run.device == "cpu")
      error(loc("distributed.backend"), "distributed.backend = \"nccl\" needs run.device = \"cuda\" (NCCL moves CUDA "
                                        "tensors only); use \"gloo\" or \"auto\" on the CPU");
    auto& c = cfg.compression;
    auto pr = c.params.find("ratio");
    if (pr != c.params.end()) {
      double r = -1;
      if (auto* d = std::get_if<double>(&pr->second)) r = *d;
      else if (auto* i = std::get_if<int64_t>(&pr->second)) r = double(*i);
      if (!(r > 0 && r <= 1)) {
        error(loc("compression.params.ratio"), "compression.params.ratio must be a number in (0, 1]");
      } else if (locations_.count("compression.ratio") && r != c.ratio) {
        error(loc("compression.params.ratio"), "compression.params.ratio = " + fmt_double(r) +
                                                   " contradicts compression.ratio = " + fmt_double(c.ratio) +
                                                   "; give the ratio in one place");
      } else {
        c.ratio = r;
      }
    }
    for (const auto& pat : c.skip)
      if (pat.empty()) error(loc("compression.skip"), "compression.skip: empty pattern");
    for (const auto& d : c.plugin_dirs)
      if (d.empty()) error(loc("compression.plugin_dirs"), "compression.plugin_dirs: empty directory name");
    if (cfg.run.output_dir.empty()) cfg.run.output_dir = "runs/" + cfg.run.name;
    if (cfg.checkpoint.dir.empty()) cfg.checkpoint.dir = cfg.run.output_dir + "/checkpoints";
    if (cfg.metrics.dir.empty()) cfg.metrics.dir = cfg.run.output_dir;
  }

  std::string source_;
  const ConfigChoices& choices_;
  std::vector<std::string> errors_;
  std::map<std::string, std::string> overrides_;  // dotted path -> "--set ..."
  std::map<std::string, std::string> locations_;  // dotted path -> "file:line:col"
  std::optional<std::string> model_device_, model_device_where_;
};

TrainConfig load(const std::function<toml::table()>& parse, const std::string& source,
                 const std::vector<std::string>& overrides, const ConfigChoices& choices) {
  toml::table root;
  try {
    root = parse();
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    std::string where = src.path ? std::string(*src.path) : source;
    if (src.begin) where += ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column);
    throw ConfigError(where + ": error: " + std::string(e.description()));
  }
  Reader reader(source, choices);
  for (const auto& o : overrides) reader.apply_override(root, o);
  return reader.read(root);
}

}  // namespace

// ------------------------------------------------------------------ public API

TrainConfig load_config_file(const std::string& path, const std::vector<std::string>& overrides,
                             const ConfigChoices& choices) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw ConfigError(path + ": error: cannot open the config file for reading");
  std::fclose(f);
  return load([&] { return toml::parse_file(path); }, path, overrides, choices);
}

TrainConfig load_config_string(const std::string& toml_text, const std::string& source_name,
                               const std::vector<std::string>& overrides, const ConfigChoices& choices) {
  return load([&] { return toml::parse(toml_text, std::string_view(source_name)); }, source_name, overrides,
              choices);
}

std::string render_config(const TrainConfig& cfg) {
  std::ostringstream os;
  os << "# effective configuration" << (cfg.source.empty() ? "" : " (from " + cfg.source + ")") << "\n";
  for (const auto& s : schema()) {
    os << "\n[" << s.name << "]\n";
    for (const auto& f : s.fields)
      if (s.name != "optimizer" || optimizer_reads(cfg.optimizer.name, f.key))
        os << f.key << " = " << render_val(f.get(cfg)) << "\n";
    if (s.name == "compression") {
      os << "\n[compression.params]\n";
      for (const auto& [k, v] : cfg.compression.params) os << toml_key(k) << " = " << render_param(v) << "\n";
      for (const auto& r : cfg.compression.rules) {
        os << "\n[[compression.rules]]\nmatch = " << quote(r.match) << "\n";
        if (r.plugin) os << "plugin = " << quote(*r.plugin) << "\n";
        if (r.ratio) os << "ratio = " << fmt_double(*r.ratio) << "\n";
        if (r.error_feedback) os << "error_feedback = " << (*r.error_feedback ? "true" : "false") << "\n";
        if (!r.params.empty()) os << "params = " << render_params_inline(r.params) << "\n";
      }
    }
  }
  return os.str();
}

std::string model_fingerprint(const TrainConfig& c) {
  std::string out = "model=" + c.model.name;
  if (c.model.name == "mlp") out += " hidden=" + render_val(Val(c.model.hidden));
  out += " data=" + c.data.name;
  return out;
}

std::string compressor_fingerprint(const TrainConfig& c) {
  const auto& k = c.compression;
  std::ostringstream os;
  os << "plugin=" << k.plugin;
  if (!k.dense()) {
    os << " ratio=" << fmt_double(k.ratio) << " error_feedback=" << (k.error_feedback ? "true" : "false")
       << " residual_lr_scaling=" << (k.residual_lr_scaling ? "true" : "false")
       << " scope=" << k.scope << " params=" << render_params_inline(k.params);
  }
  os << " skip=" << render_val(Val(k.skip)) << " momentum_mode=" << c.optimizer.momentum_mode;
  // (Only for AdamW, so that the fingerprints of SGD checkpoints written before it stay as they were.)
  if (c.optimizer.name != "sgd") os << " optimizer=" << c.optimizer.name << " adamw_mode=" << c.optimizer.adamw_mode;
  for (const auto& r : k.rules) {
    os << " rule{match=" << r.match;
    if (r.plugin) os << " plugin=" << *r.plugin;
    if (r.ratio) os << " ratio=" << fmt_double(*r.ratio);
    if (r.error_feedback) os << " error_feedback=" << (*r.error_feedback ? "true" : "false");
    if (!r.params.empty()) os << " params=" << render_params_inline(r.params);
    os << "}";
  }
  return os.str();
}

uint64_t config_hash(const TrainConfig& c, int64_t world_size) {
  const std::string s = model_fingerprint(c) + "\n" + compressor_fingerprint(c) + "\nworld_size=" +
                        std::to_string(world_size);
  return fnv1a64(s.data(), s.size());
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  return best_d <= limit && best_d < std::max(word.size(), best.size()) ? best : "";
}

}  // namespace cddp::train
