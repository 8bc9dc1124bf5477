// payload_exchange_test.cpp — PayloadExchange over W in-process ranks with the built sign
// (gather), cast (sum) and rounds_mean (rounds) plugins: every rank ends bitwise identical
// with the aggregate the plugin computes from all ranks' payloads, byte counts follow the
// model, undeclared sizes are exchanged, and a payload that breaks its declared size is a
// clear error naming the plugin and the parameter.
#include <cddp/local_communicator.h>
#include <cddp/payload_exchange.h>
#include <cddp/plugin_abi.h>

#include "test_plugins.h"
#include "thread_communicator.h"
#include "bitwise_equal.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>

namespace {

using cddp::testing::build_tree_loader;
using cddp::testing::error_of;
using cddp::testing::on_ranks;

using cddp::testing::bitwise_equal;

at::Tensor grad_of(int rank, int64_t n) { return at::randn({n}, at::TensorOptions(at::kFloat)).add_(0.1 * rank); }

cddp::CompressContext ctx_for(int world) {
  cddp::CompressContext c;
  c.world_size = world;
  c.param_name = "w";
  return c;
}

TEST(PayloadExchange, GatherCombinesEveryRanksPayloadBitwiseOnEveryRank) {
  auto loader = build_tree_loader();
  for (const char* variant : {"signsgd", "scaled", "onebit"})
    for (int W : {1, 2, 3}) {
      auto sign = loader.create("sign", {{"variant", std::string(variant)}});
      const int64_t n = 1001;  // not a multiple of 8
      std::vector<at::Tensor> grads;
      at::manual_seed(7);
      for (int r = 0; r < W; ++r) grads.push_back(grad_of(r, n));
      std::vector<at::Tensor> out(W);
      std::vector<cddp::StepStats> stats(W);
      on_ranks(W, [&](cddp::Communicator& comm, int r) {
        cddp::PluginState none;
        cddp::Payload p = sign->encode(grads[r], none, ctx_for(W));
        at::Tensor avg = at::empty({n});
        std::vector<cddp::PayloadSlot> slots{{&p, sign.get(), &avg, "w", sign->wire_bytes({n}, at::kFloat, -1)}};
        cddp::PayloadExchange(comm).gather(slots, stats[r]);
        out[r] = avg;
      });
      // What the plugin combines from all payloads, in one process.
      std::vector<cddp::Payload> all;
      cddp::PluginState none;
      for (int r = 0; r < W; ++r) all.push_back(sign->encode(grads[r], none, ctx_for(W)));
      at::Tensor expect = at::empty({n});
      sign->combine(all, expect);
      for (int r = 0; r < W; ++r) EXPECT_TRUE(bitwise_equal(out[r], expect)) << variant << " W=" << W << " rank " << r;
      const int64_t padded = ((n + 7) / 8 + 7) / 8 * 8 + (std::string(variant) == "signsgd" ? 0 : 8);
      EXPECT_EQ(stats[0].bytes_sent, padded) << variant;
      EXPECT_EQ(stats[0].bytes_received, (W - 1) * padded) << variant;
    }
}

TEST(PayloadExchange, UndeclaredSizesAreExchangedFirst) {
  auto loader = build_tree_loader();
  auto sign = loader.create("sign");
  const int W = 2;
  std::vector<int64_t> n = {40, 41};  // two slots: one declares, one does not
  std::vector<std::vector<at::Tensor>> out(W);
  std::vector<cddp::StepStats> stats(W);
  on_ranks(W, [&](cddp::Communicator& comm, int r) {
    cddp::PluginState none;
    at::manual_seed(r);
    cddp::Payload a = sign->encode(at::randn({n[0]}), none, ctx_for(W)), b = sign->encode(at::randn({n[1]}), none, ctx_for(W));
    at::Tensor x = at::empty({n[0]}), y = at::empty({n[1]});
    std::vector<cddp::PayloadSlot> slots{{&a, sign.get(), &x, "a", a.wire_bytes()}, {&b, sign.get(), &y, "b", -1}};
    cddp::PayloadExchange(comm).gather(slots, stats[r]);
    out[r] = {x, y};
  });
  EXPECT_TRUE(bitwise_equal(out[0][0], out[1][0]) && bitwise_equal(out[0][1], out[1][1]));
  EXPECT_EQ(stats[0].payload_bytes, (5 + 4) + (6 + 4) + 4 * 8) << "two payloads plus four int64 part sizes";
}

TEST(PayloadExchange, APayloadThatBreaksItsDeclaredSizeNamesPluginAndParameter) {
  auto loader = build_tree_loader();
  auto sign = loader.create("sign");
  cddp::LocalCommunicator local;
  cddp::PluginState none;
  cddp::Payload p = sign->encode(at::randn({64}), none, ctx_for(1));
  at::Tensor avg = at::empty({64});
  std::vector<cddp::PayloadSlot> slots{{&p, sign.get(), &avg, "fc1.weight", 3}};
  cddp::StepStats st;
  const std::string msg = error_of([&] { cddp::PayloadExchange(local).gather(slots, st); });
  EXPECT_NE(msg.find("compressor 'sign': the payload for parameter 'fc1.weight' is 12 bytes but the plugin "
                     "declared 3"),
            std::string::npos)
      << msg;
}

TEST(PayloadExchange, SumDecodesTheSumOnceBitwiseOnEveryRank) {
  auto loader = build_tree_loader();
  auto cast = loader.create("cast");
  const int W = 3;
  const int64_t n = 513;
  at::manual_seed(3);
  std::vector<at::Tensor> grads;
  for (int r = 0; r < W; ++r) grads.push_back(grad_of(r, n));
  std::vector<at::Tensor> out(W);
  std::vector<cddp::StepStats> stats(W);
  on_ranks(W, [&](cddp::Communicator& comm, int r) {
    cddp::PluginState none;
    cddp::Payload p = cast->encode(grads[r], none, ctx_for(W));
    at::Tensor avg = at::empty({n});
    std::vector<cddp::PayloadSlot> slots{{&p, cast.get(), &avg, "w", 2 * n}};
    cddp::PayloadExchange(comm).sum(slots, stats[r]);
    out[r] = avg;
  });
  // The collective sums fp16 values in rank order: the same as summing the casts here.
  at::Tensor sum = grads[0].div(W).to(at::kHalf);
  for (int r = 1; r < W; ++r) sum = sum + grads[r].div(W).to(at::kHalf);
  const at::Tensor expect = sum.to(at::kFloat);
  for (int r = 0; r < W; ++r) EXPECT_TRUE(bitwise_equal(out[r], expect)) << "rank " << r;
  EXPECT_TRUE(at::allclose(out[0], (grads[0] + grads[1] + grads[2]) / W, 1e-2, 1e-2));
  EXPECT_EQ(stats[0].bytes_sent, 2 * (W - 1) * (2 * n) / W);
}

TEST(PayloadExchange, RoundsRunThroughTheCountingCollective) {
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_ROUNDS_PLUGIN_DIR}, nullptr));
  auto plugin = loader.create("rounds_mean");
  EXPECT_EQ(plugin->caps().kind, cddp::PayloadKind::Rounds);
  const int W = 2;
  const int64_t n = 10;
  std::vector<at::Tensor> avg(W), approx(W), calls(W);
  std::vector<cddp::StepStats> stats(W);
  on_ranks(W, [&](cddp::Communicator& comm, int r) {
    at::Tensor acc = at::full({n}, float(r + 1));
    cddp::PluginState state;
    for (const auto& s : plugin->state_specs({n}, at::kFloat)) state[s.name] = at::zeros(s.shape, s.dtype);
    avg[r] = at::empty({n});
    approx[r] = at::empty({n});
    cddp::CountingRoundCollective coll(comm, stats[r]);
    plugin->run_rounds(acc, state, coll, ctx_for(W), avg[r], approx[r]);
    calls[r] = state.at("calls");
  });
  for (int r = 0; r < W; ++r) {
    EXPECT_TRUE(avg[r].equal(at::full({n}, 1.5f)));
    EXPECT_TRUE(approx[r].equal(at::full({n}, float(r + 1))));
    EXPECT_EQ(calls[r].item<float>(), 1.0f) << "the host-held state was handed in and updated";
    EXPECT_EQ(stats[r].payload_bytes, 4 + 4 * n);
    EXPECT_EQ(stats[r].bytes_sent, (2 * (W - 1) * 4) / W + (2 * (W - 1) * 4 * n) / W);
  }
}

TEST(PayloadExchange, ARoundsPluginSeesAHostErrorAndTheHostGetsItBack) {
  // A dead peer in the middle of the rounds: the host's collective throws inside the plugin's
  // call, the plugin's trampoline turns it into a status, the host re-throws it by name.
  class Failing final : public cddp::RoundCollective {
   public:
    int world_size() const override { return 2; }
    void allreduce_sum_(at::Tensor&) override { TORCH_CHECK(false, "rank 1 did not respond within 5 s"); }
  } failing;
  cddp::PluginLoader loader(cddp::PluginSearchPath::standard({CDDP_TEST_ROUNDS_PLUGIN_DIR}, nullptr));
  auto plugin = loader.create("rounds_mean");
  cddp::PluginState state{{"calls", at::zeros({1})}};
  at::Tensor acc = at::ones({4}), avg = at::empty({4}), approx = at::empty({4});
  const std::string msg = error_of([&] { plugin->run_rounds(acc, state, failing, ctx_for(2), avg, approx); });
  EXPECT_NE(msg.find("rank 1 did not respond within 5 s"), std::string::npos) << msg;
}

}  // namespace
