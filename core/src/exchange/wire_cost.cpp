// wire_cost.cpp — the byte model of wire_cost.h.
#include "wire_cost.h"

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

}  // namespace cddp::detail
