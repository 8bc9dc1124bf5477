// record_sink.h — where a run's StepRecords go: metrics.jsonl and summary.csv
// (MetricsWriter), the TensorBoard event file and the progress line, each when the config's
// [metrics] asks for it. Only rank 0 opens any of them; on other ranks every call is a no-op.
//
// Routing: a logged Step goes to metrics.jsonl and TensorBoard's train/ scalars, every Step to
// the progress line; an Eval to metrics.jsonl and test/loss, test/accuracy; an Epoch to
// summary.csv. It will not compute or reduce metrics (the run loop does).
#pragma once

#include "config/train_config.h"
#include "run/step_record.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cddp {
class MetricsWriter;
class ProgressReporter;
class TensorBoardWriter;
}  // namespace cddp

namespace cddp::train {

class RecordSink {
 public:
  using LineSink = std::function<void(const std::string& line)>;

  // Opens the configured outputs when `enabled` (rank 0). A resumed run (step > 0) appends to
  // the metrics files after dropping what was logged past (step, epoch). `print` receives the
  // plain progress lines.
  RecordSink(const TrainConfig& config, bool enabled, int64_t total_steps, int64_t step, int64_t epoch,
             LineSink print);
  ~RecordSink();
  RecordSink(const RecordSink&) = delete;
  RecordSink& operator=(const RecordSink&) = delete;

  void write(const StepRecord& record);
  // Clears a redrawn progress bar before another log line.
  void clear_progress();
  // Flushes the files and ends the progress line.
  void finish();
  // The files written, for the run's result: metrics.jsonl, summary.csv, the event file.
  std::vector<std::string> files() const;

 private:
  void write_step(const StepRecord& record);

  const TrainConfig& cfg_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<TensorBoardWriter> tb_;
  std::unique_ptr<ProgressReporter> progress_;
  // The last logged window's, shown with the plain progress lines.
  double last_acc_ = 0, last_lr_ = 0, last_density_ = 0;
};

}  // namespace cddp::train
