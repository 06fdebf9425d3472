"""Tests of scripts/gpu_check.py: the artifacts cargo names, the manifest and its verification,
the library folders of a Python's NVIDIA wheels, and the bench table's ratios."""

import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

sys.path.insert(0, os.path.dirname(__file__))
import gpu_check  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(__file__), "gpu_check.py")


def artifact(kind, name, executable, test=None):
    return json.dumps({"reason": "compiler-artifact", "executable": executable,
                       "target": {"kind": [kind], "name": name},
                       "profile": {"test": kind == "test" if test is None else test}})


class GpuCheckTest(unittest.TestCase):
    def test_the_three_binaries_are_found_in_cargos_messages(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "cargo.json")
            with open(path, "w") as f:
                f.write("\n".join([
                    artifact("lib", "rnnsweep_model", None),
                    artifact("test", "model", "/t/deps/model-1"),
                    artifact("test", "e2e", "/t/deps/e2e-2"),
                    artifact("bin", "rnnsweep", "/t/rnnsweep"),
                    # The binary's unit-test harness, after the binary: never taken for it.
                    artifact("bin", "rnnsweep", "/t/deps/rnnsweep-3", test=True),
                    artifact("example", "bench_trainer", "/t/examples/bench_trainer"),
                    artifact("example", "bench_trainer", "/t/deps/bench_trainer-4", test=True),
                    '{"reason": "build-finished", "success": true}',
                ]) + "\n")
            out = io.StringIO()
            with redirect_stdout(out):
                gpu_check.artifacts(path)
            self.assertEqual(out.getvalue().splitlines(), [
                "bench_trainer /t/examples/bench_trainer",
                "model /t/deps/model-1",
                "rnnsweep /t/rnnsweep",
            ])

    def test_a_missing_binary_is_named(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "cargo.json")
            with open(path, "w") as f:
                f.write(artifact("bin", "rnnsweep", "/t/rnnsweep") + "\n")
            with self.assertRaises(SystemExit) as raised:
                gpu_check.artifacts(path)
            self.assertIn("bench_trainer, model", str(raised.exception))

    def test_the_manifest_catches_a_changed_or_missing_file(self):
        with tempfile.TemporaryDirectory() as folder:
            os.makedirs(os.path.join(folder, "bin"))
            os.makedirs(os.path.join(folder, "out"))
            for name, text in [("bin/a", "alpha"), ("b.txt", "beta"), ("out/log", "ignored")]:
                with open(os.path.join(folder, name), "w") as f:
                    f.write(text)
            with redirect_stdout(io.StringIO()):
                gpu_check.manifest(folder, ["cuda_toolkit=13.0", "compute_capability=90"])
            with open(os.path.join(folder, "MANIFEST.json")) as f:
                body = json.load(f)
            self.assertEqual(sorted(body["files"]), ["b.txt", "bin/a"])
            self.assertEqual(body["total_bytes"], 9)
            self.assertEqual(body["facts"]["cuda_toolkit"], "13.0")
            out = io.StringIO()
            with redirect_stdout(out):
                gpu_check.verify(folder)
            self.assertEqual(out.getvalue().strip(), "compute_capability 90, cuda_toolkit 13.0")
            with open(os.path.join(folder, "bin/a"), "w") as f:
                f.write("alpha, rebuilt")
            os.remove(os.path.join(folder, "b.txt"))
            with self.assertRaises(SystemExit) as raised:
                gpu_check.verify(folder)
            self.assertIn("b.txt: missing", str(raised.exception))
            self.assertIn("bin/a: changed since the build", str(raised.exception))

    def test_a_packed_binary_unpacks_to_the_same_bytes_and_runs(self):
        with tempfile.TemporaryDirectory() as tmp:
            program = os.path.join(tmp, "hello")
            with open(program, "w") as f:
                f.write("#!/bin/sh\necho packed and back\n" + "# padding\n" * 1000)
            gpu_check.pack(program, program + ".xz")
            self.assertLess(os.path.getsize(program + ".xz"), os.path.getsize(program) / 5)
            gpu_check.unpack(program + ".xz", program + ".out")
            with open(program, "rb") as a, open(program + ".out", "rb") as b:
                self.assertEqual(a.read(), b.read())
            result = subprocess.run([program + ".out"], capture_output=True, text=True, check=True)
            self.assertEqual(result.stdout, "packed and back\n")

    def test_library_folders_come_from_the_wheels_on_the_path(self):
        with tempfile.TemporaryDirectory() as site:
            for lib in ["nvidia/cu13/lib", "nvidia/cudnn/lib"]:
                os.makedirs(os.path.join(site, lib))
            os.makedirs(os.path.join(site, "nvidia/cu13/include"))
            result = subprocess.run([sys.executable, SCRIPT, "libs"], capture_output=True,
                                    text=True, env={**os.environ, "PYTHONPATH": site}, check=True)
            folders = result.stdout.strip().split(":")
            self.assertIn(os.path.join(site, "nvidia/cu13/lib"), folders)
            self.assertIn(os.path.join(site, "nvidia/cudnn/lib"), folders)
            self.assertFalse(any(f.endswith("include") for f in folders))

    def test_the_table_divides_like_for_like_on_the_gpu(self):
        lines = [
            {"trainer": "rnnsweep-fused", "units": 256, "batch": 256, "device": "cuda:0",
             "samples_per_s": 30000.0},
            {"trainer": "pytorch", "units": 256, "batch": 256, "device": "cuda",
             "samples_per_s": 40000.0},
            {"trainer": "pytorch", "units": 256, "batch": 1024, "device": "cuda",
             "samples_per_s": 99999.0},
            {"trainer": "rnnsweep-fused", "units": 256, "batch": 256, "device": "cpu",
             "threads": 16, "samples_per_s": 5000.0},
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bench.jsonl")
            with open(path, "w") as f:
                f.write("\n".join(json.dumps(line) for line in lines) + "\n")
            out = io.StringIO()
            with redirect_stdout(out):
                gpu_check.table(path)
        text = out.getvalue()
        self.assertIn("| 256 | 256 | training | 0.75× |", text)
        self.assertEqual(text.count("×"), 1)
        self.assertIn("| rnnsweep-fused | 256 | 256 | training | cpu | 16 | 5000 |", text)


if __name__ == "__main__":
    unittest.main()
