// wire_cost.cpp — the byte model of wire_cost.h.
#include "wire_cost.h"

#include "sparse_allreduce.h"

#include <sstream>

namespace cddp::detail {

int64_t ring_allreduce_bytes(int64_t bytes, int world) {
  return world > 1 ? (2 * (world - 1) * bytes) / world : 0;
}

double dense_exchange_bytes(int64_t numel, int64_t value_bytes, int world) {
  return double(numel * value_bytes) * (world > 1 ? 2.0 * (world - 1) / world : 1.0);
}

double sparse_exchange_bytes(int64_t k, int64_t numel, int64_t value_bytes, bool shared_indices, int world,
                             IndexCoding coding) {
  const double values = double(k) * double(value_bytes);
  if (shared_indices) return values;
  const double indices = double(index_wire_bytes(k, numel, coding));
  return world > 1 ? (world - 1) * (values + indices) : values + indices;
}

SparseAlgorithm choose_sparse_algorithm(const std::vector<int64_t>& counts, const std::vector<int64_t>& numels,
                                        ValueWire values, IndexCoding coding, int world, std::string& why) {
  const int64_t v = values == ValueWire::Native ? 4 : 2, v4 = values == ValueWire::BFloat16 ? 2 : 4;
  double gathered = 0, reduced = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    gathered += double(world - 1) * double(counts[i] * v + index_wire_bytes(counts[i], numels[i], coding));
    reduced += sparse_allreduce_received_bytes(counts[i], numels[i], v, v4, world);
  }
  const double hop = double(world - 1) * kAutoLatencySeconds;
  const double t_gather = gathered / kAutoLinkBytesPerSecond + 2 * hop;
  const double t_reduce = reduced / kAutoLinkBytesPerSecond + 3 * hop;
  const SparseAlgorithm pick = t_reduce < t_gather ? SparseAlgorithm::SparseAllreduce : SparseAlgorithm::Allgather;
  std::ostringstream os;
  os << "exchange \"auto\" chose " << (pick == SparseAlgorithm::SparseAllreduce ? "sparse_allreduce" : "allgather")
     << " at W = " << world << ": modeled " << t_reduce * 1e3 << " ms (" << int64_t(reduced)
     << " B received) against allgather's " << t_gather * 1e3 << " ms (" << int64_t(gathered)
     << " B), at 1 Gbit/s and 50 us a message";
  why = os.str();
  return pick;
}

}  // namespace cddp::detail
