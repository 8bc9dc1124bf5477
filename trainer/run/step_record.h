// step_record.h — one record of what a run did, in place of hand-built maps of metric
// names: a training step (every step; the window's averages on log_every steps), an
// evaluation, or the end of an epoch. RecordSink sends each to metrics.jsonl, summary.csv,
// TensorBoard and the progress line.
//
// The metric names in the files are those of fields(): unset fields are not written, so each
// kind writes exactly the columns it always has. It will not format or write anything itself.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace cddp::train {

struct StepRecord {
  enum class Kind {
    Step,   // after an optimizer step: progress always; the files when `logged`
    Eval,   // a test-set evaluation: metrics.jsonl and TensorBoard's test/ scalars
    Epoch,  // the end of an epoch: summary.csv
  };
  Kind kind = Kind::Step;
  int64_t step = 0;   // optimizer steps done
  int64_t epoch = 0;  // 1-based
  bool logged = false;  // Step: a log_every step, carrying the window's averages below

  // Step: over the log window, summed over ranks (else this rank's step); Epoch: the epoch's.
  std::optional<double> loss, train_acc;
  std::optional<double> test_loss, test_acc;  // Eval, Epoch
  std::optional<double> lr, density;          // Step (logged)
  // Step (logged): this step's bytes; Epoch: the run's totals.
  std::optional<double> bytes_sent, bytes_received, bytes_dense_equivalent;
  std::optional<double> compress_ms, comm_ms, step_ms, residual_norm;  // Step (logged)
  std::optional<double> epoch_s;                                        // Epoch

  // Step, for the progress line: the run's totals so far.
  double bytes_sent_total = 0, bytes_dense_equivalent_total = 0;

  // The set fields under their metric names ("step" and "epoch" always).
  std::map<std::string, double> fields() const {
    std::map<std::string, double> f = {{"step", double(step)}, {"epoch", double(epoch)}};
    auto put = [&f](const char* name, const std::optional<double>& v) {
      if (v) f[name] = *v;
    };
    put("loss", loss), put("train_acc", train_acc), put("test_loss", test_loss), put("test_acc", test_acc);
    put("lr", lr), put("density", density), put("bytes_sent", bytes_sent), put("bytes_received", bytes_received);
    put("bytes_dense_equivalent", bytes_dense_equivalent), put("compress_ms", compress_ms), put("comm_ms", comm_ms);
    put("step_ms", step_ms), put("residual_norm", residual_norm), put("epoch_s", epoch_s);
    return f;
  }
};

}  // namespace cddp::train
