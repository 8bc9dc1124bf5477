// config_docs_test.cpp — docs/config.md stays complete and current: every key the config schema
// writes (render_config of a config with a rule, so [[compression.rules]] is rendered too, with
// SGD and with AdamW) has a row in its section's table, every row is such a key, and every
// parameter of every in-tree plugin (plugins/<name>/, described from its built library) has a
// row in the [compression.params] table. It will not check what a row says, only that it exists.
#include "config/config_loader.h"

#include <cddp/plugin_loader.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace {

namespace fs = std::filesystem;
using Keys = std::map<std::string, std::set<std::string>>;  // section -> keys

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  EXPECT_TRUE(in) << "cannot read " << p;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Table rows "| `key` | ..." under each "## [section]" / "### [[section]]" heading.
Keys documented_keys(const std::string& md) {
  Keys out;
  std::string section;
  const std::regex heading(R"(^#{2,3} \[{1,2}([a-z_.]+)\]{1,2}\s*$)"), row(R"(^\| `([a-z_0-9]+)` \|)");
  std::istringstream in(md);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, heading)) section = m[1];
    else if (line.rfind("## ", 0) == 0) section.clear();
    else if (!section.empty() && std::regex_search(line, m, row)) out[section].insert(m[1]);
  }
  return out;
}

// "section.key" -> the keys render_config writes under [section] / [[section]].
Keys rendered_keys(const std::string& toml) {
  Keys out;
  std::string section;
  const std::regex heading(R"(^\[{1,2}([a-z_.]+)\]{1,2}\s*$)"), key(R"(^([a-z_0-9]+) = )");
  std::istringstream in(toml);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, heading)) section = m[1];
    else if (std::regex_search(line, m, key)) out[section].insert(m[1]);
  }
  return out;
}

// The [compression.params] table: plugin -> its documented parameters ("—" for none).
std::map<std::string, std::set<std::string>> documented_plugin_params(const std::string& md) {
  std::map<std::string, std::set<std::string>> out;
  const auto start = md.find("### [compression.params]");
  EXPECT_NE(start, std::string::npos) << "docs/config.md has no [compression.params] section";
  const auto end = md.find("\n### ", start + 1);
  std::istringstream in(md.substr(start, end == std::string::npos ? std::string::npos : end - start));
  const std::regex row(R"(^\|\s*(`([a-z_0-9]+)`)?\s*\|\s*(`([a-z_0-9]+)`|—)\s*\|)");
  std::string plugin;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, row)) continue;
    if (m[2].matched) plugin = m[2];
    if (plugin.empty()) continue;
    out[plugin].insert(m[4].matched ? std::string(m[4]) : std::string("—"));
  }
  return out;
}

const fs::path kSource = CDDP_TEST_SOURCE_DIR;

// What render_config writes for a config with a rule, once with SGD and once with AdamW (whose
// keys it writes only for AdamW): the union.
Keys rendered_union() {
  Keys all;
  for (const char* optimizer : {"sgd", "adamw"}) {
    const auto cfg = cddp::train::load_config_string(
        std::string("[optimizer]\nname = \"") + optimizer +
            "\"\n[[compression.rules]]\nmatch = \"fc*\"\nplugin = \"randomk\"\nratio = 0.1\n"
            "error_feedback = false\nparams = { scale = true }\n",
        "config_docs_test");
    for (const auto& [section, keys] : rendered_keys(cddp::train::render_config(cfg)))
      all[section].insert(keys.begin(), keys.end());
  }
  return all;
}

TEST(ConfigDocs, EveryConfigKeyHasARowInItsSection) {
  const std::string md = read_file(kSource / "docs/config.md");
  const Keys rendered = rendered_union();
  const Keys documented = documented_keys(md);
  size_t checked = 0;
  for (const auto& [section, keys] : rendered)
    for (const auto& k : keys) {
      ++checked;
      EXPECT_TRUE(documented.count(section) && documented.at(section).count(k))
          << "docs/config.md: no row for `" << k << "` under [" << section << "]";
    }
  // Not vacuous: the sections and keys the schema has today (about 80 keys in 8 sections),
  // AdamW's among them.
  EXPECT_GE(rendered.size(), 8u);
  EXPECT_GE(checked, 70u);
  EXPECT_TRUE(rendered.count("compression.rules"));
  EXPECT_TRUE(rendered.at("optimizer").count("beta2"));
}

// And the other way: no row for a key the schema does not have (a renamed or removed key).
// Keys the loader takes that render_config writes otherwise: model.device (run.device is
// written), a rule's `dense` (written as plugin = "none").
TEST(ConfigDocs, EveryDocumentedKeyIsInTheSchema) {
  const std::string md = read_file(kSource / "docs/config.md");
  const Keys rendered = rendered_union();
  const std::set<std::string> not_rendered{"model.device", "compression.rules.dense"};
  size_t checked = 0;
  for (const auto& [section, keys] : documented_keys(md)) {
    if (section == "compression.params") continue;  // plugin by plugin: the test below
    for (const auto& k : keys) {
      ++checked;
      if (not_rendered.count(section + "." + k)) continue;
      EXPECT_TRUE(rendered.count(section) && rendered.at(section).count(k))
          << "docs/config.md documents `" << k << "` under [" << section << "], which the schema does not have";
    }
  }
  EXPECT_GE(checked, 70u);
}

// Every parameter of every in-tree plugin has a row, and every row is a declared parameter.
TEST(ConfigDocs, EveryInTreePluginParameterHasARow) {
  const std::string md = read_file(kSource / "docs/config.md");
  const auto documented = documented_plugin_params(md);
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({fs::path(CDDP_TEST_PLUGIN_DIR)}, nullptr));
  std::set<std::string> in_tree;
  for (const auto& e : fs::directory_iterator(kSource / "plugins"))
    if (e.is_directory() && e.path().filename() != "common") in_tree.insert(e.path().filename().string());
  ASSERT_GE(in_tree.size(), 9u);  // the nine plugins of today
  for (const auto& name : in_tree) {
    SCOPED_TRACE(name);
    const auto d = loader.describe(name);
    ASSERT_TRUE(documented.count(name)) << "docs/config.md [compression.params]: no rows for plugin `" << name << "`";
    const auto& rows = documented.at(name);
    if (d.params.empty()) EXPECT_TRUE(rows.count("—")) << "`" << name << "` has no parameters: give it a `—` row";
    std::set<std::string> declared{"—"};
    for (const auto& p : d.params) {
      declared.insert(p.name);
      EXPECT_TRUE(rows.count(p.name)) << "docs/config.md [compression.params]: no row for `" << name << "` `"
                                      << p.name << "`";
    }
    for (const auto& r : rows)  // and no row for a parameter the plugin does not declare
      EXPECT_TRUE(declared.count(r) && (r != "—" || d.params.empty()))
          << "docs/config.md [compression.params] documents `" << name << "` `" << r << "`, which the plugin does not declare";
  }
}

}  // namespace
