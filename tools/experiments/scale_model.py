#!/usr/bin/python3
"""scale_model.py — a cost model of one training step past the machines we have, from measured parts.

    scale_model.py --bench BENCH.json [--out-md FILE] [--out-png FILE]
                   [--compute-ms 86] [--compress-ms 12] [--powersgd-compute-ms 57]
                   [--powersgd-compress-ms 10] [--powersgd-bytes 240000] [--k 58000]
                   [--dense-bytes 81920]

BENCH.json is what `bench_exchange --world 2,4,8 --json BENCH.json` writes: per W and exchange
the bytes each rank received and the median time, and the median time of an 8-byte allreduce,
allgather and alltoall (the per-collective latency).

The model of one step at W ranks on a link of bandwidth B (bytes/s) and a per-message cost a:
    step = compute + compress + exchange
    exchange = messages(W) * a + bytes_received(W) / B
with, per exchange (k entries per rank, v value bytes, i index bytes):
    allgather (top-k):   messages W-1 (one ring; fixed-k top-k skips the counts), bytes (W-1)*k*(v+i)
    sparse allreduce:    messages 3(W-1) (two alltoalls, one allgather),
                         bytes (W-1)*(off(s) + s*v) + (W-1)*(8 + off(s) + s*v) + 16(W-1), s = ceil(k/W),
                         off(n) = min(4n, 4*ceil(R/65536) + 2n) for regions of R = ceil(numel/W)
    PowerSGD allreduce:  messages 2 * 2(W-1) (two ring allreduces, P and Q),
                         bytes 2(W-1)/W * M (M: the P and Q bytes of one rank)
and every method also ring-allreduces `dense_bytes` (the tensors kept dense) with 2(W-1) messages.

Validation: a and the loopback bandwidth are fitted at W = 2 only (a from the 8-byte collectives,
B from each exchange's W = 2 time), then W = 4 and 8 are predicted and set against the measured
times; a second prediction takes each collective's latency as measured at that W (8-byte rows),
which separates the byte model from the cost of W ranks sharing the cores. Prediction: W = 16 ... 1024 at 100 Mbit/s, 1 Gbit/s and 10 Gbit/s with a = the W = 2
loopback latency per message (software cost; a real network adds its own).

compute/compress defaults are the medians of issue #13's study run (study mlp, 4 workers, 100
Mbit/s, the project's 2-core machine): top-k 1 % 86 / 12 ms, PowerSGD rank 4 57 / 10 ms, 0.24 MB
received per step. All measurements here come from a noisy, shared 2-core machine; W > 2 ranks
share its two cores, so measured times at W = 4 and 8 include CPU contention.

It will not run any benchmark itself and does not change any file but --out-md / --out-png.
"""
import argparse
import json
import math
import os
import sys
import tempfile


def load_bench(path):
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"scale_model.py: cannot read {path}: {e}")
    exchanges, latency = load_bench_rows(rows)
    if not exchanges or not latency:
        sys.exit(f"scale_model.py: {path} has no exchange or latency rows (bench_exchange --world --json)")
    return exchanges, latency


def load_bench_rows(rows):
    """The rows of a bench file, by (W, exchange, values) and by (W, latency op)."""
    exchanges, latency = {}, {}
    for r in rows:
        if "latency" in r:
            latency[(r["world"], r["latency"])] = r["ms"] / 1e3
        elif "exchange" in r:
            exchanges[(r["world"], r["exchange"], r["values"])] = r
    return exchanges, latency


def messages(method, W):
    return {"allgather": W - 1, "sparse_allreduce": 3 * (W - 1), "powersgd": 4 * (W - 1),
            "dense_allreduce": 2 * (W - 1)}[method]


def offset_bytes(n, region):
    """Bytes of n sorted offsets in a region of `region` entries: Block16 or uint32, the smaller."""
    return min(4 * n, 4 * math.ceil(region / 65536) + 2 * n) if n > 0 else 0


def received_bytes(method, W, k, value_bytes=4, index_bytes=2.0, powersgd_bytes=0.0, numel=5800000):
    if method == "allgather":
        return (W - 1) * k * (value_bytes + index_bytes)
    if method == "sparse_allreduce":  # sparse_allreduce.h: s = b = ceil(k/W) entries a region
        s, region = math.ceil(k / W), math.ceil(numel / W)
        per = offset_bytes(s, region) + s * value_bytes
        return (W - 1) * per + (W - 1) * (8 + per) + 16 * (W - 1)
    if method == "powersgd":
        return 2 * (W - 1) / W * powersgd_bytes
    raise ValueError(method)


def exchange_time(method, W, bandwidth, per_message, **kw):
    return messages(method, W) * per_message + received_bytes(method, W, **kw) / bandwidth


def collectives_latency(ex, W, latency):
    """The measured 8-byte latency of the collectives one exchange makes at W (seconds)."""
    if ex == "allgather":
        return latency[(W, "allgather")]
    if ex == "sparse_allreduce":
        return 2 * latency[(W, "alltoall")] + latency[(W, "allgather")]
    raise ValueError(ex)


def validate(exchanges, latency):
    """Fit at W = 2, predict the measured W > 2; rows of (W, exchange, values, measured ms, predicted ms)."""
    a2 = latency.get((2, "allgather"))
    if a2 is None:
        sys.exit("scale_model.py: the bench file has no W = 2 latency row; run bench_exchange --world 2,4,8")
    rows = []
    for (W, ex, values), r in sorted(exchanges.items()):
        base = exchanges.get((2, ex, values))
        if base is None or ex == "dense_allreduce":
            continue
        # Loopback "bandwidth" of this exchange at W = 2: bytes over the time left after the messages.
        msgs2 = messages(ex, 2)
        t2 = base["ms"] / 1e3
        bw = base["bytes_received"] / max(t2 - msgs2 * a2, 1e-6)
        predicted = messages(ex, W) * a2 + r["bytes_received"] / bw
        with_latency = collectives_latency(ex, W, latency) + r["bytes_received"] / bw
        rows.append((W, ex, values, r["ms"], predicted * 1e3, with_latency * 1e3, r["bytes_received"]))
    return rows, a2


def predict(args, a):
    links = {"100 Mbit/s": 12.5e6, "1 Gbit/s": 125e6, "10 Gbit/s": 1.25e9}
    worlds = [16, 32, 64, 128, 256, 512, 1024]
    out = {}
    for name, bw in links.items():
        for W in worlds:
            dense = messages("dense_allreduce", W) * a + 2 * (W - 1) / W * args.dense_bytes / bw
            ag = args.compute_ms / 1e3 + args.compress_ms / 1e3 + dense + exchange_time(
                "allgather", W, bw, a, k=args.k, value_bytes=args.value_bytes)
            sar = args.compute_ms / 1e3 + args.compress_ms / 1e3 + dense + exchange_time(
                "sparse_allreduce", W, bw, a, k=args.k, value_bytes=args.value_bytes, numel=args.numel)
            psgd = args.powersgd_compute_ms / 1e3 + args.powersgd_compress_ms / 1e3 + dense + exchange_time(
                "powersgd", W, bw, a, k=0, powersgd_bytes=args.powersgd_bytes)
            out[(name, W)] = (ag * 1e3, sar * 1e3, psgd * 1e3)
    return links, worlds, out


def write_atomic(path, data, mode="w"):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".scale_model.")
    with os.fdopen(fd, mode) as f:
        f.write(data)
    os.replace(tmp, path)


def markdown(args, val_rows, a2, links, worlds, pred):
    lines = ["Validation (fitted at W = 2, predicted at W = 4 and 8; loopback Gloo on the shared 2-core machine,",
             f"W ranks on 2 cores; per-message cost a = {a2 * 1e3:.3f} ms from the W = 2 8-byte allgather):", "",
             "| W | exchange | values | bytes received per rank | measured ms | predicted ms | error | "
             "predicted with this W's measured latency | error |",
             "|---|---|---|---|---|---|---|---|---|"]
    for W, ex, values, meas, predd, pl, b in val_rows:
        lines.append(f"| {W} | {ex} | {values} | {b:.0f} | {meas:.2f} | {predd:.2f} | {(predd - meas) / meas * 100:+.0f} % "
                     f"| {pl:.2f} | {(pl - meas) / meas * 100:+.0f} % |")
    lines += ["", f"Predicted step time, ms (compute {args.compute_ms} + compress {args.compress_ms} ms for top-k, "
              f"k = {args.k} per rank, {args.value_bytes}-byte values; PowerSGD {args.powersgd_compute_ms} + "
              f"{args.powersgd_compress_ms} ms, {args.powersgd_bytes:.0f} B of P and Q; {args.dense_bytes:.0f} B dense "
              f"for all; a = {a2 * 1e3:.3f} ms a message):", "",
              "| link | W | top-k allgather | top-k sparse allreduce | PowerSGD allreduce |", "|---|---|---|---|---|"]
    for name in links:
        for W in worlds:
            ag, sar, psgd = pred[(name, W)]
            lines.append(f"| {name} | {W} | {ag:.0f} | {sar:.0f} | {psgd:.0f} |")
    return "\n".join(lines) + "\n"


def plot(path, links, worlds, pred):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(links), figsize=(5 * len(links), 4), sharey=False)
    for ax, name in zip(axes, links):
        for j, label in enumerate(["top-k allgather", "top-k sparse allreduce", "PowerSGD allreduce"]):
            ax.plot(worlds, [pred[(name, W)][j] for W in worlds], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("workers W")
        ax.set_ylabel("modeled step time (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".scale_model.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bench", required=True, help="bench_exchange --world ... --json output")
    p.add_argument("--out-md", help="write the tables here (Markdown)")
    p.add_argument("--out-png", help="write the prediction plot here")
    p.add_argument("--compute-ms", type=float, default=86.0)
    p.add_argument("--compress-ms", type=float, default=12.0)
    p.add_argument("--powersgd-compute-ms", type=float, default=57.0)
    p.add_argument("--powersgd-compress-ms", type=float, default=10.0)
    p.add_argument("--powersgd-bytes", type=float, default=240000.0,
                   help="P and Q bytes per rank per step (issue #13: 0.24 MB received at W = 4)")
    p.add_argument("--k", type=int, default=58000, help="entries selected per rank per step (1 %% of 5.8M)")
    p.add_argument("--value-bytes", type=int, default=4, choices=[2, 4])
    p.add_argument("--numel", type=int, default=5800000, help="entries of the gradient (the study mlp's 5.8M)")
    p.add_argument("--dense-bytes", type=float, default=81920.0, help="bytes kept dense per step (all methods)")
    args = p.parse_args(argv)
    exchanges, latency = load_bench(args.bench)
    val_rows, a2 = validate(exchanges, latency)
    links, worlds, pred = predict(args, a2)
    md = markdown(args, val_rows, a2, links, worlds, pred)
    print(md)
    if args.out_md:
        write_atomic(args.out_md, md)
    if args.out_png:
        plot(args.out_png, links, worlds, pred)
    return 0


if __name__ == "__main__":
    sys.exit(main())
