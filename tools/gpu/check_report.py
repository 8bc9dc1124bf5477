#!/usr/bin/env python3
"""check_report.py — turns what tools/gpu/check.sh recorded into docs/gpu/h200-check.json and a
markdown table for docs/benchmarks.md (issue #15, "On the GPU" item 4).

Inputs (all written by check.sh; any may be missing):
  --tests FILE     TSV: name, status, seconds, detail            (one line per GPU test)
  --training FILE  TSV: model, world_size, backend, rc, metrics.jsonl path, status, seconds
  --bench FILE     JSON rows of bench_topk_cuda --json
It will not measure, guess or fill in anything: a number appears in the output only when a
run on this machine produced it; everything that did not run is null with a "status" saying
why. Plain Python 3, standard library only.
"""
import argparse
import json
import math
import os
import statistics
import sys

KERNEL_SIZES = [1 << 20, 25000000, 100000000]  # issue #15: N = 1M, 25M, 100M, k = 1 %


def k_for_ratio(ratio, n):
    """cddp::k_for_ratio (core/src/compression/compressor.cpp), for the not-run rows."""
    exact = ratio * n
    return max(1, min(n, math.ceil(exact - 1e-9 * exact)))


def read_tsv(path, width):
    rows = []
    if not path or not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cells = line.split("\t")
            cells += [""] * (width - len(cells))
            rows.append(cells[:width])
    return rows


def metrics_summary(path):
    """Median step_ms and compress_ms over the logged windows, the first (warm-up) excluded when
    there are more. Returns (step_ms, compress_ms, windows) or (None, None, 0)."""
    if not path or not os.path.exists(path):
        return None, None, 0
    steps, comps = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if "step_ms" in m and "compress_ms" in m:
                steps.append(float(m["step_ms"]))
                comps.append(float(m["compress_ms"]))
    if not steps:
        return None, None, 0
    if len(steps) > 1:
        steps, comps = steps[1:], comps[1:]
    return statistics.median(steps), statistics.median(comps), len(steps)


def build(args):
    notes = []
    tests = {}
    test_details = {}
    for name, status, seconds, detail in read_tsv(args.tests, 4):
        tests[name] = status
        test_details[name] = {"status": status,
                              "seconds": float(seconds) if seconds else None,
                              "detail": detail}

    kernel = []
    bench_rows = []
    if args.bench and os.path.exists(args.bench):
        with open(args.bench, encoding="utf-8") as f:
            try:
                bench_rows = json.load(f)
            except ValueError as e:
                notes.append(f"bench JSON unreadable: {e}")
    if bench_rows:
        for r in bench_rows:
            row = {"n": int(r["n"]), "k": int(r["k"]),
                   "fused_ms": r.get("fused_ms"), "chain_ms": r.get("chain_ms"),
                   "plain_ms": r.get("plain_ms")}
            for extra in ("single_pass_ms", "add_out_ms", "randomk_ms",
                          "fused_idx_equals_chain", "single_pass_equals_fused", "iters"):
                if extra in r:
                    row[extra] = r[extra]
            if row["fused_ms"] and row["chain_ms"] and row["plain_ms"]:
                row["chain_over_fused"] = round(row["chain_ms"] / row["fused_ms"], 3)
                row["fused_over_plain"] = round(row["fused_ms"] / row["plain_ms"], 3)
                row["targets_met"] = (row["chain_over_fused"] >= 3.0 and
                                      row["fused_over_plain"] <= 2.5)
            row["status"] = "measured"
            kernel.append(row)
    else:
        why = args.bench_status or "not run"
        for n in KERNEL_SIZES:
            kernel.append({"n": n, "k": k_for_ratio(0.01, n), "fused_ms": None,
                           "chain_ms": None, "plain_ms": None, "status": why})

    training = []
    for model, ws, backend, rc, metrics, status, seconds in read_tsv(args.training, 7):
        step_ms, compress_ms, windows = (None, None, 0)
        if rc == "0":
            step_ms, compress_ms, windows = metrics_summary(metrics)
        row = {"model": model, "world_size": int(ws), "backend": backend,
               "rc": int(rc) if rc.lstrip("-").isdigit() else None,
               "step_ms": None if step_ms is None else round(step_ms, 3),
               "compress_ms": None if compress_ms is None else round(compress_ms, 3),
               "windows": windows, "status": status,
               "seconds": float(seconds) if seconds else None}
        if step_ms and compress_ms is not None:
            row["compress_share"] = round(compress_ms / step_ms, 4)
        if row["rc"] == 0 and step_ms is None:
            row["status"] = status + "; no step_ms/compress_ms in " + (metrics or "(no metrics)")
        training.append(row)
    if any(t["world_size"] == 1 for t in training):
        notes.append("world size 1 runs no collective (cddp::connect gives a LocalCommunicator): "
                     "'backend' is the configured distributed.backend")
    notes.append("step_ms: median of the per-window means (run.log_every steps each) after the first window; "
                 "compress_ms: median of the last step of each window, timed to device completion")
    if args.dry_run:
        notes.append("dry run (CDDP_CHECK_ALLOW_NO_CUDA=1): nothing ran on a GPU; no number "
                     "here is a GPU measurement")
    return {
        "commit": args.commit,
        "device": args.device,
        "torch": args.torch,
        "dry_run": bool(args.dry_run),
        "elapsed_s": args.elapsed,
        "budget_s": args.budget,
        "tests": tests,
        "test_details": test_details,
        "kernel": kernel,
        "training": training,
        "notes": notes,
    }


def fmt(v, digits=3):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(rep):
    out = []
    head = "dry run, nothing ran on a GPU" if rep["dry_run"] else rep["device"]
    out.append(f"### GPU check: {head}")
    out.append("")
    out.append(f"Commit `{rep['commit']}`, torch {rep['torch']}, device {rep['device']}, "
               f"{fmt(rep['elapsed_s'], 0)} s of a {fmt(rep['budget_s'], 0)} s budget "
               "(`bash tools/gpu/check.sh`, docs/gpu/h200-check.json).")
    out.append("")
    out.append("| test | result | s | detail |")
    out.append("|---|---|---|---|")
    for name, d in rep["test_details"].items():
        out.append(f"| {name} | {d['status']} | {fmt(d['seconds'], 1)} | "
                   f"{d['detail'].replace('|', '/')} |")
    out.append("")
    out.append("| N | k | fused ms | chain ms | plain pass ms | chain / fused (≥ 3×) | "
               "fused / plain (≤ 2.5×) | single-pass ms | status |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rep["kernel"]:
        cf = r.get("chain_over_fused")
        fp = r.get("fused_over_plain")
        out.append(f"| {r['n']:,} | {r['k']:,} | {fmt(r['fused_ms'])} | {fmt(r['chain_ms'])} | "
                   f"{fmt(r['plain_ms'])} | {fmt(cf, 2) + '×' if cf else '—'} | "
                   f"{fmt(fp, 2) + '×' if fp else '—'} | {fmt(r.get('single_pass_ms'))} | "
                   f"{r['status']} |")
    out.append("")
    out.append("| model | world size | backend | rc | step ms | compress ms | compress share "
               "(≤ 10 % on resnet18) | status |")
    out.append("|---|---|---|---|---|---|---|---|")
    for t in rep["training"]:
        share = t.get("compress_share")
        out.append(f"| {t['model']} | {t['world_size']} | {t['backend']} | {fmt(t['rc'])} | "
                   f"{fmt(t['step_ms'])} | {fmt(t['compress_ms'])} | "
                   f"{fmt(share * 100, 1) + ' %' if share is not None else '—'} | "
                   f"{t['status'].replace('|', '/')} |")
    out.append("")
    for n in rep["notes"]:
        out.append(f"- {n}")
    out.append("")
    return "\n".join(out)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tests")
    p.add_argument("--training")
    p.add_argument("--bench")
    p.add_argument("--bench-status", default="")
    p.add_argument("--commit", default="unknown")
    p.add_argument("--device", default="unknown")
    p.add_argument("--torch", default="unknown")
    p.add_argument("--elapsed", type=float, default=None)
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-md", required=True)
    args = p.parse_args(argv)
    rep = build(args)
    for path in (args.out_json, args.out_md):
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
    with open(args.out_json, "w", encoding="utf-8") as f:
        json.dump(rep, f, indent=2)
        f.write("\n")
    with open(args.out_md, "w", encoding="utf-8") as f:
        f.write(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
