// idx_reader_test.cpp — IDX reading: gz and raw round trips, every dtype's byte order,
// errors for missing / truncated / corrupt files naming the path, and the real
// Fashion-MNIST files when the Debian package is installed (skipped, not failed, without).
#include <cddp/data/idx_reader.h>

#include "data_test_util.h"

#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace {

cddp::IdxArray small_u8() {
  cddp::IdxArray a;
  a.type = cddp::IdxType::UInt8;
  a.dims = {3, 2, 4};
  for (int i = 0; i < 24; ++i) a.data.push_back(uint8_t(i * 10 + 1));
  return a;
}

// Runs `fn`, expects std::runtime_error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
  }
}

}  // namespace

TEST(IdxReader, GzipRoundTrip) {
  cddp_test::ScratchDir dir("idx");
  const auto path = dir / "small-idx3-ubyte.gz";
  const cddp::IdxArray a = small_u8();
  cddp::write_idx(path, a, /*gzip=*/true);
  const auto raw = cddp_test::read_bytes(path);
  ASSERT_GE(raw.size(), 2u);
  EXPECT_EQ(raw[0], 0x1f);  // really gzipped
  EXPECT_EQ(raw[1], 0x8b);

  const cddp::IdxArray b = cddp::read_idx(path);
  EXPECT_EQ(b.type, cddp::IdxType::UInt8);
  EXPECT_EQ(b.dims, a.dims);
  EXPECT_EQ(b.data, a.data);

  const at::Tensor t = cddp::idx_to_tensor(b);
  EXPECT_EQ(t.scalar_type(), at::kByte);
  EXPECT_EQ(t.sizes().vec(), (std::vector<int64_t>{3, 2, 4}));
  EXPECT_EQ(static_cast<const uint8_t*>(t.data_ptr())[23], 231);
}

TEST(IdxReader, UncompressedRoundTripAndGzipIsDetectedByContent) {
  cddp_test::ScratchDir dir("idx");
  const cddp::IdxArray a = small_u8();
  cddp::write_idx(dir / "plain", a, false);
  EXPECT_EQ(cddp::read_idx(dir / "plain").data, a.data);
  EXPECT_EQ(cddp_test::read_bytes(dir / "plain").size(), 4 + 3 * 4 + 24u);
  // A gzipped file without .gz in its name is still recognized by its magic.
  cddp::write_idx(dir / "gz-without-suffix", a, true);
  EXPECT_EQ(cddp::read_idx(dir / "gz-without-suffix").data, a.data);
}

TEST(IdxReader, MultiByteTypesAreBigEndian) {
  cddp_test::ScratchDir dir("idx");
  {
    cddp::IdxArray a;
    a.type = cddp::IdxType::Int32;
    a.dims = {2};
    a.data = {0x00, 0x00, 0x01, 0x02, 0xFF, 0xFF, 0xFF, 0xFE};  // 258, -2
    cddp::write_idx(dir / "i32.gz", a, true);
    const at::Tensor t = cddp::idx_to_tensor(cddp::read_idx(dir / "i32.gz"));
    ASSERT_EQ(t.scalar_type(), at::kInt);
    EXPECT_EQ(static_cast<const int32_t*>(t.data_ptr())[0], 258);
    EXPECT_EQ(static_cast<const int32_t*>(t.data_ptr())[1], -2);
  }
  {
    cddp::IdxArray a;
    a.type = cddp::IdxType::Float32;
    a.dims = {1, 1};
    a.data = {0x3F, 0xC0, 0x00, 0x00};  // 1.5f
    const at::Tensor t = cddp::idx_to_tensor(a);
    ASSERT_EQ(t.scalar_type(), at::kFloat);
    EXPECT_EQ(static_cast<const float*>(t.data_ptr())[0], 1.5f);
  }
  {
    cddp::IdxArray a;
    a.type = cddp::IdxType::Int16;
    a.dims = {1};
    a.data = {0x80, 0x01};
    EXPECT_EQ(static_cast<const int16_t*>(cddp::idx_to_tensor(a).data_ptr())[0], int16_t(-32767));
  }
  {
    cddp::IdxArray a;
    a.type = cddp::IdxType::Float64;
    a.dims = {1};
    a.data = {0xC0, 0x04, 0, 0, 0, 0, 0, 0};  // -2.5
    EXPECT_EQ(static_cast<const double*>(cddp::idx_to_tensor(a).data_ptr())[0], -2.5);
  }
}

TEST(IdxReader, MissingFileNamesThePath) {
  cddp_test::ScratchDir dir("idx");
  const auto path = dir / "nope-idx1-ubyte.gz";
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "does not exist"});
}

TEST(IdxReader, TruncatedGzipNamesThePath) {
  cddp_test::ScratchDir dir("idx");
  const auto path = dir / "cut.gz";
  cddp::IdxArray a = small_u8();
  a.dims = {100, 28, 28};
  a.data.assign(100 * 28 * 28, 0);
  for (size_t i = 0; i < a.data.size(); ++i) a.data[i] = uint8_t((i * 2654435761u) >> 24);  // poorly compressible
  cddp::write_idx(path, a, true);
  auto bytes = cddp_test::read_bytes(path);
  bytes.resize(bytes.size() / 2);
  cddp_test::write_bytes(path, bytes);
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "truncated"});
}

TEST(IdxReader, CorruptGzipNamesThePath) {
  cddp_test::ScratchDir dir("idx");
  const auto path = dir / "bad.gz";
  cddp::write_idx(path, small_u8(), true);
  auto bytes = cddp_test::read_bytes(path);
  bytes[bytes.size() - 6] ^= 0xFF;  // inside the gzip trailer's CRC-32
  cddp_test::write_bytes(path, bytes);
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "corrupt gzip"});
}

TEST(IdxReader, TruncatedRawDataNamesThePathAndTheSizes) {
  cddp_test::ScratchDir dir("idx");
  const auto path = dir / "short-idx3-ubyte";
  cddp::write_idx(path, small_u8(), false);
  auto bytes = cddp_test::read_bytes(path);
  bytes.resize(bytes.size() - 5);
  cddp_test::write_bytes(path, bytes);
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "truncated IDX data", "3x2x4", "24 data bytes", "19"});
  bytes.resize(10);  // inside the dimension list
  cddp_test::write_bytes(path, bytes);
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "truncated IDX header"});
}

TEST(IdxReader, BadHeaderFieldsAreRejected) {
  cddp_test::ScratchDir dir("idx");
  const auto path = dir / "bad";
  cddp::write_idx(path, small_u8(), false);
  const auto good = cddp_test::read_bytes(path);

  auto bytes = good;
  bytes[0] = 0x12;
  cddp_test::write_bytes(path, bytes);
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "not an IDX file", "12 00 08 03"});

  bytes = good;
  bytes[2] = 0x07;
  cddp_test::write_bytes(path, bytes);
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "unknown IDX type code 0x07"});

  bytes = good;
  bytes.push_back(0);
  cddp_test::write_bytes(path, bytes);
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "trailing"});

  bytes = good;
  bytes[7] = 0;  // first dimension 0
  cddp_test::write_bytes(path, bytes);
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "dimension 0 is 0"});

  cddp_test::write_bytes(path, {0, 0});
  expect_error([&] { cddp::read_idx(path); }, {path.string(), "too short"});
}

TEST(IdxReader, RealFashionMnistFiles) {
  const std::filesystem::path dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir / "train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
  }
  const auto train_images = cddp::read_idx(dir / "train-images-idx3-ubyte.gz");
  EXPECT_EQ(train_images.type, cddp::IdxType::UInt8);
  EXPECT_EQ(train_images.dims, (std::vector<int64_t>{60000, 28, 28}));
  const auto train_labels = cddp::read_idx(dir / "train-labels-idx1-ubyte.gz");
  EXPECT_EQ(train_labels.dims, (std::vector<int64_t>{60000}));
  const auto test_images = cddp::read_idx(dir / "t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(test_images.dims, (std::vector<int64_t>{10000, 28, 28}));
  const auto test_labels = cddp::read_idx(dir / "t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(test_labels.dims, (std::vector<int64_t>{10000}));
  for (uint8_t l : test_labels.data) ASSERT_LT(l, 10);
}
