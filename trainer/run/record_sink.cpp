// record_sink.cpp — see record_sink.h. It will not reorder records: each is written when
// the run loop hands it over, so the files read in step order.
#include "run/record_sink.h"

#include <cddp/metrics/metrics_writer.h>
#include <cddp/metrics/progress_reporter.h>
#include <cddp/metrics/tensorboard_writer.h>

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

namespace cddp::train {

RecordSink::RecordSink(const TrainConfig& cfg, bool enabled, int64_t total_steps, int64_t step, int64_t epoch,
                       LineSink print)
    : cfg_(cfg) {
  if (!enabled) return;
  const bool fresh = step == 0;
  const auto& m = cfg.metrics;
  if (m.jsonl || m.csv) {
    metrics_ = std::make_unique<MetricsWriter>(m.dir, m.jsonl, m.csv, !fresh);
    if (!fresh) metrics_->truncate_after(step, epoch);
  }
  if (m.tensorboard) tb_ = std::make_unique<TensorBoardWriter>(std::filesystem::path(m.dir) / "tb");
  if (m.progress != "off") {
    ProgressOptions po;
    po.tty = m.progress == "bar" ? 1 : m.progress == "log" ? 0 : -1;
    po.log_every = cfg.run.log_every;
    progress_ = std::make_unique<ProgressReporter>(total_steps, po, [this, print](const std::string& line) {
      print(fmt::format("{} | acc {:.2f}% | lr {:.4g} | density {:.4g}", line, 100.0 * last_acc_, last_lr_,
                        last_density_));
    });
    progress_->start(step);
  }
}

RecordSink::~RecordSink() = default;

void RecordSink::write(const StepRecord& r) {
  switch (r.kind) {
    case StepRecord::Kind::Step:
      write_step(r);
      return;
    case StepRecord::Kind::Eval:
      if (metrics_) metrics_->log_step(r.fields()), metrics_->flush();
      if (tb_) {
        tb_->add_scalar("test/loss", r.test_loss.value_or(std::nan("")), r.step);
        tb_->add_scalar("test/accuracy", r.test_acc.value_or(std::nan("")), r.step);
        tb_->flush();
      }
      return;
    case StepRecord::Kind::Epoch:
      if (metrics_) {
        metrics_->log_epoch(r.fields());
        metrics_->flush();
      }
      return;
  }
}

void RecordSink::write_step(const StepRecord& r) {
  if (r.logged) {
    const auto f = r.fields();
    if (metrics_) metrics_->log_step(f);
    if (tb_) tb_->add_scalars(f, r.step, "train/");
    last_acc_ = r.train_acc.value_or(0), last_lr_ = r.lr.value_or(0), last_density_ = r.density.value_or(0);
  }
  if (progress_) {
    ProgressUpdate u;
    u.step = r.step;
    u.epoch = r.epoch;
    u.loss = r.loss.value_or(std::nan(""));
    u.bytes_sent_total = r.bytes_sent_total;
    u.bytes_dense_equivalent_total = r.bytes_dense_equivalent_total;
    progress_->update(u);
  }
}

void RecordSink::clear_progress() {
  if (progress_) progress_->clear();
}

void RecordSink::finish() {
  if (metrics_) metrics_->flush();
  if (tb_) tb_->flush();
  if (progress_) progress_->finish();
}

std::vector<std::string> RecordSink::files() const {
  std::vector<std::string> out;
  if (metrics_ && cfg_.metrics.jsonl) out.push_back(metrics_->jsonl_path().string());
  if (metrics_ && cfg_.metrics.csv) out.push_back(metrics_->csv_path().string());
  if (tb_) out.push_back(tb_->path().string());
  return out;
}

}  // namespace cddp::train
