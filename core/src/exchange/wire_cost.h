// wire_cost.h — the one byte model: what the collectives move per rank. Routing uses it to
// decide sparse vs dense (core/src/optim/step_plan.cpp), GradientExchange to count StepStats
// bytes, and both to report the dense equivalent. Internal to core/src.
//
// Per rank, at the real element sizes of what is handed to the collectives:
//   allgather of an M-byte buffer:      sent M, received (W−1)·M
//   ring allreduce of B bytes:          sent = received = 2(W−1)/W · B
//   a sparse selection of k entries:    k·(value bytes) + index_wire_bytes(k, numel, coding)
//                                       (IndexCoding, gradient_exchange.h)
// At W = 1 nothing reaches a wire: the payload is what would be sent.
//
// Two roundings of the same ring formula exist and stay apart, because StepStats report them:
// the exchange counts what it moved in whole bytes, (2(W−1)·B)/W in integer arithmetic; the
// dense equivalent and the routing estimate are real-valued, 2(W−1)/W · B.
//
// It does not communicate; the one thing it decides is exchange "auto" (choose_sparse_algorithm).
#pragma once

#include <cddp/gradient_exchange.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cddp::detail {

// Bytes a ring allreduce of `bytes` sends (and receives) per rank, in whole bytes; 0 at W = 1.
int64_t ring_allreduce_bytes(int64_t bytes, int world);

// `bytes` rounded up to a multiple of 8: where the next part of a packed buffer starts, so every
// part stays aligned for its widest element.
inline int64_t pad8(int64_t bytes) { return (bytes + 7) & ~int64_t{7}; }

// The real-valued ring allreduce cost of `numel` values of `value_bytes` each: 2(W−1)/W · B,
// and B itself at W = 1 (what a dense exchange would carry). StepStats::bytes_dense_equivalent
// is this, truncated.
double dense_exchange_bytes(int64_t numel, int64_t value_bytes, int world);

// Bytes a rank receives when a k-entry selection of a `numel`-entry tensor is exchanged:
//   shared indices (every rank selects the same entries): an allreduce of the k values —
//     counted as k values, the ring's 2(W−1)/W factor left out (it is at most 2);
//   otherwise an allgather of values and indices from the W−1 other ranks (k values and
//     their indices at W = 1).
double sparse_exchange_bytes(int64_t k, int64_t numel, int64_t value_bytes, bool shared_indices, int world,
                             IndexCoding coding);

// exchange "auto": the sparse exchange that moves one step's selections (counts[i] entries of
// the numels[i]-entry tensor i, the mean over ranks) sooner, on a modeled link:
//   time = bytes received / bandwidth + collectives · (W − 1) · latency
//   allgather:        (W−1)·Σ(k·v + index_wire_bytes(k)) bytes, 2 collectives (counts, data);
//   sparse allreduce: Σ sparse_allreduce_received_bytes(k) (sparse_allreduce.h), 3 collectives;
// v the value bytes of `values` (4 for fp32). The link is an assumption, not a measurement:
// kAutoLinkBytesPerSecond (1 Gbit/s) and kAutoLatencySeconds (50 µs a message, a loopback Gloo
// round trip here is 30–60 µs). `why` says what was compared, for the log.
constexpr double kAutoLinkBytesPerSecond = 125e6;
constexpr double kAutoLatencySeconds = 50e-6;
SparseAlgorithm choose_sparse_algorithm(const std::vector<int64_t>& counts, const std::vector<int64_t>& numels,
                                        ValueWire values, IndexCoding coding, int world, std::string& why);

}  // namespace cddp::detail
