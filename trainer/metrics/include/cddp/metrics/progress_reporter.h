// progress_reporter.h — human-readable training progress.
//
// On a terminal (isatty(stderr), or forced by ProgressOptions::tty) it keeps one line
// redrawn in place with '\r':
//   epoch 3 | step 1200/5000 [######------] 24% | 35.2 steps/s | ETA 1m48s | loss 0.4321 | saved 1.2 GiB
// Elsewhere (a log file, CI) it emits the same text without the bar as one plain line every
// `log_every` steps (and on the last step) through a callback — the trainer passes one that
// logs with spdlog — or to stderr when none is given.
//
// "saved" is the cumulative dense-equivalent bytes minus the bytes actually sent, in binary
// units. Rates count from start() (so a resumed run does not claim the steps it skipped).
// It takes plain numbers — never optimizer or model objects — and will not compute
// metrics, write files or decide when training ends. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace cddp {

struct ProgressUpdate {
  int64_t step = 0;                     // steps completed (1-based after the first step)
  int64_t epoch = 0;
  double loss = 0;                      // NaN: not shown
  double bytes_sent_total = 0;          // cumulative, this rank
  double bytes_dense_equivalent_total = 0;
};

struct ProgressOptions {
  int tty = -1;                         // -1: isatty(fileno(stream)); 0: plain lines; 1: redrawn bar
  int64_t log_every = 50;               // plain mode: a line every N steps
  int bar_width = 20;
  double min_redraw_seconds = 0.1;      // TTY mode: redraw at most this often (the last step always)
  FILE* stream = stderr;                // TTY mode writes here; plain mode too when no sink
  std::function<double()> clock;        // seconds, monotonic; empty: std::chrono::steady_clock
};

class ProgressReporter {
 public:
  using LineSink = std::function<void(const std::string& line)>;

  // total_steps: the run's last step (0: unknown, no bar/ETA).
  ProgressReporter(int64_t total_steps, ProgressOptions options = {}, LineSink sink = nullptr);
  ~ProgressReporter();

  // Starts the rate clock at `step` (the resume point; 0 for a fresh run).
  void start(int64_t step = 0);
  void update(const ProgressUpdate& u);
  // Erases the redrawn line (TTY) so that another message can be printed cleanly; the next
  // update() draws it again. No-op in plain mode.
  void clear();
  // Ends the redrawn line with a newline (TTY). Plain mode: nothing.
  void finish();

  bool tty() const { return tty_; }
  // The text for `u` at `now` seconds (without '\r'), as it would be shown; for tests.
  std::string render(const ProgressUpdate& u, double now, bool with_bar) const;

  static std::string human_bytes(double bytes);     // "1.2 GiB", "512 B"
  static std::string human_duration(double seconds);  // "1m48s", "2h03m", "45s"

 private:
  double now() const;

  int64_t total_steps_;
  ProgressOptions options_;
  LineSink sink_;
  bool tty_;
  int64_t start_step_ = 0;
  double start_time_ = 0;
  double last_draw_ = -1e300;
  size_t last_len_ = 0;
  bool line_open_ = false;
};

}  // namespace cddp
