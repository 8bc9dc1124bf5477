// plugin_defaults_test.cpp — one place for each plugin default: ParamReader::get_*(key) reads an
// absent key's default from the plugin's schema (its ParamSpec table), so the constructor holds
// no second copy; and docs/config.md's plugin table, which restates each default for readers,
// must say what every in-tree plugin's schema says, key for key (a default changed in one place
// and not the other fails here). Also: a schema default that does not parse or is out of range
// is a clear error naming the key, not a silent zero.
#include <cddp/plugin_params.h>

#include "test_plugins.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>

namespace {

using cddp::testing::build_tree_loader;
using cddp::testing::error_of;

const char* const kInTree[] = {"topk", "randomk", "threshold", "sign", "cast", "qsgd", "terngrad", "natural",
                               "powersgd"};

// (plugin, key) -> default text, from the rows of docs/config.md's plugin table: "| `plugin` |
// `key` | type | `default` | meaning |", a row with an empty first cell continuing the plugin above.
std::map<std::pair<std::string, std::string>, std::string> documented_defaults() {
  std::ifstream in(std::string(CDDP_TEST_SOURCE_DIR) + "/docs/config.md");
  EXPECT_TRUE(in.good()) << "docs/config.md not found";
  std::map<std::pair<std::string, std::string>, std::string> out;
  std::string line, plugin;
  bool in_table = false;
  auto unquote = [](std::string s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '`' || s.front() == '"')) s.erase(0, 1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '`' || s.back() == '"')) s.pop_back();
    return s;
  };
  while (std::getline(in, line)) {
    if (line.rfind("| plugin | key | type | default |", 0) == 0) in_table = true;
    else if (in_table && line.rfind("|", 0) != 0) in_table = false;
    if (!in_table || line.rfind("|---", 0) == 0 || line.rfind("| plugin |", 0) == 0) continue;
    std::vector<std::string> cells;
    std::stringstream row(line.substr(1));
    for (std::string cell; std::getline(row, cell, '|');) cells.push_back(cell);
    if (cells.size() < 4) continue;
    if (!unquote(cells[0]).empty()) plugin = unquote(cells[0]);
    const std::string key = unquote(cells[1]);
    if (key.empty() || key == "—") continue;  // a plugin without parameters
    out[{plugin, key}] = unquote(cells[3]);
  }
  return out;
}

TEST(PluginDefaults, DocsStateWhatEverySchemaSaysAndNothingElse) {
  auto docs = documented_defaults();
  ASSERT_FALSE(docs.empty());
  auto loader = build_tree_loader();
  size_t schema_keys = 0;
  for (const char* name : kInTree) {
    const cddp::PluginDescription d = loader.describe(name);
    for (const auto& p : d.params) {
      ++schema_keys;
      auto it = docs.find({name, p.name});
      ASSERT_NE(it, docs.end()) << "docs/config.md has no row for " << name << "'s parameter '" << p.name << "'";
      EXPECT_EQ(it->second, p.default_value) << name << "." << p.name << ": docs/config.md and the schema disagree";
    }
    EXPECT_NO_THROW(loader.create(name)) << name << " on its schema's defaults alone";
  }
  EXPECT_EQ(docs.size(), schema_keys) << "docs/config.md documents a parameter no schema has";
}

const cddp::ParamSpec kSpecs[] = {
    {"levels", cddp::ParamType::Int, "16", 1, 100, ""},        {"ratio", cddp::ParamType::Double, "0.25", 0, 1, ""},
    {"on", cddp::ParamType::Bool, "true", 0, 0, ""},           {"kind", cddp::ParamType::String, "fp16", 0, 0, ""},
    {"broken", cddp::ParamType::Int, "sixteen", 1, 100, ""},   {"wide", cddp::ParamType::Int, "1000", 1, 100, ""},
    {"half", cddp::ParamType::Int, "2.5", 0, 100, ""},
};

TEST(PluginDefaults, ReaderTakesAbsentKeysFromTheSchemaAndGivenOnesAsGiven) {
  const cddp::ParamMap none;  // the reader keeps a reference: a named map, not a temporary
  const cddp::ParamReader absent("p", kSpecs, 4, none);
  EXPECT_EQ(absent.get_int("levels"), 16);
  EXPECT_EQ(absent.get_double("ratio"), 0.25);
  EXPECT_TRUE(absent.get_bool("on"));
  EXPECT_EQ(absent.get_string("kind"), "fp16");
  EXPECT_EQ(absent.get_double("levels"), 16.0);  // an integer read as a number
  const cddp::ParamMap values{{"levels", int64_t{3}}, {"ratio", int64_t{1}}, {"on", false}, {"kind", std::string("bf16")}};
  const cddp::ParamReader given("p", kSpecs, 4, values);
  EXPECT_EQ(given.get_int("levels"), 3);
  EXPECT_EQ(given.get_double("ratio"), 1.0);
  EXPECT_FALSE(given.get_bool("on"));
  EXPECT_EQ(given.get_string("kind"), "bf16");
}

TEST(PluginDefaults, ABadSchemaDefaultIsAnErrorNamingTheKey) {
  const cddp::ParamMap none;
  const cddp::ParamReader r("p", kSpecs, sizeof(kSpecs) / sizeof(kSpecs[0]), none);
  EXPECT_NE(error_of([&] { r.get_int("broken"); }).find("plugin 'p': the schema's default of 'broken' (\"sixteen\")"),
            std::string::npos);
  EXPECT_NE(error_of([&] { r.get_int("wide"); }).find("'wide' (\"1000\") is not a number in its range"),
            std::string::npos);
  EXPECT_NE(error_of([&] { r.get_int("half"); }).find("the schema's default of 'half' is not an integer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { r.get_int("missing"); }).find("no parameter 'missing' in the schema"), std::string::npos);
  EXPECT_NE(error_of([&] { r.get_bool("levels"); }).find("'levels' is a integer in the schema, read as a bool"),
            std::string::npos);
}

}  // namespace
