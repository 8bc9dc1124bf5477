// tensorboard_writer.h — writes scalar summaries to a TensorBoard event file,
// <logdir>/events.out.tfevents.<unix seconds>.<hostname>, that `tensorboard --logdir` reads.
//
// The file is a sequence of TFRecords, each
//     uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// whose data is a serialized tensorflow.Event (proto/event.proto, same field numbers). The
// first record is Event{file_version: "brain.Event:2"}; each add_scalar is one
// Event{wall_time, step, summary{value{tag, simple_value}}}.
//
// Records are buffered; flush() (and the destructor) push them to the OS. Not thread-safe.
// It will not write images, histograms, graphs or hparams, rotate files, or decide which rank
// writes (the trainer lets rank 0 write). Errors (cannot create the directory or the file,
// a failed write) throw std::runtime_error naming the path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace cddp {

class TensorBoardWriter {
 public:
  // Creates `logdir` (and parents) if needed and a new event file in it; if a file of that
  // name exists already (two writers in one second), ".<pid>" and a counter are appended.
  explicit TensorBoardWriter(std::filesystem::path logdir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One Event with one value (stored as float32, as TensorBoard does).
  void add_scalar(const std::string& tag, double value, int64_t step);
  // One Event carrying every (prefix + key, value) of `values`.
  void add_scalars(const std::map<std::string, double>& values, int64_t step, const std::string& prefix = "");
  void flush();

  const std::filesystem::path& path() const { return path_; }

 private:
  void write_record(const std::vector<uint8_t>& data);

  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace cddp
