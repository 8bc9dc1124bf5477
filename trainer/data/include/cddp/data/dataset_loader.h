// dataset_loader.h — builds a Dataset by name: Fashion-MNIST, MNIST, CIFAR-10 or synthetic.
//
// Files and defaults (DataSpec::path empty = the default directory):
//   fashion_mnist  /usr/share/datasets/fashion-mnist  (Debian package dataset-fashion-mnist)
//                  {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
//   mnist          /usr/share/datasets/mnist          same file names as Fashion-MNIST
//   cifar10        /usr/share/datasets/cifar-10       data_batch_{1..5}.bin, test_batch.bin (the
//                  "binary version"; the directory or its cifar-10-batches-bin/ subdirectory).
//                  Each record is 3073 bytes: label, then 1024 R, 1024 G, 1024 B bytes (32×32).
//   synthetic      generated, nothing read (see below).
//
// Normalization: x = (pixel / 255 − mean) / std per channel, with the usual statistics of
// each training set:
//   Fashion-MNIST  mean 0.2860, std 0.3530
//   MNIST          mean 0.1307, std 0.3081
//   CIFAR-10       mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616)
//
// Synthetic: a deterministic function of `seed` (and the shape fields). Each class c has a
// prototype image P_c with i.i.d. N(0,1) pixels, the same for the train and the test split;
// a sample of class c is (signal · P_c + N(0,1) noise) / sqrt(signal² + 1), so pixels have
// unit variance. Labels are balanced (i mod classes), then shuffled. The default signal 0.15
// on 1×28×28 is learnable by a linear model to well above 90% test accuracy, not trivially
// at step 0. Train and test samples come from different streams of the same seed.
//
// Subsets (train_subset / test_subset > 0, fewer than the split holds): a class-balanced
// selection — each class's indices are shuffled with a generator seeded from `seed` (train
// and test use different streams), then classes are taken round-robin (class 0's first
// pick, class 1's first, ...; classes that run out are skipped) until N are chosen; the
// chosen indices are returned in ascending order. Same seed → same subset on every rank and
// every machine (std::mt19937_64 and explicit integer arithmetic only; no global RNG).
//
// Errors: a missing dataset throws std::runtime_error naming the path (and, for
// Fashion-MNIST, the package to install); a malformed file names the file and what was
// expected; an unknown name or negative size throws std::invalid_argument.
// It will not download anything, augment, or cache tensors on disk.
#pragma once

#include <cddp/data/dataset.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cddp {

struct DataSpec {
  std::string name;                     // "fashion_mnist" | "mnist" | "cifar10" | "synthetic"
  std::string path;                     // empty = default directory (above)
  int64_t train_subset = 0, test_subset = 0;  // 0 = all
  uint64_t seed = 0;
  int64_t synthetic_train = 4096, synthetic_test = 1024;
  // Synthetic shape and difficulty.
  int64_t synthetic_channels = 1, synthetic_height = 28, synthetic_width = 28, synthetic_classes = 10;
  double synthetic_signal = 0.15;       // prototype amplitude relative to unit noise
};

// The dataset names load_dataset accepts (canonical spellings), in a stable order.
std::vector<std::string> dataset_names();

// The default directory for `name` ("" for synthetic). Throws std::invalid_argument for an
// unknown name.
std::string default_dataset_path(const std::string& name);

// Loads the train (true) or test (false) split.
Dataset load_dataset(const DataSpec& spec, bool train);

// The class-balanced subset described above: `n` indices into `labels` (ascending).
// n <= 0 or n >= labels.size() returns every index. `stream` separates train from test.
std::vector<int64_t> balanced_subset(const std::vector<int64_t>& labels, int64_t n, uint64_t seed, uint64_t stream);

}  // namespace cddp
