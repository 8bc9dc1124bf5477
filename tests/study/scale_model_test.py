#!/usr/bin/python3
"""scale_model_test.py — tools/experiments/scale_model.py on bench files made to its own model.

Checks: the byte formulas against hand-computed values; a bench file whose times follow the
model exactly (a known per-message cost and bandwidth) is predicted at W = 4 and 8 with ~0 %
error, and one whose W = 8 times are doubled shows about +/-50 %; the prediction grows with W
for the allgather; the Markdown and PNG outputs are written; a missing or empty bench file
stops with a message naming it. It will not run bench_exchange.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "..", "tools", "experiments", "scale_model.py")
sys.path.insert(0, os.path.dirname(TOOL))
import scale_model  # noqa: E402


def synthetic_bench(a=1e-4, bw=1e9, k=1000, slow_w8=1.0):
    rows = []
    for W in (2, 4, 8):
        for op in ("allreduce", "allgather", "alltoall"):
            rows.append({"world": W, "latency": op, "ms": a * (W - 1) * 1e3})
        for ex in ("allgather", "sparse_allreduce"):
            b = scale_model.received_bytes(ex, W, k)
            t = scale_model.messages(ex, W) * a + b / bw
            if W == 8:
                t *= slow_w8
            rows.append({"world": W, "exchange": ex, "values": "fp32", "bytes_received": b, "ms": t * 1e3})
    return rows


class ScaleModelTest(unittest.TestCase):
    def test_formulas(self):
        # allgather: (W-1)*k*(4+2). Sparse allreduce at W = 4, k = 1000 of 5.8M: 250 entries a region
        # of 1.45M (23 Block16 blocks): offsets 4*23 + 2*250 = 592 B, values 1000 B, in both phases:
        # 3*1592 + 3*(8 + 1592) + 48; the W = 4 bench row (k = 58000) is 522624 B by the same rule.
        self.assertEqual(scale_model.received_bytes("allgather", 4, 1000), 3 * 1000 * 6)
        self.assertAlmostEqual(scale_model.received_bytes("sparse_allreduce", 4, 1000), 3 * 1592 + 3 * 1600 + 48)
        self.assertAlmostEqual(scale_model.received_bytes("sparse_allreduce", 4, 58000), 522624)
        # One entry a region of 250: uint32 (4 B) beats Block16 (4 + 2 B).
        self.assertAlmostEqual(scale_model.received_bytes("sparse_allreduce", 4, 4, numel=1000), 3 * 8 + 3 * 16 + 48)
        self.assertAlmostEqual(scale_model.received_bytes("powersgd", 4, 0, powersgd_bytes=1000), 1500)
        ratio = scale_model.received_bytes("sparse_allreduce", 8, 58000) / scale_model.received_bytes(
            "sparse_allreduce", 2, 58000)
        self.assertTrue(1.7 < ratio < 1.8, ratio)

    def test_validation_on_exact_and_perturbed_data(self):
        ex, lat = scale_model.load_bench_rows(synthetic_bench())
        rows, a = scale_model.validate(ex, lat)
        self.assertAlmostEqual(a, 1e-4)
        for W, name, values, measured, predicted, with_latency, b in rows:
            self.assertAlmostEqual(predicted, measured, delta=1e-6 * max(1, measured), msg=(W, name))
        ex, lat = scale_model.load_bench_rows(synthetic_bench(slow_w8=2.0))
        rows, _ = scale_model.validate(ex, lat)
        for W, name, values, measured, predicted, with_latency, b in rows:
            if W == 8:
                self.assertAlmostEqual((predicted - measured) / measured, -0.5, places=6)

    def test_outputs_and_errors(self):
        with tempfile.TemporaryDirectory() as d:
            bench = os.path.join(d, "bench.json")
            with open(bench, "w") as f:
                json.dump(synthetic_bench(), f)
            md, png = os.path.join(d, "out.md"), os.path.join(d, "out.png")
            r = subprocess.run([sys.executable, TOOL, "--bench", bench, "--out-md", md, "--out-png", png],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            text = open(md).read()
            self.assertIn("| 100 Mbit/s | 1024 |", text)
            self.assertGreater(os.path.getsize(png), 1000)
            rows = [l for l in text.splitlines() if l.startswith("| 1 Gbit/s |")]
            allgather = [float(l.split("|")[3]) for l in rows]
            self.assertEqual(allgather, sorted(allgather))  # grows with W
            empty = os.path.join(d, "empty.json")
            with open(empty, "w") as f:
                f.write("[]")
            for bad in (empty, os.path.join(d, "missing.json")):
                r = subprocess.run([sys.executable, TOOL, "--bench", bad], capture_output=True, text=True)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(os.path.basename(bad), r.stderr)


if __name__ == "__main__":
    unittest.main()
