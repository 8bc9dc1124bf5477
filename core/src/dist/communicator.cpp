// communicator.cpp — Communicator's default alltoall, built from allgathers (communicator.h).
// Correct on any backend that can allgather equal sizes, but every rank then receives every
// rank's whole input: backends with a real alltoall (C10dCommunicator) override it.
#include <cddp/communicator.h>

#include <ATen/ATen.h>

#include <algorithm>

namespace cddp {

at::Tensor Communicator::alltoall(const at::Tensor& input, const std::vector<int64_t>& send_counts,
                                  const std::vector<int64_t>& recv_counts) {
  const int W = world_size(), me = rank();
  TORCH_CHECK(static_cast<int>(send_counts.size()) == W && static_cast<int>(recv_counts.size()) == W,
              "Communicator::alltoall: ", send_counts.size(), " send and ", recv_counts.size(),
              " receive counts for ", W, " ranks");
  at::Tensor flat = input.reshape(-1).contiguous();
  int64_t total = 0;
  for (int64_t c : send_counts) total += c;
  TORCH_CHECK(total == flat.numel(), "Communicator::alltoall: send counts sum to ", total, " but the input has ",
              flat.numel(), " elements");
  // Every rank's send counts, then every rank's input padded to the largest.
  at::Tensor mine = at::tensor(send_counts, at::kLong);
  std::vector<at::Tensor> counts = allgather(mine);
  int64_t longest = 0;
  std::vector<int64_t> totals(static_cast<size_t>(W), 0);
  for (int s = 0; s < W; ++s) {
    const int64_t* c = counts[s].data_ptr<int64_t>();
    for (int r = 0; r < W; ++r) totals[s] += c[r];
    longest = std::max(longest, totals[s]);
  }
  at::Tensor padded = at::zeros({std::max<int64_t>(longest, 1)}, flat.options());
  padded.narrow(0, 0, flat.numel()).copy_(flat);
  std::vector<at::Tensor> all = allgather(padded);
  std::vector<at::Tensor> parts;
  for (int s = 0; s < W; ++s) {
    const int64_t* c = counts[s].data_ptr<int64_t>();
    int64_t off = 0;
    for (int r = 0; r < me; ++r) off += c[r];
    TORCH_CHECK(c[me] == recv_counts[s], "Communicator::alltoall: rank ", s, " sends ", c[me],
                " elements to rank ", me, ", which expects ", recv_counts[s]);
    parts.push_back(all[s].narrow(0, off, c[me]));
  }
  return at::cat(parts);
}

}  // namespace cddp
