// density_schedule_test.cpp — DensitySchedule: dense training never overrides, the DGC
// warm-up's dense phase, its exponential decay reaching the ratio exactly at the last decay
// step, the hand-over to the configured densities, and the wording and level of the log
// lines at the changes. It will not run training.
#include "run/density_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

using cddp::train::CompressionConfig;
using cddp::train::DensitySchedule;

namespace {

CompressionConfig warmup(int64_t dense_steps, int64_t decay_steps, double ratio = 0.01) {
  CompressionConfig c;
  c.plugin = "topk";
  c.ratio = ratio;
  c.warmup_dense_steps = dense_steps;
  c.warmup_decay_steps = decay_steps;
  return c;
}

}  // namespace

TEST(DensitySchedule, DenseTrainingNeverOverrides) {
  CompressionConfig c = warmup(5, 5);
  c.plugin = "none";
  const DensitySchedule s(c);
  for (int64_t step : {0, 4, 5, 9, 10}) EXPECT_EQ(s.at(step), -1) << step;
}

TEST(DensitySchedule, WithoutWarmupTheConfiguredDensitiesApplyFromTheStart) {
  const DensitySchedule s(warmup(0, 0));
  EXPECT_EQ(s.at(0), -1);
  EXPECT_EQ(s.at(100), -1);
}

TEST(DensitySchedule, DenseThenExponentialDecayToTheRatioThenConfigured) {
  const DensitySchedule s(warmup(3, 4, 0.01));
  for (int64_t step = 0; step < 3; ++step) EXPECT_EQ(s.at(step), 1.0) << step;
  // ratio^((s - D + 1)/M): 0.01^(1/4), 0.01^(2/4), 0.01^(3/4), 0.01.
  EXPECT_NEAR(s.at(3), std::pow(0.01, 0.25), 1e-15);
  EXPECT_NEAR(s.at(4), 0.1, 1e-15);
  EXPECT_NEAR(s.at(5), std::pow(0.01, 0.75), 1e-15);
  EXPECT_NEAR(s.at(6), 0.01, 1e-15);
  for (int64_t step = 3; step < 7; ++step) EXPECT_LT(s.at(step), step == 3 ? 1.0 : s.at(step - 1)) << step;
  EXPECT_EQ(s.at(7), -1);
}

TEST(DensitySchedule, ChangesAreWordedAndPhaseStartsMarked) {
  const DensitySchedule s(warmup(2, 2, 0.01));
  auto first = s.describe_change(0, -2, 1.0);
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->phase);
  EXPECT_EQ(first->text, "density warm-up: step 1 uses density 1");
  auto decay = s.describe_change(2, 1.0, 0.1);
  ASSERT_TRUE(decay);
  EXPECT_TRUE(decay->phase);
  EXPECT_EQ(decay->text, "density warm-up: step 3 uses density 0.1, decaying to 0.01 by step 4");
  auto inside = s.describe_change(3, 0.1, 0.01);
  ASSERT_TRUE(inside);
  EXPECT_FALSE(inside->phase);  // within the decay: a debug line
  EXPECT_EQ(inside->text, "density warm-up: step 4 uses density 0.01");
  auto done = s.describe_change(4, 0.01, -1);
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->phase);
  EXPECT_EQ(done->text, "density warm-up: step 5 uses the configured density");
}

TEST(DensitySchedule, NoLineWhenNoWarmupDensityIsInvolved) {
  const DensitySchedule s(warmup(0, 0));
  EXPECT_FALSE(s.describe_change(0, -2, -1));
}
