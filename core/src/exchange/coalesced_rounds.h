// coalesced_rounds.h — the rounds of several tensors' multi-round protocols (PowerSGD's P and Q
// allreduces), run at once so that each round costs one collective for all of them, not one per
// tensor. On a slow link every collective pays the ring's latency 2(W−1) times; PyTorch's
// powerSGD_hook likewise allreduces the P's of every tensor of a bucket in one buffer.
//
// How: each tensor's protocol runs on a thread of its own and calls allreduce_sum_ on its own
// RoundCollective as usual. A call waits until every protocol still running has made its next
// call; then the tensors are allreduced as one flat buffer per dtype, in tensor order, and every
// caller gets its own part back. A protocol that returns leaves the set. Every rank runs the
// same protocols with the same round counts, so every rank forms the same buffers and gets the
// same sums, bit for bit (an allreduce's result is the same on every rank). They need not be
// the bits of separate allreduces: a ring adds an entry's ranks in an order that depends on
// where the entry falls in the buffer. Each is the sum over the ranks all the same.
//
// The protocols compute at the same time, each on one intra-op thread (a BLAS called from
// several threads at once, single-threaded in each, is its documented safe mode). Taking turns
// instead, one protocol at a time, cost 168 ms a step against 126 ms on the study mlp at
// 100 Mbit/s (seed 0): on cores shared by the ranks every hand-over waits for the scheduler.
//
// It will not decide routing or touch residuals. A protocol that throws stops the others (their
// waiting calls throw too) and the error of the first to fail is rethrown; when two fail for
// reasons of their own, which one is first can differ between ranks. At world size 1, or with
// one protocol, they run one after another on the calling thread: nothing to coalesce.
#pragma once

#include <cddp/communicator.h>
#include <cddp/compression_stats.h>
#include <cddp/payload.h>

#include <functional>
#include <vector>

namespace cddp::detail {

using RoundProtocol = std::function<void(RoundCollective&)>;

// Runs every protocol to its end; bytes and comm time go into `stats` as the collectives
// moved them.
void run_coalesced_rounds(Communicator& comm, StepStats& stats, const std::vector<RoundProtocol>& protocols);

}  // namespace cddp::detail
