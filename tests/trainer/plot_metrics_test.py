#!/usr/bin/python3
"""plot_metrics_test.py — tools/plot_metrics.py on two small fake runs: the four PNGs are
written, a resumed run's duplicate steps keep the last value, per-step bytes are integrated
over logging gaps, and a missing metrics.jsonl or a label mismatch fails with exit 2 and a
clear message. It does not look at the pictures."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "tools", "plot_metrics.py")


def load_module():
    spec = importlib.util.spec_from_file_location("plot_metrics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(path, rows, tail=""):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(tail)


class PlotMetricsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def run_script(self, *args):
        return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)

    def test_writes_four_pngs(self):
        for name, density in (("dense", 1.0), ("topk", 0.01)):
            rows = [{"step": s, "epoch": 0, "loss": 2.0 / s, "bytes_sent": 1e6 * density} for s in range(1, 41)]
            rows[19]["test_acc"] = 0.7
            rows[39]["test_acc"] = 0.8
            write_run(os.path.join(self.dir, name), rows, tail='{"step": 41, "lo')
        out = os.path.join(self.dir, "plots")
        r = self.run_script(os.path.join(self.dir, "dense"), os.path.join(self.dir, "topk"), "--out", out,
                            "--labels", "dense", "top-k", "--smooth", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("skipped 1 unparsable line", r.stderr)
        for name in ("loss_vs_step", "test_acc_vs_step", "loss_vs_bytes", "test_acc_vs_bytes"):
            with open(os.path.join(out, name + ".png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", name)

    def test_missing_metrics_file(self):
        r = self.run_script(os.path.join(self.dir, "nothing-here"), "--out", os.path.join(self.dir, "o"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("metrics.jsonl: not found", r.stderr)

    def test_label_count_mismatch(self):
        write_run(os.path.join(self.dir, "a"), [{"step": 1, "loss": 1.0}])
        r = self.run_script(os.path.join(self.dir, "a"), "--out", self.dir, "--labels", "x", "y")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--labels", r.stderr)

    def test_resume_duplicates_and_byte_integration(self):
        m = load_module()
        write_run(os.path.join(self.dir, "r"), [
            {"step": 10, "loss": 1.0, "bytes_sent": 100},
            {"step": 20, "loss": 0.9, "bytes_sent": 100},
            {"step": 20, "loss": 0.8, "bytes_sent": 100},  # logged again after a resume: this one wins
            {"step": 30, "loss": 0.7, "bytes_sent": 50},
        ])
        rows = m.load_run(os.path.join(self.dir, "r"))
        self.assertEqual([r["step"] for r in rows], [10, 20, 30])
        self.assertEqual(rows[1]["loss"], 0.8)
        self.assertEqual(m.cumulative_bytes(rows), [1000.0, 2000.0, 2500.0])
        # An eval row of its own at a training step is merged; one between steps gets the
        # running total at the last known rate.
        write_run(os.path.join(self.dir, "e"), [
            {"step": 10, "loss": 1.0, "bytes_sent": 100},
            {"step": 10, "test_acc": 0.5},
            {"step": 15, "test_acc": 0.6},
            {"step": 20, "loss": 0.5, "bytes_sent": 100},
        ])
        rows = m.load_run(os.path.join(self.dir, "e"))
        self.assertEqual(rows[0], {"step": 10, "loss": 1.0, "bytes_sent": 100, "test_acc": 0.5})
        self.assertEqual(m.cumulative_bytes(rows), [1000.0, 1500.0, 2000.0])
        rows = [{"step": 1, "bytes_sent_total": 7}, {"step": 2, "bytes_sent_total": 9}]
        self.assertEqual(m.cumulative_bytes(rows), [7.0, 9.0])


class AccuracyCurvesTest(unittest.TestCase):
    """plot_accuracy_curves (the study figure): at most 8 names a panel, log time axes."""

    def test_twelve_runs_split_into_rows_of_at_most_eight_with_log_axes(self):
        pm = load_module()
        curves = []
        for i in range(12):
            end = 300.0 if i < 2 else 20.0  # two dense runs of 300 s, ten compressed of 20 s
            for rep in (1, 2):
                curves.append((f"run{i:02d}", rep, [(end / 4 * k, 1e6 * k, 0.2 * k) for k in range(1, 5)]))
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "fig.png")
            axes = pm.plot_accuracy_curves(curves, "t", 0.75, out)
            self.assertTrue(os.path.getsize(out) > 0)
        self.assertEqual(len(axes), 2)  # 12 names: rows of 8 and 4
        names_per_row = []
        for row in axes:
            for a in row:
                self.assertEqual(a.get_xscale(), "log")
            lines = [l for l in row[0].get_lines() if l.get_label() and not l.get_label().startswith("_")]
            names_per_row.append(len(lines))
        self.assertEqual(names_per_row, [8, 4])
        self.assertEqual([len(g) for g in pm.accuracy_panel_groups(curves)], [8, 4])


if __name__ == "__main__":
    unittest.main()
