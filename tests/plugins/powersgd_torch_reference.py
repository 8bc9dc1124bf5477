#!/usr/bin/python3
"""powersgd_torch_reference.py — records what PyTorch's own PowerSGD hook computes, for
powersgd_torch_compare_test.cpp (PowerSGD: Vogels, Karimireddy and Jaggi, NeurIPS 2019).

    /usr/bin/python3 powersgd_torch_reference.py DIR

DIR/manifest.txt (written by the C++ test) names the world size, the parameters' shapes, the
configurations and, for every (configuration, step, parameter), the seed from which our plugin
draws Q. DIR/grad_r{rank}_s{step}_p{param}.bin hold the gradients (raw float32). Two processes
over Gloo (a FileStore in DIR) each call the real
torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook.powerSGD_hook on one bucket per
parameter, step after step, with the hook's own error feedback and warm start, and write
out_{config}_r{rank}_s{step}_p{param}_{G,P,Q}.bin: the decompressed gradient the hook returns,
its orthonormal P and its mean Q (P and Q only on compressed steps).

Three things are set from outside the hook, none of them changes its arithmetic:
  - the bucket is a stand-in with the four methods the hook calls (buffer, index, gradients,
    is_last), holding one parameter;
  - state.rng, from which the hook takes the seed for torch.manual_seed before it draws Q, hands
    out the seeds of the manifest, so that both sides draw the same initial Q;
  - start_powerSGD_iter is assigned after construction: the constructor refuses values <= 1
    because of DDP's bucket rebuild after iteration 1, which does not happen here.
With warm_start off the hook clears its P and Q at the end of every call; the dictionaries keep
what they held before the clear, so that P and Q can still be written.

It will not train, build a DDP model or compare anything: the C++ test compares.
"""
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd


class Bucket:
    """What powerSGD_hook reads from a dist.GradBucket: one parameter's flat gradient."""

    def __init__(self, index, flat, shape, last):
        self._index, self._flat, self._shape, self._last = index, flat, shape, last

    def buffer(self):
        return self._flat

    def index(self):
        return self._index

    def gradients(self):
        return [self._flat.view(self._shape)]

    def is_last(self):
        return self._last


class SeedFeed:
    """Stands in for state.rng: randint() returns the seed our plugin uses for this draw."""

    def __init__(self):
        self.seed = None

    def randint(self, _high):
        assert self.seed is not None, "the hook drew a Q where the manifest has no seed"
        return self.seed


class KeepingDict(dict):
    """A dict that remembers its contents when cleared (the hook's P and Q without warm start)."""

    def __init__(self):
        super().__init__()
        self.before_clear = {}

    def clear(self):
        self.before_clear = dict(self)
        super().clear()


def read_manifest(path):
    m = {"params": [], "configs": [], "seeds": {}}
    with open(path) as f:
        for line in f:
            w = line.split()
            if not w:
                continue
            if w[0] == "world":
                m["world"] = int(w[1])
            elif w[0] == "param":
                m["params"].append(tuple(int(x) for x in w[2:]))
            elif w[0] == "config":
                m["configs"].append({"name": w[1], "rank": int(w[2]), "start_iter": int(w[3]),
                                     "warm_start": w[4] == "1", "epsilon": float(w[5]), "steps": int(w[6]),
                                     "min_compression_rate": float(w[7])})
            elif w[0] == "seed":
                m["seeds"][(w[1], int(w[2]), int(w[3]))] = int(w[4])
    return m


def write(path, t):
    t.detach().to(torch.float32).contiguous().numpy().tofile(path)


def worker(rank, directory, m):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + os.path.join(directory, "store"), rank=rank,
                            world_size=m["world"])
    params = m["params"]
    for cfg in m["configs"]:
        state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=cfg["rank"],
                                   start_powerSGD_iter=max(cfg["start_iter"], 2),
                                   min_compression_rate=cfg["min_compression_rate"], use_error_feedback=True,
                                   warm_start=cfg["warm_start"], orthogonalization_epsilon=cfg["epsilon"],
                                   random_seed=0)
        state.start_powerSGD_iter = cfg["start_iter"]
        feed = SeedFeed()
        state.rng = feed
        state.p_memory_dict = KeepingDict()
        state.q_memory_dict = KeepingDict()
        for step in range(1, cfg["steps"] + 1):
            for i, shape in enumerate(params):
                feed.seed = m["seeds"].get((cfg["name"], step, i))
                n = int(np.prod(shape))
                grad = np.fromfile(os.path.join(directory, "grad_r%d_s%d_p%d.bin" % (rank, step, i)),
                                   dtype=np.float32)
                assert grad.size == n
                bucket = Bucket(i, torch.from_numpy(grad).clone(), shape, i == len(params) - 1)
                compressed = state.iter >= state.start_powerSGD_iter
                out = psgd.powerSGD_hook(state, bucket).wait()
                stem = os.path.join(directory, "out_%s_r%d_s%d_p%d_" % (cfg["name"], rank, step, i))
                write(stem + "G.bin", out)
                if compressed:
                    ps = state.p_memory_dict if i in state.p_memory_dict else state.p_memory_dict.before_clear
                    qs = state.q_memory_dict if i in state.q_memory_dict else state.q_memory_dict.before_clear
                    write(stem + "P.bin", ps[i])
                    write(stem + "Q.bin", qs[i])
    dist.barrier()
    dist.destroy_process_group()


def main():
    directory = sys.argv[1]
    m = read_manifest(os.path.join(directory, "manifest.txt"))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(worker, args=(directory, m), nprocs=m["world"], join=True)
    print("powersgd_torch_reference: torch %s, %d configurations written" % (torch.__version__, len(m["configs"])))


if __name__ == "__main__":
    main()
