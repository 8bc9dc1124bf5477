// tensorboard_writer_test.cpp — CRC-32C test vectors, the TFRecord/Event round trip through
// TensorBoardWriter and EventFileReader, and the reader's errors on a corrupted file.
// It does not run TensorBoard itself.
#include <cddp/metrics/crc32c.h>
#include <cddp/metrics/event_file_reader.h>
#include <cddp/metrics/tensorboard_writer.h>

#include "data_test_util.h"

#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>

namespace {

std::string error_of(const std::filesystem::path& p) {
  try {
    cddp::EventFileReader(p).read_all();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST(Crc32c, KnownVectors) {
  // RFC 3720 (iSCSI) B.4 and the common "123456789" check value.
  EXPECT_EQ(cddp::crc32c("123456789", 9), 0xE3069283u);
  std::vector<unsigned char> zeros(32, 0x00), ones(32, 0xFF), inc(32), dec(32);
  for (int i = 0; i < 32; ++i) inc[size_t(i)] = uint8_t(i), dec[size_t(i)] = uint8_t(31 - i);
  EXPECT_EQ(cddp::crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(cddp::crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(cddp::crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(cddp::crc32c(dec.data(), 32), 0x113FDB5Cu);
  EXPECT_EQ(cddp::crc32c("", 0), 0u);
  // Incremental == one shot.
  EXPECT_EQ(cddp::crc32c("6789", 4, cddp::crc32c("12345", 5)), 0xE3069283u);
  // Masking is invertible and matches the formula.
  const uint32_t c = 0xE3069283u;
  EXPECT_EQ(cddp::mask_crc32c(c), ((c >> 15) | (c << 17)) + 0xa282ead8u);
  EXPECT_EQ(cddp::unmask_crc32c(cddp::mask_crc32c(c)), c);
}

TEST(TensorBoard, RoundTrip) {
  cddp_test::ScratchDir dir("tb");
  std::filesystem::path file;
  {
    cddp::TensorBoardWriter w(dir / "logs");
    file = w.path();
    for (int step = 1; step <= 5; ++step) w.add_scalar("train/loss", 1.0 / step, step);
    w.add_scalar("zero", 0.0, 0);
    w.add_scalars({{"acc", 0.5}, {"loss", 2.25}}, 7, "test/");
    w.flush();
  }
  EXPECT_EQ(file.parent_path(), dir / "logs");
  EXPECT_EQ(file.filename().string().rfind("events.out.tfevents.", 0), 0u) << file;

  // The first record byte by byte: Event{wall_time (field 1, fixed64), file_version (field 3)}.
  const auto bytes = cddp_test::read_bytes(file);
  ASSERT_GT(bytes.size(), 12u + 24 + 4);
  uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  EXPECT_EQ(length, 24u);  // 1 + 8 (wall_time) + 1 + 1 + 13 ("brain.Event:2")
  EXPECT_EQ(bytes[12], 0x09);
  EXPECT_EQ(bytes[21], 0x1a);
  EXPECT_EQ(bytes[22], 13);
  EXPECT_EQ(std::string(bytes.begin() + 23, bytes.begin() + 36), "brain.Event:2");

  const auto records = cddp::EventFileReader(file).read_all();
  ASSERT_EQ(records.size(), 8u);
  EXPECT_EQ(records[0].file_version, "brain.Event:2");
  EXPECT_TRUE(records[0].values.empty());
  EXPECT_GT(records[0].wall_time, 1.6e9);
  for (int step = 1; step <= 5; ++step) {
    const auto& r = records[size_t(step)];
    EXPECT_EQ(r.step, step);
    ASSERT_EQ(r.values.size(), 1u);
    EXPECT_EQ(r.values[0].tag, "train/loss");
    EXPECT_TRUE(r.values[0].has_simple_value);
    EXPECT_EQ(r.values[0].simple_value, float(1.0 / step));
    EXPECT_GE(r.wall_time, records[0].wall_time);
  }
  ASSERT_EQ(records[6].values.size(), 1u);
  EXPECT_TRUE(records[6].values[0].has_simple_value);  // 0.0 is still present
  EXPECT_EQ(records[6].values[0].simple_value, 0.0f);
  ASSERT_EQ(records[7].values.size(), 2u);
  EXPECT_EQ(records[7].step, 7);
  EXPECT_EQ(records[7].values[0].tag, "test/acc");
  EXPECT_EQ(records[7].values[1].tag, "test/loss");
  EXPECT_EQ(records[7].values[1].simple_value, 2.25f);
}

TEST(TensorBoard, CorruptionIsReported) {
  cddp_test::ScratchDir dir("tb");
  std::filesystem::path file;
  {
    cddp::TensorBoardWriter w(dir.path());
    w.add_scalar("loss", 0.25, 1);
    w.add_scalar("loss", 0.125, 2);
    file = w.path();
  }
  const auto good = cddp_test::read_bytes(file);
  const size_t second = 12 + 24 + 4;  // offset of record 1

  auto bytes = good;
  bytes[second + 12 + 3] ^= 0x01;  // one bit of record 1's data
  cddp_test::write_bytes(file, bytes);
  std::string what = error_of(file);
  EXPECT_NE(what.find("data CRC mismatch"), std::string::npos) << what;
  EXPECT_NE(what.find("record 1"), std::string::npos) << what;
  EXPECT_NE(what.find(file.string()), std::string::npos) << what;

  bytes = good;
  bytes[second] ^= 0x01;  // record 1's length
  cddp_test::write_bytes(file, bytes);
  what = error_of(file);
  EXPECT_NE(what.find("length CRC mismatch"), std::string::npos) << what;

  bytes = good;
  bytes[bytes.size() - 1] ^= 0x80;  // the last data CRC itself
  cddp_test::write_bytes(file, bytes);
  what = error_of(file);
  EXPECT_NE(what.find("data CRC mismatch"), std::string::npos) << what;
  EXPECT_NE(what.find("record 2"), std::string::npos) << what;

  bytes = good;
  bytes.resize(bytes.size() - 2);
  cddp_test::write_bytes(file, bytes);
  what = error_of(file);
  EXPECT_NE(what.find("truncated"), std::string::npos) << what;

  cddp_test::write_bytes(file, good);
  EXPECT_EQ(cddp::EventFileReader(file).read_all().size(), 3u);
}

TEST(TensorBoard, TwoWritersInOneDirectoryGetTwoFiles) {
  cddp_test::ScratchDir dir("tb");
  cddp::TensorBoardWriter a(dir.path());
  cddp::TensorBoardWriter b(dir.path());
  EXPECT_NE(a.path(), b.path());
}
