"""Helpers of scripts/gpu-check.sh, standard library only (the GPU machine has no pip).

  gpu_check.py artifacts CARGO_JSON          the binaries `cargo test --no-run` built, one
                                            `NAME PATH` a line (rnnsweep, model, bench_trainer)
  gpu_check.py manifest DIR KEY=VALUE...    writes DIR/MANIFEST.json: every file's size and
                                            sha256, and the build's facts
  gpu_check.py verify DIR                   checks every file against the manifest
  gpu_check.py pack FILE OUT.xz             compresses a binary (xz: candle's PTX is text, so
                                            the three binaries travel in about a fifth)
  gpu_check.py unpack IN.xz FILE            the binary back, executable (xz checks its CRC)
  gpu_check.py libs                         the library folders of this Python's NVIDIA wheels
                                            (PyTorch's CUDA runtime, cuBLAS, cuRAND, NVRTC)
  gpu_check.py table BENCH_JSONL            the bench lines as one Markdown table
"""

import glob
import hashlib
import json
import lzma
import os
import shutil
import stat
import sys

WANTED = {
    ("bin", "rnnsweep"): "rnnsweep",
    ("test", "model"): "model",
    ("example", "bench_trainer"): "bench_trainer",
}


def artifacts(path):
    found = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if message.get("reason") != "compiler-artifact" or not message.get("executable"):
                continue
            target = message["target"]
            # `cargo test` also builds the binary's own unit-test harness under the binary's
            # name (profile.test true), in no fixed order: the binary is the one that is not a
            # test; only the integration test is wanted as a test.
            is_test = message.get("profile", {}).get("test", False)
            for kind in target["kind"]:
                name = WANTED.get((kind, target["name"]))
                if name and is_test == (kind == "test"):
                    found[name] = message["executable"]
    missing = sorted(set(WANTED.values()) - set(found))
    if missing:
        sys.exit(f"gpu_check: cargo built no {', '.join(missing)}")
    for name in sorted(found):
        print(name, found[name])


def files_of(folder):
    for base, dirs, names in os.walk(folder):
        # The run's logs and its unpacked binaries are not the build's.
        dirs[:] = sorted(d for d in dirs if d not in ("out", ".unpacked"))
        for name in sorted(names):
            path = os.path.join(base, name)
            rel = os.path.relpath(path, folder)
            if rel != "MANIFEST.json":
                yield rel, path


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(folder, facts):
    files = {rel: {"bytes": os.path.getsize(p), "sha256": sha256(p)} for rel, p in files_of(folder)}
    body = {"facts": dict(f.split("=", 1) for f in facts), "files": files,
            "total_bytes": sum(v["bytes"] for v in files.values())}
    with open(os.path.join(folder, "MANIFEST.json"), "w") as f:
        json.dump(body, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"{len(files)} files, {body['total_bytes'] / 2**20:.1f} MiB")


def verify(folder):
    with open(os.path.join(folder, "MANIFEST.json")) as f:
        body = json.load(f)
    problems = []
    for rel, want in sorted(body["files"].items()):
        path = os.path.join(folder, rel)
        if not os.path.exists(path):
            problems.append(f"{rel}: missing")
        elif sha256(path) != want["sha256"]:
            problems.append(f"{rel}: changed since the build")
    if problems:
        sys.exit("gpu_check: the folder does not match its manifest: " + "; ".join(problems))
    facts = body["facts"]
    print(", ".join(f"{k} {facts[k]}" for k in sorted(facts)))


def pack(source, target):
    with open(source, "rb") as src, lzma.open(target, "wb", preset=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def unpack(source, target):
    with lzma.open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    mode = os.stat(target).st_mode
    os.chmod(target, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def libs():
    folders = []
    for entry in sys.path:
        for lib in sorted(glob.glob(os.path.join(entry, "nvidia", "**", "lib"), recursive=True)):
            if os.path.isdir(lib) and lib not in folders:
                folders.append(lib)
    print(":".join(folders))


def table(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| trainer | U | batch | mode | device | threads | samples/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mode = "inference" if r["trainer"].endswith("-infer") else "training"
        print(f"| {r['trainer']} | {r['units']} | {r.get('batch', '-')} | {mode} | "
              f"{r.get('device', 'cpu')} | {r.get('threads', '-')} | {r['samples_per_s']:.0f} |")
    ratios = []
    for r in rows:
        if not r["trainer"].startswith("rnnsweep") or r.get("device", "cpu") == "cpu":
            continue
        mode_infer = r["trainer"].endswith("-infer")
        for p in rows:
            if (p["trainer"].startswith("pytorch") and p["units"] == r["units"]
                    and p.get("batch") == r.get("batch")
                    and p["trainer"].endswith("-infer") == mode_infer
                    and p.get("device", "cpu") != "cpu"):
                ratios.append((r, p))
    if ratios:
        print()
        print("| U | batch | mode | rnnsweep ÷ PyTorch cuDNN |")
        print("|---|---|---|---|")
        for r, p in ratios:
            mode = "inference" if r["trainer"].endswith("-infer") else "training"
            print(f"| {r['units']} | {r.get('batch', '-')} | {mode} | "
                  f"{r['samples_per_s'] / p['samples_per_s']:.2f}× |")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    command, args = sys.argv[1], sys.argv[2:]
    if command == "artifacts" and len(args) == 1:
        artifacts(args[0])
    elif command == "manifest" and args:
        manifest(args[0], args[1:])
    elif command == "verify" and len(args) == 1:
        verify(args[0])
    elif command == "pack" and len(args) == 2:
        pack(*args)
    elif command == "unpack" and len(args) == 2:
        unpack(*args)
    elif command == "libs" and not args:
        libs()
    elif command == "table" and len(args) == 1:
        table(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
