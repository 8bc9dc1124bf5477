// metrics_writer.h — the run's machine-readable logs in a run directory:
//   metrics.jsonl  one JSON object per log_step() call, one per line;
//   summary.csv    one row per log_epoch() call, with a header line.
//
// JSON lines: keys in a stable order — first the known fields in this order
//   step, epoch, loss, train_acc, test_loss, test_acc, lr, density, bytes_sent,
//   bytes_received, bytes_dense_equivalent, compress_ms, comm_ms, step_ms, residual_norm
// then any other keys alphabetically. "step" and "epoch" are written as integers; other
// values in the shortest form that reads back to the same double (integral values have no
// decimal point). A NaN or infinite value is written as null (strict JSON has no NaN).
// summary.csv uses the same column order. Its header is set by the first row; a later row
// with a key the header lacks rewrites the file with the wider header (old rows get empty
// cells); a row lacking a column leaves its cell empty.
//
// Fresh runs (append = false) truncate both files; a resumed run (append = true) keeps them,
// starts a torn last line of metrics.jsonl on a new line, and may call truncate_after() to
// drop what the interrupted run logged after the checkpoint it resumes from.
//
// Lines are buffered; flush() (and the destructor) writes them out. Not thread-safe; only one
// writer per directory (the trainer lets rank 0 write). It will not compute metrics, log to
// the console or write TensorBoard files. I/O errors throw std::runtime_error naming the file;
// a key that is empty or contains a comma, quote or control character throws
// std::invalid_argument.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace cddp {

class MetricsWriter {
 public:
  // Creates `dir` if needed. jsonl / csv select which of the two files are written at all.
  MetricsWriter(std::filesystem::path dir, bool jsonl, bool csv, bool append = false);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void log_step(const std::map<std::string, double>& fields);
  void log_epoch(const std::map<std::string, double>& fields);
  void flush();

  // For a resumed run: drops metrics.jsonl lines whose "step" is greater than `step` (and
  // unparsable lines) and summary.csv rows whose "epoch" is greater than `epoch`.
  void truncate_after(int64_t step, int64_t epoch);

  std::filesystem::path jsonl_path() const { return dir_ / "metrics.jsonl"; }
  std::filesystem::path csv_path() const { return dir_ / "summary.csv"; }

  // The stable key order described above, applied to `keys`.
  static std::vector<std::string> ordered_keys(const std::map<std::string, double>& fields);
  // One JSON object (no newline) for `fields`, as log_step writes it.
  static std::string to_json(const std::map<std::string, double>& fields);

 private:
  void rewrite_csv();
  void open_jsonl(bool append);

  std::filesystem::path dir_;
  bool jsonl_, csv_;
  std::ofstream jsonl_out_;
  std::vector<std::string> csv_columns_;
  std::vector<std::vector<std::string>> csv_rows_;  // cells, as written (for rewrites)
};

}  // namespace cddp
