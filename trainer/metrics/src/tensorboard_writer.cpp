// tensorboard_writer.cpp — TFRecord framing of Event messages, one file per writer.
// No rotation, no background thread, no image/histogram summaries.
#include <cddp/metrics/tensorboard_writer.h>

#include <cddp/metrics/crc32c.h>

#include "event_codec.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace cddp {
namespace {

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
  return buf;
}

void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(std::filesystem::path logdir) {
  std::error_code ec;
  std::filesystem::create_directories(logdir, ec);
  if (ec) throw std::runtime_error(logdir.string() + ": cannot create the TensorBoard log directory: " + ec.message());
  const auto seconds = static_cast<long long>(now_seconds());
  const std::string base = "events.out.tfevents." + std::to_string(seconds) + "." + host_name();
  path_ = logdir / base;
  for (int n = 1; std::filesystem::exists(path_, ec); ++n) {
    path_ = logdir / (base + "." + std::to_string(getpid()) + "." + std::to_string(n));
  }
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw std::runtime_error(path_.string() + ": cannot create the TensorBoard event file: " + std::strerror(errno));
  static const char kVersion[] = "brain.Event:2";
  write_record(metrics_detail::encode_file_version_event(now_seconds(), kVersion, sizeof kVersion - 1));
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (out_.is_open()) out_.flush();  // never throw from a destructor
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  const metrics_detail::ScalarIn in{tag.data(), tag.size(), static_cast<float>(value)};
  write_record(metrics_detail::encode_scalars_event(now_seconds(), step, &in, 1));
}

void TensorBoardWriter::add_scalars(const std::map<std::string, double>& values, int64_t step,
                                    const std::string& prefix) {
  if (values.empty()) return;
  std::vector<std::string> tags;
  tags.reserve(values.size());
  std::vector<metrics_detail::ScalarIn> in;
  in.reserve(values.size());
  for (const auto& [key, value] : values) {
    tags.push_back(prefix + key);
    in.push_back({tags.back().data(), tags.back().size(), static_cast<float>(value)});
  }
  write_record(metrics_detail::encode_scalars_event(now_seconds(), step, in.data(), in.size()));
}

void TensorBoardWriter::flush() {
  out_.flush();
  if (!out_) throw std::runtime_error(path_.string() + ": write to the TensorBoard event file failed");
}

void TensorBoardWriter::write_record(const std::vector<uint8_t>& data) {
  uint8_t header[12];
  const uint64_t length = data.size();
  for (int i = 0; i < 8; ++i) header[i] = uint8_t(length >> (8 * i));
  put_u32(header + 8, masked_crc32c(header, 8));
  uint8_t footer[4];
  put_u32(footer, masked_crc32c(data.data(), data.size()));
  out_.write(reinterpret_cast<const char*>(header), sizeof header);
  out_.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
  out_.write(reinterpret_cast<const char*>(footer), sizeof footer);
  if (!out_) throw std::runtime_error(path_.string() + ": write to the TensorBoard event file failed");
}

}  // namespace cddp
