// lr_schedule_test.cpp — LrSchedule against the formulas of lr_schedule.h, computed here
// independently: warm-up, constant, step decay, cosine annealing and its end points. It
// will not run training; trainer_accuracy_test covers the schedules end to end.
#include "run/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

using cddp::train::LrSchedule;
using cddp::train::OptimizerConfig;

namespace {

OptimizerConfig config(const char* schedule, double lr = 0.1) {
  OptimizerConfig o;
  o.schedule = schedule;
  o.lr = lr;
  return o;
}

}  // namespace

TEST(LrSchedule, ConstantIsTheConfiguredRateAtEveryStep) {
  const LrSchedule s(config("constant", 0.05), 100);
  for (int64_t step : {0, 1, 50, 99, 1000}) EXPECT_EQ(s.at(step), 0.05) << step;
}

TEST(LrSchedule, WarmupRisesLinearlyToTheRateThenHandsOver) {
  OptimizerConfig o = config("constant", 0.2);
  o.warmup_steps = 4;
  const LrSchedule s(o, 100);
  EXPECT_DOUBLE_EQ(s.at(0), 0.05);
  EXPECT_DOUBLE_EQ(s.at(1), 0.10);
  EXPECT_DOUBLE_EQ(s.at(2), 0.15);
  EXPECT_DOUBLE_EQ(s.at(3), 0.20);
  EXPECT_EQ(s.at(4), 0.2);
  EXPECT_EQ(s.at(50), 0.2);
}

TEST(LrSchedule, StepDecaysByGammaEveryStepSizeSteps) {
  OptimizerConfig o = config("step", 1.0);
  o.step_size = 10;
  o.gamma = 0.5;
  const LrSchedule s(o, 100);
  EXPECT_EQ(s.at(0), 1.0);
  EXPECT_EQ(s.at(9), 1.0);
  EXPECT_EQ(s.at(10), 0.5);
  EXPECT_EQ(s.at(19), 0.5);
  EXPECT_EQ(s.at(20), 0.25);
  EXPECT_EQ(s.at(35), 0.125);
}

TEST(LrSchedule, CosineFallsFromTheRateToMinLrOverThePostWarmupSteps) {
  OptimizerConfig o = config("cosine", 0.4);
  o.min_lr = 0.0;
  o.warmup_steps = 10;
  const LrSchedule s(o, 110);  // 100 post-warm-up steps
  EXPECT_DOUBLE_EQ(s.at(9), 0.4);  // last warm-up step: (9+1)/10 of the rate
  EXPECT_DOUBLE_EQ(s.at(10), 0.4);
  EXPECT_NEAR(s.at(60), 0.2, 1e-15);  // half-way: (1 + cos(pi/2))/2 = 1/2
  EXPECT_NEAR(s.at(35), 0.4 * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_NEAR(s.at(110), 0.0, 1e-15);
  EXPECT_NEAR(s.at(500), 0.0, 1e-15);  // past the end: clamped at min_lr
}

TEST(LrSchedule, CosineEndsAtMinLrAndIsMonotone) {
  OptimizerConfig o = config("cosine", 1.0);
  o.min_lr = 0.1;
  const LrSchedule s(o, 50);
  EXPECT_EQ(s.at(0), 1.0);
  EXPECT_DOUBLE_EQ(s.at(50), 0.1);
  for (int64_t step = 1; step <= 50; ++step) EXPECT_LT(s.at(step), s.at(step - 1)) << step;
}

TEST(LrSchedule, CosineWithNoStepsAfterWarmupDoesNotDivideByZero) {
  OptimizerConfig o = config("cosine", 1.0);
  o.warmup_steps = 5;
  const LrSchedule s(o, 5);
  EXPECT_TRUE(std::isfinite(s.at(5)));
  EXPECT_DOUBLE_EQ(s.at(5), 1.0);  // p = 0 at the first post-warm-up step
}
