// trainer_checkpoint_test.cpp — cddp-train checkpoints: the file format (round trip, and
// refusal of truncated, corrupt and foreign files), pruning, the choice of what to resume
// from (newest complete set; refusals for another world size, model or compressor), and the
// same refusals end to end through `cddp-train train` (exit code 3, never a silent restart).
#include "checkpoint/checkpoint.h"
#include "train_test_util.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

namespace {

using namespace cddp::train;
using namespace cddp_test;

CheckpointMeta meta_for(int64_t step, int64_t rank, int64_t world) {
  CheckpointMeta m;
  m.step = step;
  m.epoch = 1;
  m.batch_in_epoch = 7;
  m.rank = rank;
  m.world_size = world;
  m.model_fingerprint = "model=mlp hidden=[8] data=synthetic";
  m.compressor_fingerprint = "plugin=topk ratio=0.01";
  m.config_toml = "[run]\nname = \"x\"\n";
  m.input_shape = {1, 28, 28, 10};
  return m;
}

ResumeExpectation expect(int64_t rank, int64_t world) {
  ResumeExpectation e;
  e.rank = rank;
  e.world_size = world;
  e.model_fingerprint = "model=mlp hidden=[8] data=synthetic";
  e.compressor_fingerprint = "plugin=topk ratio=0.01";
  return e;
}

void write_set(const fs::path& dir, int64_t step, int64_t world) {
  for (int64_t r = 0; r < world; ++r)
    write_checkpoint_file(dir / checkpoint_file_name(step, r), meta_for(step, r, world), "payload-" + std::to_string(r));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(CheckpointFile, RoundTripAndNames) {
  const fs::path dir = scratch_dir("ckpt");
  const fs::path f = dir / checkpoint_file_name(123, 1);
  EXPECT_EQ(f.filename(), "ckpt-step000000123-rank1.pt");
  int64_t step, rank;
  ASSERT_TRUE(parse_checkpoint_file_name(f.filename().string(), step, rank));
  EXPECT_EQ(step, 123);
  EXPECT_EQ(rank, 1);
  EXPECT_FALSE(parse_checkpoint_file_name("ckpt-step1-rank0.pt.tmp.99", step, rank));
  CheckpointMeta m = meta_for(123, 1, 2);
  m.bytes_sent = 1234567890123;
  write_checkpoint_file(f, m, std::string("\0binary\xff", 8));
  std::string payload;
  CheckpointMeta back = read_checkpoint_file(f, &payload);
  EXPECT_EQ(payload, std::string("\0binary\xff", 8));
  EXPECT_EQ(back.step, 123);
  EXPECT_EQ(back.batch_in_epoch, 7);
  EXPECT_EQ(back.world_size, 2);
  EXPECT_EQ(back.bytes_sent, 1234567890123);
  EXPECT_EQ(back.config_toml, m.config_toml);
  EXPECT_EQ(back.input_shape, m.input_shape);
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += 1 + 0 * int(e.is_regular_file());
  EXPECT_EQ(files, 1);
  fs::remove_all(dir);
}

TEST(CheckpointFile, TruncatedCorruptAndForeignFilesAreRefused) {
  const fs::path dir = scratch_dir("ckpt-bad");
  const fs::path f = dir / checkpoint_file_name(5, 0);
  write_checkpoint_file(f, meta_for(5, 0, 1), std::string(1000, 'x'));
  const std::string good = read_file(f);

  write_file(f, good.substr(0, good.size() - 100));
  EXPECT_NE(error_of([&] { read_checkpoint_file(f); }).find("truncated checkpoint"), std::string::npos);
  write_file(f, good.substr(0, 20));
  EXPECT_NE(error_of([&] { read_checkpoint_file(f); }).find("truncated checkpoint"), std::string::npos);

  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  write_file(f, flipped);
  EXPECT_NE(error_of([&] { read_checkpoint_file(f); }).find("checksum mismatch"), std::string::npos);

  write_file(f, "PK\x03\x04 this is a zip, not ours");
  EXPECT_NE(error_of([&] { read_checkpoint_file(f); }).find("bad magic number"), std::string::npos);

  std::string newer = good;
  newer[8] = 99;  // format version
  write_file(f, newer);
  EXPECT_NE(error_of([&] { read_checkpoint_file(f); }).find("format version 99"), std::string::npos);
  fs::remove_all(dir);
}

TEST(CheckpointFile, PruneKeepsTheNewestOfThisRank) {
  const fs::path dir = scratch_dir("ckpt-prune");
  for (int s : {10, 20, 30, 40}) write_set(dir, s, 2);
  auto removed = prune_checkpoints(dir, 0, 2);
  EXPECT_EQ(removed.size(), 2u);
  auto sets = list_checkpoints(dir);
  ASSERT_EQ(sets.size(), 4u);  // rank 1's files are not this rank's business
  EXPECT_EQ(sets[0].files.size(), 1u);
  EXPECT_EQ(sets[3].files.size(), 2u);
  EXPECT_TRUE(prune_checkpoints(dir, 1, 0).empty());  // keep = 0: keep all
  fs::remove_all(dir);
}

TEST(Resume, AutoPicksTheNewestCompleteValidSet) {
  const fs::path dir = scratch_dir("resume");
  EXPECT_FALSE(choose_resume("auto", dir, expect(0, 2)).resume);  // nothing there: a fresh start
  write_set(dir, 10, 2);
  write_set(dir, 20, 2);
  // Step 30: rank 1 never wrote its file. Step 40: rank 0's file is corrupt.
  write_checkpoint_file(dir / checkpoint_file_name(30, 0), meta_for(30, 0, 2), "p");
  write_set(dir, 40, 2);
  write_file(dir / checkpoint_file_name(40, 0), "garbage");
  for (int rank : {0, 1}) {
    ResumeChoice c = choose_resume("auto", dir, expect(rank, 2));
    ASSERT_TRUE(c.resume);
    EXPECT_EQ(c.meta.step, 20);
    EXPECT_EQ(c.meta.rank, rank);
    EXPECT_EQ(c.file.filename(), checkpoint_file_name(20, rank));
    ASSERT_EQ(c.notes.size(), 2u);
    EXPECT_NE(c.notes[0].find("skipped step 40"), std::string::npos);
    EXPECT_NE(c.notes[1].find("skipped step 30: step 30 is incomplete: no file for rank 1"), std::string::npos);
  }
  EXPECT_FALSE(choose_resume("never", dir, expect(0, 2)).resume);
  // An explicit file: that step, this rank's file.
  ResumeChoice c = choose_resume((dir / checkpoint_file_name(10, 0)).string(), dir, expect(1, 2));
  EXPECT_EQ(c.meta.step, 10);
  EXPECT_EQ(c.meta.rank, 1);
  // An explicit file of a broken set is refused, not replaced by another.
  EXPECT_NE(error_of([&] { choose_resume((dir / checkpoint_file_name(40, 1)).string(), dir, expect(1, 2)); })
                .find("not a cddp-train checkpoint"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(Resume, RefusesWhenNothingUsableRemains) {
  const fs::path dir = scratch_dir("resume-none");
  write_set(dir, 10, 1);
  const fs::path f = dir / checkpoint_file_name(10, 0);
  const std::string good = read_file(f);
  write_file(f, good.substr(0, good.size() / 2));
  const std::string e = error_of([&] { choose_resume("auto", dir, expect(0, 1)); });
  EXPECT_NE(e.find("none is complete and valid; refusing to start from scratch"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated checkpoint"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(Resume, RefusesAnotherWorldSizeModelOrCompressor) {
  const fs::path dir = scratch_dir("resume-mismatch");
  write_set(dir, 10, 2);
  std::string e = error_of([&] { choose_resume("auto", dir, expect(0, 1)); });
  EXPECT_NE(e.find("world size 2; this run has world size 1"), std::string::npos) << e;
  e = error_of([&] { choose_resume("auto", dir, expect(0, 4)); });
  EXPECT_NE(e.find("world size 2; this run has world size 4"), std::string::npos) << e;
  auto other_model = expect(0, 2);
  other_model.model_fingerprint = "model=simple_cnn data=synthetic";
  e = error_of([&] { choose_resume("auto", dir, other_model); });
  EXPECT_NE(e.find("holds a different model"), std::string::npos) << e;
  auto other_compressor = expect(0, 2);
  other_compressor.compressor_fingerprint = "plugin=randomk ratio=0.01";
  e = error_of([&] { choose_resume("auto", dir, other_compressor); });
  EXPECT_NE(e.find("different compressor"), std::string::npos) << e;
  fs::remove_all(dir);
}

// End to end: a real run's checkpoint, then resumes that must be refused with exit code 3.
TEST(Resume, CliRefusalsExitWith3) {
  const fs::path dir = scratch_dir("resume-cli");
  const std::string base = shell_quote(train_exe()) + " train --config " +
                           shell_quote(std::string(CDDP_TEST_SOURCE_DIR) + "/configs/synthetic_smoke.toml") +
                           " --set run.output_dir=" + shell_quote(dir.string()) +
                           " --set run.max_steps=6 --set checkpoint.resume=auto --set metrics.tensorboard=false";
  auto r = run_command(base);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path ckpt = dir / "checkpoints" / checkpoint_file_name(6, 0);
  ASSERT_TRUE(fs::exists(ckpt)) << r.output;

  r = run_command(base + " --set model.hidden=[32]");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("holds a different model"), std::string::npos) << r.output;

  r = run_command(base + " --set compression.ratio=0.05");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("different compressor"), std::string::npos) << r.output;

  r = run_command(base + " --nproc-per-node 2");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("world size 1; this run has world size 2"), std::string::npos) << r.output;

  const std::string good = read_file(ckpt);
  write_file(ckpt, good.substr(0, good.size() - 4096));
  r = run_command(base);
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("truncated checkpoint"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("refusing to start from scratch"), std::string::npos) << r.output;

  // The intact checkpoint resumes (and with max_steps reached, finishes at once).
  write_file(ckpt, good);
  r = run_command(base + " --set run.max_steps=8");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(dir / "checkpoints" / checkpoint_file_name(8, 0)));
  fs::remove_all(dir);
}

}  // namespace
