// train_compressed_sgd — the smallest complete use of the library: load the top-k plugin,
// give it to CompressedSGD, and fit a noisy linear regression, printing the loss.
//   build/release/bin/train_compressed_sgd [plugin=topk] [ratio=0.01] [steps=300] [lr=0.005]
#include <cddp/compressed_sgd.h>
#include <cddp/plugin_loader.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  const std::string plugin = argc > 1 ? argv[1] : "topk";
  const double ratio = argc > 2 ? std::atof(argv[2]) : 0.01;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 300;
  const double lr = argc > 4 ? std::atof(argv[4]) : 0.005;
  try {
    cddp::PluginLoader loader(cddp::PluginSearchPath::standard({}, std::getenv("CDDP_PLUGIN_PATH")));
    auto compressor = loader.create(plugin, {{"ratio", ratio}});

    at::manual_seed(0);
    const int64_t features = 1000, samples = 512;
    at::Tensor x = at::randn({samples, features});
    at::Tensor w_true = at::randn({features, 1});
    at::Tensor y = at::matmul(x, w_true) + 0.01 * at::randn({samples, 1});
    at::Tensor w = at::zeros({features, 1}).set_requires_grad(true);

    cddp::CompressedSGD opt({{"w", w}}, cddp::CompressedSGDOptions(lr).compressor(compressor));
    for (int step = 1; step <= steps; ++step) {
      opt.zero_grad();
      at::Tensor loss = at::mse_loss(at::matmul(x, w), y);
      loss.backward();
      opt.step();
      if (step == 1 || step % 50 == 0 || step == steps)
        std::printf("step %4d  loss %.6f  density %.4f  bytes sent %lld (dense %lld)\n", step, loss.item<double>(),
                    opt.last_step_stats().density(), (long long)opt.last_step_stats().bytes_sent,
                    (long long)opt.last_step_stats().bytes_dense_equivalent);
    }
    const auto& total = opt.cumulative_stats();
    std::printf("total: %lld bytes sent vs %lld dense (%.1fx fewer)\n", (long long)total.bytes_sent,
                (long long)total.bytes_dense_equivalent, double(total.bytes_dense_equivalent) / double(total.bytes_sent));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_compressed_sgd: %s\n", e.what());
    return 1;
  }
  return 0;
}
