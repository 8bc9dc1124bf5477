// payload_exchange.cpp — PayloadExchange: packing, the gather and sum collectives, and the
// byte counts of each (compression_stats.h's model), for codecs that are not selections.
#include <cddp/payload_exchange.h>

#include "wire_cost.h"
#include "../ms_since.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>

namespace cddp {
namespace {

using detail::Clock;
using detail::ms_since;
using detail::pad8;
using detail::ring_allreduce_bytes;

int64_t bytes_of(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

// A payload is what the plugin promised: defined, contiguous, CPU parts, and the declared size.
void check_local(const PayloadSlot& s) {
  const Payload& p = *s.local;
  TORCH_CHECK(!p.parts.empty(), "compressor '", s.codec->name(), "' returned an empty payload for parameter '",
              s.name, "'");
  for (size_t j = 0; j < p.parts.size(); ++j) {
    const at::Tensor& t = p.parts[j];
    TORCH_CHECK(t.defined() && t.is_contiguous() && t.is_cpu(), "compressor '", s.codec->name(), "': part ", j,
                " of the payload for parameter '", s.name, "' must be a defined, contiguous CPU tensor");
  }
  TORCH_CHECK(s.declared_bytes < 0 || p.wire_bytes() == s.declared_bytes, "compressor '", s.codec->name(),
              "': the payload for parameter '", s.name, "' is ", p.wire_bytes(), " bytes but the plugin declared ",
              s.declared_bytes, " (its wire_bytes() and encode() disagree)");
}

// Rank r's payloads as flat views into its gathered buffer, given every part's element count.
std::vector<Payload> unpack(const std::vector<PayloadSlot>& slots, size_t i, const std::vector<at::Tensor>& gathered,
                            const std::vector<std::vector<int64_t>>& counts, const std::vector<std::vector<int64_t>>& offsets) {
  const Payload& mine = *slots[i].local;
  std::vector<Payload> ranks(gathered.size());
  for (size_t r = 0; r < gathered.size(); ++r) {
    Payload& p = ranks[r];
    p.numel = mine.numel;
    p.shape = mine.shape;
    p.dtype = mine.dtype;
    p.world_size = mine.world_size;
    size_t part = 0;
    for (size_t j = 0; j < i; ++j) part += slots[j].local->parts.size();
    for (size_t j = 0; j < mine.parts.size(); ++j, ++part) {
      const at::ScalarType dt = mine.parts[j].scalar_type();
      const int64_t n = counts[r][part];
      p.parts.push_back(gathered[r].narrow(0, offsets[r][part], n * int64_t(c10::elementSize(dt))).view(dt));
    }
  }
  return ranks;
}

}  // namespace

void CountingRoundCollective::allreduce_sum_(at::Tensor& tensor) {
  TORCH_CHECK(tensor.is_contiguous(), "RoundCollective::allreduce_sum_ needs a contiguous tensor");
  const int world = comm_.world_size();
  const int64_t bytes = bytes_of(tensor);
  stats_.payload_bytes += bytes;
  if (world == 1) {
    stats_.bytes_sent += bytes;
    return;
  }
  const auto t0 = Clock::now();
  comm_.allreduce_sum_(tensor);
  stats_.bytes_sent += ring_allreduce_bytes(bytes, world);
  stats_.bytes_received += ring_allreduce_bytes(bytes, world);
  stats_.comm_ms += ms_since(t0);
}

void PayloadExchange::gather(std::vector<PayloadSlot>& slots, StepStats& stats) {
  if (slots.empty()) return;
  const int world = comm_.world_size();
  const auto t0 = Clock::now();
  // 1. Part sizes (element counts), flattened over slots. Known to every rank when every slot
  //    declares its bytes: payloads of one declared size have the same parts everywhere.
  std::vector<int64_t> mine;
  bool declared = true;
  int64_t payload = 0;
  for (auto& s : slots) {
    check_local(s);
    declared = declared && s.declared_bytes >= 0;
    payload += s.local->wire_bytes();
    for (const auto& t : s.local->parts) mine.push_back(t.numel());
  }
  const int64_t P = static_cast<int64_t>(mine.size());
  std::vector<std::vector<int64_t>> counts(world, mine);
  if (!declared && world > 1) {
    at::Tensor c = at::from_blob(mine.data(), {P}, at::kLong).clone();
    std::vector<at::Tensor> all = comm_.allgather(c);
    for (int r = 0; r < world; ++r) {
      at::Tensor a = all[r].contiguous();
      counts[r].assign(a.data_ptr<int64_t>(), a.data_ptr<int64_t>() + P);
    }
  }
  // 2. Layout per rank: parts back to back, each padded to 8 bytes.
  std::vector<at::ScalarType> dtypes;
  for (auto& s : slots)
    for (const auto& t : s.local->parts) dtypes.push_back(t.scalar_type());
  std::vector<std::vector<int64_t>> offsets(world);
  int64_t max_total = 8;
  for (int r = 0; r < world; ++r) {
    int64_t off = 0;
    for (int64_t j = 0; j < P; ++j) {
      TORCH_CHECK(counts[r][j] >= 0, "gather exchange: rank ", r, " sent a negative part size");
      offsets[r].push_back(off);
      off += pad8(counts[r][j] * int64_t(c10::elementSize(dtypes[j])));
    }
    max_total = std::max(max_total, off);
  }
  // 3. Pack this rank's parts and gather the buffers.
  if (!packed_.defined() || packed_.numel() != max_total) packed_ = at::zeros({max_total}, at::kByte);
  const int me = comm_.rank();
  int64_t part = 0;
  for (auto& s : slots)
    for (const auto& t : s.local->parts) {
      if (t.numel() > 0) std::memcpy(packed_.data_ptr<uint8_t>() + offsets[me][part], t.data_ptr(), bytes_of(t));
      ++part;
    }
  if (world > 1) {
    comm_.allgather_into(packed_, gathered_);
  } else {
    gathered_.assign(1, packed_);
  }
  // 4. Each codec combines the ranks' payloads, rank order.
  for (size_t i = 0; i < slots.size(); ++i) {
    std::vector<Payload> ranks = unpack(slots, i, gathered_, counts, offsets);
    slots[i].codec->combine(ranks, *slots[i].average);
  }
  const int64_t count_bytes = declared || world == 1 ? 0 : P * 8;
  stats.payload_bytes += payload + count_bytes;
  stats.bytes_sent += max_total + count_bytes;
  stats.bytes_received += (world - 1) * (max_total + count_bytes);
  stats.comm_ms += ms_since(t0);
}

void PayloadExchange::sum(std::vector<PayloadSlot>& slots, StepStats& stats) {
  if (slots.empty()) return;
  const int world = comm_.world_size();
  const auto t0 = Clock::now();
  // Sums of every part, grouped by dtype so that each group is one collective.
  std::vector<Payload> sums(slots.size());
  std::map<at::ScalarType, std::vector<std::pair<size_t, size_t>>> groups;  // dtype -> (slot, part)
  for (size_t i = 0; i < slots.size(); ++i) {
    check_local(slots[i]);
    const Payload& p = *slots[i].local;
    sums[i] = p;
    sums[i].parts.clear();
    for (size_t j = 0; j < p.parts.size(); ++j) {
      TORCH_CHECK(at::isFloatingType(p.parts[j].scalar_type()), "compressor '", slots[i].codec->name(),
                  "' declares sum payloads, but part ", j, " for parameter '", slots[i].name, "' is ",
                  p.parts[j].scalar_type(), ": only floating-point parts can be summed");
      groups[p.parts[j].scalar_type()].push_back({i, j});
      sums[i].parts.push_back(at::Tensor());
    }
  }
  for (auto& [dtype, members] : groups) {
    std::vector<at::Tensor> flat;
    for (auto [i, j] : members) flat.push_back(slots[i].local->parts[j].reshape(-1));
    at::Tensor buffer = at::cat(flat);
    const int64_t bytes = bytes_of(buffer);
    stats.payload_bytes += bytes;
    if (world > 1) {
      comm_.allreduce_sum_(buffer);
      stats.bytes_sent += ring_allreduce_bytes(bytes, world);
      stats.bytes_received += ring_allreduce_bytes(bytes, world);
    } else {
      stats.bytes_sent += bytes;
    }
    int64_t off = 0;
    for (auto [i, j] : members) {
      const int64_t n = slots[i].local->parts[j].numel();
      sums[i].parts[j] = buffer.narrow(0, off, n);
      off += n;
    }
  }
  for (size_t i = 0; i < slots.size(); ++i) slots[i].codec->decode_sum(sums[i], world, *slots[i].average);
  stats.comm_ms += ms_since(t0);
}

}  // namespace cddp
