// progress_reporter.cpp — a '\r'-redrawn progress line on terminals, plain periodic lines
// elsewhere. Numbers in, text out; no logging library, no files.
#include <cddp/metrics/progress_reporter.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

namespace cddp {

ProgressReporter::ProgressReporter(int64_t total_steps, ProgressOptions options, LineSink sink)
    : total_steps_(total_steps), options_(std::move(options)), sink_(std::move(sink)) {
  if (options_.log_every < 1) options_.log_every = 1;
  if (options_.bar_width < 0) options_.bar_width = 0;
  if (!options_.stream) options_.stream = stderr;
  tty_ = options_.tty < 0 ? isatty(fileno(options_.stream)) != 0 : options_.tty != 0;
  start(0);
}

ProgressReporter::~ProgressReporter() {
  if (line_open_) std::fputc('\n', options_.stream);
}

double ProgressReporter::now() const {
  if (options_.clock) return options_.clock();
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

void ProgressReporter::start(int64_t step) {
  start_step_ = step;
  start_time_ = now();
  last_draw_ = -1e300;
}

std::string ProgressReporter::human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  const bool negative = bytes < 0;
  double v = std::fabs(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[48];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%s%.0f B", negative ? "-" : "", v);
  } else {
    std::snprintf(buf, sizeof buf, "%s%.*f %s", negative ? "-" : "", v < 10 ? 2 : (v < 100 ? 1 : 0), v, units[u]);
  }
  return buf;
}

std::string ProgressReporter::human_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(std::llround(seconds));
  char buf[48];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llds", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  }
  return buf;
}

std::string ProgressReporter::render(const ProgressUpdate& u, double t, bool with_bar) const {
  std::string line = "epoch " + std::to_string(u.epoch) + " | step " + std::to_string(u.step);
  if (total_steps_ > 0) {
    line += "/" + std::to_string(total_steps_);
    const double frac = std::min(1.0, std::max(0.0, double(u.step) / double(total_steps_)));
    if (with_bar && options_.bar_width > 0) {
      const int filled = int(frac * options_.bar_width);
      line += " [" + std::string(size_t(filled), '#') + std::string(size_t(options_.bar_width - filled), '-') + "]";
    }
    char pct[16];
    std::snprintf(pct, sizeof pct, " %3d%%", int(frac * 100));
    line += pct;
  }
  const double elapsed = t - start_time_;
  const int64_t done = u.step - start_step_;
  const double rate = elapsed > 0 && done > 0 ? double(done) / elapsed : 0.0;
  char buf[64];
  if (rate > 0) {
    std::snprintf(buf, sizeof buf, " | %.*f steps/s", rate < 10 ? 2 : 1, rate);
    line += buf;
    if (total_steps_ > 0) line += " | ETA " + human_duration(double(std::max<int64_t>(0, total_steps_ - u.step)) / rate);
  }
  if (std::isfinite(u.loss)) {
    std::snprintf(buf, sizeof buf, " | loss %.4f", u.loss);
    line += buf;
  }
  if (u.bytes_dense_equivalent_total > 0) {
    line += " | saved " + human_bytes(u.bytes_dense_equivalent_total - u.bytes_sent_total);
    if (u.bytes_sent_total > 0) {
      std::snprintf(buf, sizeof buf, " (x%.1f)", u.bytes_dense_equivalent_total / u.bytes_sent_total);
      line += buf;
    }
  }
  return line;
}

void ProgressReporter::update(const ProgressUpdate& u) {
  const double t = now();
  const bool last = total_steps_ > 0 && u.step >= total_steps_;
  if (!tty_) {
    if (u.step % options_.log_every == 0 || last) {
      const std::string line = render(u, t, false);
      if (sink_) {
        sink_(line);
      } else {
        std::fprintf(options_.stream, "%s\n", line.c_str());
        std::fflush(options_.stream);
      }
    }
    return;
  }
  if (!last && t - last_draw_ < options_.min_redraw_seconds) return;
  last_draw_ = t;
  std::string line = render(u, t, true);
  const size_t len = line.size();
  if (len < last_len_) line += std::string(last_len_ - len, ' ');  // cover the longer previous line
  last_len_ = len;
  std::fprintf(options_.stream, "\r%s", line.c_str());
  std::fflush(options_.stream);
  line_open_ = true;
}

void ProgressReporter::clear() {
  if (!tty_ || !line_open_) return;
  std::fprintf(options_.stream, "\r%s\r", std::string(last_len_, ' ').c_str());
  std::fflush(options_.stream);
  line_open_ = false;
  last_len_ = 0;
  last_draw_ = -1e300;
}

void ProgressReporter::finish() {
  if (!tty_ || !line_open_) return;
  std::fputc('\n', options_.stream);
  std::fflush(options_.stream);
  line_open_ = false;
  last_len_ = 0;
}

}  // namespace cddp
