#!/usr/bin/env python3
"""check_report_test.py — tools/gpu/check_report.py on made-up inputs: the JSON has the shape
issue #15 asks for, numbers pass through only from the files given (medians of the metrics
windows, the first dropped), everything else is null with a status. It will not run check.sh
or touch a GPU. Run by ctest (label unit): python3 tests/gpu/check_report_test.py ROOT
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPT = os.path.join(ROOT, "tools", "gpu", "check_report.py")


def run(tmp, *args):
    out_json = os.path.join(tmp, "out", "r.json")
    out_md = os.path.join(tmp, "out", "r.md")
    subprocess.run([sys.executable, SCRIPT, *args, "--out-json", out_json, "--out-md", out_md],
                   check=True)
    with open(out_json, encoding="utf-8") as f, open(out_md, encoding="utf-8") as g:
        return json.load(f), g.read()


class CheckReport(unittest.TestCase):
    def test_nothing_ran_gives_nulls_and_reasons(self):
        with tempfile.TemporaryDirectory() as tmp:
            rep, md = run(tmp, "--commit", "abc", "--device", "none", "--torch", "1.13",
                          "--bench-status", "not run: no GPU", "--dry-run")
        self.assertEqual(rep["commit"], "abc")
        self.assertTrue(rep["dry_run"])
        self.assertEqual([r["n"] for r in rep["kernel"]], [1048576, 25000000, 100000000])
        self.assertEqual([r["k"] for r in rep["kernel"]], [10486, 250000, 1000000])
        for r in rep["kernel"]:
            self.assertIsNone(r["fused_ms"])
            self.assertIsNone(r["chain_ms"])
            self.assertIsNone(r["plain_ms"])
            self.assertEqual(r["status"], "not run: no GPU")
        self.assertEqual(rep["training"], [])
        self.assertIn("| 25,000,000 | 250,000 | — | — | — |", md)

    def test_measured_values_pass_through(self):
        with tempfile.TemporaryDirectory() as tmp:
            tests = os.path.join(tmp, "tests.tsv")
            with open(tests, "w") as f:
                f.write("topk_cuda_test\tpass\t12\t\n")
                f.write("compressed_sgd_cuda_test\thang in A.B (no exit within 45 s)\t45\t"
                        "| rerun: last CUDA call: cddp-cuda: > k1_hist<randomk>\n")
            metrics = os.path.join(tmp, "m.jsonl")
            with open(metrics, "w") as f:  # first window (warm-up) is dropped
                for step_ms, comp in ((500.0, 90.0), (10.0, 1.0), (12.0, 2.0), (11.0, 3.0)):
                    f.write(json.dumps({"step": 1, "step_ms": step_ms, "compress_ms": comp}) + "\n")
            training = os.path.join(tmp, "training.tsv")
            with open(training, "w") as f:
                f.write(f"resnet18\t1\tnccl\t0\t{metrics}\tok\t30\n")
                f.write(f"resnet18\t2\tgloo\t3\t{metrics}\trc=3: error\t9\n")
            bench = os.path.join(tmp, "bench.json")
            with open(bench, "w") as f:
                json.dump([{"n": 25000000, "k": 250000, "fused_ms": 0.2, "chain_ms": 0.8,
                            "plain_ms": 0.1}], f)
            rep, md = run(tmp, "--tests", tests, "--training", training, "--bench", bench,
                          "--device", "NVIDIA H200", "--torch", "2.11.0")
        self.assertFalse(rep["dry_run"])
        self.assertEqual(rep["tests"]["topk_cuda_test"], "pass")
        self.assertTrue(rep["tests"]["compressed_sgd_cuda_test"].startswith("hang in A.B"))
        self.assertIn("k1_hist<randomk>", rep["test_details"]["compressed_sgd_cuda_test"]["detail"])
        k = rep["kernel"]
        self.assertEqual(len(k), 1)
        self.assertEqual((k[0]["fused_ms"], k[0]["chain_ms"], k[0]["plain_ms"]), (0.2, 0.8, 0.1))
        self.assertEqual(k[0]["chain_over_fused"], 4.0)
        self.assertEqual(k[0]["fused_over_plain"], 2.0)
        self.assertTrue(k[0]["targets_met"])
        ok, bad = rep["training"]
        self.assertEqual((ok["rc"], ok["step_ms"], ok["compress_ms"], ok["windows"]), (0, 11.0, 2.0, 3))
        self.assertAlmostEqual(ok["compress_share"], 2.0 / 11.0, places=4)
        self.assertEqual(bad["rc"], 3)
        self.assertIsNone(bad["step_ms"], "a failed run reports no time")
        self.assertIsNone(bad["compress_ms"])
        self.assertIn("| resnet18 | 1 | nccl | 0 | 11.000 | 2.000 | 18.2 % |", md)


if __name__ == "__main__":
    unittest.main()
