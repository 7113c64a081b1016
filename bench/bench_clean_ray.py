"""Documents per second of the Ray Data path (data/clean_ray.py) beside data/clean.py --workers N, on the same
input on this machine, with a check that both keep the same documents byte for byte.

Each runs as its own process on the shared web samples (../shared/data/web_warc_dolma and web_cc_dolma), or on
--repeat copies of them (mirrored files: exact duplicates across files, so the dedup stages have work), taken in
turns --runs times (the best of each is reported). The Ray figure is given with and without starting Ray; its
per-stage scheduling and shuffles cost seconds whatever the input size, so it pays off only on a cluster, with
inputs far larger than these samples.

    pip install "ray[data]"                 # bench-only; without it only data/clean.py is timed
    python bench/bench_clean_ray.py
    python bench/bench_clean_ray.py --repeat 10 --workers 2
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nanotrain.cli import flag, parse_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@dataclass
class BenchConfig:
    input: str = flag(f"{SHARED / 'web_warc_dolma'},{SHARED / 'web_cc_dolma'}", "comma-separated files or folders")
    workers: int = flag(2, "processes for data/clean.py, CPUs for Ray")
    repeat: int = flag(1, "copies of the input files (mirrors: exact duplicates across files)")
    runs: int = flag(2, "timed runs of each, taken in turns (the best is reported)")


def run(cmd: list[str]) -> tuple[float, str]:
    # the scripts import the nanotrain of this checkout, as the bench does
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return time.time() - t0, p.stdout


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n")[0])
    try:
        import ray
        ray_version = ray.__version__
    except ImportError:
        ray_version = None
        print('ray is not installed: only data/clean.py is timed (pip install "ray[data]")')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = [Path(p) for p in cfg.input.split(",") if p.strip()]
        if cfg.repeat > 1:
            copies = tmp / "input"
            for k in range(cfg.repeat):
                dest = copies / f"{k:03d}"
                dest.mkdir(parents=True)
                for i, p in enumerate(inputs):
                    if p.is_dir():
                        shutil.copytree(p, dest / f"{i}-{p.name}")
                    else:
                        shutil.copy(p, dest / f"{i}-{p.name}")
            inputs = [copies]
        args = ["--input", ",".join(map(str, inputs)), "--workers", str(cfg.workers), "--no-progress"]
        best = {}
        for _ in range(cfg.runs):
            seconds, out = run([sys.executable, "data/clean.py", *args, "--out", str(tmp / "clean" / "clean.jsonl")])
            docs = int(re.search(r"(\d+) documents in", out).group(1))
            best["clean"] = min(best.get("clean", (1e9,)), (seconds,))
            if ray_version:
                seconds, out = run([sys.executable, "data/clean_ray.py", *args,
                                    "--out", str(tmp / "ray" / "clean.jsonl")])
                start, pipeline = map(float, re.search(r"Ray start ([\d.]+)s, pipeline ([\d.]+)s", out).groups())
                best["ray"] = min(best.get("ray", (1e9,)), (seconds, start, pipeline))
        print(f"{docs} documents ({cfg.repeat} cop{'y' if cfg.repeat == 1 else 'ies'} of {cfg.input}), "
              f"{cfg.workers} workers, best of {cfg.runs}:")
        print(f"  data/clean.py --workers {cfg.workers}:  {docs / best['clean'][0]:8.1f} documents/s "
              f"({best['clean'][0]:.1f}s for the whole process)")
        if ray_version:
            seconds, start, pipeline = best["ray"]
            same = (tmp / "ray" / "clean.jsonl").read_bytes() == (tmp / "clean" / "clean.jsonl").read_bytes()
            print(f"  data/clean_ray.py (Ray {ray_version}): {docs / seconds:8.1f} documents/s ({seconds:.1f}s for the "
                  f"whole process), {docs / pipeline:.1f} documents/s without starting Ray ({start:.1f}s)")
            print(f"  kept documents identical: {same}")


if __name__ == "__main__":
    main()
