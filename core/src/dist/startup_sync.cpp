// startup_sync.cpp — broadcast_from_rank0, verify_same_config, allgather_strings.
//
// It will not retry, and it will not fix a disagreement (e.g. by adopting rank 0's config):
// a mismatch is a launch error that a person must see.
#include <cddp/startup_sync.h>

#include <cddp/fnv1a64.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <sstream>

namespace cddp {
namespace {

uint64_t fnv1a(const std::string& s) { return fnv1a64(s.data(), s.size()); }

// True when `local_hash` is the same on every rank (one tiny allgather).
bool same_everywhere(Communicator& comm, uint64_t local_hash) {
  if (comm.world_size() == 1) return true;
  at::Tensor h = at::empty({1}, at::kLong);
  int64_t v;
  std::memcpy(&v, &local_hash, sizeof v);
  h[0] = v;
  std::vector<at::Tensor> all = comm.allgather(h);
  for (const auto& t : all)
    if (t.item<int64_t>() != v) return false;
  return true;
}

// Length-prefixed, so that no key or value can forge a separator.
std::string encode(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::ostringstream os;
  for (const auto& [k, v] : fields) os << k.size() << ':' << k << v.size() << ':' << v;
  return os.str();
}

std::vector<std::pair<std::string, std::string>> decode(const std::string& s) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t i = 0;
  auto next = [&](std::string& piece) {
    size_t colon = s.find(':', i);
    if (colon == std::string::npos) return false;
    size_t n = std::stoull(s.substr(i, colon - i));
    piece = s.substr(colon + 1, n);
    i = colon + 1 + n;
    return true;
  };
  std::string k, v;
  while (i < s.size() && next(k) && next(v)) out.emplace_back(k, v);
  return out;
}

std::string describe_tensors(const std::vector<at::Tensor>& ts, std::vector<std::string>* each = nullptr) {
  std::ostringstream all;
  all << ts.size() << " tensors";
  for (size_t i = 0; i < ts.size(); ++i) {
    std::ostringstream one;
    if (!ts[i].defined()) one << "undefined";
    else one << ts[i].scalar_type() << ts[i].sizes() << " on " << ts[i].device().type();
    all << "|" << one.str();
    if (each) each->push_back(one.str());
  }
  return all.str();
}

}  // namespace

std::vector<std::string> allgather_strings(Communicator& comm, const std::string& text) {
  if (comm.world_size() == 1) return {text};
  at::Tensor len = at::full({1}, static_cast<int64_t>(text.size()), at::kLong);
  std::vector<at::Tensor> lens = comm.allgather(len);
  int64_t max_len = 1;
  for (const auto& l : lens) max_len = std::max(max_len, l.item<int64_t>());
  at::Tensor buf = at::zeros({max_len}, at::kByte);
  if (!text.empty()) std::memcpy(buf.data_ptr<uint8_t>(), text.data(), text.size());
  std::vector<at::Tensor> bufs = comm.allgather(buf);
  std::vector<std::string> out;
  for (size_t r = 0; r < bufs.size(); ++r) {
    at::Tensor b = bufs[r].contiguous();
    out.emplace_back(reinterpret_cast<const char*>(b.data_ptr<uint8_t>()), static_cast<size_t>(lens[r].item<int64_t>()));
  }
  return out;
}

void broadcast_from_rank0(Communicator& comm, std::vector<at::Tensor>& tensors) {
  std::vector<std::string> mine;
  const std::string summary = describe_tensors(tensors, &mine);
  if (!same_everywhere(comm, fnv1a(summary))) {
    std::vector<std::string> all = allgather_strings(comm, summary);
    std::ostringstream os;
    os << "broadcast_from_rank0: ranks hold different parameters/buffers (every rank stops):";
    for (size_t r = 0; r < all.size(); ++r) os << "\n  rank " << r << ": " << all[r].substr(0, 400);
    TORCH_CHECK(false, os.str());
  }
  for (size_t i = 0; i < tensors.size(); ++i)
    TORCH_CHECK(tensors[i].defined(), "broadcast_from_rank0: tensor ", i, " is undefined");
  if (comm.world_size() == 1 || tensors.empty()) return;

  at::NoGradGuard no_grad;
  // One coalesced broadcast per (dtype, device): the order is the list order on every rank.
  std::map<std::pair<int, std::string>, std::vector<size_t>> groups;
  for (size_t i = 0; i < tensors.size(); ++i)
    groups[{static_cast<int>(tensors[i].scalar_type()), tensors[i].device().str()}].push_back(i);
  for (auto& [key, members] : groups) {
    std::vector<at::Tensor> flat;
    for (size_t i : members) flat.push_back(tensors[i].detach().reshape(-1));
    at::Tensor buffer = at::cat(flat);
    comm.broadcast_(buffer, 0);
    if (comm.rank() == 0) continue;
    int64_t off = 0;
    for (size_t i : members) {
      at::Tensor t = tensors[i].detach();
      t.copy_(buffer.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

void verify_same_config(Communicator& comm, const std::vector<std::pair<std::string, std::string>>& fields) {
  const std::string encoded = encode(fields);
  if (same_everywhere(comm, fnv1a(encoded))) return;

  std::vector<std::string> all = allgather_strings(comm, encoded);
  const int W = static_cast<int>(all.size());
  std::vector<std::map<std::string, std::string>> by_rank(W);
  std::vector<std::string> keys;  // first-seen order, rank 0 first
  for (int r = 0; r < W; ++r)
    for (auto& [k, v] : decode(all[r])) {
      if (!by_rank[r].count(k) && std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
      by_rank[r][k] = v;
    }
  std::ostringstream os;
  os << "configuration differs between ranks (every rank stops):";
  int differing = 0;
  for (const auto& k : keys) {
    // Group ranks by value so a 64-rank job prints a line, not 64.
    std::vector<std::pair<std::string, std::vector<int>>> values;
    for (int r = 0; r < W; ++r) {
      auto it = by_rank[r].find(k);
      std::string v = it == by_rank[r].end() ? "<missing>" : "'" + it->second + "'";
      auto pos = std::find_if(values.begin(), values.end(), [&](auto& p) { return p.first == v; });
      if (pos == values.end()) values.push_back({v, {r}});
      else pos->second.push_back(r);
    }
    if (values.size() < 2) continue;
    ++differing;
    os << "\n  " << k << ":";
    for (size_t j = 0; j < values.size(); ++j) {
      os << (j ? ";" : "") << (values[j].second.size() == 1 ? " rank " : " ranks ");
      for (size_t n = 0; n < values[j].second.size(); ++n) os << (n ? "," : "") << values[j].second[n];
      os << " = " << values[j].first;
    }
  }
  if (differing == 0) os << "\n  (same fields in a different order)";
  TORCH_CHECK(false, os.str());
}

}  // namespace cddp
