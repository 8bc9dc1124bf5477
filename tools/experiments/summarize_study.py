#!/usr/bin/python3
"""summarize_study.py — turn run_study.sh output into a Markdown report with plots.

    summarize_study.py STUDY_DIR [STUDY_DIR ...] --out docs/results.md [--img-dir DIR]
                       [--target mlp=0.80,simple_cnn=0.85,mlp@1gbit=0.85] [--lead FILE] [--notes FILE]

Reads every run.json (written by run_study.sh per run) and the metrics.jsonl next to it
(cddp-train or ddp_baseline.py; same field names). Per run it reports: final test accuracy,
launcher wall time (process start to exit of all 4 ranks, includes startup and evaluation),
training time (sum of step times), time to the target accuracy (training time at the first
evaluation at or above it), bytes per step and rank (sent / received), and the step-time
breakdown compute / compress / communicate in ms.

How the numbers are reconstructed (cddp-train's metrics.jsonl has no wall-clock field):
  * training time at step s = sum over log rows of step_ms x (steps in that row's window);
    ddp_baseline.py writes train_s itself with the same definition.
  * cddp-train's bytes_sent, compress_ms and comm_ms in a log row are those of the row's last
    step; the table averages them over the log rows after the first 10% of the run (so a DGC
    warm-up's dense steps are not averaged in; the cumulative-bytes plot does include them).
  * compute = step_ms - compress_ms - comm_ms for cddp-train; ddp_baseline.py writes
    compute_ms (forward + backward + optimizer minus hook time), compress_ms (time inside the
    PowerSGD hook call) and comm_ms (hook call to future done).
Plots: one figure per (rate, model), accuracy against training time and against bytes, drawn
by tools/plot_metrics.py (plot_accuracy_curves).
"""
import argparse
import glob
import json
import math
import os
import platform
import statistics
import sys


def load_jsonl(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def analyze(run_dir, meta, targets):
    rows = load_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    steps = [r for r in rows if "step_ms" in r]
    evals = [r for r in rows if "test_acc" in r]
    # training time per step and cumulative bytes
    t_at, b_at = {0: 0.0}, {0: 0.0}
    cum_t = cum_b = 0.0
    prev = 0
    for r in steps:
        s = int(r["step"])
        n = max(0, s - prev)
        if "train_s" in r:
            cum_t = r["train_s"]
        else:
            cum_t += r["step_ms"] * n / 1000.0
        cum_b += max(r.get("bytes_sent", 0.0), r.get("bytes_received", 0.0)) * n
        t_at[s], b_at[s] = cum_t, cum_b
        prev = s

    def at(table, s):
        keys = [k for k in table if k <= s]
        return table[max(keys)] if keys else 0.0

    # steps after the last log row (the run ended between log_every multiples): extend the
    # time and bytes at that row's per-step rates
    last_eval = int(evals[-1]["step"]) if evals else 0
    if steps and last_eval > prev and "train_s" not in steps[-1]:
        n = last_eval - prev
        cum_t += steps[-1]["step_ms"] * n / 1000.0
        cum_b += max(steps[-1].get("bytes_sent", 0.0), steps[-1].get("bytes_received", 0.0)) * n
        t_at[last_eval], b_at[last_eval] = cum_t, cum_b
        prev = last_eval

    curve = []
    for e in evals:
        s = int(e["step"])
        t = e["train_s"] if "train_s" in e else at(t_at, s)
        curve.append((s, t, at(b_at, s), e["test_acc"]))
    # "model@rate" (e.g. mlp@1gbit) wins over "model": studies of different length need different targets
    target = targets.get(f'{meta.get("model")}@{meta.get("rate")}', targets.get(meta.get("model"), None))
    ttt = None
    if target is not None:
        for s, t, b, a in curve:
            if a >= target:
                ttt = (s, t)
                break
    total_steps = max(int(steps[-1]["step"]) if steps else 0, last_eval)
    late = [r for r in steps if r["step"] > 0.1 * total_steps] or steps

    def mean(key, rs=late):
        v = [r[key] for r in rs if key in r]
        return statistics.fmean(v) if v else float("nan")

    step_ms, comp_ms, comm_ms = mean("step_ms"), mean("compress_ms"), mean("comm_ms")
    compute_ms = mean("compute_ms") if meta.get("kind") == "ddp" else step_ms - comp_ms - comm_ms
    return dict(meta=meta, dir=run_dir, curve=curve, final_acc=evals[-1]["test_acc"] if evals else float("nan"),
                steps=total_steps, train_s=at(t_at, total_steps) if steps else float("nan"),
                wall_s=meta.get("wall_s", float("nan")), ttt=ttt, target=target,
                sent=mean("bytes_sent"), received=mean("bytes_received"), dense=mean("bytes_dense_equivalent"),
                step_ms=step_ms, compute_ms=compute_ms, compress_ms=comp_ms, comm_ms=comm_ms, rc=meta.get("rc"))


def fmt_bytes(b):
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return "–"
    for unit, div in (("MB", 1e6), ("kB", 1e3)):
        if b >= div:
            return f"{b / div:.3g} {unit}"
    return f"{b:.0f} B"


def f1(x, nd=1):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    return f"nproc {os.cpu_count()}, CPU {cpu}, kernel {platform.release()}, load average now {' '.join(load)}"


def plot(results, img_dir, prefix):
    """One figure per (rate, model), drawn by tools/plot_metrics.py's plot_accuracy_curves."""
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plot_metrics.py")
    try:
        import importlib.util
        spec = importlib.util.spec_from_file_location("plot_metrics", tool)
        plot_metrics = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(plot_metrics)
    except (Exception, SystemExit) as e:  # noqa: BLE001 (plot_metrics exits without matplotlib)
        print(f"summarize_study: no plots ({e})", file=sys.stderr)
        return []
    os.makedirs(img_dir, exist_ok=True)
    groups = {}
    for r in results:
        groups.setdefault((r["meta"]["rate"], r["meta"]["model"]), []).append(r)
    out = []
    for (rate, model), rs in sorted(groups.items()):
        curves = [(r["meta"]["run"], r["meta"].get("repeat", 1), [(c[1], c[2], c[3]) for c in r["curve"]])
                  for r in rs]
        name = f"{prefix}{model}_{rate}.png"
        plot_metrics.plot_accuracy_curves(curves, f"{model}, {rate} links, 4 workers", rs[0]["target"],
                                          os.path.join(img_dir, name))
        out.append(name)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study_dirs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--img-dir", default=None, help="default: <out without .md>/ next to the report")
    p.add_argument("--target", default="mlp=0.80,simple_cnn=0.85")
    p.add_argument("--notes", default=None, help="Markdown file appended verbatim (analysis)")
    p.add_argument("--lead", default=None, help="Markdown file placed right after the title (the answers)")
    p.add_argument("--title", default="Results: compressed-ddp vs dense and PyTorch DDP on a slow network")
    a = p.parse_args()
    targets = {k: float(v) for k, v in (kv.split("=") for kv in a.target.split(",") if kv)}

    results = []
    study_txt = []
    for d in a.study_dirs:
        if os.path.exists(os.path.join(d, "study.txt")):
            study_txt.append((d, open(os.path.join(d, "study.txt")).read().strip()))
        for rj in sorted(glob.glob(os.path.join(d, "**", "run.json"), recursive=True)):
            meta = json.load(open(rj))
            if "skipped" in meta:
                continue
            results.append(analyze(os.path.dirname(rj), meta, targets))
    if not results:
        print("summarize_study: no runs found", file=sys.stderr)
        return 1

    out_dir = os.path.dirname(os.path.abspath(a.out))
    img_dir = a.img_dir or os.path.splitext(os.path.abspath(a.out))[0]
    imgs = plot(results, img_dir, "")

    L = [f"# {a.title}", ""]
    if a.lead:
        if not os.path.exists(a.lead):
            print(f"summarize_study: error: --lead {a.lead}: no such file", file=sys.stderr)
            return 2
        L.append(open(a.lead).read().rstrip())
        L.append("")
    L.append("Generated by `tools/experiments/summarize_study.py` from `tools/experiments/run_study.sh` output.")
    L.append("")
    L.append(f"Machine (summary time): {machine()}.")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append("Targets: " + ", ".join(f"{m} {100 * t:.0f}%" for m, t in targets.items()) +
             ". bytes/step is per rank and step, sent / received (cddp-train counts a sparse allgather's "
             "own payload as sent and the other ranks' as received; for a ring allreduce both are "
             "2(W-1)/W of the dense size). *train s* is the sum of step times; *wall s* is the launcher's "
             "start-to-exit time of all 4 processes (startup, data loading and evaluation included).")
    L.append("")
    L.append("| rate | model | run | final acc | wall s | train s | steps | time to target (train s) | "
             "bytes/step sent / recv | dense-equivalent | step ms | compute ms | compress ms | comm ms | rc |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = {n: i for i, n in enumerate(["dense", "ddp_dense", "ddp_powersgd", "topk1_ef", "topk1_ef_dgc",
                                          "topk1_ef_warmup_dgc", "topk1_noef", "randk1_ef", "topk01_ef_warmup",
                                          "topk01_ef_warmup_dgc", "topk01_ef", "topk01_ef_dgc"])}
    results.sort(key=lambda r: (r["meta"]["rate"], r["meta"]["model"], order.get(r["meta"]["run"], 99),
                                r["meta"].get("repeat", 1)))
    for r in results:
        m = r["meta"]
        ttt = f"{r['ttt'][1]:.1f} (step {r['ttt'][0]})" if r["ttt"] else "not reached"
        rep = f" #{m['repeat']}" if m.get("repeat", 1) > 1 else ""
        L.append(f"| {m['rate']} | {m['model']} | {m['run']}{rep} | {100 * r['final_acc']:.2f}% | {f1(r['wall_s'])} | "
                 f"{f1(r['train_s'])} | {r['steps']} | {ttt} | {fmt_bytes(r['sent'])} / {fmt_bytes(r['received'])} | "
                 f"{fmt_bytes(r['dense'])} | {f1(r['step_ms'])} | {f1(r['compute_ms'])} | {f1(r['compress_ms'], 2)} | "
                 f"{f1(r['comm_ms'])} | {r['rc']} |")
    L.append("")

    # noise between repeats
    groups = {}
    for r in results:
        groups.setdefault((r["meta"]["rate"], r["meta"]["model"], r["meta"]["run"]), []).append(r)
    rep_groups = {k: v for k, v in groups.items() if len(v) > 1}
    L.append("## Noise between repeated runs")
    L.append("")
    if rep_groups:
        L.append("| rate | model | run | n | final acc mean ± sd (pt) | wall s mean ± sd | step ms mean ± sd |")
        L.append("|---|---|---|---|---|---|---|")
        for (rate, model, run), rs in sorted(rep_groups.items()):
            def ms(vals, scale=1.0):
                v = [x * scale for x in vals if not math.isnan(x)]
                return f"{statistics.fmean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else "–"
            L.append(f"| {rate} | {model} | {run} | {len(rs)} | {ms([r['final_acc'] for r in rs], 100)} | "
                     f"{ms([r['wall_s'] for r in rs])} | {ms([r['step_ms'] for r in rs])} |")
    else:
        L.append("No run was repeated in these study directories (run_study.sh --repeats N measures it).")
    L.append("")

    if imgs:
        L.append("## Plots")
        L.append("")
        rel = os.path.relpath(img_dir, out_dir)
        for name in imgs:
            L.append(f"![{name}]({rel}/{name})")
            L.append("")

    L.append("## How these were produced")
    L.append("")
    for d, txt in study_txt:
        L.append(f"Study directory `{d}`:")
        L.append("")
        L.append("```")
        L.append(txt)
        L.append("```")
        L.append("")
    cmds = sorted({(r["meta"]["run"], r["meta"].get("command", "")) for r in results})
    L.append("Per-run commands (each launched once per namespace, see `launch` in run.json):")
    L.append("")
    L.append("```")
    for run, c in cmds:
        L.append(f"{run}: {c}")
    L.append("```")
    L.append("")
    if a.notes and os.path.exists(a.notes):
        L.append(open(a.notes).read().rstrip())
        L.append("")
    os.makedirs(out_dir, exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(L))
    print(f"summarize_study: wrote {a.out} ({len(results)} runs, {len(imgs)} plots in {img_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
