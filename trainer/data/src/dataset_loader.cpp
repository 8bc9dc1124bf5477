// dataset_loader.cpp — Fashion-MNIST / MNIST (IDX), CIFAR-10 (binary batches) and synthetic
// datasets, normalized, with seeded class-balanced subsets. Reads local files only; no
// downloads, no augmentation, no global RNG.
#include <cddp/data/dataset_loader.h>

#include <cddp/data/idx_reader.h>

#include "seeded_rng.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace cddp {
namespace fs = std::filesystem;
namespace {

constexpr uint64_t kTrainStream = 0x747261696eull;  // "train"
constexpr uint64_t kTestStream = 0x74657374ull;     // "test"

struct Normalization {
  std::vector<double> mean, std;
};

// Statistics of each training set (pixel values scaled to [0, 1]).
const Normalization kFashionMnistNorm{{0.2860}, {0.3530}};
const Normalization kMnistNorm{{0.1307}, {0.3081}};
const Normalization kCifar10Norm{{0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616}};

std::string canonical_name(const std::string& name) {
  if (name == "fashion_mnist" || name == "fashion-mnist" || name == "fashionmnist") return "fashion_mnist";
  if (name == "mnist") return "mnist";
  if (name == "cifar10" || name == "cifar-10" || name == "cifar_10") return "cifar10";
  if (name == "synthetic") return "synthetic";
  std::string valid;
  for (const auto& n : dataset_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown dataset '" + name + "'; valid names: " + valid);
}

std::string missing_hint(const std::string& canon) {
  if (canon == "fashion_mnist") return "; install it with: apt-get install dataset-fashion-mnist (or set the data path)";
  if (canon == "mnist") return "; put the MNIST IDX files (train-images-idx3-ubyte.gz, ...) there or set the data path";
  return "; put the CIFAR-10 binary batches (data_batch_1.bin ... data_batch_5.bin, test_batch.bin) there or set the data path";
}

// dir/base.gz or dir/base; empty when neither exists.
fs::path find_file(const fs::path& dir, const std::string& base) {
  std::error_code ec;
  for (const fs::path& p : {dir / (base + ".gz"), dir / base}) {
    if (fs::is_regular_file(p, ec)) return p;
  }
  return {};
}

void require_directory(const fs::path& dir, const std::string& canon, const std::string& pretty) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw std::runtime_error(pretty + " not found: directory " + dir.string() + " does not exist" + missing_hint(canon));
  }
}

// Writes (pixel/255 − mean_c)/std_c for `count` images of `channels` planes of `plane` pixels.
void normalize_into(float* dst, const uint8_t* src, int64_t count, int64_t channels, int64_t plane,
                    const Normalization& norm, int64_t src_stride, int64_t src_offset) {
  for (int64_t c = 0; c < channels; ++c) {
    const float scale = float(1.0 / (255.0 * norm.std[size_t(c)]));
    const float shift = float(norm.mean[size_t(c)] / norm.std[size_t(c)]);
    for (int64_t i = 0; i < count; ++i) {
      const uint8_t* s = src + i * src_stride + src_offset + c * plane;
      float* d = dst + (i * channels + c) * plane;
      for (int64_t p = 0; p < plane; ++p) d[p] = float(s[p]) * scale - shift;
    }
  }
}

at::Tensor long_tensor(const std::vector<int64_t>& v) {
  at::Tensor t = at::empty({int64_t(v.size())}, at::TensorOptions().dtype(at::kLong));
  if (!v.empty()) std::memcpy(t.data_ptr(), v.data(), v.size() * sizeof(int64_t));
  return t;
}

Dataset load_idx_dataset(const std::string& canon, const fs::path& dir, bool train, const Normalization& norm) {
  const std::string pretty = canon == "fashion_mnist" ? "Fashion-MNIST" : "MNIST";
  require_directory(dir, canon, pretty);
  const std::string prefix = train ? "train" : "t10k";
  const std::string image_base = prefix + "-images-idx3-ubyte", label_base = prefix + "-labels-idx1-ubyte";
  const fs::path image_path = find_file(dir, image_base), label_path = find_file(dir, label_base);
  for (const auto& [p, base] : {std::pair{image_path, image_base}, std::pair{label_path, label_base}}) {
    if (p.empty()) {
      throw std::runtime_error(pretty + " not found: neither " + (dir / (base + ".gz")).string() + " nor " +
                               (dir / base).string() + " exists" + missing_hint(canon));
    }
  }
  const IdxArray images = read_idx(image_path);
  if (images.type != IdxType::UInt8 || images.dims.size() != 3) {
    throw std::runtime_error(image_path.string() + ": expected uint8 images of shape N x H x W (idx3), got " +
                             std::to_string(images.dims.size()) + " dimensions of type code " +
                             std::to_string(int(images.type)));
  }
  const IdxArray labels = read_idx(label_path);
  if (labels.type != IdxType::UInt8 || labels.dims.size() != 1) {
    throw std::runtime_error(label_path.string() + ": expected uint8 labels of shape N (idx1), got " +
                             std::to_string(labels.dims.size()) + " dimensions of type code " +
                             std::to_string(int(labels.type)));
  }
  const int64_t n = images.dims[0], h = images.dims[1], w = images.dims[2];
  if (labels.dims[0] != n) {
    throw std::runtime_error(label_path.string() + ": holds " + std::to_string(labels.dims[0]) + " labels but " +
                             image_path.string() + " holds " + std::to_string(n) + " images");
  }
  Dataset ds;
  ds.name = canon;
  ds.num_classes = 10;
  ds.labels = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  auto* lab = static_cast<int64_t*>(ds.labels.data_ptr());
  for (int64_t i = 0; i < n; ++i) {
    if (labels.data[size_t(i)] >= ds.num_classes) {
      throw std::runtime_error(label_path.string() + ": label " + std::to_string(labels.data[size_t(i)]) + " at index " +
                               std::to_string(i) + " is out of range, expected 0..9");
    }
    lab[i] = labels.data[size_t(i)];
  }
  ds.images = at::empty({n, 1, h, w}, at::TensorOptions().dtype(at::kFloat));
  normalize_into(static_cast<float*>(ds.images.data_ptr()), images.data.data(), n, 1, h * w, norm, h * w, 0);
  return ds;
}

Dataset load_cifar10(const fs::path& root, bool train) {
  require_directory(root, "cifar10", "CIFAR-10");
  fs::path dir = root;
  std::error_code ec;
  if (find_file(dir, "test_batch.bin").empty() && fs::is_directory(root / "cifar-10-batches-bin", ec)) {
    dir = root / "cifar-10-batches-bin";
  }
  std::vector<std::string> names;
  if (train) {
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    names.push_back("test_batch.bin");
  }
  constexpr int64_t kRecord = 3073, kPlane = 1024;
  std::vector<std::vector<uint8_t>> files;
  std::vector<fs::path> paths;
  int64_t n = 0;
  for (const auto& name : names) {
    const fs::path p = find_file(dir, name);
    if (p.empty()) {
      throw std::runtime_error("CIFAR-10 not found: " + (dir / name).string() + " does not exist" +
                               missing_hint("cifar10"));
    }
    files.push_back(read_maybe_gzipped_file(p));
    paths.push_back(p);
    const auto size = int64_t(files.back().size());
    if (size == 0 || size % kRecord != 0) {
      throw std::runtime_error(p.string() + ": size " + std::to_string(size) +
                               " bytes is not a positive multiple of the 3073-byte CIFAR-10 record "
                               "(1 label byte + 3x32x32 pixel bytes)");
    }
    n += size / kRecord;
  }
  Dataset ds;
  ds.name = "cifar10";
  ds.num_classes = 10;
  ds.images = at::empty({n, 3, 32, 32}, at::TensorOptions().dtype(at::kFloat));
  ds.labels = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  auto* img = static_cast<float*>(ds.images.data_ptr());
  auto* lab = static_cast<int64_t*>(ds.labels.data_ptr());
  int64_t row = 0;
  for (size_t f = 0; f < files.size(); ++f) {
    const int64_t count = int64_t(files[f].size()) / kRecord;
    for (int64_t i = 0; i < count; ++i) {
      const uint8_t label = files[f][size_t(i * kRecord)];
      if (label > 9) {
        throw std::runtime_error(paths[f].string() + ": record " + std::to_string(i) + " has label " +
                                 std::to_string(label) + ", expected 0..9");
      }
      lab[row + i] = label;
    }
    normalize_into(img + row * 3 * kPlane, files[f].data(), count, 3, kPlane, kCifar10Norm, kRecord, 1);
    row += count;
  }
  return ds;
}

Dataset make_synthetic(const DataSpec& spec, bool train) {
  const int64_t c = spec.synthetic_channels, h = spec.synthetic_height, w = spec.synthetic_width;
  const int64_t k = spec.synthetic_classes, n = train ? spec.synthetic_train : spec.synthetic_test;
  auto check = [](int64_t v, const char* field) {
    if (v < 1) throw std::invalid_argument(std::string("synthetic dataset: ") + field + " must be >= 1, got " + std::to_string(v));
  };
  check(c, "synthetic_channels");
  check(h, "synthetic_height");
  check(w, "synthetic_width");
  check(k, "synthetic_classes");
  check(n, train ? "synthetic_train" : "synthetic_test");
  if (!(spec.synthetic_signal >= 0) || !std::isfinite(spec.synthetic_signal)) {
    throw std::invalid_argument("synthetic dataset: synthetic_signal must be a finite value >= 0, got " +
                                std::to_string(spec.synthetic_signal));
  }
  const int64_t d = c * h * w;
  data_detail::SeededRng proto_rng(data_detail::derive_seed(spec.seed, 1));
  std::vector<double> protos(static_cast<size_t>(k * d));
  for (double& v : protos) v = proto_rng.normal();

  data_detail::SeededRng rng(data_detail::derive_seed(spec.seed, train ? 2 : 3));
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[size_t(i)] = i % k;
  rng.shuffle(labels);

  Dataset ds;
  ds.name = "synthetic";
  ds.num_classes = k;
  ds.labels = long_tensor(labels);
  ds.images = at::empty({n, c, h, w}, at::TensorOptions().dtype(at::kFloat));
  auto* img = static_cast<float*>(ds.images.data_ptr());
  const double s = spec.synthetic_signal, scale = 1.0 / std::sqrt(s * s + 1.0);
  for (int64_t i = 0; i < n; ++i) {
    const double* proto = protos.data() + labels[size_t(i)] * d;
    float* x = img + i * d;
    for (int64_t p = 0; p < d; ++p) x[p] = float((s * proto[p] + rng.normal()) * scale);
  }
  return ds;
}

}  // namespace

std::vector<std::string> dataset_names() { return {"fashion_mnist", "mnist", "cifar10", "synthetic"}; }

std::string default_dataset_path(const std::string& name) {
  const std::string canon = canonical_name(name);
  if (canon == "fashion_mnist") return "/usr/share/datasets/fashion-mnist";
  if (canon == "mnist") return "/usr/share/datasets/mnist";
  if (canon == "cifar10") return "/usr/share/datasets/cifar-10";
  return "";
}

std::vector<int64_t> balanced_subset(const std::vector<int64_t>& labels, int64_t n, uint64_t seed, uint64_t stream) {
  const auto total = int64_t(labels.size());
  std::vector<int64_t> chosen;
  if (n <= 0 || n >= total) {
    chosen.resize(size_t(total));
    for (int64_t i = 0; i < total; ++i) chosen[size_t(i)] = i;
    return chosen;
  }
  int64_t max_label = 0;
  for (int64_t l : labels) {
    if (l < 0) throw std::invalid_argument("balanced_subset: negative label " + std::to_string(l));
    max_label = std::max(max_label, l);
  }
  std::vector<std::vector<int64_t>> by_class(size_t(max_label + 1));
  for (int64_t i = 0; i < total; ++i) by_class[size_t(labels[size_t(i)])].push_back(i);
  data_detail::SeededRng rng(data_detail::derive_seed(seed, stream));
  for (auto& members : by_class) rng.shuffle(members);
  chosen.reserve(size_t(n));
  for (size_t round = 0; int64_t(chosen.size()) < n; ++round) {
    for (const auto& members : by_class) {
      if (round < members.size() && int64_t(chosen.size()) < n) chosen.push_back(members[round]);
    }
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

Dataset load_dataset(const DataSpec& spec, bool train) {
  const std::string canon = canonical_name(spec.name);
  const int64_t subset = train ? spec.train_subset : spec.test_subset;
  if (subset < 0) {
    throw std::invalid_argument(std::string(train ? "train_subset" : "test_subset") + " must be >= 0 (0 = all), got " +
                                std::to_string(subset));
  }
  const fs::path dir = spec.path.empty() ? fs::path(default_dataset_path(canon)) : fs::path(spec.path);
  Dataset ds;
  if (canon == "fashion_mnist") {
    ds = load_idx_dataset(canon, dir, train, kFashionMnistNorm);
  } else if (canon == "mnist") {
    ds = load_idx_dataset(canon, dir, train, kMnistNorm);
  } else if (canon == "cifar10") {
    ds = load_cifar10(dir, train);
  } else {
    ds = make_synthetic(spec, train);
  }
  if (subset > 0 && subset < ds.size()) {
    const auto* lab = static_cast<const int64_t*>(ds.labels.data_ptr());
    const std::vector<int64_t> labels(lab, lab + ds.size());
    const at::Tensor idx = long_tensor(balanced_subset(labels, subset, spec.seed, train ? kTrainStream : kTestStream));
    ds.images = ds.images.index_select(0, idx).contiguous();
    ds.labels = ds.labels.index_select(0, idx).contiguous();
  }
  return ds;
}

}  // namespace cddp
