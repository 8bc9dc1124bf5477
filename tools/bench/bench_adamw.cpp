// bench_adamw.cpp — Google Benchmark rows for issue #18, side by side in one run, one thread:
//   BM_VitForwardBackward/{fp32,bf16}: vit_tiny (407,690 params) forward + cross-entropy +
//     backward on a batch of 64 Fashion-MNIST-shaped images, without and with run.precision's
//     AutocastScope — what bf16 autocast does to the compute of a step;
//   BM_OptimizerStep/<variant>: one optimizer step over vit_tiny's parameters with fixed
//     gradients, W = 1: torch::optim::AdamW, CompressedAdamW without a compressor, onebit
//     past its warm-up with top-k 1 % and with the scaled sign, naive with top-k 1 %.
// It does not measure communication (W = 1) or accuracy (docs/results.md).
#include <cddp/compressed_adamw.h>
#include <cddp/models/vit_tiny.h>
#include <cddp/plugin_loader.h>

#include "precision/autocast_scope.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/optim/adamw.h>

#include <memory>
#include <string>
#include <vector>

namespace {

void BM_VitForwardBackward(benchmark::State& state) {
  at::set_num_threads(1);
  at::manual_seed(0);
  const std::string precision = state.range(0) ? "bf16" : "fp32";
  cddp::ViTTiny vit(1, 28, 28, 10);
  const at::Tensor x = at::randn({64, 1, 28, 28}), y = at::randint(0, 10, {64}, at::kLong);
  for (auto _ : state) {
    for (auto& p : vit.parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor loss;
    {
      cddp::train::AutocastScope scope(precision);
      loss = at::cross_entropy_loss(vit.forward(x), y);
    }
    loss.backward();
    benchmark::DoNotOptimize(loss.item<float>());
  }
  state.SetLabel(precision);
}
BENCHMARK(BM_VitForwardBackward)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->MinTime(2.0);

enum Variant { kTorchAdamW, kDense, kOneBitTopk, kOneBitSign, kNaiveTopk };
const char* kNames[] = {"torch_adamw", "compressed_adamw_dense", "onebit_topk1", "onebit_sign_scaled",
                        "naive_topk1"};

void BM_OptimizerStep(benchmark::State& state) {
  at::set_num_threads(1);
  at::manual_seed(0);
  const auto variant = Variant(state.range(0));
  cddp::ViTTiny vit(1, 28, 28, 10);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& item : vit.named_parameters()) {
    item.value().mutable_grad() = at::randn_like(item.value()) * 1e-2;
    named.emplace_back(item.key(), item.value());
  }
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_BENCH_PLUGIN_DIR}, nullptr));
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (variant == kTorchAdamW) {
    opt = std::make_unique<torch::optim::AdamW>(vit.parameters(), torch::optim::AdamWOptions(1e-3));
  } else {
    cddp::CompressedAdamWOptions o(1e-3);
    o.weight_decay(0.01).warmup_steps(1).min_numel(16384);
    if (variant == kNaiveTopk) o.mode("naive");
    if (variant == kOneBitTopk || variant == kNaiveTopk) o.compressor(loader.create("topk", {{"ratio", 0.01}}));
    if (variant == kOneBitSign) o.compressor(loader.create("sign"));
    opt = std::make_unique<cddp::CompressedAdamW>(named, o);
  }
  opt->step();  // the onebit warm-up step (and lazy state) outside the timed loop
  for (auto _ : state) opt->step();
  state.SetLabel(kNames[variant]);
}
BENCHMARK(BM_OptimizerStep)->DenseRange(0, 4)->Unit(benchmark::kMillisecond)->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
