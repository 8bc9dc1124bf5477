// config_docs_test.cpp — docs/config.md stays complete: every key the config schema writes
// (render_config of a config with a rule, so [[compression.rules]] is rendered too) has a
// row in its section's table, and every parameter of every in-tree plugin (plugins/<name>/,
// described from its built library) has a row in the [compression.params] table. It will
// not check what a row says, only that it exists.
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

TEST(ConfigDocs, EveryConfigKeyHasARowInItsSection) {
  const std::string md = read_file(kSource / "docs/config.md");
  const auto cfg = cddp::train::load_config_string(
      "[[compression.rules]]\nmatch = \"fc*\"\nplugin = \"randomk\"\nratio = 0.1\nerror_feedback = false\n"
      "params = { scale = true }\n",
      "config_docs_test");
  const Keys rendered = rendered_keys(cddp::train::render_config(cfg));
  const Keys documented = documented_keys(md);
  size_t checked = 0;
  for (const auto& [section, keys] : rendered)
    for (const auto& k : keys) {
      ++checked;
      EXPECT_TRUE(documented.count(section) && documented.at(section).count(k))
          << "docs/config.md: no row for `" << k << "` under [" << section << "]";
    }
  // Not vacuous: the sections and keys the schema has today (about 70 keys in 8 sections).
  EXPECT_GE(rendered.size(), 8u);
  EXPECT_GE(checked, 60u);
  EXPECT_TRUE(rendered.count("compression.rules"));
}

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
    for (const auto& p : d.params)
      EXPECT_TRUE(rows.count(p.name)) << "docs/config.md [compression.params]: no row for `" << name << "` `"
                                      << p.name << "`";
  }
}

}  // namespace
