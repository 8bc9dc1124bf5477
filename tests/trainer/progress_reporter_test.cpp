// progress_reporter_test.cpp — ProgressReporter's plain lines (every N steps, through the
// sink), the redrawn TTY line, and the human-readable units. Time is injected; it does
// not need a real terminal.
#include <cddp/metrics/progress_reporter.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

std::string contents(FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  for (int c; (c = std::fgetc(f)) != EOF;) s += char(c);
  return s;
}

}  // namespace

TEST(ProgressReporter, HumanUnits) {
  EXPECT_EQ(cddp::ProgressReporter::human_bytes(512), "512 B");
  EXPECT_EQ(cddp::ProgressReporter::human_bytes(1536), "1.50 KiB");
  EXPECT_EQ(cddp::ProgressReporter::human_bytes(300.0 * 1024 * 1024), "300 MiB");
  EXPECT_EQ(cddp::ProgressReporter::human_bytes(1.25 * 1024 * 1024 * 1024), "1.25 GiB");
  EXPECT_EQ(cddp::ProgressReporter::human_duration(45), "45s");
  EXPECT_EQ(cddp::ProgressReporter::human_duration(108), "1m48s");
  EXPECT_EQ(cddp::ProgressReporter::human_duration(7380), "2h03m");
  EXPECT_EQ(cddp::ProgressReporter::human_duration(NAN), "?");
}

TEST(ProgressReporter, PlainLinesEveryNSteps) {
  double clock = 100.0;
  cddp::ProgressOptions opts;
  opts.tty = 0;
  opts.log_every = 2;
  opts.clock = [&] { return clock; };
  std::vector<std::string> lines;
  cddp::ProgressReporter p(5, opts, [&](const std::string& l) { lines.push_back(l); });
  EXPECT_FALSE(p.tty());
  p.start(0);
  for (int step = 1; step <= 5; ++step) {
    clock += 0.5;  // 2 steps/s
    cddp::ProgressUpdate u;
    u.step = step;
    u.epoch = 1;
    u.loss = 0.5;
    u.bytes_sent_total = 1024.0 * step;
    u.bytes_dense_equivalent_total = 100 * 1024.0 * step;
    p.update(u);
  }
  ASSERT_EQ(lines.size(), 3u);  // steps 2, 4 and the last
  EXPECT_EQ(lines[0], "epoch 1 | step 2/5  40% | 2.00 steps/s | ETA 2s | loss 0.5000 | saved 198 KiB (x100.0)");
  EXPECT_NE(lines[2].find("step 5/5 100%"), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find("ETA 0s"), std::string::npos) << lines[2];
  EXPECT_EQ(lines[0].find('['), std::string::npos);  // no bar in plain mode
}

TEST(ProgressReporter, ResumedRunCountsRateFromStart) {
  double clock = 0;
  cddp::ProgressOptions opts;
  opts.tty = 0;
  opts.clock = [&] { return clock; };
  cddp::ProgressReporter p(1000, opts, [](const std::string&) {});
  p.start(900);
  clock = 10;
  cddp::ProgressUpdate u;
  u.step = 950;
  u.loss = NAN;  // not shown
  const std::string line = p.render(u, clock, false);
  EXPECT_NE(line.find("5.00 steps/s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 10s"), std::string::npos) << line;
  EXPECT_EQ(line.find("loss"), std::string::npos) << line;
  EXPECT_EQ(line.find("saved"), std::string::npos) << line;
}

TEST(ProgressReporter, TtyRedrawsOneLine) {
  FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  double clock = 0;
  {
    cddp::ProgressOptions opts;
    opts.tty = 1;
    opts.stream = f;
    opts.bar_width = 10;
    opts.min_redraw_seconds = 0.0;
    opts.clock = [&] { return clock; };
    cddp::ProgressReporter p(4, opts);
    EXPECT_TRUE(p.tty());
    for (int step = 1; step <= 4; ++step) {
      clock += 1;
      cddp::ProgressUpdate u;
      u.step = step;
      u.loss = 1.0 / step;
      p.update(u);
    }
    p.finish();
  }
  const std::string out = contents(f);
  std::fclose(f);
  EXPECT_EQ(out.front(), '\r');
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\r'), 4);
  EXPECT_NE(out.find("[#####-----]  50%"), std::string::npos) << out;
  EXPECT_NE(out.find("[##########] 100%"), std::string::npos) << out;
}
