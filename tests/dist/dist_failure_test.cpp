// dist_failure_test.cpp — what happens when a peer dies, stops, or never comes: every
// surviving rank exits non-zero within timeout + 10 s with a message naming the rank, and a
// rendezvous that cannot complete says where, how long and how many ranks joined.
// It will not test training results (dist_training_test).
#include "dist_launch.h"

#include "test_plugins.h"

#include <cddp/c10d_communicator.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

namespace cddp::disttest {
namespace {

constexpr double kTimeout = 5;  // seconds, the communicator's timeout in these tests

using cddp::testing::error_of;  // tests/support/test_plugins.h

TEST(PeerFailure, KilledRankMakesSurvivorsExitNamingIt) {
  // W = 4, rank 2 SIGKILLs itself at step 5. The launcher is told not to stop the others: they
  // must notice by themselves. A rank not wired to rank 2 in Gloo's algorithm only sees its
  // live peers give up; it still names rank 2 through the failure reports in the store.
  JobRun run = run_workers(4, {"train", "--compressor", "topk", "--steps", "100000", "--sleep-ms", "20", "--die-rank",
                               "2", "--die-step", "5", "--die-how", "kill", "--plugin-dir", CDDP_TEST_PLUGIN_DIR,
                               "--timeout", std::to_string(kTimeout)},
                           [](LaunchOptions& o) { o.terminate_on_failure = false; });
  EXPECT_NE(run.code, 0) << run.all();
  const double died = run.when(2, "DYING");
  ASSERT_GE(died, 0) << run.all();
  EXPECT_EQ(run.report.workers[2].signal, 9) << run.all();
  for (int r : {0, 1, 3}) {
    const WorkerExit& w = run.report.workers[r];
    EXPECT_TRUE(w.exited && w.code == 1) << w.describe() << "\n" << run.all();
    EXPECT_LT(w.seconds - died, kTimeout + 10) << run.all();
    EXPECT_NE(run.text(r).find("rank 2 did not respond"), std::string::npos) << run.all();
    const std::string t = run.text(r);
    std::printf("rank %d exited %.2f s after rank 2 died: %s", r, w.seconds - died, t.substr(t.find("ERROR")).c_str());
  }
}

TEST(PeerFailure, RankKilledInAnOverlappedBackwardMakesSurvivorsExitNamingIt) {
  // W = 4 with overlap: rank 2 SIGKILLs itself inside its backward at step 5, after its first
  // buckets have left; the survivors' comm threads are then in the buckets' collectives. The
  // error must come out of step() and end each survivor within the timeout, naming rank 2.
  JobRun run = run_workers(4, {"train", "--compressor", "topk", "--steps", "100000", "--sleep-ms", "20", "--overlap",
                               "1", "--bucket-kb", "2", "--first-bucket-kb", "0.1", "--die-rank", "2", "--die-step",
                               "5", "--die-how", "kill", "--die-in", "backward", "--plugin-dir", CDDP_TEST_PLUGIN_DIR,
                               "--timeout", std::to_string(kTimeout)},
                           [](LaunchOptions& o) { o.terminate_on_failure = false; });
  EXPECT_NE(run.code, 0) << run.all();
  const double died = run.when(2, "DYING");
  ASSERT_GE(died, 0) << run.all();
  EXPECT_NE(run.text(2).find("in backward"), std::string::npos) << run.all();
  EXPECT_EQ(run.report.workers[2].signal, 9) << run.all();
  for (int r : {0, 1, 3}) {
    const WorkerExit& w = run.report.workers[r];
    EXPECT_TRUE(w.exited && w.code == 1) << w.describe() << "\n" << run.all();
    EXPECT_LT(w.seconds - died, kTimeout + 10) << run.all();
    EXPECT_NE(run.text(r).find("rank 2 did not respond"), std::string::npos) << run.all();
    const std::string t = run.text(r);
    std::printf("overlap: rank %d exited %.2f s after rank 2 died: %s", r, w.seconds - died,
                t.substr(t.find("ERROR")).c_str());
  }
}

TEST(PeerFailure, StoppedRankTimesOutNamingIt) {
  // W = 2, rank 1 SIGSTOPs itself: rank 0's collective times out after 5 s, and the message
  // names rank 1. The launcher then stops the job (rank 1 is killed, SIGSTOP or not).
  JobRun run = run_workers(2, {"train", "--compressor", "topk", "--steps", "100000", "--sleep-ms", "20", "--die-rank",
                            "1", "--die-step", "4", "--die-how", "stop", "--plugin-dir", CDDP_TEST_PLUGIN_DIR,
                            "--timeout", std::to_string(kTimeout)},
                        [](LaunchOptions& o) { o.grace = std::chrono::seconds(1); });
  EXPECT_NE(run.code, 0) << run.all();
  const double stopped = run.when(1, "DYING");
  ASSERT_GE(stopped, 0) << run.all();
  const WorkerExit& w0 = run.report.workers[0];
  EXPECT_TRUE(w0.exited && w0.code == 1) << run.all();
  EXPECT_EQ(run.report.first_failed_rank, 0) << run.all();
  EXPECT_GE(w0.seconds - stopped, kTimeout - 0.5) << run.all();
  EXPECT_LT(w0.seconds - stopped, kTimeout + 10) << run.all();
  EXPECT_NE(run.text(0).find("rank 1 did not respond within 5 s"), std::string::npos) << run.all();
  EXPECT_EQ(run.report.workers[1].signal, 9) << "a stopped process only dies by SIGKILL\n" << run.all();
  std::printf("rank 0 exited %.2f s after rank 1 stopped: %s", w0.seconds - stopped,
              run.text(0).substr(run.text(0).find("ERROR")).c_str());
}

// A stop request (the SIGINT/SIGTERM handler's flag) ends a rank waiting in the rendezvous
// within about a second, long before the 60 s timeout: rank 1 waiting for a store nobody
// hosts, and rank 0 waiting for a rank 1 that never joins.
TEST(Rendezvous, StopFlagEndsAWaitingRankWithinASecond) {
  for (int rank : {1, 0}) {
    std::atomic<int> stop{0};
    C10dOptions o;
    o.rank = rank;
    o.world_size = 2;
    o.master_port = pick_free_port();
    o.timeout = std::chrono::seconds(60);
    o.stop = &stop;
    std::thread stopper([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(800));
      stop.store(15);
    });
    const auto t0 = std::chrono::steady_clock::now();
    const std::string msg = error_of([&] { C10dCommunicator c(o); });
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    stopper.join();
    EXPECT_NE(msg.find("rendezvous: rank " + std::to_string(rank) + " stopped by signal 15"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find(rank == 1 ? "waiting for the store at 127.0.0.1:" : "waiting for 1 more of 2 ranks"),
              std::string::npos)
        << msg;
    EXPECT_GE(waited, 0.7) << msg;
    EXPECT_LT(waited, 0.8 + 2.0) << "rank " << rank << ": " << msg;
  }
}

TEST(Rendezvous, MissingRankTimesOutSayingWhoJoined) {
  // WORLD_SIZE=2 but a single process: the rendezvous must give up after the timeout.
  C10dOptions o;
  o.rank = 0;
  o.world_size = 2;
  o.master_port = pick_free_port();
  o.timeout = std::chrono::seconds(2);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = error_of([&] { C10dCommunicator c(o); });
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(o.master_port)), std::string::npos) << msg;
  EXPECT_NE(msg.find("did not complete within 2 s: 1 of 2 ranks joined (missing: rank 1)"), std::string::npos) << msg;
  EXPECT_LT(waited, 2 + 3);
}

TEST(Rendezvous, UnreachableMasterSaysWhere) {
  C10dOptions o;
  o.rank = 1;
  o.world_size = 2;
  o.master_port = pick_free_port();  // nobody listens there
  o.timeout = std::chrono::seconds(2);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = error_of([&] { C10dCommunicator c(o); });
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(msg.find("rank 1 could not reach the store at 127.0.0.1:" + std::to_string(o.master_port)),
            std::string::npos)
      << msg;
  EXPECT_LT(waited, 2 + 5) << msg;
}

TEST(Rendezvous, PortInUseIsAClearError) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);

  // In process: rank 0 cannot host the store.
  C10dOptions o;
  o.rank = 0;
  o.world_size = 2;
  o.master_port = port;
  o.timeout = std::chrono::seconds(2);
  const std::string msg = error_of([&] { C10dCommunicator c(o); });
  EXPECT_NE(msg.find("rank 0 could not host the store on 127.0.0.1:" + std::to_string(port)), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("already in use"), std::string::npos) << msg;

  // Through the launcher, with MASTER_PORT forced onto the busy port: the job fails fast.
  JobRun run = run_workers(2, {"rendezvous", "--timeout", "3"}, [&](LaunchOptions& lo) { lo.master_port = port; });
  EXPECT_NE(run.code, 0) << run.all();
  EXPECT_NE(run.text(0).find("already in use"), std::string::npos) << run.all();
  EXPECT_LT(run.report.seconds, 3 + 5) << run.all();
  ::close(fd);
}

TEST(Rendezvous, WorkersConnectThroughEnvironment) {
  JobRun run = run_workers(3, {"rendezvous", "--timeout", "10"});
  ASSERT_EQ(run.code, 0) << run.all();
  for (int r = 0; r < 3; ++r)
    EXPECT_NE(run.text(r).find("CONNECTED rank " + std::to_string(r) + "/3 (local " + std::to_string(r) +
                               "/3) master 127.0.0.1:" + std::to_string(run.report.master_port) + " from torchrun"),
              std::string::npos)
        << run.all();
}

TEST(Rendezvous, MissingWorkerThroughLauncher) {
  // One process told WORLD_SIZE=2: a clear error within the timeout, never a hang.
  JobRun run = run_workers(1, {"rendezvous", "--timeout", "2"},
                        [](LaunchOptions& o) { o.extra_env["WORLD_SIZE"] = "2"; });
  EXPECT_EQ(run.code, 1) << run.all();
  EXPECT_NE(run.text(0).find("1 of 2 ranks joined (missing: rank 1)"), std::string::npos) << run.all();
  EXPECT_LT(run.report.seconds, 2 + 5) << run.all();
}

}  // namespace
}  // namespace cddp::disttest
