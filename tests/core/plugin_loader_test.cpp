// plugin_loader_test.cpp — search order, refusals, parameter validation, library lifetime
// and the exception boundary of PluginLoader / PluginCompressor.
#include <cddp/plugin_abi.h>
#include <cddp/plugin_loader.h>

#include "test_plugins.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using cddp::testing::build_tree_loader;
using cddp::testing::error_of;

TEST(PluginLoader, CreatesInTreePluginsByName) {
  auto loader = build_tree_loader();
  auto topk = loader.create("topk", {{"ratio", 0.5}});
  EXPECT_EQ(topk->name(), "topk");
  EXPECT_EQ(topk->description().version, "1.0.0");
  EXPECT_FALSE(topk->shared_indices());
  auto randomk = loader.create("randomk");
  EXPECT_EQ(randomk->name(), "randomk");
  EXPECT_TRUE(randomk->shared_indices());
}

TEST(PluginLoader, ExplicitPathWinsAndIsUsedAsIs) {
  auto loader = build_tree_loader();
  fs::path path = fs::path(CDDP_TEST_PLUGIN_DIR) / "cddp_topk.so";
  EXPECT_EQ(loader.resolve(path.string()), path);
  EXPECT_EQ(loader.create(path.string())->name(), "topk");
}

TEST(PluginLoader, ConfiguredDirectoriesComeFirst) {
  fs::path dir = fs::temp_directory_path() / "cddp_loader_first";
  fs::create_directories(dir);
  fs::copy_file(fs::path(CDDP_TEST_PLUGIN_DIR) / "cddp_randomk.so", dir / "cddp_topk.so",
                fs::copy_options::overwrite_existing);
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({dir}, CDDP_TEST_PLUGIN_DIR));
  EXPECT_EQ(loader.resolve("topk"), dir / "cddp_topk.so");
  EXPECT_EQ(loader.create("topk")->name(), "randomk");  // the impostor in the first dir wins
  fs::remove_all(dir);
}

TEST(PluginLoader, EnvironmentPathComesAfterConfiguredDirs) {
  auto sp = cddp::PluginSearchPath::standard({"/configured"}, "/env/a:/env/b");
  ASSERT_GE(sp.dirs.size(), 4u);
  EXPECT_EQ(sp.dirs[0], "/configured");
  EXPECT_EQ(sp.dirs[1], "/env/a");
  EXPECT_EQ(sp.origins[1], "CDDP_PLUGIN_PATH");
  EXPECT_EQ(sp.dirs[2], "/env/b");
  // Last: the install dir next to the executable, then the build tree (the two coincide
  // for executables in the build tree, whose layout mirrors the install; listed once).
  EXPECT_TRUE(sp.origins.back() == "build tree" || sp.origins.back() == "install") << sp.origins.back();
  EXPECT_EQ(sp.dirs.back(), std::filesystem::path(CDDP_TEST_PLUGIN_DIR));
}

TEST(PluginLoader, UnknownNameListsEveryPlaceSearched) {
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({"/nonexistent/one"}, "/nonexistent/two"));
  std::string msg = error_of([&] { loader.create("nosuch"); });
  EXPECT_NE(msg.find("compressor plugin 'nosuch' not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/nonexistent/one/cddp_nosuch.so (configured)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/nonexistent/two/cddp_nosuch.so (CDDP_PLUGIN_PATH)"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::string(CDDP_TEST_PLUGIN_DIR) + "/cddp_nosuch.so"), std::string::npos) << msg;
}

TEST(PluginLoader, RefusesOtherAbiVersionNamingBoth) {
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_BAD_PLUGIN_DIR}, nullptr));
  std::string msg = error_of([&] { loader.create("badabi"); });
  EXPECT_NE(msg.find("plugin ABI version 999"), std::string::npos) << msg;
  EXPECT_NE(msg.find("host's ABI version " + std::to_string(CDDP_PLUGIN_ABI_VERSION)), std::string::npos) << msg;
}

TEST(PluginLoader, RefusesOtherTorchVersionNamingBoth) {
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_BAD_PLUGIN_DIR}, nullptr));
  std::string msg = error_of([&] { loader.create("oldtorch"); });
  EXPECT_NE(msg.find("LibTorch 0.4.1"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::string("host runs LibTorch ") + CDDP_TORCH_VERSION_STRING), std::string::npos) << msg;
}

TEST(PluginLoader, RefusesAnUnknownPayloadKindNamingThePlugin) {
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_BAD_PLUGIN_DIR}, nullptr));
  std::string msg = error_of([&] { loader.create("badkind"); });
  EXPECT_NE(msg.find("plugin 'badkind' declares payload kind 7; expected 1 (gather), 2 (sum) or 3 (rounds)"),
            std::string::npos)
      << msg;
}

TEST(PluginLoader, LoadsAVersion2PluginBuiltBeforeEncodeIntoAndNeverReadsPastItsStruct) {
  // Its struct ends at wire_bytes; the host's copy leaves encode_into null, so encode_into() runs
  // the plugin's encode() (the slot beyond its struct_size would fail: it is never reached).
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_BAD_PLUGIN_DIR}, nullptr));
  auto old = loader.create("v2base");
  EXPECT_EQ(old->description().abi_version, CDDP_PLUGIN_ABI_VERSION);
  EXPECT_EQ(old->caps().kind, cddp::PayloadKind::Gather);
  const at::Tensor g = at::arange(6, at::kFloat).reshape({2, 3});
  cddp::PluginState state;
  cddp::CompressContext ctx;
  ctx.param_name = "w";
  cddp::Payload p;
  p.parts = {at::zeros({6}, at::kFloat)};  // a previous payload the plugin cannot know about
  old->encode_into(g, state, ctx, p);
  ASSERT_EQ(p.parts.size(), 1u);
  EXPECT_TRUE(p.parts[0].equal(at::arange(6, at::kFloat)));
  EXPECT_EQ(p.numel, 6);
  // A current plugin gets the trampoline: its encode_into is reached, and reuses the buffer.
  auto cast = cddp::PluginLoader(cddp::PluginSearchPath::standard({}, nullptr)).create("cast");
  cddp::Payload q = cast->encode(g, state, ctx);
  const void* buffer = q.parts[0].data_ptr();
  cast->encode_into(g.mul(2), state, ctx, q);
  EXPECT_EQ(q.parts[0].data_ptr(), buffer);
  EXPECT_TRUE(q.parts[0].to(at::kFloat).equal(at::arange(6, at::kFloat).mul(2)));
}

TEST(PluginLoader, AdaptsAVersion1Plugin) {
  // Built with the ABI-1 macro: the host finds no v2 entry point, adapts it, and reads its
  // capabilities from the compressor it made (a 50 % density set through `ratio`, fused EF).
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_BAD_PLUGIN_DIR}, nullptr));
  auto legacy = loader.create("legacy", {{"ratio", 0.5}});
  EXPECT_EQ(legacy->description().abi_version, CDDP_PLUGIN_ABI_VERSION_V1);
  EXPECT_EQ(legacy->caps().kind, cddp::PayloadKind::Gather);
  EXPECT_TRUE(legacy->caps().selection);
  EXPECT_FALSE(legacy->shared_indices());
  EXPECT_TRUE(legacy->has_fused_feedback());
  EXPECT_DOUBLE_EQ(legacy->default_density(), 0.5);
  at::Tensor g = at::arange(8, at::kFloat);
  cddp::Compressed c = legacy->compress(g, {});
  ASSERT_EQ(c.count(), 4);
  EXPECT_TRUE(legacy->decompress(c).equal(at::cat({at::arange(4, at::kFloat), at::zeros({4})})));
  // The v2-only methods are a clear error, not a crash through a null pointer.
  cddp::PluginState state;
  std::string msg = error_of([&] { legacy->encode(g, state, {}); });
  EXPECT_NE(msg.find("compressor plugin 'legacy' (ABI 1) has no encode()"), std::string::npos) << msg;
  bool listed = false;
  for (const auto& l : loader.list())
    if (l.description.name == "legacy") listed = l.usable && l.description.abi_version == 1;
  EXPECT_TRUE(listed);
}

TEST(PluginLoader, InTreePluginsDeclareTheirCapabilitiesAsData) {
  auto loader = build_tree_loader();
  auto topk = loader.create("topk", {{"ratio", 0.02}});
  EXPECT_EQ(topk->description().abi_version, CDDP_PLUGIN_ABI_VERSION);
  EXPECT_EQ(topk->caps().kind, cddp::PayloadKind::Gather);
  EXPECT_TRUE(topk->caps().selection && topk->caps().fused_feedback && !topk->caps().shared_indices);
  EXPECT_DOUBLE_EQ(topk->default_density(), 0.02);  // `ratio` overrides the declared 0.01
  auto randomk = loader.create("randomk");
  EXPECT_EQ(randomk->caps().kind, cddp::PayloadKind::Sum);
  EXPECT_TRUE(randomk->shared_indices());
  EXPECT_DOUBLE_EQ(randomk->default_density(), 0.01);
}

TEST(PluginLoader, RefusesAFileThatIsNotALibrary) {
  fs::path dir = fs::temp_directory_path() / "cddp_loader_bogus";
  fs::create_directories(dir);
  std::ofstream(dir / "cddp_bogus.so") << "not an ELF file";
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({dir}, nullptr));
  std::string msg = error_of([&] { loader.create("bogus"); });
  EXPECT_NE(msg.find("cannot load compressor plugin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cddp_bogus.so"), std::string::npos) << msg;
  fs::remove_all(dir);
}

TEST(PluginLoader, ListShowsUsableAndRefusedPlugins) {
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_BAD_PLUGIN_DIR}, nullptr));
  bool topk = false, badabi = false;
  for (const auto& l : loader.list()) {
    if (l.description.name == "topk") {
      topk = l.usable;
      ASSERT_FALSE(l.description.params.empty());
      EXPECT_EQ(l.description.params[0].name, "ratio");  // owned copy, valid after unload
      EXPECT_EQ(l.description.torch_version, CDDP_TORCH_VERSION_STRING);
    }
    if (l.path.filename() == "cddp_badabi.so") {
      badabi = !l.usable;
      EXPECT_NE(l.refusal.find("999"), std::string::npos) << l.refusal;
    }
  }
  EXPECT_TRUE(topk);
  EXPECT_TRUE(badabi);
}

TEST(PluginLoader, ParameterErrorsNameTheKey) {
  auto loader = build_tree_loader();
  std::string unknown = error_of([&] { loader.create("topk", {{"ratoi", 0.1}}); });
  EXPECT_NE(unknown.find("unknown parameter 'ratoi'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("ratio"), std::string::npos) << unknown;
  std::string type = error_of([&] { loader.create("topk", {{"ratio", std::string("high")}}); });
  EXPECT_NE(type.find("parameter 'ratio' must be a float, got string"), std::string::npos) << type;
  std::string zero = error_of([&] { loader.create("topk", {{"ratio", 0.0}}); });
  EXPECT_NE(zero.find("parameter 'ratio' = 0 is out of range"), std::string::npos) << zero;
  std::string big = error_of([&] { loader.create("randomk", {{"ratio", 1.5}}); });
  EXPECT_NE(big.find("parameter 'ratio' = 1.5 is out of range"), std::string::npos) << big;
  std::string flag = error_of([&] { loader.create("randomk", {{"scale", int64_t(1)}}); });
  EXPECT_NE(flag.find("parameter 'scale' must be a bool"), std::string::npos) << flag;
}

TEST(PluginLoader, LibraryOutlivesTheLoaderWhileACompressorLives) {
  std::shared_ptr<cddp::PluginCompressor> topk;
  {
    auto loader = build_tree_loader();
    topk = loader.create("topk", {{"ratio", 0.5}});
  }  // loader gone: the library must stay mapped for `topk`
  at::Tensor x = at::tensor({1.0f, -4.0f, 2.0f, 3.0f});
  cddp::Compressed c = topk->compress(x, {});
  EXPECT_EQ(cddp::testing::to_vec(c.indices), (std::vector<int64_t>{1, 3}));
}

TEST(PluginLoader, PluginErrorsArriveAsHostExceptions) {
  auto loader = build_tree_loader();
  auto topk = loader.create("topk");
  cddp::CompressContext ctx;
  ctx.param_name = "fc1.weight";
  ctx.step = 7;
  std::string msg = error_of([&] { topk->compress(at::tensor({1.0f, NAN}), ctx); });
  EXPECT_NE(msg.find("NaN in the gradient of parameter 'fc1.weight' at step 7"), std::string::npos) << msg;
}

TEST(PluginLoaderOutOfTree, LoadsAThirdPartyPluginBuiltAgainstTheInstall) {
  // examples/out_of_tree_plugin: an 8-bit min-max quantizer (a gather payload) built only
  // against the installed package.
  const char* path = std::getenv("CDDP_OOT_PLUGIN");
  if (!path) GTEST_SKIP() << "run by the out_of_tree_plugin ctest, which builds the plugin first";
  auto loader = build_tree_loader();
  auto q = loader.create(path, {{"bucket_size", int64_t{4}}});
  EXPECT_EQ(q->name(), "minmax8");
  EXPECT_EQ(q->caps().kind, cddp::PayloadKind::Gather);
  EXPECT_FALSE(q->caps().selection);
  const at::Tensor x = at::tensor({1.0f, -3.0f, 2.0f, 4.0f, 0.5f, 0.25f});
  cddp::PluginState none;
  cddp::Payload p = q->encode(x, none, {});
  EXPECT_EQ(p.wire_bytes(), 6 + 8 * 2);
  EXPECT_EQ(q->wire_bytes({6}, at::kFloat, -1), p.wire_bytes());
  at::Tensor d = at::zeros({6});
  q->decode_add_(p, d);
  EXPECT_LE((d - x).abs().max().item<float>(), 7.0f / 510 + 1e-6f);  // (hi − lo)/510 in the first bucket
  EXPECT_EQ(d[1].item<float>(), -3.0f);                             // the bucket's min and max are exact
  EXPECT_EQ(d[3].item<float>(), 4.0f);
  at::Tensor avg = at::empty({6});
  q->combine({p, p}, avg);
  EXPECT_TRUE(at::allclose(avg, d));
}
