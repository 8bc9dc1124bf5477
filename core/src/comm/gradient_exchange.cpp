// gradient_exchange.cpp — packing, collectives and rank-ordered decoding of gradients.
#include <cddp/gradient_exchange.h>

#include <ATen/ATen.h>

#include <chrono>
#include <map>

namespace cddp {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int64_t pad8(int64_t bytes) { return (bytes + 7) & ~int64_t{7}; }

int64_t ring_allreduce_bytes(int64_t bytes, int world) {
  return world > 1 ? (2 * (world - 1) * bytes) / world : 0;
}

// Byte layout of one rank's packed selections, given that rank's counts.
struct Layout {
  std::vector<int64_t> value_offset, index_offset;
  int64_t total = 0;
};

Layout layout_for(const std::vector<SparseSlot>& slots, const int64_t* counts) {
  Layout l;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Compressed& c = *slots[i].local;
    int64_t vsize = c10::elementSize(c.dtype), isize = c10::elementSize(index_dtype_for(c.numel));
    l.value_offset.push_back(l.total);
    l.total += pad8(counts[i] * vsize);
    l.index_offset.push_back(l.total);
    l.total += pad8(counts[i] * isize);
  }
  return l;
}

at::Tensor as_bytes(const at::Tensor& t) { return t.contiguous().view(at::kByte); }

}  // namespace

bool GradientExchange::any_rank(bool local_flag) {
  if (comm_.world_size() == 1) return local_flag;
  at::Tensor flag = at::full({1}, local_flag ? 1.0f : 0.0f, at::kFloat);
  comm_.allreduce_sum_(flag);
  return flag.item<float>() > 0.0f;
}

void GradientExchange::average_sparse(std::vector<SparseSlot>& slots, StepStats& stats) {
  if (slots.empty()) return;
  const int world = comm_.world_size();
  const int me = comm_.rank();
  auto t0 = Clock::now();
  int64_t payload = 0;
  for (auto& s : slots) payload += s.local->wire_bytes();

  for (auto& s : slots) s.average->zero_();
  if (world == 1) {
    for (auto& s : slots) s.codec->decompress_add_(*s.local, *s.average);
    stats.payload_bytes += payload;
    stats.bytes_sent += payload;
    stats.comm_ms += ms_since(t0);
    return;
  }

  // 1. Counts: selections may differ in size between ranks (threshold compressors), and
  //    an empty selection must still take part, or the collective would hang.
  const int64_t P = static_cast<int64_t>(slots.size());
  at::Tensor counts = at::empty({P}, at::kLong);
  for (int64_t i = 0; i < P; ++i) counts[i] = slots[i].local->count();
  std::vector<at::Tensor> all_counts = comm_.allgather(counts);
  std::vector<Layout> layouts;
  int64_t max_total = 0;
  for (int r = 0; r < world; ++r) {
    at::Tensor c = all_counts[r].contiguous();
    layouts.push_back(layout_for(slots, c.data_ptr<int64_t>()));
    max_total = std::max(max_total, layouts.back().total);
  }

  // 2. Pack this rank's values and indices into one padded byte buffer; gather it.
  at::Tensor packed = at::zeros({std::max<int64_t>(max_total, 8)}, at::kByte);
  const Layout& mine = layouts[me];
  for (int64_t i = 0; i < P; ++i) {
    const Compressed& c = *slots[i].local;
    if (c.count() == 0) continue;
    at::Tensor vb = as_bytes(c.values.to(c.dtype)), ib = as_bytes(c.indices.to(index_dtype_for(c.numel)));
    packed.narrow(0, mine.value_offset[i], vb.numel()).copy_(vb);
    packed.narrow(0, mine.index_offset[i], ib.numel()).copy_(ib);
  }
  std::vector<at::Tensor> gathered = comm_.allgather(packed);

  // 3. Decode in rank order, so every rank adds the same numbers in the same order.
  for (int r = 0; r < world; ++r) {
    const int64_t* cr = all_counts[r].data_ptr<int64_t>();
    for (int64_t i = 0; i < P; ++i) {
      const Compressed& local = *slots[i].local;
      if (cr[i] == 0) continue;
      Compressed c;
      c.numel = local.numel;
      c.shape = local.shape;
      c.dtype = local.dtype;
      at::ScalarType it = index_dtype_for(local.numel);
      c.values = gathered[r].narrow(0, layouts[r].value_offset[i], cr[i] * c10::elementSize(c.dtype)).view(c.dtype);
      c.indices = gathered[r].narrow(0, layouts[r].index_offset[i], cr[i] * c10::elementSize(it)).view(it);
      slots[i].codec->decompress_add_(c, *slots[i].average);
    }
  }
  for (auto& s : slots) s.average->div_(world);

  const int64_t sent = packed.numel() + counts.numel() * 8;
  stats.payload_bytes += payload + counts.numel() * 8;
  stats.bytes_sent += sent;
  stats.bytes_received += (world - 1) * sent;
  stats.comm_ms += ms_since(t0);
}

void GradientExchange::average_shared(std::vector<SparseSlot>& slots, StepStats& stats) {
  if (slots.empty()) return;
  const int world = comm_.world_size();
  auto t0 = Clock::now();
  // Group by value dtype so each group is one allreduce.
  std::map<at::ScalarType, std::vector<size_t>> groups;
  for (size_t i = 0; i < slots.size(); ++i) groups[slots[i].local->dtype].push_back(i);
  for (auto& [dtype, members] : groups) {
    std::vector<at::Tensor> parts;
    for (size_t i : members) parts.push_back(slots[i].local->values.reshape(-1).to(dtype));
    at::Tensor sum = at::cat(parts);
    const int64_t bytes = sum.numel() * static_cast<int64_t>(sum.element_size());
    stats.payload_bytes += bytes;
    if (world > 1) {
      comm_.allreduce_sum_(sum);
      stats.bytes_sent += ring_allreduce_bytes(bytes, world);
      stats.bytes_received += ring_allreduce_bytes(bytes, world);
    } else {
      stats.bytes_sent += bytes;
    }
    int64_t off = 0;
    for (size_t i : members) {
      const Compressed& local = *slots[i].local;
      Compressed c = local;
      c.values = sum.narrow(0, off, local.count());
      off += local.count();
      slots[i].average->zero_();
      slots[i].codec->decompress_add_(c, *slots[i].average);
      if (world > 1) slots[i].average->div_(world);
    }
  }
  stats.comm_ms += ms_since(t0);
}

void GradientExchange::average_dense(std::vector<at::Tensor>& tensors, StepStats& stats) {
  if (tensors.empty()) return;
  const int world = comm_.world_size();
  auto t0 = Clock::now();
  std::map<at::ScalarType, std::vector<size_t>> groups;
  for (size_t i = 0; i < tensors.size(); ++i) groups[tensors[i].scalar_type()].push_back(i);
  for (auto& [dtype, members] : groups) {
    int64_t bytes = 0;
    for (size_t i : members) bytes += tensors[i].numel() * static_cast<int64_t>(tensors[i].element_size());
    stats.payload_bytes += bytes;
    if (world == 1) {  // the mean over one rank is the tensor itself: leave the bits alone
      stats.bytes_sent += bytes;
      continue;
    }
    std::vector<at::Tensor> flat;
    for (size_t i : members) flat.push_back(tensors[i].reshape(-1));
    at::Tensor buffer = at::cat(flat);  // one coalesced collective per dtype
    comm_.allreduce_sum_(buffer);
    buffer.div_(world);
    int64_t off = 0;
    for (size_t i : members) {
      tensors[i].copy_(buffer.narrow(0, off, tensors[i].numel()).view(tensors[i].sizes()));
      off += tensors[i].numel();
    }
    stats.bytes_sent += ring_allreduce_bytes(bytes, world);
    stats.bytes_received += ring_allreduce_bytes(bytes, world);
  }
  stats.comm_ms += ms_since(t0);
}

}  // namespace cddp
