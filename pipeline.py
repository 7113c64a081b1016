"""The main job: every stage on the built-in world, in order, then a report card.

    python pipeline.py                  # generate -> clean -> tokenize -> pretrain -> SFT -> 2 reward models
                                        #   -> PPO, DPO, KTO -> out/report.md (+ PNG plots)
    python pipeline.py --force          # re-run every stage
    python pipeline.py --only sft,rm_helpful

Each stage is the ordinary command a user would type (printed before it runs), executed as a subprocess. A stage
is skipped when its outputs exist and a stamp beside them matches the command, the script's source and the inputs'
sizes and modification times: a second run only redoes what changed. The report reads only the stages' own
outputs (checkpoint metrics, metrics.jsonl, the cleaning report); no figure in it is typed by hand.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nanotrain.cli import flag, parse_config
from nanotrain.report import write_report

ROOT = Path(__file__).resolve().parent


@dataclass
class PipelineConfig:
    world: str = flag("data/tinyworld", "folder of the generated world")
    out: str = flag("out", "folder for every stage's outputs and the report")
    seed: int = flag(0, "seed of the world and of every stage")
    force: bool = flag(False, "re-run stages even when up to date")
    only: str = flag("", "comma-separated stage names to run (default: all)")
    device: str = flag("auto", "device for every training stage")


@dataclass
class Stage:
    name: str
    argv: list[str]  # the command, relative to the repository root
    inputs: list[str]  # files whose change makes the stage stale
    outputs: list[str]  # files the stage must leave behind
    stamp_dir: str  # where the stamp is written


def stages(cfg: PipelineConfig) -> list[Stage]:
    w, o, s, dev = cfg.world, cfg.out, str(cfg.seed), ["--device", cfg.device]
    tok = f"{w}/tokens"
    py = sys.executable
    return [
        Stage("generate", [py, "data/tinyworld.py", "--out", w, "--seed", s], [], [f"{w}/world.json"], w),
        Stage("clean", [py, "data/clean.py", "--input", f"{w}/web.jsonl", "--out", f"{o}/clean/web_clean.jsonl"],
              [f"{w}/web.jsonl"], [f"{o}/clean/report.md"], f"{o}/clean"),
        Stage("tokenize", [py, "data/prepare_pretrain.py", "--input", f"{w}/pretrain.jsonl", "--out", tok,
                           "--seed", s], [f"{w}/pretrain.jsonl"], [f"{tok}/meta.json"], tok),
        Stage("pretrain", [py, "train_pretrain.py", "--data", tok, "--out", f"{o}/pretrain", "--seed", s, *dev],
              [f"{tok}/meta.json"], [f"{o}/pretrain/ckpt.pt"], f"{o}/pretrain"),
        Stage("sft", [py, "train_sft.py", "--init", f"{o}/pretrain/ckpt.pt", "--out", f"{o}/sft", "--seed", s,
                      "--world", w, *dev],
              [f"{o}/pretrain/ckpt.pt", f"{w}/sft_train.jsonl"], [f"{o}/sft/ckpt.pt"], f"{o}/sft"),
        Stage("sft_scratch", [py, "train_sft.py", "--init", f"{o}/pretrain/ckpt.pt", "--reinit", "--out",
                              f"{o}/sft_scratch", "--seed", s, "--world", w, *dev],
              [f"{o}/pretrain/ckpt.pt", f"{w}/sft_train.jsonl"], [f"{o}/sft_scratch/ckpt.pt"], f"{o}/sft_scratch"),
        *[Stage(f"rm_{n}", [py, "train_rm.py", "--name", n, "--init", f"{o}/sft/ckpt.pt", "--out", f"{o}/rm_{n}",
                            "--seed", s, "--world", w, *dev],
                [f"{o}/sft/ckpt.pt", f"{w}/prefs_{n}_train.jsonl"], [f"{o}/rm_{n}/ckpt.pt"], f"{o}/rm_{n}")
          for n in ("helpful", "safe")],
        *[Stage(f"rlhf_{a}", [py, "train_rlhf.py", "--algo", a, "--init", f"{o}/sft/ckpt.pt", "--reward",
                              f"{o}/rm_helpful/ckpt.pt", "--safety-reward", f"{o}/rm_safe/ckpt.pt",
                              "--out", f"{o}/rlhf_{a}", "--seed", s, "--world", w, *dev],
                [f"{o}/sft/ckpt.pt", f"{o}/rm_helpful/ckpt.pt", f"{o}/rm_safe/ckpt.pt"], [f"{o}/rlhf_{a}/ckpt.pt"],
                f"{o}/rlhf_{a}")
          for a in ("ppo", "dpo", "kto")],
    ]


def stamp_of(stage: Stage) -> str:
    """What the stage's result depends on: its command, its script's source, and its inputs' size and mtime."""
    h = hashlib.sha256(json.dumps(stage.argv[1:]).encode())
    h.update((ROOT / stage.argv[1]).read_bytes())
    for f in stage.inputs:
        st = (ROOT / f).stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def up_to_date(stage: Stage) -> bool:
    stamp = ROOT / stage.stamp_dir / "stamp.json"
    if not stamp.exists() or not all((ROOT / f).exists() for f in stage.outputs + stage.inputs):
        return False
    return json.loads(stamp.read_text()).get("stamp") == stamp_of(stage)


def peak_child_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB


def main(argv=None):
    cfg = parse_config(PipelineConfig, argv, description=__doc__.split("\n\n")[0])
    only = set(filter(None, cfg.only.split(",")))
    timings: dict[str, dict] = {}
    t_all = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for st in stages(cfg):
        if only and st.name not in only:
            continue
        if not cfg.force and up_to_date(st):
            print(f"== {st.name}: up to date, skipped")
            timings[st.name] = {**json.loads((ROOT / st.stamp_dir / "stamp.json").read_text()), "skipped": True}
            continue
        print(f"== {st.name}: {' '.join(['python', *st.argv[1:]])}", flush=True)
        t0 = time.perf_counter()
        r = subprocess.run(st.argv, cwd=ROOT, env=env)
        if r.returncode != 0:
            sys.exit(f"pipeline: stage {st.name} failed (exit {r.returncode}); fix it and re-run: finished stages "
                     f"are kept and skipped")
        timings[st.name] = {"time_s": time.perf_counter() - t0, "peak_rss_mib": peak_child_rss_mib()}
        (ROOT / st.stamp_dir / "stamp.json").write_text(json.dumps({"stamp": stamp_of(st), **timings[st.name]}))
    total = time.perf_counter() - t_all
    peak = peak_child_rss_mib()
    report = write_report(ROOT / cfg.out, ROOT / cfg.world, timings, total_s=total, peak_rss_mib=peak)
    print(report)
    print(f"\npipeline: {total / 60:.1f} minutes, peak memory of any stage {peak / 1024:.2f} GiB; report: "
          f"{Path(cfg.out) / 'report.md'}")


if __name__ == "__main__":
    main()
