// compression_stats.h — what one CompressedSGD step cost and moved, and running totals.
//
// Byte model (per rank, at the real element sizes of what is handed to the collectives):
//   sparse allgather of an M-byte buffer:  sent M, received (W-1)·M
//   allreduce of B bytes (ring):           sent = received = 2(W-1)/W · B
//   dense equivalent of N gradient values of v bytes: 2(W-1)/W · N·v  (N·v when W = 1)
// At W = 1 nothing reaches a wire; bytes_sent then reports the payload that would be sent.
// The model is implemented once, in core/src/exchange/wire_cost.h, for the stats and for routing.
#pragma once

#include <cstdint>

namespace cddp {

struct StepStats {
  int64_t step = 0;
  bool skipped = false;                // non-finite gradient with nonfinite = "skip_step"
  int64_t elements_in = 0;             // gradient elements offered to the exchange
  int64_t elements_sent = 0;           // selected elements + elements sent dense
  int64_t payload_bytes = 0;           // this rank's values + indices (+ counts) before padding
  int64_t bytes_sent = 0;              // see the byte model above
  int64_t bytes_received = 0;
  int64_t bytes_dense_equivalent = 0;
  int64_t compressed_tensors = 0;
  int64_t dense_tensors = 0;
  double residual_norm = 0;            // L2 norm of all residuals after the step (when requested)
  double compress_ms = 0;
  double comm_ms = 0;
  double density() const { return elements_in ? double(elements_sent) / double(elements_in) : 0.0; }
  // How many times fewer bytes than a dense exchange: dense / actual.
  double ratio() const {
    int64_t actual = bytes_received > 0 ? bytes_received : bytes_sent;
    return actual ? double(bytes_dense_equivalent) / double(actual) : 0.0;
  }
};

struct CumulativeStats {
  int64_t steps = 0, skipped_steps = 0;
  int64_t elements_in = 0, elements_sent = 0;
  int64_t payload_bytes = 0, bytes_sent = 0, bytes_received = 0, bytes_dense_equivalent = 0;
  double compress_ms = 0, comm_ms = 0;

  void add(const StepStats& s) {
    ++steps;
    skipped_steps += s.skipped ? 1 : 0;
    elements_in += s.elements_in;
    elements_sent += s.elements_sent;
    payload_bytes += s.payload_bytes;
    bytes_sent += s.bytes_sent;
    bytes_received += s.bytes_received;
    bytes_dense_equivalent += s.bytes_dense_equivalent;
    compress_ms += s.compress_ms;
    comm_ms += s.comm_ms;
  }
};

}  // namespace cddp
