// startup_sync.h — what every rank must agree on before the first step: identical initial
// parameters and buffers (rank 0's), and an identical effective configuration.
//
// Both functions are collective: every rank calls them at the same point, in the same order.
// On a disagreement every rank throws the same c10::Error, so no rank trains alone.
// They will not choose which tensors or which fields matter: the caller lists them.
#pragma once

#include <cddp/communicator.h>

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace cddp {

// In place: every tensor takes rank 0's values (one broadcast per dtype and device).
// First checks that all ranks pass the same number, dtypes and shapes; a mismatch throws on
// every rank, naming the first differing tensor with each rank's dtype and shape.
void broadcast_from_rank0(Communicator& comm, std::vector<at::Tensor>& params_and_buffers);

// Ranks exchange a hash of `fields` (name, value) — e.g. {"compressor", "topk"},
// {"compressor.version", "1.0.0"}, {"compressor.ratio", "0.01"}, {"lr", "0.1"}. On a
// mismatch the fields themselves are gathered and every rank throws, listing each differing
// field with its value on each rank.
void verify_same_config(Communicator& comm, const std::vector<std::pair<std::string, std::string>>& fields);

// Every rank's `text`, in rank order (two allgathers: lengths, then padded bytes).
std::vector<std::string> allgather_strings(Communicator& comm, const std::string& text);

}  // namespace cddp
