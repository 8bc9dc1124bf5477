// dist_env_test.cpp — DistEnv parsing (torchrun, Slurm, none), Slurm nodelists, connect()
// at world size 1, and the C10dCommunicator collectives plus startup sync with two ranks on
// two threads of one process (the quick path; real processes are in the other dist tests).
// It will not test failures of peers or training.
#include "test_plugins.h"

#include <cddp/c10d_communicator.h>
#include <cddp/compressed_sgd.h>
#include <cddp/gradient_exchange.h>
#include <cddp/launcher.h>
#include <cddp/rendezvous.h>
#include <cddp/startup_sync.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <future>
#include <thread>

namespace cddp {
namespace {

using cddp::testing::error_of;  // tests/support/test_plugins.h

TEST(DistEnv, Torchrun) {
  DistEnv d = parse_dist_env({{"RANK", "3"},
                              {"WORLD_SIZE", "8"},
                              {"LOCAL_RANK", "1"},
                              {"LOCAL_WORLD_SIZE", "2"},
                              {"MASTER_ADDR", "10.0.0.5"},
                              {"MASTER_PORT", "29511"},
                              {"GLOO_SOCKET_IFNAME", "eth1"}});
  EXPECT_EQ(d.rank, 3);
  EXPECT_EQ(d.world_size, 8);
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.local_world_size, 2);
  EXPECT_EQ(d.master_addr, "10.0.0.5");
  EXPECT_EQ(d.master_port, 29511);
  EXPECT_EQ(d.source, "torchrun");
  EXPECT_EQ(d.gloo_interface, "eth1");
  EXPECT_EQ(d.describe(), "rank 3/8 (local 1/2) master 10.0.0.5:29511 from torchrun");
}

TEST(DistEnv, NothingSetIsOneProcess) {
  DistEnv d = parse_dist_env({{"PATH", "/bin"}});
  EXPECT_EQ(d.rank, 0);
  EXPECT_EQ(d.world_size, 1);
  EXPECT_EQ(d.source, "default");
  EXPECT_EQ(connect(d)->backend_name(), "local");
  // WORLD_SIZE=1 needs no master.
  EXPECT_EQ(parse_dist_env({{"RANK", "0"}, {"WORLD_SIZE", "1"}}).world_size, 1);
}

TEST(DistEnv, BadValuesNameTheVariable) {
  const EnvMap base = {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
  auto with = [&](const std::string& k, const std::string& v) {
    EnvMap m = base;
    if (v == "<erase>") m.erase(k);
    else m[k] = v;
    return error_of([&] { parse_dist_env(m); });
  };
  EXPECT_NE(with("RANK", "abc").find("RANK='abc' is not an integer"), std::string::npos);
  EXPECT_NE(with("RANK", "1x").find("RANK='1x' is not an integer"), std::string::npos);
  EXPECT_NE(with("RANK", "").find("RANK='' is not an integer"), std::string::npos);
  EXPECT_NE(with("RANK", "-1").find("RANK=-1 is out of range"), std::string::npos);
  EXPECT_NE(with("RANK", "2").find("rank 2 is not below the world size 2"), std::string::npos);
  EXPECT_NE(with("RANK", "<erase>").find("RANK is not set"), std::string::npos);
  EXPECT_NE(with("WORLD_SIZE", "0").find("WORLD_SIZE=0 is out of range"), std::string::npos);
  EXPECT_NE(with("MASTER_PORT", "70000").find("MASTER_PORT=70000 is out of range"), std::string::npos);
  EXPECT_NE(with("MASTER_PORT", "<erase>").find("MASTER_PORT is not set"), std::string::npos);
  EXPECT_NE(with("MASTER_ADDR", "<erase>").find("MASTER_ADDR is not set"), std::string::npos);
  EXPECT_NE(with("LOCAL_RANK", "5").find("local rank 5 is not below the local world size 2"), std::string::npos);
}

TEST(DistEnv, Slurm) {
  DistEnv d = parse_dist_env({{"SLURM_PROCID", "5"},
                              {"SLURM_NTASKS", "8"},
                              {"SLURM_LOCALID", "1"},
                              {"SLURM_TASKS_PER_NODE", "4(x2)"},
                              {"SLURM_NODEID", "1"},
                              {"SLURM_JOB_NODELIST", "node[01-04],gpu7"}});
  EXPECT_EQ(d.source, "slurm");
  EXPECT_EQ(d.rank, 5);
  EXPECT_EQ(d.world_size, 8);
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.local_world_size, 4);
  EXPECT_EQ(d.master_addr, "node01");
  EXPECT_EQ(d.master_port, 29500);
  // MASTER_ADDR / MASTER_PORT win over the nodelist; uneven tasks per node.
  DistEnv e = parse_dist_env({{"SLURM_PROCID", "4"},
                              {"SLURM_NTASKS", "5"},
                              {"SLURM_LOCALID", "0"},
                              {"SLURM_TASKS_PER_NODE", "2(x2),1"},
                              {"SLURM_NODEID", "2"},
                              {"SLURM_JOB_NODELIST", "node[01-03]"},
                              {"MASTER_ADDR", "head"},
                              {"MASTER_PORT", "12345"}});
  EXPECT_EQ(e.local_world_size, 1);
  EXPECT_EQ(e.master_addr, "head");
  EXPECT_EQ(e.master_port, 12345);
  EXPECT_NE(error_of([] { parse_dist_env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}); }).find("SLURM_LOCALID is not set"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_dist_env({{"SLURM_PROCID", "x"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}});
            }).find("SLURM_PROCID='x' is not an integer"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_dist_env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}});
            }).find("neither MASTER_ADDR nor SLURM_JOB_NODELIST"),
            std::string::npos);
  // torchrun variables win inside an allocation.
  EXPECT_EQ(parse_dist_env({{"SLURM_PROCID", "3"}, {"RANK", "0"}, {"WORLD_SIZE", "1"}}).source, "torchrun");
}

TEST(DistEnv, SlurmNodelists) {
  EXPECT_EQ(first_slurm_host("node[01-04],gpu7"), "node01");
  EXPECT_EQ(first_slurm_host("gpu7,node[01-04]"), "gpu7");
  EXPECT_EQ(first_slurm_host("node7"), "node7");
  EXPECT_EQ(first_slurm_host("node[007,009-010]"), "node007");
  EXPECT_EQ(first_slurm_host("rack[1-2]-n[07,09]"), "rack1-n07");
  EXPECT_EQ(first_slurm_host("a-b[3]"), "a-b3");
  EXPECT_NE(error_of([] { first_slurm_host("node[01-04"); }).find("unmatched '['"), std::string::npos);
  EXPECT_NE(error_of([] { first_slurm_host("node01]"); }).find("unmatched ']'"), std::string::npos);
  EXPECT_NE(error_of([] { first_slurm_host("node[x-y]"); }).find("malformed range"), std::string::npos);
  EXPECT_NE(error_of([] { first_slurm_host(""); }).find("empty"), std::string::npos);
}

TEST(DistEnv, EnvironmentMap) {
  char a[] = "A=1", b[] = "B=x=y", c[] = "NOEQUALS";
  char* envp[] = {a, b, c, nullptr};
  EnvMap m = environment_map(envp);
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m["A"], "1");
  EXPECT_EQ(m["B"], "x=y");
}

// Two ranks on two threads: each runs `body(comm)`; returns their error messages ("" if none).
std::vector<std::string> two_ranks(const std::function<void(C10dCommunicator&)>& body) {
  const int port = pick_free_port();
  std::vector<std::future<std::string>> f;
  for (int r = 0; r < 2; ++r)
    f.push_back(std::async(std::launch::async, [&, r] {
      try {
        C10dOptions o;
        o.rank = r;
        o.world_size = 2;
        o.master_port = port;
        o.timeout = std::chrono::seconds(10);
        C10dCommunicator comm(o);
        body(comm);
        comm.barrier();
        return std::string();
      } catch (const c10::Error& e) {
        return std::string(e.what_without_backtrace());
      }
    }));
  return {f[0].get(), f[1].get()};
}

TEST(C10dCommunicator, CollectivesTwoThreads) {
  auto errors = two_ranks([](C10dCommunicator& comm) {
    const int r = comm.rank();
    EXPECT_EQ(comm.world_size(), 2);
    EXPECT_EQ(comm.backend_name(), "gloo");
    at::Tensor t = at::full({5}, float(r + 1));
    comm.allreduce_sum_(t);
    EXPECT_TRUE(at::equal(t, at::full({5}, 3.0f)));
    at::Tensor nc = at::arange(12, at::kDouble).view({3, 4}).t() * (r + 1);  // non-contiguous
    comm.allreduce_sum_(nc);
    EXPECT_TRUE(at::equal(nc, at::arange(12, at::kDouble).view({3, 4}).t() * 3));
    auto g = comm.allgather(at::full({3}, int64_t(10 + r)));
    ASSERT_EQ(g.size(), 2u);
    EXPECT_TRUE(at::equal(g[0], at::full({3}, int64_t(10))));
    EXPECT_TRUE(at::equal(g[1], at::full({3}, int64_t(11))));
    at::Tensor b = at::full({4}, float(r == 1 ? 7 : 0));
    comm.broadcast_(b, 1);
    EXPECT_TRUE(at::equal(b, at::full({4}, 7.0f)));
    std::vector<at::Tensor> params = {at::full({2, 2}, float(r)), at::full({3}, int64_t(r + 5))};
    broadcast_from_rank0(comm, params);
    EXPECT_TRUE(at::equal(params[0], at::zeros({2, 2})));
    EXPECT_TRUE(at::equal(params[1], at::full({3}, int64_t(5))));
    verify_same_config(comm, {{"a", "1"}, {"b", "two"}});
    EXPECT_EQ(allgather_strings(comm, std::string(r + 1, 'x')), (std::vector<std::string>{"x", "xx"}));
  });
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

TEST(C10dCommunicator, StartupSyncMismatchesThrowOnEveryRank) {
  auto errors = two_ranks([](C10dCommunicator& comm) {
    const int r = comm.rank();
    std::string shape_error, config_error;
    try {
      std::vector<at::Tensor> params = {at::zeros({2, r == 0 ? 2 : 3})};
      broadcast_from_rank0(comm, params);
    } catch (const c10::Error& e) {
      shape_error = e.what_without_backtrace();
    }
    EXPECT_NE(shape_error.find("ranks hold different parameters/buffers"), std::string::npos) << shape_error;
    EXPECT_NE(shape_error.find("rank 1: 1 tensors|Float[2, 3]"), std::string::npos) << shape_error;
    try {
      verify_same_config(comm, {{"plugin", "topk"}, {"plugin.version", r == 0 ? "1.0.0" : "1.1.0"}, {"lr", "0.1"}});
    } catch (const c10::Error& e) {
      config_error = e.what_without_backtrace();
    }
    EXPECT_NE(config_error.find("plugin.version: rank 0 = '1.0.0'; rank 1 = '1.1.0'"), std::string::npos)
        << config_error;
    EXPECT_EQ(config_error.find("lr:"), std::string::npos) << config_error;
  });
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

// Dense tensors are averaged in a copy: the caller's .grad keeps this rank's own gradient.
TEST(C10dCommunicator, DenseStepLeavesLocalGradAlone) {
  auto errors = two_ranks([](C10dCommunicator& comm) {
    std::shared_ptr<Communicator> shared(&comm, [](Communicator*) {});
    const int r = comm.rank();
    at::Tensor p = at::zeros({4});
    p.mutable_grad() = at::full({4}, float(r + 1));
    CompressedSGD opt(std::vector<at::Tensor>{p}, CompressedSGDOptions(1.0).communicator(shared));
    opt.step();
    EXPECT_TRUE(at::equal(p, at::full({4}, -1.5f)));  // mean of 1 and 2
    EXPECT_TRUE(at::equal(p.grad(), at::full({4}, float(r + 1)))) << "rank " << r << ": " << p.grad();
  });
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

// GradientExchange decodes CPU float/double selections with its own loop and divides only the
// touched entries: the result must be bitwise what decompress_add_ in rank order + div_ give.
// Three "ranks" that all sent the same selection: every index arrives three times.
class MirrorCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 3; }
  std::string backend_name() const override { return "mirror"; }
  void allreduce_sum_(at::Tensor& t) override { t.mul_(3); }
  std::vector<at::Tensor> allgather(const at::Tensor& t) override { return {t.clone(), t.clone(), t.clone()}; }
  void broadcast_(at::Tensor&, int) override {}
  void barrier() override {}
};

Compressed selection(const at::Tensor& dense, int64_t k) {
  Compressed c;
  c.numel = dense.numel();
  c.shape = dense.sizes().vec();
  c.dtype = dense.scalar_type();
  at::Tensor idx = std::get<0>(std::get<1>(dense.abs().topk(k)).sort());
  c.indices = idx.to(at::kInt);
  c.values = dense.index_select(0, idx);
  return c;
}

struct PlainCodec final : Compressor {
  std::string name() const override { return "plain"; }
  std::vector<c10::DeviceType> supported_devices() const override { return {c10::DeviceType::CPU}; }
  Compressed compress(const at::Tensor&, const CompressContext&) override { return {}; }
};

TEST(GradientExchangeFastPath, SameBitsAsCodecAndDiv) {
  PlainCodec codec;
  for (auto dtype : {at::kFloat, at::kDouble})
    for (int64_t k : {5, 300}) {  // few touched entries (sparse division) and many (full div_)
      at::Tensor g = at::randn({1000}, at::TensorOptions(dtype)) * 1.37;
      Compressed c = selection(g, k);
      at::Tensor out = at::empty({1000}, at::TensorOptions(dtype));
      std::vector<SparseSlot> slots{{&c, &codec, &out}};
      MirrorCommunicator comm;
      GradientExchange ex(comm);
      StepStats st;
      ex.average_sparse(slots, st);
      at::Tensor expected = at::zeros({1000}, at::TensorOptions(dtype));
      for (int r = 0; r < 3; ++r) codec.decompress_add_(c, expected);
      expected.div_(3);
      EXPECT_TRUE(at::equal(out, expected)) << dtype << " k=" << k;
      const int64_t index_bytes = (4 + 2 * k + 7) / 8 * 8;  // Block16: one block count, 2 bytes an index
      EXPECT_EQ(st.bytes_received, 2 * (((k * int64_t(at::elementSize(dtype)) + 7) / 8 * 8) + index_bytes + 8));
    }
}

TEST(GradientExchangeFastPath, TwoRanksOverlappingSelections) {
  auto errors = two_ranks([](C10dCommunicator& comm) {
    PlainCodec codec;
    auto gen = [](int r) { return at::randn({4096}, at::detail::createCPUGenerator(50 + r)); };
    Compressed mine = selection(gen(comm.rank()), 40);
    at::Tensor out = at::empty({4096});
    std::vector<SparseSlot> slots{{&mine, &codec, &out}};
    GradientExchange ex(comm);
    StepStats st;
    ex.average_sparse(slots, st);
    at::Tensor expected = at::zeros({4096});
    for (int r = 0; r < 2; ++r) codec.decompress_add_(selection(gen(r), 40), expected);
    expected.div_(2);
    EXPECT_TRUE(at::equal(out, expected));
  });
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

// CUDA tensors go through NCCL (one rank: a GPU machine has one GPU here). Skipped without
// CUDA or without NCCL in the build.
TEST(C10dCommunicator, CudaTensorsUseNccl) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!C10dCommunicator::nccl_available()) GTEST_SKIP() << "cddp built without USE_C10D_NCCL";
  C10dOptions o;
  o.master_port = pick_free_port();
  o.timeout = std::chrono::seconds(30);
  C10dCommunicator comm(o);
  at::Tensor t = at::arange(8, at::TensorOptions(at::kFloat).device(at::kCUDA));
  comm.allreduce_sum_(t);
  EXPECT_TRUE(at::equal(t.cpu(), at::arange(8, at::kFloat)));
  auto g = comm.allgather(t);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_TRUE(g[0].is_cuda());
  comm.broadcast_(t, 0);
  EXPECT_EQ(comm.backend_name(), "gloo+nccl");
  std::printf("%s, backend %s\n", C10dCommunicator::torch_api().c_str(), comm.backend_name().c_str());
}

TEST(C10dCommunicator, BadOptions) {
  C10dOptions o;
  o.world_size = 2;
  o.rank = 2;
  EXPECT_NE(error_of([&] { C10dCommunicator c(o); }).find("rank 2 is outside [0, 2)"), std::string::npos);
  o.rank = 0;
  o.timeout = std::chrono::milliseconds(100);
  EXPECT_NE(error_of([&] { C10dCommunicator c(o); }).find("timeout must be at least 1 s"), std::string::npos);
  o.timeout = std::chrono::seconds(5);
  o.master_port = 0;
  EXPECT_NE(error_of([&] { C10dCommunicator c(o); }).find("not a TCP port"), std::string::npos);
}

}  // namespace
}  // namespace cddp
