// dataset_loader_test.cpp — load_dataset: real Fashion-MNIST (when installed), MNIST and
// CIFAR-10 from small files written here, normalization, class-balanced seeded subsets,
// synthetic determinism and learnability, and the error messages. It never downloads;
// the Fashion-MNIST cases are skipped when the Debian package is absent.
#include <cddp/data/dataset_loader.h>
#include <cddp/data/idx_reader.h>

#include "data_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>

namespace {

const char* kFashionDir = "/usr/share/datasets/fashion-mnist";

bool fashion_installed() {
  return std::filesystem::exists(std::filesystem::path(kFashionDir) / "train-images-idx3-ubyte.gz");
}

std::vector<int64_t> labels_of(const cddp::Dataset& ds) {
  const auto* p = static_cast<const int64_t*>(ds.labels.data_ptr());
  return {p, p + ds.size()};
}

template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

void write_mnist_like(const std::filesystem::path& dir, const std::string& prefix, int64_t n, uint8_t label_offset = 0) {
  cddp::IdxArray images;
  images.type = cddp::IdxType::UInt8;
  images.dims = {n, 28, 28};
  images.data.assign(size_t(n * 784), 0);
  for (int64_t i = 0; i < n; ++i) images.data[size_t(i * 784)] = 255;  // first pixel white
  cddp::IdxArray labels;
  labels.type = cddp::IdxType::UInt8;
  labels.dims = {n};
  for (int64_t i = 0; i < n; ++i) labels.data.push_back(uint8_t((i + label_offset) % 10));
  cddp::write_idx(dir / (prefix + "-images-idx3-ubyte.gz"), images, true);
  cddp::write_idx(dir / (prefix + "-labels-idx1-ubyte"), labels, false);  // raw works too
}

}  // namespace

TEST(DatasetLoader, FashionMnistFull) {
  if (!fashion_installed()) GTEST_SKIP() << "Fashion-MNIST not installed";
  cddp::DataSpec spec;
  spec.name = "fashion_mnist";
  const cddp::Dataset train = cddp::load_dataset(spec, true);
  EXPECT_EQ(train.name, "fashion_mnist");
  EXPECT_EQ(train.size(), 60000);
  EXPECT_EQ(train.images.sizes().vec(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(train.images.scalar_type(), at::kFloat);
  EXPECT_EQ(train.labels.scalar_type(), at::kLong);
  EXPECT_EQ(train.num_classes, 10);
  // Normalized with the training set's own statistics: mean ≈ 0, std ≈ 1.
  EXPECT_NEAR(train.images.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(train.images.std().item<double>(), 1.0, 0.01);
  std::map<int64_t, int64_t> counts;
  for (int64_t l : labels_of(train)) counts[l]++;
  ASSERT_EQ(counts.size(), 10u);
  for (const auto& [label, count] : counts) EXPECT_EQ(count, 6000) << label;

  const cddp::Dataset test = cddp::load_dataset(spec, false);
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(test.images.sizes().vec(), (std::vector<int64_t>{10000, 1, 28, 28}));
}

TEST(DatasetLoader, BalancedSeededSubset) {
  if (!fashion_installed()) GTEST_SKIP() << "Fashion-MNIST not installed";
  cddp::DataSpec spec;
  spec.name = "fashion-mnist";  // alias
  spec.train_subset = 1000;
  spec.test_subset = 205;
  spec.seed = 3;
  const cddp::Dataset a = cddp::load_dataset(spec, true);
  ASSERT_EQ(a.size(), 1000);
  std::map<int64_t, int64_t> counts;
  for (int64_t l : labels_of(a)) counts[l]++;
  for (const auto& [label, count] : counts) EXPECT_EQ(count, 100) << label;
  const cddp::Dataset b = cddp::load_dataset(spec, true);
  EXPECT_TRUE(a.images.equal(b.images));
  EXPECT_TRUE(a.labels.equal(b.labels));
  spec.seed = 4;
  const cddp::Dataset c = cddp::load_dataset(spec, true);
  EXPECT_FALSE(a.images.equal(c.images));
  const cddp::Dataset t = cddp::load_dataset(spec, false);
  EXPECT_EQ(t.size(), 205);  // 21 of five classes, 20 of the others
  counts.clear();
  for (int64_t l : labels_of(t)) counts[l]++;
  for (const auto& [label, count] : counts) EXPECT_TRUE(count == 20 || count == 21) << label;
}

TEST(DatasetLoader, BalancedSubsetFunction) {
  std::vector<int64_t> labels;
  for (int i = 0; i < 50; ++i) labels.push_back(i < 40 ? 0 : 1 + i % 2);  // 40 zeros, 5 ones, 5 twos
  const auto s = cddp::balanced_subset(labels, 20, 7, 1);
  ASSERT_EQ(s.size(), 20u);
  EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
  std::map<int64_t, int> counts;
  for (int64_t i : s) counts[labels[size_t(i)]]++;
  EXPECT_EQ(counts[1], 5);  // small classes exhausted, the rest from the big one
  EXPECT_EQ(counts[2], 5);
  EXPECT_EQ(counts[0], 10);
  EXPECT_EQ(cddp::balanced_subset(labels, 20, 7, 1), s);
  EXPECT_NE(cddp::balanced_subset(labels, 20, 7, 2), s);
  EXPECT_EQ(cddp::balanced_subset(labels, 0, 7, 1).size(), 50u);
  EXPECT_EQ(cddp::balanced_subset(labels, 500, 7, 1).size(), 50u);
}

TEST(DatasetLoader, MissingFashionMnistNamesPathAndPackage) {
  cddp::DataSpec spec;
  spec.name = "fashion_mnist";
  spec.path = "/nonexistent/fmnist";
  const std::string what = error_of([&] { cddp::load_dataset(spec, true); });
  EXPECT_NE(what.find("/nonexistent/fmnist"), std::string::npos) << what;
  EXPECT_NE(what.find("apt-get install dataset-fashion-mnist"), std::string::npos) << what;

  cddp_test::ScratchDir dir("fm");  // directory exists, files do not
  spec.path = dir.path().string();
  const std::string what2 = error_of([&] { cddp::load_dataset(spec, false); });
  EXPECT_NE(what2.find((dir / "t10k-images-idx3-ubyte.gz").string()), std::string::npos) << what2;
  EXPECT_NE(what2.find("dataset-fashion-mnist"), std::string::npos) << what2;
}

TEST(DatasetLoader, UnknownNameAndBadSizes) {
  cddp::DataSpec spec;
  spec.name = "imagenet";
  const std::string what = error_of([&] { cddp::load_dataset(spec, true); });
  EXPECT_NE(what.find("imagenet"), std::string::npos);
  for (const auto& n : cddp::dataset_names()) EXPECT_NE(what.find(n), std::string::npos) << what;
  EXPECT_THROW(cddp::load_dataset(spec, true), std::invalid_argument);
  spec.name = "synthetic";
  spec.train_subset = -1;
  EXPECT_THROW(cddp::load_dataset(spec, true), std::invalid_argument);
  spec.train_subset = 0;
  spec.synthetic_train = 0;
  EXPECT_THROW(cddp::load_dataset(spec, true), std::invalid_argument);
}

TEST(DatasetLoader, MnistFromIdxFiles) {
  cddp_test::ScratchDir dir("mnist");
  write_mnist_like(dir.path(), "train", 30);
  write_mnist_like(dir.path(), "t10k", 12);
  cddp::DataSpec spec;
  spec.name = "mnist";
  spec.path = dir.path().string();
  const cddp::Dataset train = cddp::load_dataset(spec, true);
  ASSERT_EQ(train.size(), 30);
  EXPECT_EQ(train.name, "mnist");
  const float* px = static_cast<const float*>(train.images.data_ptr());
  EXPECT_NEAR(px[0], (1.0 - 0.1307) / 0.3081, 1e-5);  // MNIST mean/std
  EXPECT_NEAR(px[1], -0.1307 / 0.3081, 1e-5);
  EXPECT_EQ(labels_of(train)[13], 3);
  EXPECT_EQ(cddp::load_dataset(spec, false).size(), 12);

  // The same files as Fashion-MNIST use Fashion-MNIST's statistics.
  spec.name = "fashion_mnist";
  const cddp::Dataset fashion = cddp::load_dataset(spec, true);
  const float* fx = static_cast<const float*>(fashion.images.data_ptr());
  EXPECT_NEAR(fx[1], -0.2860 / 0.3530, 1e-5);
}

TEST(DatasetLoader, IdxConsistencyErrorsNameTheFiles) {
  cddp_test::ScratchDir dir("mnist");
  write_mnist_like(dir.path(), "train", 30);
  cddp::IdxArray labels;
  labels.type = cddp::IdxType::UInt8;
  labels.dims = {29};
  labels.data.assign(29, 1);
  cddp::write_idx(dir / "train-labels-idx1-ubyte", labels, false);
  cddp::DataSpec spec;
  spec.name = "mnist";
  spec.path = dir.path().string();
  std::string what = error_of([&] { cddp::load_dataset(spec, true); });
  EXPECT_NE(what.find("29 labels"), std::string::npos) << what;
  EXPECT_NE(what.find("30 images"), std::string::npos) << what;

  labels.dims = {30};
  labels.data.assign(30, 1);
  labels.data[17] = 10;
  cddp::write_idx(dir / "train-labels-idx1-ubyte", labels, false);
  what = error_of([&] { cddp::load_dataset(spec, true); });
  EXPECT_NE(what.find((dir / "train-labels-idx1-ubyte").string()), std::string::npos) << what;
  EXPECT_NE(what.find("index 17"), std::string::npos) << what;
}

TEST(DatasetLoader, Cifar10BinaryBatches) {
  cddp_test::ScratchDir dir("cifar");
  const auto sub = dir / "cifar-10-batches-bin";  // the archive's own subdirectory is found
  std::filesystem::create_directories(sub);
  auto batch = [&](const std::string& name, int records, int first_label) {
    std::vector<unsigned char> bytes;
    for (int r = 0; r < records; ++r) {
      bytes.push_back(uint8_t((first_label + r) % 10));
      for (int c = 0; c < 3; ++c) {
        for (int p = 0; p < 1024; ++p) bytes.push_back(c == 0 && p == 0 ? 255 : uint8_t(c * 100));
      }
    }
    cddp_test::write_bytes(sub / name, bytes);
  };
  for (int i = 1; i <= 5; ++i) batch("data_batch_" + std::to_string(i) + ".bin", 2, i);
  batch("test_batch.bin", 3, 7);
  cddp::DataSpec spec;
  spec.name = "cifar10";
  spec.path = dir.path().string();
  const cddp::Dataset train = cddp::load_dataset(spec, true);
  ASSERT_EQ(train.size(), 10);
  EXPECT_EQ(train.images.sizes().vec(), (std::vector<int64_t>{10, 3, 32, 32}));
  EXPECT_EQ(labels_of(train), (std::vector<int64_t>{1, 2, 2, 3, 3, 4, 4, 5, 5, 6}));
  const float* px = static_cast<const float*>(train.images.data_ptr());
  EXPECT_NEAR(px[0], (1.0 - 0.4914) / 0.2470, 1e-5);                 // R, first pixel 255
  EXPECT_NEAR(px[1], (0.0 - 0.4914) / 0.2470, 1e-5);                 // R, 0
  EXPECT_NEAR(px[1024], (100 / 255.0 - 0.4822) / 0.2435, 1e-5);      // G
  EXPECT_NEAR(px[2048 + 5], (200 / 255.0 - 0.4465) / 0.2616, 1e-5);  // B
  const cddp::Dataset test = cddp::load_dataset(spec, false);
  EXPECT_EQ(labels_of(test), (std::vector<int64_t>{7, 8, 9}));

  auto bytes = cddp_test::read_bytes(sub / "test_batch.bin");
  bytes.pop_back();
  cddp_test::write_bytes(sub / "test_batch.bin", bytes);
  const std::string what = error_of([&] { cddp::load_dataset(spec, false); });
  EXPECT_NE(what.find((sub / "test_batch.bin").string()), std::string::npos) << what;
  EXPECT_NE(what.find("3073"), std::string::npos) << what;

  spec.path = (dir / "elsewhere").string();
  const std::string missing = error_of([&] { cddp::load_dataset(spec, true); });
  EXPECT_NE(missing.find("elsewhere"), std::string::npos) << missing;
}

TEST(DatasetLoader, SyntheticIsDeterministic) {
  cddp::DataSpec spec;
  spec.name = "synthetic";
  spec.seed = 11;
  spec.synthetic_train = 300;
  spec.synthetic_test = 100;
  const cddp::Dataset a = cddp::load_dataset(spec, true);
  const cddp::Dataset b = cddp::load_dataset(spec, true);
  EXPECT_EQ(a.images.sizes().vec(), (std::vector<int64_t>{300, 1, 28, 28}));
  EXPECT_TRUE(a.images.equal(b.images));
  EXPECT_TRUE(a.labels.equal(b.labels));
  std::map<int64_t, int> counts;
  for (int64_t l : labels_of(a)) counts[l]++;
  for (const auto& [label, count] : counts) EXPECT_EQ(count, 30);  // balanced
  EXPECT_NEAR(a.images.std().item<double>(), 1.0, 0.02);
  const cddp::Dataset test = cddp::load_dataset(spec, false);
  EXPECT_EQ(test.size(), 100);
  EXPECT_FALSE(test.images.narrow(0, 0, 100).equal(a.images.narrow(0, 0, 100)));
  spec.seed = 12;
  EXPECT_FALSE(cddp::load_dataset(spec, true).images.equal(a.images));

  spec.synthetic_channels = 3;
  spec.synthetic_height = spec.synthetic_width = 32;
  spec.synthetic_classes = 5;
  const cddp::Dataset c = cddp::load_dataset(spec, true);
  EXPECT_EQ(c.images.sizes().vec(), (std::vector<int64_t>{300, 3, 32, 32}));
  EXPECT_EQ(c.num_classes, 5);
  EXPECT_LT(c.labels.max().item<int64_t>(), 5);
}

TEST(DatasetLoader, SyntheticIsLearnable) {
  // Train and test share the class prototypes: a nearest-class-mean classifier fitted on the
  // train split must do far better than chance on the test split.
  cddp::DataSpec spec;
  spec.name = "synthetic";
  spec.seed = 5;
  const cddp::Dataset train = cddp::load_dataset(spec, true);
  const cddp::Dataset test = cddp::load_dataset(spec, false);
  const int64_t d = 28 * 28, k = 10;
  std::vector<double> means(size_t(k * d), 0.0);
  std::vector<int64_t> counts(size_t(k), 0);
  const float* x = static_cast<const float*>(train.images.data_ptr());
  const auto ytrain = labels_of(train);
  for (int64_t i = 0; i < train.size(); ++i) {
    counts[size_t(ytrain[size_t(i)])]++;
    for (int64_t p = 0; p < d; ++p) means[size_t(ytrain[size_t(i)] * d + p)] += x[i * d + p];
  }
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t p = 0; p < d; ++p) means[size_t(c * d + p)] /= double(counts[size_t(c)]);
  }
  const float* xt = static_cast<const float*>(test.images.data_ptr());
  const auto ytest = labels_of(test);
  int64_t correct = 0;
  for (int64_t i = 0; i < test.size(); ++i) {
    int64_t best = -1;
    double best_dist = 1e300;
    for (int64_t c = 0; c < k; ++c) {
      double dist = 0;
      for (int64_t p = 0; p < d; ++p) {
        const double diff = xt[i * d + p] - means[size_t(c * d + p)];
        dist += diff * diff;
      }
      if (dist < best_dist) best_dist = dist, best = c;
    }
    correct += best == ytest[size_t(i)];
  }
  const double acc = double(correct) / double(test.size());
  RecordProperty("nearest_mean_accuracy", std::to_string(acc));
  std::printf("nearest-class-mean test accuracy: %.4f\n", acc);
  EXPECT_GT(acc, 0.9);
  EXPECT_LT(acc, 1.0);  // not trivially separable
}
