// metrics_writer_test.cpp — metrics.jsonl lines (key order, integers, null for NaN) and
// summary.csv (header, rows, widening), append mode and truncate_after on resume.
// It writes only under a scratch directory in the system temp dir.
#include <cddp/metrics/metrics_writer.h>

#include "data_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace {

std::vector<std::string> lines_of(const std::filesystem::path& p) {
  std::vector<std::string> lines;
  std::istringstream in(cddp_test::read_text(p));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST(MetricsWriter, JsonLinesHaveStableKeysAndIntegers) {
  cddp_test::ScratchDir dir("metrics");
  {
    cddp::MetricsWriter w(dir.path() / "run", true, false);
    w.log_step({{"loss", 0.5}, {"step", 1}, {"epoch", 0}, {"lr", 0.1}, {"bytes_sent", 123456789}, {"zeta", 2},
                {"alpha", 1e-7}});
    w.log_step({{"step", 2}, {"epoch", 0}, {"loss", std::nan("")}, {"test_acc", 0.875}});
    w.flush();
  }
  const auto lines = lines_of(dir / "run/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], R"({"step":1,"epoch":0,"loss":0.5,"lr":0.1,"bytes_sent":123456789,"alpha":1e-07,"zeta":2})");
  EXPECT_EQ(lines[1], R"({"step":2,"epoch":0,"loss":null,"test_acc":0.875})");
  EXPECT_FALSE(std::filesystem::exists(dir / "run/summary.csv"));
  EXPECT_THROW(cddp::MetricsWriter::to_json({{"bad,key", 1}}), std::invalid_argument);
  // Shortest round-trip form.
  EXPECT_EQ(cddp::MetricsWriter::to_json({{"x", 0.1 + 0.2}}), R"({"x":0.30000000000000004})");
}

TEST(MetricsWriter, CsvHeaderRowsAndWidening) {
  cddp_test::ScratchDir dir("metrics");
  cddp::MetricsWriter w(dir.path(), false, true);
  w.log_epoch({{"epoch", 1}, {"loss", 0.75}, {"step", 100}});
  w.log_epoch({{"epoch", 2}, {"loss", 0.5}, {"step", 200}});
  EXPECT_EQ(lines_of(dir / "summary.csv"), (std::vector<std::string>{"step,epoch,loss", "100,1,0.75", "200,2,0.5"}));
  w.log_epoch({{"epoch", 3}, {"step", 300}, {"test_acc", 0.9}});  // a new column, and no loss
  EXPECT_EQ(lines_of(dir / "summary.csv"),
            (std::vector<std::string>{"step,epoch,loss,test_acc", "100,1,0.75,", "200,2,0.5,", "300,3,,0.9"}));
  EXPECT_FALSE(std::filesystem::exists(dir / "metrics.jsonl"));
}

TEST(MetricsWriter, FreshRunTruncatesAppendKeeps) {
  cddp_test::ScratchDir dir("metrics");
  {
    cddp::MetricsWriter w(dir.path(), true, true);
    for (int s = 1; s <= 4; ++s) w.log_step({{"step", double(s)}, {"loss", 1.0 / s}});
    w.log_epoch({{"epoch", 0}, {"loss", 0.3}});
    w.log_epoch({{"epoch", 1}, {"loss", 0.2}});
  }
  // A crash left a torn line.
  {
    std::ofstream out(dir / "metrics.jsonl", std::ios::app);
    out << R"({"step":5,"lo)";
  }
  {
    cddp::MetricsWriter w(dir.path(), true, true, /*append=*/true);
    w.truncate_after(/*step=*/3, /*epoch=*/0);  // resuming from the checkpoint at step 3, epoch 0
    w.log_step({{"step", 4}, {"loss", 0.2}});
    w.log_epoch({{"epoch", 1}, {"loss", 0.25}});
  }
  EXPECT_EQ(lines_of(dir / "metrics.jsonl"),
            (std::vector<std::string>{R"({"step":1,"loss":1})", R"({"step":2,"loss":0.5})",
                                      R"({"step":3,"loss":0.3333333333333333})", R"({"step":4,"loss":0.2})"}));
  EXPECT_EQ(lines_of(dir / "summary.csv"), (std::vector<std::string>{"epoch,loss", "0,0.3", "1,0.25"}));
  {
    cddp::MetricsWriter w(dir.path(), true, true);  // a fresh run starts over
    w.log_step({{"step", 1}});
  }
  EXPECT_EQ(lines_of(dir / "metrics.jsonl"), (std::vector<std::string>{R"({"step":1})"}));
  EXPECT_TRUE(lines_of(dir / "summary.csv").empty());
}

TEST(MetricsWriter, AppendStartsAfterATornLine) {
  cddp_test::ScratchDir dir("metrics");
  cddp_test::write_bytes(dir / "metrics.jsonl", {'{', '"', 's'});
  {
    cddp::MetricsWriter w(dir.path(), true, false, true);
    w.log_step({{"step", 9}});
  }
  EXPECT_EQ(lines_of(dir / "metrics.jsonl"), (std::vector<std::string>{R"({"s)", R"({"step":9})"}));
}
