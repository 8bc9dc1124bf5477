#!/usr/bin/python3
"""plot_metrics.py — overlay the metrics of one or more cddp-train runs as PNG charts.

    plot_metrics.py RUN_DIR [RUN_DIR ...] --out DIR [--labels A B ...] [--smooth N]

Reads RUN_DIR/metrics.jsonl (one JSON object per logged step, written by MetricsWriter)
and writes into DIR:
    loss_vs_step.png       training loss against the optimizer step
    test_acc_vs_step.png   test accuracy against the step (rows that carry test_acc)
    loss_vs_bytes.png      training loss against the cumulative bytes this rank sent
    test_acc_vs_bytes.png  test accuracy against the cumulative bytes sent
Cumulative bytes: the "bytes_sent_total" field when a run logs it; otherwise the per-step
"bytes_sent" values integrated over the steps (a value logged every N steps stands for
each of the N steps since the previous logged row; a row without it, such as an
evaluation row, uses the last known value).

Unparsable lines (a line torn by a crash) are skipped with a warning. Rows of the same step
are merged (the trainer logs evaluation as its own row); when a resumed run logged a step
twice, the later values win. It will not read TensorBoard files, compute
new metrics or show windows (matplotlib's Agg backend only). Exit status: 0 on success,
2 for bad arguments or a missing/empty metrics.jsonl.
"""

import argparse
import json
import math
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
except ImportError:  # pragma: no cover
    sys.exit(f"plot_metrics: error: matplotlib is not available to {sys.executable}; "
             "run it with /usr/bin/python3 after: apt-get install python3-matplotlib")


class RunError(Exception):
    pass


def load_run(run_dir):
    """Returns the run's rows (dicts), deduplicated by step and sorted by step."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise RunError(f"{path}: not found (is {run_dir} a run directory written by cddp-train "
                       f"with metrics.jsonl enabled?)")
    by_step = {}
    no_step = []
    bad = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(row, dict):
                bad += 1
                continue
            step = row.get("step")
            if isinstance(step, (int, float)):
                # Rows of one step are merged (a training row and an eval row); when a resumed
                # run logged a step again, its later values win.
                by_step.setdefault(int(step), {}).update(row)
            else:
                no_step.append(row)
    if bad:
        print(f"plot_metrics: warning: {path}: skipped {bad} unparsable line(s)", file=sys.stderr)
    if not by_step:
        raise RunError(f"{path}: no rows with a \"step\" field")
    return [by_step[s] for s in sorted(by_step)]


def number(value):
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def cumulative_bytes(rows):
    """Cumulative bytes sent at each row (None where unknown). A row without bytes_sent (an
    evaluation row) gets the total so far plus the last known per-step rate over its gap."""
    out = []
    if any(number(r.get("bytes_sent_total")) is not None for r in rows):
        return [number(r.get("bytes_sent_total")) for r in rows]
    total = 0.0
    rate = None
    prev_step = 0
    for r in rows:
        step = int(r["step"])
        b = number(r.get("bytes_sent"))
        if b is not None:
            rate = b
        if rate is None:
            out.append(None)
        else:
            total += rate * max(step - prev_step, 0)
            out.append(total)
        prev_step = step
    return out


def series(rows, x_of, key, smooth=0):
    xs, ys = [], []
    for r, x in zip(rows, x_of):
        y = number(r.get(key))
        if x is None or y is None:
            continue
        xs.append(x)
        ys.append(y)
    if smooth > 1 and ys:
        acc, window = [], []
        for y in ys:
            window.append(y)
            if len(window) > smooth:
                window.pop(0)
            acc.append(sum(window) / len(window))
        ys = acc
    return xs, ys


def byte_unit(max_bytes):
    for power, unit in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if max_bytes >= 1024 ** power:
            return 1024 ** power, unit
    return 1, "B"


def plot(runs, key, ylabel, x_kind, out_path, smooth):
    """Draws one chart; returns False when no run has data for it."""
    curves = []
    for label, rows in runs:
        if x_kind == "step":
            xs_all = [float(r["step"]) for r in rows]
        else:
            xs_all = cumulative_bytes(rows)
        xs, ys = series(rows, xs_all, key, smooth if key == "loss" else 0)
        if xs:
            curves.append((label, xs, ys))
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if x_kind == "bytes":
        scale, unit = byte_unit(max(max(xs) for _, xs, _ in curves))
        positive = [x for _, xs, _ in curves for x in xs if x > 0]
        for label, xs, ys in curves:
            ax.plot([x / scale for x in xs], ys, label=label, linewidth=1.4, marker="o" if len(xs) <= 50 else None,
                    markersize=3)
        ax.set_xlabel(f"cumulative bytes sent per rank ({unit})")
        if positive and max(positive) / min(positive) > 1000:
            ax.set_xscale("log")
    else:
        for label, xs, ys in curves:
            ax.plot(xs, ys, label=label, linewidth=1.4, marker="o" if len(xs) <= 50 else None, markersize=3)
        ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if len(curves) > 1 or curves[0][0]:
        ax.legend()
    title = f"{ylabel} vs {'step' if x_kind == 'step' else 'bytes sent'}"
    ax.set_title(title + (f" (moving average {smooth})" if smooth > 1 and key == "loss" else ""))
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return True


MAX_LINES_PER_PANEL = 8  # more and the colours and the legend stop being readable


def accuracy_panel_groups(curves):
    """The run names of each row of panels: sorted, at most MAX_LINES_PER_PANEL names a row
    (repeats of a name stay in its row and count as one line)."""
    names = sorted({name for name, _, pts in curves if pts})
    return [names[i:i + MAX_LINES_PER_PANEL] for i in range(0, len(names), MAX_LINES_PER_PANEL)]


def plot_accuracy_curves(curves, title, target, out_path):
    """The study figure (tools/experiments/summarize_study.py): test accuracy against training
    time and against cumulative bytes, side by side, one colour per run name; at most
    MAX_LINES_PER_PANEL names per row of panels, further names in further rows.

    Both x axes are logarithmic and every panel has its own limits, so a dense run's 300 s
    does not squeeze the compressed runs' 10-30 s against zero.

    curves: [(name, repeat, [(train_s, bytes, acc), ...]), ...]; repeats of a name share its
    colour and one legend entry. target: an accuracy in [0, 1] drawn as a dotted line, or None.
    Returns the matplotlib figure's axes, rows of [time, bytes] (for tests).
    """
    groups = accuracy_panel_groups(curves) or [[]]
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.5 * len(groups)), squeeze=False)
    for row, names in zip(axes, groups):
        # tab10 within a row: at most 8 names, so no two lines of a panel share a colour
        colour = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
        labelled = set()  # one legend entry per name, also when several studies ran it
        for name, rep, pts in sorted(curves, key=lambda c: (c[0], c[1])):
            if not pts or name not in colour:
                continue
            kw = dict(marker=".", color=colour[name], label=None if name in labelled else name,
                      alpha=1.0 if rep == 1 else 0.5)
            labelled.add(name)
            row[0].plot([max(p[0], 1e-3) for p in pts], [100 * p[2] for p in pts], **kw)
            row[1].plot([max(p[1], 1.0) for p in pts], [100 * p[2] for p in pts], **kw)
        for a in row:
            if target:
                a.axhline(100 * target, color="grey", ls=":", lw=1)
            a.set_ylabel("test accuracy (%)")
            a.set_xscale("log")
            a.grid(alpha=0.3, which="both")
        row[0].set_xlabel("training time (s, sum of step times; log scale)")
        row[1].set_xlabel("cumulative bytes per rank (max of sent, received; log scale)")
        if names:
            row[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return axes


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Overlay cddp-train runs: loss and test accuracy vs step and vs cumulative bytes sent.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories containing metrics.jsonl")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the PNG files (created)")
    parser.add_argument("--labels", nargs="+", metavar="LABEL", help="one legend label per run (default: dir name)")
    parser.add_argument("--smooth", type=int, default=0, metavar="N",
                        help="moving average of N logged points for the loss curves (default: none)")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels has {len(args.labels)} label(s) for {len(args.runs)} run(s)")
    if args.smooth < 0:
        parser.error("--smooth must be >= 0")
    labels = args.labels or [os.path.basename(os.path.normpath(r)) for r in args.runs]

    runs = []
    for label, run_dir in zip(labels, args.runs):
        try:
            runs.append((label, load_run(run_dir)))
        except RunError as e:
            print(f"plot_metrics: error: {e}", file=sys.stderr)
            return 2

    os.makedirs(args.out, exist_ok=True)
    charts = [
        ("loss", "training loss", "step", "loss_vs_step.png"),
        ("test_acc", "test accuracy", "step", "test_acc_vs_step.png"),
        ("loss", "training loss", "bytes", "loss_vs_bytes.png"),
        ("test_acc", "test accuracy", "bytes", "test_acc_vs_bytes.png"),
    ]
    for key, ylabel, x_kind, name in charts:
        path = os.path.join(args.out, name)
        if plot(runs, key, ylabel, x_kind, path, args.smooth):
            print(path)
        else:
            what = "bytes_sent and " if x_kind == "bytes" else ""
            print(f"plot_metrics: note: no run has {what}{key}; {name} not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
