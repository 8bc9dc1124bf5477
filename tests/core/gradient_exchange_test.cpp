// gradient_exchange_test.cpp — GradientExchange over W in-process "ranks" (threads sharing an
// in-memory communicator): averages, bitwise agreement between ranks, selections of
// different sizes (padding), empty selections, shared-index and dense paths, byte counts.
#include <cddp/gradient_exchange.h>
#include <cddp/local_communicator.h>

#include "test_plugins.h"
#include "thread_communicator.h"
#include "bitwise_equal.h"
#include "hand_selections.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <thread>

namespace {

using cddp::testing::bitwise_equal;
using cddp::testing::on_ranks;
using cddp::testing::PlainCodec;
using cddp::testing::selection;
using cddp::testing::ThreadCommunicator;
using cddp::testing::ThreadWorld;

TEST(GradientExchange, SparseAverageWithUnequalAndEmptySelections) {
  const int W = 3;
  PlainCodec codec;
  // rank r selects r+... entries of tensor A; rank 1 selects nothing of tensor B.
  std::vector<std::vector<cddp::Compressed>> sel = {
      {selection({0, 5}, {3.f, 6.f}, 8), selection({1}, {9.f}, 4)},
      {selection({5}, {3.f}, 8), selection({}, {}, 4)},
      {selection({0, 2, 7}, {3.f, 1.5f, 3.f}, 8), selection({1, 3}, {3.f, 3.f}, 4)}};
  std::vector<std::vector<at::Tensor>> out(W);
  std::vector<cddp::StepStats> stats(W);
  on_ranks(W, [&](cddp::Communicator& comm, int r) {
    cddp::GradientExchange ex(comm);
    out[r] = {at::empty({8}), at::empty({4})};
    std::vector<cddp::SparseSlot> slots = {{&sel[r][0], &codec, &out[r][0]}, {&sel[r][1], &codec, &out[r][1]}};
    ex.average_sparse(slots, stats[r]);
  });
  EXPECT_TRUE(at::allclose(out[0][0], at::tensor({2.f, 0.f, 0.5f, 0.f, 0.f, 3.f, 0.f, 1.f})));
  EXPECT_TRUE(at::allclose(out[0][1], at::tensor({0.f, 4.f, 0.f, 1.f})));
  for (int r = 1; r < W; ++r) {
    EXPECT_TRUE(at::equal(out[r][0], out[0][0])) << "rank " << r << " differs bitwise";
    EXPECT_TRUE(at::equal(out[r][1], out[0][1])) << "rank " << r << " differs bitwise";
  }
  // Every rank hands the collective the padded size of the largest selection.
  EXPECT_EQ(stats[0].bytes_sent, stats[1].bytes_sent);
  EXPECT_EQ(stats[0].bytes_received, (W - 1) * stats[0].bytes_sent);
}

TEST(GradientExchange, SharedIndicesAllreduceValuesOnly) {
  const int W = 2;
  PlainCodec codec;
  std::vector<cddp::Compressed> sel = {selection({1, 2}, {2.f, 4.f}, 4), selection({1, 2}, {6.f, 0.f}, 4)};
  std::vector<at::Tensor> out(W), untouched = {at::full({4}, 7.f), at::full({4}, 7.f)};
  std::vector<cddp::SparseAverage> lists(W);
  std::vector<cddp::StepStats> stats(W);
  on_ranks(W, [&](cddp::Communicator& comm, int r) {
    cddp::GradientExchange ex(comm);
    out[r] = at::empty({4});
    std::vector<cddp::SparseSlot> slots = {{&sel[r], &codec, &out[r]}};
    ex.average_shared(slots, stats[r]);
    cddp::SparseSlot slot{&sel[r], &codec, &untouched[r]};  // the same, as a coalesced list
    slot.coalesced = &lists[r];
    std::vector<cddp::SparseSlot> to_list = {slot};
    cddp::StepStats st;
    ex.average_shared(to_list, st);
  });
  EXPECT_TRUE(at::equal(out[0], at::tensor({0.f, 4.f, 2.f, 0.f})));
  EXPECT_TRUE(at::equal(out[1], out[0]));
  EXPECT_EQ(stats[0].payload_bytes, 2 * 4);  // values only
  for (int r = 0; r < W; ++r) {
    ASSERT_TRUE(lists[r].valid);
    EXPECT_TRUE(at::equal(lists[r].indices.to(at::kLong), at::tensor({1L, 2L})));
    EXPECT_TRUE(bitwise_equal(lists[r].values, at::tensor({4.f, 2.f})));
    EXPECT_TRUE(at::equal(untouched[r], at::full({4}, 7.f))) << "the dense output was written";
  }
}

TEST(GradientExchange, DenseAverageIsCoalescedAndExact) {
  const int W = 2;
  std::vector<std::vector<at::Tensor>> t = {{at::tensor({1.f, 2.f}), at::tensor({10.f})},
                                            {at::tensor({3.f, 4.f}), at::tensor({20.f})}};
  on_ranks(W, [&](cddp::Communicator& comm, int r) {
    cddp::GradientExchange ex(comm);
    cddp::StepStats st;
    ex.average_dense(t[r], st);
  });
  for (int r = 0; r < W; ++r) {
    EXPECT_TRUE(at::equal(t[r][0], at::tensor({2.f, 3.f})));
    EXPECT_TRUE(at::equal(t[r][1], at::tensor({15.f})));
  }
}

TEST(GradientExchange, WorldSizeOneIsTheIdentity) {
  cddp::LocalCommunicator local;
  cddp::GradientExchange ex(local);
  PlainCodec codec;
  cddp::Compressed c = selection({2}, {-1.f}, 3);
  at::Tensor avg = at::empty({3});
  std::vector<cddp::SparseSlot> slots = {{&c, &codec, &avg}};
  cddp::StepStats st;
  ex.average_sparse(slots, st);
  EXPECT_TRUE(at::equal(avg, at::tensor({0.f, 0.f, -1.f})));
  EXPECT_EQ(st.bytes_sent, 8);
  EXPECT_EQ(st.bytes_received, 0);
  EXPECT_TRUE(ex.any_rank(true));
  EXPECT_FALSE(ex.any_rank(false));
}


// One rank's selection for one step of the reuse test. `kind`: "few" (4 sorted entries: the
// merge path), "sorted" (40 sorted entries: with the previous step's entries, dense enough for
// the sweep), "unsorted" (the scatter path), "empty", "dense" (a quarter of the tensor: a sweep).
cddp::Compressed step_selection(const std::string& kind, int rank, int step, int64_t numel) {
  std::mt19937 gen(1000 * step + rank);
  std::vector<int64_t> idx;
  if (kind == "empty") return selection({}, {}, numel);
  const int64_t k = kind == "dense" ? numel / 4 : kind == "few" ? 4 : 40;
  // Step parity picks the half of the tensor: consecutive steps select disjoint entries.
  std::uniform_int_distribution<int32_t> pick(0, int32_t(numel / 2 - 1));
  std::vector<bool> used(numel, false);
  while (int64_t(idx.size()) < k) {
    int32_t x = pick(gen) + (step % 2 ? int32_t(numel / 2) : 0);
    if (!used[x]) used[x] = true, idx.push_back(x);
  }
  if (kind != "unsorted") std::sort(idx.begin(), idx.end());
  std::normal_distribution<float> value;
  std::vector<float> vals;
  for (size_t j = 0; j < idx.size(); ++j) vals.push_back(j % 7 == 3 ? -0.f : value(gen));  // -0 too
  return selection(idx, vals, numel);
}

// Several steps through the kept-zero path (one output + SparseOutputState per rank, reused)
// against the full-clear path (a garbage-filled fresh output, no state), bitwise, on every rank:
// the selection moving to disjoint entries, empty selections, unsorted lists, the three decode
// loops (merge, sweep, scatter) following each other in every order, and an in-place write by
// the caller between steps (caught by the version).
TEST(GradientExchange, KeptZeroOutputMatchesFullClearBitwiseOverSteps) {
  const int W = 2;
  const int64_t N = 4096;
  const std::vector<std::string> kinds = {"few",   "few",    "sorted",  "sorted", "empty",  "few",
                                          "unsorted", "sorted", "dense", "few",   "unsorted", "dense",
                                          "inplace", "sorted", "few",   "empty",  "empty"};
  PlainCodec codec;
  std::vector<std::vector<at::Tensor>> kept(W), full(W);
  std::vector<std::vector<int>> valid(W), whole(W);  // state.valid(), state.whole() after each step
  on_ranks(W, [&](cddp::Communicator& comm, int r) {
    cddp::GradientExchange ex(comm);
    at::Tensor out = at::full({N}, std::numeric_limits<float>::quiet_NaN());
    cddp::SparseOutputState state;
    for (int step = 0; step < int(kinds.size()); ++step) {
      std::string kind = kinds[step];
      if (kind == "inplace") {  // the caller breaks the contract with an ATen op: detected
        out.add_(1.f);
        kind = "sorted";
      }
      // Rank 1 sends nothing in step 5: one empty part among non-empty ones.
      cddp::Compressed sel = step_selection(step == 5 && r == 1 ? "empty" : kind, r, step, N);
      cddp::StepStats st;
      std::vector<cddp::SparseSlot> a = {{&sel, &codec, &out, &state}};
      ex.average_sparse(a, st);
      kept[r].push_back(out.clone());
      valid[r].push_back(state.valid());
      whole[r].push_back(state.whole());
      at::Tensor fresh = at::full({N}, std::numeric_limits<float>::quiet_NaN());
      std::vector<cddp::SparseSlot> b = {{&sel, &codec, &fresh}};
      ex.average_sparse(b, st);
      full[r].push_back(fresh);
    }
  });
  for (int r = 0; r < W; ++r)
    for (size_t s = 0; s < kinds.size(); ++s) {
      EXPECT_TRUE(bitwise_equal(kept[r][s], full[r][s])) << "rank " << r << " step " << s << " (" << kinds[s] << ")";
      EXPECT_TRUE(bitwise_equal(kept[r][s], kept[0][s])) << "rank " << r << " differs from rank 0 at step " << s;
      // Kept after every step. The sweep ran (and wrote every entry) where the selection, with
      // what the step before left, covers 1/48 of the tensor or more: "dense" always, "sorted"
      // after a step that wrote entries; never for "few" after "few".
      EXPECT_TRUE(valid[r][s]) << "rank " << r << " step " << s;
      if (kinds[s] == "dense") EXPECT_TRUE(whole[r][s]) << "rank " << r << " step " << s;
      if (kinds[s] == "few" && s > 0 && kinds[s - 1] == "few") EXPECT_FALSE(whole[r][s]) << "step " << s;
      if (kinds[s] == "sorted" && s > 0 && kinds[s - 1] == "sorted") EXPECT_TRUE(whole[r][s]) << "step " << s;
    }
  // Empty selections everywhere leave all +0 (not -0, not the NaN it started with).
  EXPECT_TRUE(bitwise_equal(kept[0].back(), at::zeros({N})));
  // The selection did move: consecutive sorted steps wrote disjoint entries.
  EXPECT_GT((kept[0][0] != 0).sum().item<int64_t>(), 0);
  EXPECT_EQ(((kept[0][0] != 0) & (kept[0][1] != 0)).sum().item<int64_t>(), 0);
}

// World size 1 keeps the output zero the same way, through the codec's own decode.
TEST(GradientExchange, KeptZeroOutputAtWorldSizeOne) {
  cddp::LocalCommunicator local;
  cddp::GradientExchange ex(local);
  PlainCodec codec;
  const int64_t N = 4096;
  at::Tensor out = at::full({N}, 7.f);
  cddp::SparseOutputState state;
  for (int step = 0; step < 6; ++step) {
    cddp::Compressed sel = step_selection(step == 3 ? "empty" : step == 4 ? "unsorted" : "sorted", 0, step, N);
    cddp::StepStats st;
    std::vector<cddp::SparseSlot> a = {{&sel, &codec, &out, &state}};
    ex.average_sparse(a, st);
    EXPECT_TRUE(state.valid());
    EXPECT_TRUE(bitwise_equal(out, codec.decompress(sel).view({N}))) << "step " << step;
  }
  state.reset();  // after a reset the next call clears fully
  out.fill_(3.f);
  cddp::Compressed sel = step_selection("sorted", 0, 9, N);
  cddp::StepStats st;
  std::vector<cddp::SparseSlot> a = {{&sel, &codec, &out, &state}};
  ex.average_sparse(a, st);
  EXPECT_TRUE(bitwise_equal(out, codec.decompress(sel).view({N})));
}

TEST(GradientExchange, KnownCountsSkipTheCountsExchangeWithTheSameResult) {
  const int W = 2;
  PlainCodec codec;
  std::vector<cddp::Compressed> sel = {selection({1, 6}, {2.f, 4.f}, 8), selection({0, 6}, {6.f, 2.f}, 8)};
  auto run = [&](bool known) {
    std::vector<at::Tensor> out(W);
    std::vector<cddp::StepStats> stats(W);
    on_ranks(W, [&](cddp::Communicator& comm, int r) {
      cddp::GradientExchange ex(comm);
      out[r] = at::empty({8});
      cddp::SparseSlot slot{&sel[r], &codec, &out[r]};
      if (known) slot.expected_count = 2;
      std::vector<cddp::SparseSlot> slots = {slot};
      ex.average_sparse(slots, stats[r]);
    });
    EXPECT_TRUE(at::equal(out[0], out[1]));
    return std::make_pair(out[0], stats[0]);
  };
  auto [gathered, with_counts] = run(false);
  auto [known, without_counts] = run(true);
  EXPECT_TRUE(at::equal(gathered, known));
  EXPECT_TRUE(at::equal(known, at::tensor({3.f, 1.f, 0.f, 0.f, 0.f, 0.f, 3.f, 0.f})));
  EXPECT_EQ(with_counts.bytes_sent - without_counts.bytes_sent, 8);  // one int64 count less
}

TEST(GradientExchange, AKnownCountThatIsWrongFailsBeforeAnyCollective) {
  ThreadWorld world(2);  // the other rank never arrives: a collective here would hang
  ThreadCommunicator comm(world, 0);
  cddp::GradientExchange ex(comm);
  PlainCodec codec;
  cddp::Compressed c = selection({1, 2, 3}, {1.f, 1.f, 1.f}, 8);
  at::Tensor out = at::empty({8});
  cddp::SparseSlot slot{&c, &codec, &out};
  slot.expected_count = 2;
  std::vector<cddp::SparseSlot> slots = {slot};
  cddp::StepStats st;
  std::string msg = cddp::testing::error_of([&] { ex.average_sparse(slots, st); });
  EXPECT_NE(msg.find("selected 3 entries but every rank expects 2"), std::string::npos) << msg;
}


// Rank r's selection of k entries of a numel-entry tensor, for the coalesced and Block16 tests:
// `kind` "sorted" (random, sorted; some indices shared between ranks), "unsorted" (the same list
// shuffled, plus a repeat of its first entry, added twice in list order), "one" (one entry near
// the end: the last block), "empty". Values include −0.
cddp::Compressed random_selection(const std::string& kind, int rank, int64_t numel, int64_t k) {
  if (kind == "empty") return selection({}, {}, numel);
  if (kind == "one") return selection({int32_t(numel - 1 - rank)}, {rank % 2 ? -0.f : 1.25f}, numel);
  std::mt19937 gen(77 + rank);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(numel - 1));
  std::vector<bool> used(numel, false);
  std::vector<int64_t> idx;
  const int64_t stride = numel / (2 * k);  // every rank tries j·stride at times: shared indices
  while (int64_t(idx.size()) < k) {
    int32_t x = pick(gen);
    const int64_t shared = int64_t(idx.size()) * stride;
    if (idx.size() % 5 == 0 && !used[shared]) x = int32_t(shared);
    if (!used[x]) used[x] = true, idx.push_back(x);
  }
  std::sort(idx.begin(), idx.end());
  if (kind == "unsorted") {
    std::shuffle(idx.begin(), idx.end(), gen);
    idx.push_back(idx.front());
  }
  std::normal_distribution<float> value;
  std::vector<float> vals;
  for (size_t j = 0; j < idx.size(); ++j) vals.push_back(j % 11 == 4 ? -0.f : value(gen));
  return selection(idx, vals, numel);
}

// SparseSlot::coalesced: the list holds, at each index any rank sent, exactly the bits the dense
// decode writes there, and the dense decode is +0 everywhere else; indices strictly increasing;
// every rank's list the same bits; the slot's dense output untouched. Through each merge: two
// ranks (the two-half merge, also with one list empty or of one entry), three and four ranks (the
// general merge), unsorted lists with a repeat (the sort), and world size 1.
TEST(GradientExchange, CoalescedAverageEqualsDenseDecodeBitwise) {
  const int64_t N = 5000;
  struct Case {
    int world;
    std::vector<std::string> kinds;  // per rank
  };
  const std::vector<Case> cases = {{2, {"sorted", "sorted"}},     {2, {"sorted", "empty"}},
                                   {2, {"empty", "sorted"}},      {2, {"one", "sorted"}},
                                   {2, {"empty", "empty"}},       {3, {"sorted", "one", "sorted"}},
                                   {4, {"sorted", "sorted", "empty", "sorted"}},
                                   {2, {"unsorted", "sorted"}},   {3, {"sorted", "unsorted", "unsorted"}},
                                   {1, {"sorted"}},               {1, {"unsorted"}}};
  PlainCodec codec;
  for (const Case& c : cases) {
    std::string label = "W=" + std::to_string(c.world);
    for (const auto& k : c.kinds) label += " " + k;
    std::vector<cddp::SparseAverage> lists(c.world);
    std::vector<at::Tensor> dense(c.world), untouched(c.world);
    auto body = [&](cddp::Communicator& comm, int r) {
      cddp::GradientExchange ex(comm);
      cddp::Compressed sel = random_selection(c.kinds[r], r, N, 300);
      dense[r] = at::full({N}, std::numeric_limits<float>::quiet_NaN());
      std::vector<cddp::SparseSlot> to_dense = {{&sel, &codec, &dense[r]}};
      cddp::StepStats st;
      ex.average_sparse(to_dense, st);
      untouched[r] = at::full({N}, 7.f);
      for (int call = 0; call < 2; ++call) {  // the second call reuses the list's tensors
        cddp::SparseSlot slot{&sel, &codec, &untouched[r]};
        slot.coalesced = &lists[r];
        std::vector<cddp::SparseSlot> to_list = {slot};
        ex.average_sparse(to_list, st);
      }
    };
    if (c.world == 1) {
      cddp::LocalCommunicator local;
      body(local, 0);
    } else {
      on_ranks(c.world, body);
    }
    for (int r = 0; r < c.world; ++r) {
      const cddp::SparseAverage& l = lists[r];
      ASSERT_TRUE(l.valid) << label;
      EXPECT_EQ(l.numel, N) << label;
      EXPECT_TRUE(at::equal(untouched[r], at::full({N}, 7.f))) << label << ": the dense output was written";
      at::Tensor idx = l.indices.to(at::kLong);
      for (int64_t j = 1; j < idx.numel(); ++j)
        ASSERT_LT(idx[j - 1].item<int64_t>(), idx[j].item<int64_t>()) << label << " rank " << r;
      at::Tensor rebuilt = at::zeros({N});
      if (l.count() > 0) rebuilt.index_put_({idx}, l.values);
      EXPECT_TRUE(bitwise_equal(rebuilt, dense[r])) << label << " rank " << r;
      EXPECT_TRUE(bitwise_equal(l.indices, lists[0].indices) && bitwise_equal(l.values, lists[0].values))
          << label << ": rank " << r << " differs from rank 0";
    }
    int64_t sent = 0;
    for (int r = 0; r < c.world; ++r) sent += random_selection(c.kinds[r], r, N, 300).count();
    EXPECT_LE(lists[0].count(), sent) << label;
    if (c.kinds == std::vector<std::string>{"sorted", "sorted"})
      EXPECT_LT(lists[0].count(), sent) << "the two ranks were meant to share some indices";
  }
}

// The exchange keeps each request's output under its key (AverageOf): step after step the same
// buffer, kept zero on the sparse route, bitwise what a fresh, fully cleared output gives; a
// coalescing request gets its list and no dense tensor; the shared route rewrites all of it.
TEST(GradientExchange, KeptOutputsPerKeyEqualFreshOutputsBitwise) {
  const int W = 2;
  const int64_t N = 4096;
  const std::vector<std::string> kinds = {"few", "few", "sorted", "sorted", "empty", "unsorted", "dense", "few"};
  PlainCodec codec;
  std::vector<int> failures(W, 0);
  on_ranks(W, [&](cddp::Communicator& comm, int r) {
    cddp::GradientExchange ex(comm), reference(comm);
    const void* buffer = nullptr;
    for (int step = 0; step < int(kinds.size()); ++step) {
      cddp::Compressed a = step_selection(kinds[step], r, step, N), b = step_selection("sorted", r, step + 50, N);
      cddp::StepStats st;
      std::vector<cddp::SparseRequest> requests(2);
      requests[0].key = "a";
      requests[0].local = &a;
      requests[0].codec = &codec;
      requests[1].key = "b";
      requests[1].local = &b;
      requests[1].codec = &codec;
      requests[1].coalesce = true;
      std::vector<const cddp::AverageOf*> out = ex.average_sparse(requests, st);
      at::Tensor fresh_a = at::full({N}, std::numeric_limits<float>::quiet_NaN());
      at::Tensor fresh_b = at::full({N}, std::numeric_limits<float>::quiet_NaN());
      std::vector<cddp::SparseSlot> slots = {{&a, &codec, &fresh_a}, {&b, &codec, &fresh_b}};
      reference.average_sparse(slots, st);
      failures[r] += out.size() != 2 || out[0]->is_coalesced() || !out[1]->is_coalesced();
      failures[r] += !bitwise_equal(out[0]->dense(), fresh_a);
      at::Tensor rebuilt = at::zeros({N});
      if (out[1]->list().count() > 0) rebuilt.index_put_({out[1]->list().indices.to(at::kLong)}, out[1]->list().values);
      failures[r] += !bitwise_equal(rebuilt, fresh_b) || out[1]->dense().defined();
      if (step == 0) buffer = out[0]->dense().data_ptr();
      failures[r] += out[0]->dense().data_ptr() != buffer;  // reused, not reallocated
    }
    // The same key through the shared route: the whole output is rewritten.
    cddp::Compressed c = step_selection("sorted", 0, 3, N);  // the same indices on every rank
    cddp::StepStats st;
    std::vector<cddp::SparseRequest> shared(1);
    shared[0].key = "a";
    shared[0].local = &c;
    shared[0].codec = &codec;
    const cddp::AverageOf* kept = ex.average_shared(shared, st).front();
    at::Tensor fresh = at::full({N}, std::numeric_limits<float>::quiet_NaN());
    std::vector<cddp::SparseSlot> slot = {{&c, &codec, &fresh}};
    reference.average_shared(slot, st);
    failures[r] += !bitwise_equal(kept->dense(), fresh) || kept->dense().data_ptr() != buffer;
  });
  for (int r = 0; r < W; ++r) EXPECT_EQ(failures[r], 0) << "rank " << r;
}

// add_sparse_ changes the listed entries only, by alpha·value, and leaves every other bit alone
// (−0 and NaN included), as dense.add_(average, alpha) leaves them; a list that does not fit the
// tensor is refused with both shapes named.
TEST(GradientExchange, AddSparseUpdatesOnlyTheListedEntries) {
  const int64_t N = 1000;
  at::Tensor p = at::randn({N}, at::make_generator<at::CPUGeneratorImpl>(3));
  p[10] = -0.f;
  p[11] = std::numeric_limits<float>::quiet_NaN();
  cddp::SparseAverage a;
  a.indices = at::tensor(c10::ArrayRef<int32_t>({0, 12, 500, 999}), at::kInt);
  a.values = at::tensor(c10::ArrayRef<float>({1.f, -2.f, 0.5f, 3.f}), at::kFloat);
  a.numel = N;
  a.valid = true;
  at::Tensor before = p.clone();
  cddp::add_sparse_(p, a, -0.1);
  at::Tensor changed = at::zeros({N}, at::kBool);
  changed.index_fill_(0, a.indices.to(at::kLong), true);
  at::Tensor same_bits = (p.view(at::kInt) == before.view(at::kInt));
  EXPECT_TRUE(same_bits.logical_or(changed).all().item<bool>()) << "an unlisted entry changed";
  for (int64_t j = 0; j < a.values.numel(); ++j) {
    const int64_t x = a.indices[j].item<int64_t>();
    const float expect = before[x].item<float>() + static_cast<float>(-0.1) * a.values[j].item<float>();
    EXPECT_FLOAT_EQ(p[x].item<float>(), expect) << "entry " << x;
  }
  at::Tensor wrong = at::zeros({N + 1});
  const std::string msg = cddp::testing::error_of([&] { cddp::add_sparse_(wrong, a, 1.0); });
  EXPECT_NE(msg.find("does not fit"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1001"), std::string::npos) << msg;
}

// IndexCoding::Block16 against Plain: the same bits in every output (dense and coalesced), on
// every rank, for sorted and unsorted lists over four blocks, a one-entry list in the last
// block, and an empty one; and exactly 4 bytes a block plus 2 an index on the wire.
TEST(GradientExchange, Block16IndicesGiveTheSameBitsInFewerBytes) {
  const int W = 3;
  const int64_t N = 200000;  // 4 blocks, the last one partial
  const std::vector<std::vector<std::string>> cases = {
      {"sorted", "sorted", "sorted"}, {"unsorted", "sorted", "empty"}, {"one", "unsorted", "unsorted"}};
  PlainCodec codec;
  for (const auto& kinds : cases) {
    const std::string label = kinds[0] + "/" + kinds[1] + "/" + kinds[2];
    std::vector<std::vector<at::Tensor>> dense(W);
    std::vector<std::vector<cddp::SparseAverage>> lists(W, std::vector<cddp::SparseAverage>(2));
    std::vector<std::vector<cddp::StepStats>> stats(W, std::vector<cddp::StepStats>(2));
    on_ranks(W, [&](cddp::Communicator& comm, int r) {
      cddp::Compressed sel = random_selection(kinds[r], r, N, 2000);
      for (int c = 0; c < 2; ++c) {
        cddp::GradientExchange ex(comm, c == 0 ? cddp::IndexCoding::Plain : cddp::IndexCoding::Block16);
        dense[r].push_back(at::full({N}, std::numeric_limits<float>::quiet_NaN()));
        std::vector<cddp::SparseSlot> to_dense = {{&sel, &codec, &dense[r].back()}};
        ex.average_sparse(to_dense, stats[r][c]);
        at::Tensor unused = at::empty({N});
        cddp::SparseSlot slot{&sel, &codec, &unused};
        slot.coalesced = &lists[r][c];
        std::vector<cddp::SparseSlot> to_list = {slot};
        cddp::StepStats st;
        ex.average_sparse(to_list, st);
      }
    });
    int64_t largest = 0;
    for (int r = 0; r < W; ++r) largest = std::max(largest, random_selection(kinds[r], r, N, 2000).count());
    for (int r = 0; r < W; ++r) {
      EXPECT_TRUE(bitwise_equal(dense[r][0], dense[r][1])) << label << " rank " << r;
      EXPECT_TRUE(bitwise_equal(dense[r][1], dense[0][1])) << label << " rank " << r << " differs from rank 0";
      EXPECT_TRUE(bitwise_equal(lists[r][0].indices, lists[r][1].indices) &&
                  bitwise_equal(lists[r][0].values, lists[r][1].values))
          << label << " rank " << r;
      // Every rank sends the padded size of the largest selection (plus the counts allgather, 8 bytes).
      const int64_t pad = (largest * 4 + 7) / 8 * 8;
      EXPECT_EQ(stats[r][0].bytes_sent, 8 + pad + (largest * 4 + 7) / 8 * 8) << label;
      EXPECT_EQ(stats[r][1].bytes_sent, 8 + pad + (4 * 4 + 2 * largest + 7) / 8 * 8) << label;
      EXPECT_EQ(cddp::index_wire_bytes(largest, N, cddp::IndexCoding::Block16), 16 + 2 * largest);
    }
  }
}

// Forwards every collective, but corrupts rank 1's first Block16 block count in what it
// receives from rank 0: the decode must name the rank and the mismatch, not read past the list.
class CorruptingCommunicator final : public cddp::Communicator {
 public:
  CorruptingCommunicator(cddp::Communicator& inner, int64_t index_offset) : inner_(inner), offset_(index_offset) {}
  int rank() const override { return inner_.rank(); }
  int world_size() const override { return inner_.world_size(); }
  std::string backend_name() const override { return "corrupting"; }
  void allreduce_sum_(at::Tensor& t) override { inner_.allreduce_sum_(t); }
  std::vector<at::Tensor> allgather(const at::Tensor& t) override {
    auto all = inner_.allgather(t);
    if (rank() == 1 && t.scalar_type() == at::kByte) {
      all[0] = all[0].clone();
      reinterpret_cast<uint32_t*>(all[0].data_ptr<uint8_t>() + offset_)[0] += 1;
    }
    return all;
  }
  void broadcast_(at::Tensor& t, int root) override { inner_.broadcast_(t, root); }
  void barrier() override { inner_.barrier(); }

 private:
  cddp::Communicator& inner_;
  int64_t offset_;
};

TEST(GradientExchange, CorruptedIndexBlocksAreACleanError) {
  const int64_t N = 200000;
  PlainCodec codec;
  std::vector<std::string> errors(2);
  on_ranks(2, [&](cddp::Communicator& comm, int r) {
    cddp::Compressed sel = random_selection("sorted", r, N, 2000);
    CorruptingCommunicator bad(comm, sel.count() * 4);  // the index region follows the values
    cddp::GradientExchange ex(bad);
    at::Tensor out = at::empty({N});
    cddp::SparseSlot slot{&sel, &codec, &out};
    slot.expected_count = sel.count();
    std::vector<cddp::SparseSlot> slots = {slot};
    cddp::StepStats st;
    if (r == 0) ex.average_sparse(slots, st);  // received an intact message: no error
    else errors[r] = cddp::testing::error_of([&] { ex.average_sparse(slots, st); });
  });
  EXPECT_NE(errors[1].find("rank 0's index blocks count 2001 entries, its count says 2000"), std::string::npos)
      << errors[1];
}

}  // namespace
