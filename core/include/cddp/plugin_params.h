// plugin_params.h — typed key/value parameters for compressor plugins, and their schema.
//
// Parameters arrive as a ParamMap (they come from TOML's [compression.params]). Each plugin
// publishes a ParamSpec table; ParamReader validates a map against it: unknown key, wrong
// type or out-of-range value are errors that name the key. Header-only on purpose: plugins
// compile it themselves and need no host library.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>

namespace cddp {

enum class ParamType : int32_t { Bool = 0, Int = 1, Double = 2, String = 3 };

using ParamValue = std::variant<bool, int64_t, double, std::string>;
using ParamMap = std::map<std::string, ParamValue>;

// One entry of a plugin's schema. Plain C data so that it can sit in the ABI info struct.
struct ParamSpec {
  const char* name;
  ParamType type;
  const char* default_value;  // as text, for listings
  double min;                 // numeric range, inclusive (ignored for Bool/String)
  double max;
  const char* help;
};

inline const char* param_type_name(ParamType t) {
  switch (t) {
    case ParamType::Bool: return "bool";
    case ParamType::Int: return "integer";
    case ParamType::Double: return "float";
    case ParamType::String: return "string";
  }
  return "?";
}

inline ParamType param_type_of(const ParamValue& v) { return static_cast<ParamType>(v.index()); }

inline std::string param_to_string(const ParamValue& v) {
  std::ostringstream os;
  std::visit([&](const auto& x) {
    if constexpr (std::is_same_v<std::decay_t<decltype(x)>, bool>) os << (x ? "true" : "false");
    else if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::string>) os << '"' << x << '"';
    else os << x;
  }, v);
  return os.str();
}

// Validates a ParamMap against a schema and hands out typed values. get_*(key) gives an absent
// key the schema's own default_value, so that a plugin's defaults live in one place, its
// ParamSpec table (what `cddp-train plugins --verbose` lists and docs/config.md restates; a
// default that does not parse as its type, or lies outside its range, is an error naming the
// key). get_*(key, fallback) (a fallback of the plugin's own) stays for plugins written before.
class ParamReader {
 public:
  ParamReader(std::string plugin, const ParamSpec* specs, size_t n, const ParamMap& params)
      : plugin_(std::move(plugin)), specs_(specs), n_(n), params_(params) {
    for (const auto& [key, value] : params_) {
      const ParamSpec* s = find(key);
      if (!s) fail("unknown parameter '" + key + "'; expected one of: " + known());
      ParamType got = param_type_of(value);
      bool int_as_double = s->type == ParamType::Double && got == ParamType::Int;
      if (got != s->type && !int_as_double)
        fail("parameter '" + key + "' must be a " + param_type_name(s->type) + ", got " +
             param_type_name(got) + " " + param_to_string(value));
      if (s->type == ParamType::Int || s->type == ParamType::Double) {
        double x = got == ParamType::Int ? double(std::get<int64_t>(value)) : std::get<double>(value);
        if (!(x >= s->min && x <= s->max)) {
          std::ostringstream os;
          os << "parameter '" << key << "' = " << param_to_string(value) << " is out of range ["
             << s->min << ", " << s->max << "]";
          fail(os.str());
        }
      }
    }
  }

  bool has(const std::string& key) const { return params_.count(key) != 0; }

  double get_double(const std::string& key, double fallback) const {
    auto it = params_.find(key);
    if (it == params_.end()) return fallback;
    if (auto* i = std::get_if<int64_t>(&it->second)) return double(*i);
    return std::get<double>(it->second);
  }
  int64_t get_int(const std::string& key, int64_t fallback) const {
    auto it = params_.find(key);
    return it == params_.end() ? fallback : std::get<int64_t>(it->second);
  }
  bool get_bool(const std::string& key, bool fallback) const {
    auto it = params_.find(key);
    return it == params_.end() ? fallback : std::get<bool>(it->second);
  }
  std::string get_string(const std::string& key, const std::string& fallback) const {
    auto it = params_.find(key);
    return it == params_.end() ? fallback : std::get<std::string>(it->second);
  }

  double get_double(const std::string& key) const { return has(key) ? get_double(key, 0) : default_number(key); }
  int64_t get_int(const std::string& key) const {
    if (has(key)) return get_int(key, 0);
    const double d = default_number(key);
    if (d != std::floor(d)) fail("the schema's default of '" + key + "' is not an integer");
    return static_cast<int64_t>(d);
  }
  bool get_bool(const std::string& key) const {
    if (has(key)) return get_bool(key, false);
    const std::string text = spec_default(key, ParamType::Bool);
    if (text != "true" && text != "false") fail("the schema's default of '" + key + "' is not true or false");
    return text == "true";
  }
  std::string get_string(const std::string& key) const {
    if (has(key)) return get_string(key, "");
    std::string text = spec_default(key, ParamType::String);
    if (text.size() >= 2 && text.front() == '"' && text.back() == '"') text = text.substr(1, text.size() - 2);
    return text;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::invalid_argument("plugin '" + plugin_ + "': " + what);
  }

 private:
  // The schema's default text of `key`, which must be declared with type `type`.
  std::string spec_default(const std::string& key, ParamType type) const {
    const ParamSpec* s = find(key);
    if (!s) fail("no parameter '" + key + "' in the schema");
    const bool numeric_ok = type == ParamType::Double && s->type == ParamType::Int;
    if (s->type != type && !numeric_ok)
      fail("parameter '" + key + "' is a " + param_type_name(s->type) + " in the schema, read as a " +
           param_type_name(type));
    if (!s->default_value) fail("the schema gives parameter '" + key + "' no default");
    return s->default_value;
  }
  double default_number(const std::string& key) const {
    const ParamSpec* s = find(key);
    const std::string text = spec_default(key, s && s->type == ParamType::Int ? ParamType::Int : ParamType::Double);
    std::istringstream in(text);
    double x = 0;
    in >> x;
    if (!in || !in.eof() || !(x >= s->min && x <= s->max))
      fail("the schema's default of '" + key + "' (\"" + text + "\") is not a number in its range");
    return x;
  }
  const ParamSpec* find(const std::string& key) const {
    for (size_t i = 0; i < n_; ++i)
      if (key == specs_[i].name) return &specs_[i];
    return nullptr;
  }
  std::string known() const {
    std::string out;
    for (size_t i = 0; i < n_; ++i) out += (i ? ", " : "") + std::string(specs_[i].name);
    return out.empty() ? "(none)" : out;
  }

  std::string plugin_;
  const ParamSpec* specs_;
  size_t n_;
  const ParamMap& params_;
};

}  // namespace cddp
