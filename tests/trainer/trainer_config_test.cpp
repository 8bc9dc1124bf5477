// trainer_config_test.cpp — the config loader: every file in tests/trainer/bad_configs is
// refused by `cddp-train train` with exit code 2 and the messages its "# expect:" lines name
// (with {file} standing for its path, so file:line:col is checked); valid configs round-trip
// through render_config; --set overrides; "did you mean". It will not train anything.
#include "config/config_loader.h"
#include "train_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <vector>

namespace {

using namespace cddp::train;
using namespace cddp_test;

struct BadConfig {
  fs::path path;
  std::vector<std::string> expects;
  std::string args;
  bool skip_if_cuda = false;
};

BadConfig read_bad_config(const fs::path& path) {
  BadConfig b;
  b.path = path;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto take = [&](const std::string& tag, std::string& out) {
      if (line.rfind(tag, 0) != 0) return false;
      out = line.substr(tag.size());
      return true;
    };
    std::string v;
    if (take("# expect: ", v)) {
      for (size_t at; (at = v.find("{file}")) != std::string::npos;) v.replace(at, 6, path.string());
      b.expects.push_back(v);
    } else if (take("# args: ", v)) {
      b.args += " " + v;
    } else if (take("# skip-if: ", v)) {
      b.skip_if_cuda = v == "cuda";
    }
  }
  return b;
}

TEST(BadConfigs, EachIsRefusedWithExitCode2AndItsMessage) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(CDDP_BAD_CONFIG_DIR))
    if (e.path().extension() == ".toml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 20u);
  const bool cuda_build = run_command(shell_quote(train_exe()) + " --version").output.find("CUDA") != std::string::npos;
  const fs::path out = scratch_dir("badcfg");
  for (const auto& f : files) {
    BadConfig b = read_bad_config(f);
    SCOPED_TRACE(f.filename().string());
    ASSERT_FALSE(b.expects.empty()) << "no '# expect:' line in " << f;
    if (b.skip_if_cuda && cuda_build) continue;
    const auto r = run_command(shell_quote(train_exe()) + " train --config " + shell_quote(f.string()) + b.args +
                               " --set run.output_dir=" + shell_quote((out / f.stem()).string()));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    for (const auto& e : b.expects) EXPECT_NE(r.output.find(e), std::string::npos) << "missing: " << e << "\n---\n" << r.output;
    // Refused before any work: no output directory was made.
    EXPECT_FALSE(fs::exists(out / f.stem())) << f;
  }
  fs::remove_all(out);
}

ConfigChoices choices() { return {{"mlp", "simple_cnn", "resnet18", "vit_tiny"}, {"fashion_mnist", "mnist", "synthetic"}}; }

TEST(ConfigLoader, DefaultsAndDerivedPaths) {
  TrainConfig c = load_config_string("", "empty.toml", {}, choices());
  EXPECT_EQ(c.run.name, "run");
  EXPECT_EQ(c.run.output_dir, "runs/run");
  EXPECT_EQ(c.checkpoint.dir, "runs/run/checkpoints");
  EXPECT_EQ(c.metrics.dir, "runs/run");
  EXPECT_EQ(c.compression.plugin, "topk");
  EXPECT_DOUBLE_EQ(c.compression.ratio, 0.01);
  EXPECT_EQ(c.checkpoint.resume, "auto");
  EXPECT_EQ(c.compression.value_dtype, "bf16");  // the trainer's wire defaults (option_defaults.h)
  EXPECT_EQ(c.compression.exchange, "auto");
  TrainConfig s = load_config_string("[compression]\nexchange = \"sparse_allreduce\"\nvalue_dtype = \"fp32\"\n",
                                     "sar.toml", {}, choices());
  EXPECT_EQ(s.compression.exchange, "sparse_allreduce");
  EXPECT_EQ(s.compression.value_dtype, "fp32");
}

TEST(ConfigLoader, RenderedConfigReadsBackTheSame) {
  const std::string text = R"(
[run]
name = "rt"
epochs = 3
[model]
name = "mlp"
hidden = [32, 16]
[optimizer]
lr = 0.1
schedule = "cosine"
[compression]
plugin = "randomk"
ratio = 0.05
skip = ["*.bias", "fc3.*"]
[compression.params]
scale = true
[[compression.rules]]
match = "fc1.weight"
ratio = 0.2
error_feedback = false
[[compression.rules]]
match = "fc2.*"
plugin = "topk"
params = { ratio = 0.3 }
[[compression.rules]]
match = "fc3.*"
dense = true
)";
  TrainConfig a = load_config_string(text, "rt.toml", {}, choices());
  const std::string rendered = render_config(a);
  TrainConfig b = load_config_string(rendered, "rendered.toml", {}, choices());
  auto body = [](const std::string& t) { return t.substr(t.find('\n')); };  // past the "from" line
  EXPECT_EQ(body(render_config(b)), body(rendered));
  EXPECT_EQ(b.model.hidden, (std::vector<int64_t>{32, 16}));
  ASSERT_EQ(b.compression.rules.size(), 3u);
  EXPECT_EQ(*b.compression.rules[2].plugin, "none");
  EXPECT_EQ(std::get<bool>(b.compression.params.at("scale")), true);
  EXPECT_EQ(model_fingerprint(a), model_fingerprint(b));
  EXPECT_EQ(compressor_fingerprint(a), compressor_fingerprint(b));
  EXPECT_EQ(config_hash(a, 2), config_hash(b, 2));
  EXPECT_NE(config_hash(a, 2), config_hash(a, 4));
}

TEST(ConfigLoader, SetOverridesParseTomlValuesWithAStringFallback) {
  TrainConfig c = load_config_string("[run]\nname = \"x\"\n", "o.toml",
                                     {"run.epochs=4", "run.name=renamed run", "compression.skip=[\"a\", \"b\"]",
                                      "optimizer.lr=1", "compression.params.ratio=0.5", "model.device=auto"},
                                     choices());
  EXPECT_EQ(c.run.epochs, 4);
  EXPECT_EQ(c.run.name, "renamed run");
  EXPECT_EQ(c.compression.skip, (std::vector<std::string>{"a", "b"}));
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 1.0);
  EXPECT_DOUBLE_EQ(c.compression.ratio, 0.5);  // params.ratio is the ratio
  EXPECT_EQ(c.run.device, "auto");
  try {
    load_config_string("", "o.toml", {"noequals"}, choices());
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--set noequals: error: expected section.key=value"), std::string::npos);
  }
  try {
    load_config_string("[run]\nname = \"x\"\n", "o.toml", {"run.name.deeper=1"}, choices());
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'run.name' is a string, not a table"), std::string::npos) << e.what();
  }
}

TEST(ConfigLoader, DidYouMean) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(closest_match("momentun", {"lr", "momentum", "nesterov"}), "momentum");
  EXPECT_EQ(closest_match("xyz", {"lr", "momentum"}), "");
  try {
    load_config_string("[run]\nepoch = 2\n", "d.toml", {}, choices());
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("d.toml:2:1: error: unknown key 'epoch' in [run]; did you mean 'epochs'?"),
              std::string::npos)
        << e.what();
  }
}

TEST(ConfigLoader, ShippedConfigsAreValid) {
  const fs::path dir = fs::path(CDDP_TEST_SOURCE_DIR) / "configs";
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".toml") continue;
    SCOPED_TRACE(e.path().string());
    EXPECT_NO_THROW(load_config_file(e.path().string(), {}, choices()));
    ++n;
  }
  EXPECT_GE(n, 6);
}

}  // namespace
