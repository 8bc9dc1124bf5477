// compressed_sgd_cuda_test.cpp — 50 steps of CompressedSGD with the topk and randomk plugins on
// the GPU (fused CUDA radix select, Philox random-k; world size 1) against the same training on
// the CPU, and the plugins' NODELETE marking that keeps their CUDA kernels registered.
// The training test skips, with the reason, where there is no GPU; it will not test NCCL or
// more than one rank.
#include <cddp/compressed_sgd.h>
#include <cddp/plugin_loader.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <dlfcn.h>

#include <string>

namespace {

// A plugin that carries CUDA kernels must survive dlclose (plugins/topk/cuda/CMakeLists.txt:
// -z nodelete): the loader closes it when its last compressor is destroyed, and unloading a
// library whose fatbinary is registered under a live CUDA context is what this test tripped
// over on the H200. Needs no GPU: only the CUDA build of the plugins.
TEST(CudaPlugins, StayMappedAfterTheLoaderClosesThem) {
  for (std::string plugin : {"topk", "randomk"}) {
    const std::string path = std::string(CDDP_TEST_PLUGIN_DIR) + "/" + cddp::plugin_file_name(plugin);
    {
      cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_PLUGIN_DIR}, nullptr));
      auto c = loader.create(plugin, {{"ratio", 0.01}});
      ASSERT_NE(c, nullptr);
    }  // compressor and loader gone: the loader's handle is closed here
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    EXPECT_NE(h, nullptr) << plugin << ": " << path
                          << " was unmapped by dlclose; it must be linked with -z nodelete";
    if (h != nullptr) dlclose(h);
  }
}

at::Tensor train(cddp::PluginLoader& loader, c10::Device device, const std::string& plugin) {
  at::manual_seed(0);
  at::Tensor x = at::randn({256, 2000}), w_true = at::randn({2000, 1});
  at::Tensor y = at::matmul(x, w_true);
  x = x.to(device);
  y = y.to(device);
  at::Tensor w = at::zeros({2000, 1}, at::TensorOptions().device(device)).set_requires_grad(true);
  cddp::CompressedSGD opt({{"w", w}}, cddp::CompressedSGDOptions(0.005).momentum(0.9).seed(7).compressor(
                                           loader.create(plugin, {{"ratio", 0.01}})));
  for (int step = 0; step < 50; ++step) {
    opt.zero_grad();
    at::mse_loss(at::matmul(x, w), y).backward();
    opt.step();
  }
  EXPECT_EQ(opt.routing().at(0).route, plugin == "randomk" ? cddp::Route::SharedIndices : cddp::Route::Sparse);
  return w.detach().cpu();
}

TEST(CompressedSgdCuda, FiftyStepsOnTheGpuMatchTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible to LibTorch";
  // One loader for the whole run, as the trainer uses it. It keeps weak references only: each
  // train() call's compressor is the last user of its library, so the library is closed when
  // train() returns, and reopened by the next call. The NODELETE marking tested above is what
  // keeps the CUDA kernels registered across those reopenings.
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_PLUGIN_DIR}, nullptr));
  for (std::string plugin : {"topk", "randomk"}) {
    at::Tensor cpu = train(loader, c10::Device(c10::kCPU), plugin);
    at::Tensor gpu = train(loader, c10::Device(c10::kCUDA, 0), plugin);
    ASSERT_GT(cpu.abs().sum().item<double>(), 0.0);
    // Same selections; only the matmul's summation order differs between devices.
    EXPECT_TRUE(at::allclose(cpu, gpu, /*rtol=*/1e-3, /*atol=*/1e-5))
        << plugin << ": max abs diff " << (cpu - gpu).abs().max().item<double>();
  }
}

}  // namespace
