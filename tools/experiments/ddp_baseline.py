#!/usr/bin/python3
"""ddp_baseline.py — the PyTorch DDP peer for the compressed-ddp study.

Trains the same models as cddp-train (mlp: flatten -> (Linear -> ReLU)* -> Linear;
simple_cnn: conv5x5(32) -> relu -> pool2 -> conv5x5(64) -> relu -> pool2 -> fc(512) -> relu ->
fc(10); vit_tiny: models/vit_tiny.h's vision transformer, the same layers in the same order) on
Fashion-MNIST read straight from the IDX .gz files, with DistributedSampler sharding, plain SGD
with momentum or AdamW (--optimizer adamw), and dense allreduce, the fp16 cast hook
(default_hooks.fp16_compress_hook) or the PowerSGD comm hook
(torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook). Uses Debian's torch (/usr/bin/python3)
and the gloo backend on CPU.

It writes <output_dir>/metrics.jsonl with the same field names as cddp-train
(step, epoch, loss, train_acc, lr, bytes_sent, bytes_received, bytes_dense_equivalent,
compress_ms, comm_ms, step_ms; eval rows: test_loss, test_acc) plus wall_s (seconds since
training started, evaluation included), train_s (sum of step times, evaluation excluded),
compute_ms (forward + backward time not spent waiting for gradient communication).

Launch (one process per rank, torchrun-style env):
    RANK=0 WORLD_SIZE=4 MASTER_ADDR=... MASTER_PORT=... /usr/bin/python3 ddp_baseline.py ...
or let it spawn N local ranks on 127.0.0.1:
    /usr/bin/python3 ddp_baseline.py --nproc 4 ...

bytes_sent is an estimate: every dist.all_reduce issued for gradients (by the dense or fp16
hook, or inside the PowerSGD hook) is counted as a ring allreduce, 2*(W-1)/W * nbytes sent per
rank, at the tensor's own element size (2 bytes for fp16). comm_ms is the summed duration of the
per-bucket hook futures (hook call -> future done); it overlaps backward, so compute_ms + comm_ms
can exceed step_ms. For the fp16 hook and PowerSGD, compress_ms is the time spent inside the hook
call itself (the cast; PowerSGD's orthogonalization and matmuls run partly there, partly in
future callbacks, so it is a lower bound).

Differences from cddp-train that the study states: the class-balanced subset and the shuffle
use torch's RNG, not cddp's SeededRng, so the same seed picks different (equally sized,
equally balanced) samples; weight initialization is torch's default, as in LibTorch.
"""
import argparse
import faulthandler
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


# ----------------------------------------------------------------------------- data

def read_idx(path):
    """An IDX file (optionally gzip'd) as a uint8 tensor of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {zero:#x} type {dtype:#x})")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    off = 4 + 4 * ndim
    n = 1
    for d in dims:
        n *= d
    if len(data) - off != n:
        raise ValueError(f"{path}: {len(data) - off} payload bytes, header says {n}")
    return torch.frombuffer(bytearray(data[off:]), dtype=torch.uint8).reshape(dims)


def balanced_subset(labels, n, seed, stream):
    """n indices, as class-balanced as possible (n // C per class, remainder to the first classes)."""
    g = torch.Generator().manual_seed(seed * 1000003 + stream)
    classes = int(labels.max()) + 1
    per = [n // classes + (1 if c < n % classes else 0) for c in range(classes)]
    picked = []
    for c in range(classes):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)][:per[c]]
        picked.append(idx)
    out = torch.cat(picked)
    return out[torch.randperm(len(out), generator=g)]


def load_split(root, train, subset, seed):
    prefix = "train" if train else "t10k"
    images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")).long()
    x = (images.float() / 255.0 - FASHION_MEAN) / FASHION_STD
    x = x.unsqueeze(1)  # N x 1 x 28 x 28
    if 0 < subset < len(labels):
        idx = balanced_subset(labels, subset, seed, 1 if train else 2)
        x, labels = x[idx], labels[idx]
    return torch.utils.data.TensorDataset(x.contiguous(), labels.contiguous())


# ----------------------------------------------------------------------------- models

class MLP(nn.Module):
    def __init__(self, hidden, in_features=784, classes=10):
        super().__init__()
        widths = [in_features] + list(hidden) + [classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return x


class SimpleCNN(nn.Module):
    def __init__(self, in_channels=1, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(64 * 4 * 4, 512)
        self.fc2 = nn.Linear(512, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + proj(MHSA(norm1 x)), then x + fc2(GELU(fc1(norm2 x))) (models/transformer_block.h)."""

    def __init__(self, dim, heads, mlp_dim):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim)
        self.attn_proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp_fc1 = nn.Linear(dim, mlp_dim)
        self.mlp_fc2 = nn.Linear(mlp_dim, dim)

    def attention(self, x):
        n, t, d = x.shape
        qkv = self.attn_qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = qkv[0] @ qkv[1].transpose(-2, -1) * (1.0 / math.sqrt(d // self.heads))
        mixed = scores.softmax(-1) @ qkv[2]
        return self.attn_proj(mixed.transpose(1, 2).reshape(n, t, d))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp_fc2(F.gelu(self.mlp_fc1(self.norm2(x))))


class ViTTiny(nn.Module):
    """models/vit_tiny.h: patch 7 on 28x28, dim 128, depth 3, heads 4, MLP 256, class token, learned positions."""

    def __init__(self, in_channels=1, size=28, classes=10, patch=7, dim=128, depth=3, heads=4, mlp_dim=256):
        super().__init__()
        self.patch, self.in_channels = patch, in_channels
        tokens = (size // patch) ** 2 + 1
        self.patch_embed = nn.Linear(in_channels * patch * patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, images):
        n, c, h, w = images.shape
        p = self.patch
        patches = images.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)
        x = self.patch_embed(patches)
        x = torch.cat([self.cls_token.expand(n, 1, -1).to(x.dtype), x], 1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def make_model(name, hidden):
    if name == "mlp":
        return MLP(hidden)
    if name == "simple_cnn":
        return SimpleCNN()
    if name == "vit_tiny":
        return ViTTiny()
    raise SystemExit(f"ddp_baseline: unknown model {name!r} (mlp, simple_cnn, vit_tiny)")


# ----------------------------------------------------------------------------- schedule

def lr_at(a, step, total):
    if a.warmup_steps > 0 and step < a.warmup_steps:
        return a.lr * (step + 1) / a.warmup_steps
    if a.schedule == "constant":
        return a.lr
    if a.schedule == "step":
        return a.lr * (a.gamma ** (step // a.step_size))
    if a.schedule == "cosine":
        span = max(1, total - a.warmup_steps)
        p = min(1.0, max(0.0, (step - a.warmup_steps) / span))
        return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * p))
    raise SystemExit(f"ddp_baseline: unknown schedule {a.schedule!r}")


# ----------------------------------------------------------------------------- comm accounting

class CommStats:
    """Counts what the gradient hooks send; reset each step."""

    def __init__(self, world):
        self.world = world
        self.active = False
        self.reset()

    def reset(self):
        self.bytes = 0
        self.comm_ms = 0.0
        self.hook_ms = 0.0

    def ring_bytes(self, nbytes):
        return 2.0 * (self.world - 1) / self.world * nbytes


STATS = None
_real_all_reduce = dist.all_reduce


def _counting_all_reduce(tensor, *args, **kwargs):
    if STATS is not None and STATS.active:
        STATS.bytes += STATS.ring_bytes(tensor.numel() * tensor.element_size())
    return _real_all_reduce(tensor, *args, **kwargs)


def timed_hook(inner):
    def hook(state, bucket):
        t0 = time.perf_counter()
        fut = inner(state, bucket)
        STATS.hook_ms += (time.perf_counter() - t0) * 1000.0

        def done(f):
            STATS.comm_ms += (time.perf_counter() - t0) * 1000.0
            return f.value()[0] if isinstance(f.value(), list) else f.value()
        return fut.then(done)
    return hook


# ----------------------------------------------------------------------------- training

def evaluate(model, loader, world, precision="fp32"):
    model.eval()
    tot = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for x, y in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = model(x).float()
            tot[0] += F.cross_entropy(out, y, reduction="sum").item()
            tot[1] += (out.argmax(1) == y).sum().item()
            tot[2] += len(y)
    if world > 1:
        dist.all_reduce(tot)
    model.train()
    return tot[0].item() / max(1.0, tot[2].item()), tot[1].item() / max(1.0, tot[2].item())


def train(a):
    global STATS
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    timeout = __import__("datetime").timedelta(seconds=a.timeout_s)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    except RuntimeError as e:
        # torch >= 2.4 asks its TCPStore for libuv by default; Debian 13's 2.6 is built without
        # it. The check runs before anything binds, so retrying with the classic store is safe.
        if "libuv" not in str(e):
            raise
        os.environ["USE_LIBUV"] = "0"
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    STATS = CommStats(world)
    dist.all_reduce = _counting_all_reduce  # the hooks look it up at call time

    train_ds = load_split(a.data_path, True, a.train_subset, a.seed)
    test_ds = load_split(a.data_path, False, a.test_subset, a.seed)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=a.seed, drop_last=False)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=a.batch_size, sampler=sampler, num_workers=0)
    test_sampler = DistributedSampler(test_ds, num_replicas=world, rank=rank, shuffle=False, drop_last=False)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=1000, sampler=test_sampler)

    torch.manual_seed(a.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = make_model(a.model, a.hidden)
    nparams = sum(p.numel() for p in model.parameters())
    cap_mb = a.bucket_cap_mb
    if a.hook == "powersgd":
        # One bucket. PowerSGD issues its second allreduce (Qs) from a future callback, which
        # runs on a gloo thread; with two or more buckets those callbacks race the next bucket's
        # hook in the autograd thread, the ranks issue collectives in different orders and gloo
        # fails ("op.preamble.length <= op.nbytes") or hangs. Seen with torch 1.13 + gloo.
        cap_mb = max(cap_mb, 4.0 * nparams / 2**20 + 1)
        dist._DEFAULT_FIRST_BUCKET_BYTES = int(cap_mb * 2**20)
    if a.no_ddp:
        # Plain PyTorch, no DDP wrapper and no hook: the reference for the framework's own cost
        # at world size 1 (tools/experiments/framework_overhead.sh).
        if world != 1 or a.hook != "none":
            sys.exit("ddp_baseline: --no-ddp needs world size 1 and --hook none")
        ddp = model
    else:
        ddp = DDP(model, bucket_cap_mb=cap_mb)
    if a.no_ddp:
        pass  # no communication hook to register
    elif a.hook == "powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ps
        state = ps.PowerSGDState(process_group=None, matrix_approximation_rank=a.powersgd_rank,
                                 start_powerSGD_iter=a.start_powersgd_iter, min_compression_rate=a.min_compression_rate,
                                 use_error_feedback=True, warm_start=True, random_seed=a.seed)
        ddp.register_comm_hook(state, timed_hook(ps.powerSGD_hook))
    elif a.hook == "fp16":
        # PyTorch's fp16_compress_hook: each bucket divided by the world size, cast to fp16,
        # allreduced as fp16 (so counted at 2 bytes an entry), cast back.
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        ddp.register_comm_hook(None, timed_hook(default_hooks.fp16_compress_hook))
    else:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        ddp.register_comm_hook(None, timed_hook(default_hooks.allreduce_hook))
    if a.optimizer == "adamw":
        opt = torch.optim.AdamW(ddp.parameters(), lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps,
                                weight_decay=a.weight_decay)
    else:
        opt = torch.optim.SGD(ddp.parameters(), lr=a.lr, momentum=a.momentum, nesterov=a.nesterov,
                              weight_decay=a.weight_decay)

    steps_per_epoch = len(loader)
    total = a.max_steps if a.max_steps > 0 else a.epochs * steps_per_epoch
    out = None
    if rank == 0:
        os.makedirs(a.output_dir, exist_ok=True)
        out = open(os.path.join(a.output_dir, "metrics.jsonl"), "w")
        with open(os.path.join(a.output_dir, "config.json"), "w") as f:
            json.dump(dict(vars(a), world_size=world, parameters=nparams, steps_per_epoch=steps_per_epoch), f, indent=1)
        print(f"ddp_baseline: {a.model} {nparams} params, world {world}, hook {a.hook}, "
              f"{steps_per_epoch} steps/epoch, {total} steps", flush=True)

    def emit(row):
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()

    dense_bytes = STATS.ring_bytes(nparams * 4)
    step, t_start, train_s = 0, time.perf_counter(), 0.0
    win = dict(loss=0.0, correct=0.0, n=0.0, ms=0.0, comp=0.0, comm=0.0, hook=0.0, bytes=0.0, k=0)
    epoch, done = 0, False
    while not done:
        sampler.set_epoch(epoch)
        for x, y in loader:
            lr = lr_at(a, step, total)
            for g in opt.param_groups:
                g["lr"] = lr
            STATS.reset()
            STATS.active = True
            t0 = time.perf_counter()
            # --precision bf16: CPU autocast of the forward pass, as cddp-train's run.precision.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
                logits = ddp(x)
                loss = F.cross_entropy(logits, y)
            loss.backward()
            t_bwd = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            STATS.active = False
            t1 = time.perf_counter()
            step_ms = (t1 - t0) * 1000.0
            train_s += t1 - t0
            step += 1
            n = len(y)
            win["loss"] += loss.item() * n
            win["correct"] += (logits.detach().argmax(1) == y).sum().item()
            win["n"] += n
            win["ms"] += step_ms
            # compute = forward+backward+optimizer minus the gradient communication, treating the
            # bucket time as fully exposed (gloo on CPU: one bucket, fired at the end of backward).
            win["comp"] += max(0.0, (t_bwd - t0) * 1000.0 - STATS.comm_ms) + (t1 - t_bwd) * 1000.0
            win["comm"] += STATS.comm_ms
            win["hook"] += STATS.hook_ms if a.hook != "none" else 0.0
            win["bytes"] += STATS.bytes
            win["k"] += 1
            if step % a.log_every == 0 or step == total:
                w = torch.tensor([win["loss"], win["correct"], win["n"]], dtype=torch.float64)
                if world > 1:
                    _real_all_reduce(w)
                k = max(1, win["k"])
                emit(dict(step=step, epoch=epoch + 1, loss=w[0].item() / max(1, w[2].item()),
                          train_acc=w[1].item() / max(1, w[2].item()), lr=lr,
                          density=1.0 if a.hook == "none" else win["bytes"] / k / dense_bytes,
                          bytes_sent=win["bytes"] / k, bytes_received=win["bytes"] / k,
                          bytes_dense_equivalent=dense_bytes,
                          compress_ms=win["hook"] / k, comm_ms=win["comm"] / k,
                          compute_ms=win["comp"] / k, step_ms=win["ms"] / k,
                          wall_s=time.perf_counter() - t_start, train_s=train_s))
                win = dict(loss=0.0, correct=0.0, n=0.0, ms=0.0, comp=0.0, comm=0.0, hook=0.0, bytes=0.0, k=0)
            if (a.eval_every > 0 and step % a.eval_every == 0) or step == total or step % steps_per_epoch == 0:
                tl, ta = evaluate(model, test_loader, world, a.precision)
                emit(dict(step=step, epoch=epoch + 1, test_loss=tl, test_acc=ta,
                          wall_s=time.perf_counter() - t_start, train_s=train_s))
                if rank == 0:
                    print(f"ddp_baseline: step {step} epoch {epoch + 1} test_acc {ta:.4f} "
                          f"train_s {train_s:.1f} wall_s {time.perf_counter() - t_start:.1f}", flush=True)
            if step >= total:
                done = True
                break
        epoch += 1
    wall = time.perf_counter() - t_start
    if rank == 0:
        with open(os.path.join(a.output_dir, "result.json"), "w") as f:
            json.dump(dict(wall_s=wall, train_s=train_s, steps=step), f)
        out.close()
    if rank == 0:
        print("ddp_baseline: done", flush=True)
    dist.barrier()
    # No destroy_process_group(): with torch 1.13 + gloo it (or interpreter teardown) hung now
    # and then after the last barrier in the namespace study. Leave without destructors; rank 0
    # hosts the TCPStore, so it goes last.
    sys.stdout.flush()
    sys.stderr.flush()
    if rank == 0:
        time.sleep(1.0)
    os._exit(0)


def spawn_local(a, argv):
    """--nproc N without WORLD_SIZE in the env: run N ranks here on 127.0.0.1."""
    port = a.master_port or (29500 + os.getpid() % 20000)
    procs = []
    for r in range(a.nproc):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(a.nproc), LOCAL_RANK=str(r),
                   LOCAL_WORLD_SIZE=str(a.nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__)] + argv, env=env))
    rc = 0
    for p in procs:
        rc = p.wait() or rc
    return rc


def main():
    faulthandler.register(__import__("signal").SIGUSR1)  # `kill -USR1 PID`: dump the stacks
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mlp", choices=["mlp", "simple_cnn", "vit_tiny"])
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: CPU autocast of forward")
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--hidden", default="2048,2048", type=lambda s: [int(v) for v in s.split(",") if v])
    p.add_argument("--data-path", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--train-subset", type=int, default=0)
    p.add_argument("--test-subset", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant", choices=["constant", "step", "cosine"])
    p.add_argument("--step-size", type=int, default=1000)
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--hook", default="none", choices=["none", "fp16", "powersgd"])
    p.add_argument("--powersgd-rank", type=int, default=2)
    p.add_argument("--start-powersgd-iter", type=int, default=2)
    p.add_argument("--min-compression-rate", type=float, default=2.0)
    p.add_argument("--bucket-cap-mb", type=float, default=25.0)
    p.add_argument("--no-ddp", action="store_true", help="world size 1 only: train the bare model, no DDP wrapper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=300)
    p.add_argument("--output-dir", default="runs/ddp_baseline")
    p.add_argument("--nproc", type=int, default=0, help="spawn N local ranks (when WORLD_SIZE is unset)")
    p.add_argument("--master-port", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="check the arguments, print them, and stop")
    a = p.parse_args()
    if a.dry_run:
        print("ddp_baseline: dry run:", json.dumps(vars(a), sort_keys=True))
        return
    if a.nproc > 0 and "WORLD_SIZE" not in os.environ:
        sys.exit(spawn_local(a, sys.argv[1:]))
    train(a)


if __name__ == "__main__":
    main()
