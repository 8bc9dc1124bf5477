// trainer_accuracy_test.cpp — the shipped main-job config (configs/fashion_mnist_topk.toml:
// simple_cnn, top-k 1%, error feedback, DGC momentum) trained in one process on a
// class-balanced 8000-image subset of Fashion-MNIST for 2 epochs reaches >= 80% test accuracy
// on 2000 test images, and leaves metrics.jsonl (with every documented field), summary.csv,
// a TensorBoard event file, the effective config and a final checkpoint behind.
// Skipped when the dataset-fashion-mnist package is not installed.
#include "train_test_util.h"

#include <gtest/gtest.h>

#include <regex>

namespace {

using namespace cddp_test;

TEST(Accuracy, SimpleCnnOnAFashionMnistSubsetReaches80Percent) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)";
  const fs::path dir = scratch_dir("accuracy");
  const auto r = run_command(shell_quote(train_exe()) + " train --config " +
                             shell_quote(std::string(CDDP_TEST_SOURCE_DIR) + "/configs/fashion_mnist_topk.toml") +
                             " --nproc-per-node 1 --set run.threads=1 --set run.epochs=2 --set data.batch_size=32" +
                             " --set data.train_subset=8000 --set data.test_subset=2000 --set run.log_every=50" +
                             " --set metrics.progress=log --set run.output_dir=" + shell_quote(dir.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("test accuracy ([0-9.]+)%  test loss"))) << r.output;
  const double accuracy = std::stod(m[1]);
  EXPECT_GE(accuracy, 80.0) << r.output;
  std::printf("test accuracy %.2f%%\n", accuracy);
  EXPECT_NE(r.output.find("x fewer"), std::string::npos);

  ASSERT_TRUE(fs::exists(dir / "config.toml"));
  const std::string jsonl = read_file(dir / "metrics.jsonl");
  std::istringstream lines(jsonl);
  int step_lines = 0, eval_lines = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("\"test_acc\"") != std::string::npos) {
      ++eval_lines;
      continue;
    }
    ++step_lines;
    for (const char* key : {"step", "epoch", "loss", "train_acc", "lr", "density", "bytes_sent", "bytes_received",
                            "bytes_dense_equivalent", "compress_ms", "comm_ms", "step_ms", "residual_norm"})
      EXPECT_NE(line.find(std::string("\"") + key + "\":"), std::string::npos) << key << " missing in " << line;
  }
  EXPECT_EQ(step_lines, 10);  // 500 steps, one line every 50
  EXPECT_EQ(eval_lines, 2);   // one per epoch
  const std::string csv = read_file(dir / "summary.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;  // header + 2 epochs
  EXPECT_NE(csv.find("test_acc"), std::string::npos);
  bool tb = false;
  for (const auto& e : fs::directory_iterator(dir / "tb"))
    tb = tb || e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(tb);
  EXPECT_TRUE(fs::exists(dir / "checkpoints" / "ckpt-step000000500-rank0.pt"));
  fs::remove_all(dir);
}

}  // namespace
