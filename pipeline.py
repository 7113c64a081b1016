"""The main job: every stage on the built-in world, in order, then a report card.

    python pipeline.py                  # generate -> clean -> tokenize -> pretrain -> SFT -> label -> 2 reward
                                        #   models -> PPO, DPO, KTO -> out/report.md (+ PNG plots)

The built-in world's pretraining text is its web crawl (data/tinyworld/crawl.warc.gz) as data/clean.py leaves it:
text extracted without the page chrome, then the content filter, Gopher's rules, decontamination against the
world's evaluation files, exact and near dedup; the tokenize stage reads the cleaned JSONL. The real preset cleans
its raw pages (Common Crawl WARC files, or FineWeb-style JSONL of page text) the same way before tokenizing.
    python pipeline.py --force          # re-run every stage
    python pipeline.py --only sft,rm_helpful

Each stage is the ordinary command a user would type (printed before it runs), executed as a subprocess. A stage
is skipped when its outputs exist, a checkpoint among them reached its configured steps (a rerun killed early leaves
a readable ckpt.pt of an earlier step), and a stamp beside them matches the command, the source of the script and of
the nanotrain modules it imports, and the inputs' contents: a second run only redoes what changed. The stamp is
removed before a stage runs, so a stage the pipeline did not finish is never skipped. The report reads
only the stages' own outputs (checkpoint metrics, metrics.jsonl, the cleaning report); no figure in it is typed by
hand.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.checkpoint import is_complete
from nanotrain.cli import flag, parse_config
from nanotrain.report import write_report
from nanotrain.runtime import auto_dtype
from nanotrain.tinyworld.web import DECONTAM_NGRAM, DECONTAM_QUESTION, EVAL_FILES

ROOT = Path(__file__).resolve().parent


@dataclass
class PipelineConfig:
    preset: str = flag("tinyworld", "tinyworld (the built-in world, CPU, minutes) | real (GPT-2 124M on real data, "
                                    "one GPU; --tiny shrinks it to a CPU smoke run)")
    world: str = flag("data/tinyworld", "folder of the generated world")
    out: str = flag("", "folder for every stage's outputs and the report (default: out, or out/real)")
    seed: int = flag(0, "seed of the world and of every stage")
    force: bool = flag(False, "re-run stages even when up to date")
    only: str = flag("", "comma-separated stage names to run (default: all)")
    device: str = flag("auto", "device for every training stage")
    dtype: str = flag("auto", "precision of every stage: auto (bf16 where it measures faster, chosen once here, "
                              "passed to each stage and kept in OUT for the next run) | float32 | bfloat16")
    tiny: bool = flag(False, "real preset at a tiny size (2 layers, a few steps): checks the whole path on a CPU")
    pretrain_data: str = flag("data/cc_warc", "real preset: raw pretraining pages, cleaned before tokenizing (WARC "
                                              "files from data/download.py cc-warc --files N, or FineWeb-style "
                                              "JSONL of page text)")
    clean: bool = flag(True, "real preset: clean the pretraining data before tokenizing (--no-clean for curated text "
                             "such as data/download.py tinystories' train.txt)")
    sft_data: str = flag("data/alpaca/alpaca_data.json", "real preset: instructions (Alpaca / LIMA / Dolly / OASST)")
    sft_val_data: str = flag("../shared/data/dolly_sample/dolly_151.jsonl", "real preset: held-out instructions")
    pref_data: str = flag("data/hh_rlhf/helpful-base_train.jsonl.gz", "real preset: preference pairs (HH-RLHF)")
    estimate: bool = flag(False, "print the real preset's expected time on one H100 from its FLOPs count, and exit")


@dataclass
class Stage:
    name: str
    argv: list[str]  # the command, relative to the repository root
    inputs: list[str]  # files whose change makes the stage stale
    outputs: list[str]  # files the stage must leave behind
    stamp_dir: str  # where the stamp is written


def stages(cfg: PipelineConfig) -> list[Stage]:
    return real_stages(cfg) if cfg.preset == "real" else tinyworld_stages(cfg)


# The built-in crawl is decontaminated against the world's held-out files (the settings: nanotrain/tinyworld/web.py)
DECONTAM_TINYWORLD = ["--decontam-ngram", str(DECONTAM_NGRAM), "--decontam-question", DECONTAM_QUESTION]


def tinyworld_stages(cfg: PipelineConfig) -> list[Stage]:
    w, o, s, dev = cfg.world, cfg.out, str(cfg.seed), ["--device", cfg.device, "--dtype", cfg.dtype]
    tok, lab = f"{w}/tokens", f"{cfg.out}/labels"
    crawl, cleaned = f"{w}/crawl.warc.gz", f"{o}/clean/clean.jsonl"
    evals = [f"{w}/{e}.jsonl" for e in EVAL_FILES]
    py = sys.executable
    # the --world folder's conversations: train_sft.py's own default is data/tinyworld, whatever --world says
    sft_data = ["--data", f"{w}/sft_train.jsonl", "--val-data", f"{w}/sft_val.jsonl", "--world", w]
    # what a stage given --world reads there, so that a changed world file makes it stale: the gold scorers
    # (world.json) and the held-out prompts, and the world's own pairs or prompts of each stage-3 stage
    judged = [f"{w}/world.json", *evals]
    own = {"rm_helpful": ["prefs_helpful_train"], "rm_safe": ["prefs_safe_train"], "rlhf_ppo": ["rl_prompts"],
           "rlhf_dpo": ["prefs_safe_train"], "rlhf_kto": ["prefs_safe_train"]}
    reads = {name: judged + [f"{w}/{stem}.jsonl" for stem in stems] for name, stems in own.items()}
    return [
        Stage("generate", [py, "data/tinyworld.py", "--out", w, "--seed", s], [], [f"{w}/world.json", crawl], w),
        Stage("clean", [py, "data/clean.py", "--input", crawl, "--out", cleaned, "--decontam", ",".join(evals),
                        *DECONTAM_TINYWORLD, "--workers", "2"],
              [crawl, *evals], [cleaned, f"{o}/clean/report.md"], f"{o}/clean"),
        Stage("tokenize", [py, "data/prepare_pretrain.py", "--input", cleaned, "--out", tok, "--seed", s],
              [cleaned], [f"{tok}/meta.json"], tok),
        Stage("pretrain", [py, "train_pretrain.py", "--data", tok, "--out", f"{o}/pretrain", "--seed", s, *dev],
              [f"{tok}/meta.json"], [f"{o}/pretrain/ckpt.pt"], f"{o}/pretrain"),
        Stage("sft", [py, "train_sft.py", "--init", f"{o}/pretrain/ckpt.pt", *sft_data, "--out", f"{o}/sft",
                      "--seed", s, *dev],
              [f"{o}/pretrain/ckpt.pt", f"{w}/sft_train.jsonl", f"{w}/sft_val.jsonl", *judged], [f"{o}/sft/ckpt.pt"],
              f"{o}/sft"),
        Stage("sft_scratch", [py, "train_sft.py", "--init", f"{o}/pretrain/ckpt.pt", "--reinit", *sft_data,
                              "--out", f"{o}/sft_scratch", "--seed", s, *dev],
              [f"{o}/pretrain/ckpt.pt", f"{w}/sft_train.jsonl", f"{w}/sft_val.jsonl", *judged],
              [f"{o}/sft_scratch/ckpt.pt"], f"{o}/sft_scratch"),
        Stage("label", [py, "data/label.py", "--init", f"{o}/sft/ckpt.pt", "--world", w, "--prompts",
                        f"{w}/label_prompts.jsonl", "--out", lab, "--seed", s, *dev],
              [f"{o}/sft/ckpt.pt", f"{w}/label_prompts.jsonl", f"{w}/world.json"], [f"{lab}/report.json"], lab),
        *[Stage(f"rm_{n}", [py, "train_rm.py", "--name", n, "--init", f"{o}/sft/ckpt.pt", "--labels", lab, "--out",
                            f"{o}/rm_{n}", "--seed", s, "--world", w, *dev],
                [f"{o}/sft/ckpt.pt", f"{lab}/prefs_{n}_train.jsonl", *reads[f"rm_{n}"]], [f"{o}/rm_{n}/ckpt.pt"],
                f"{o}/rm_{n}")
          for n in ("helpful", "safe")],
        *[Stage(f"rlhf_{a}", [py, "train_rlhf.py", "--algo", a, "--init", f"{o}/sft/ckpt.pt", "--reward",
                              f"{o}/rm_helpful/ckpt.pt", "--safety-reward", f"{o}/rm_safe/ckpt.pt", "--labels", lab,
                              "--out", f"{o}/rlhf_{a}", "--seed", s, "--world", w, *dev],
                # only PPO reads the reward models: DPO and KTO learn from the labels themselves
                [f"{o}/sft/ckpt.pt", *([f"{o}/rm_helpful/ckpt.pt", f"{o}/rm_safe/ckpt.pt"] if a == "ppo" else []),
                 f"{lab}/report.json", *reads[f"rlhf_{a}"]],
                [f"{o}/rlhf_{a}/ckpt.pt"], f"{o}/rlhf_{a}")
          for a in ("ppo", "dpo", "kto")],
    ]


# The real-data preset: GPT-2 124M, pretrained on cleaned web pages (Common Crawl WARC files or FineWeb-style JSONL;
# with --no-clean, curated text such as TinyStories or FineWeb-Edu as it is), instruction-tuned on Alpaca (or
# LIMA / Dolly / OASST), a reward model and DPO and PPO on HH-RLHF. GPU sizes per process; --tiny shrinks every stage
# to seconds on a CPU so the same path is tested with the samples in ../shared/data.
REAL_GPU = {  # every stage's --preset gpt2 holds GPT-2 124M's architecture and recipe; these are the extra flags
    "model": ["--preset", "gpt2"],
    "pretrain": [],
    "sft": ["--preset", "gpt2"],
    "rm": ["--preset", "gpt2"],
    "dpo": ["--preset", "gpt2"],
    "ppo": ["--preset", "gpt2"],
}
REAL_TINY = {
    "model": ["--n-layer", "2", "--n-head", "2", "--n-embd", "64", "--block-size", "128"],
    "pretrain": ["--batch-size", "2", "--steps", "3", "--warmup", "1", "--eval-every", "3", "--eval-batches", "1"],
    "sft": ["--batch-size", "2", "--steps", "2", "--warmup", "1", "--eval-limit", "0"],
    "rm": ["--batch-size", "2", "--steps", "2", "--warmup", "1"],
    "dpo": ["--batch-size", "2", "--steps", "2", "--warmup", "1", "--eval-limit", "0"],
    "ppo": ["--steps", "1", "--rollout-batch", "2", "--minibatch", "2", "--max-new-tokens", "8", "--eval-limit", "0"],
}


def real_stages(cfg: PipelineConfig) -> list[Stage]:
    o, s, dev, py = cfg.out, ["--seed", str(cfg.seed)], ["--device", cfg.device, "--dtype", cfg.dtype], sys.executable
    f = REAL_TINY if cfg.tiny else REAL_GPU
    tok, prompts, cleaned = f"{o}/tokens", f"{o}/prompts.jsonl", f"{o}/clean/clean.jsonl"
    none = ["--world", "none"]  # real data has no gold scorer: the stages report their held-out losses/accuracies
    text = cleaned if cfg.clean else cfg.pretrain_data
    return [
        *([Stage("clean", [py, "data/clean.py", "--input", cfg.pretrain_data, "--out", cleaned, "--workers", "2"],
                 [cfg.pretrain_data], [cleaned, f"{o}/clean/report.md"], f"{o}/clean")] if cfg.clean else []),
        Stage("tokenize", [py, "data/prepare_pretrain.py", "--input", text, "--tokenizer", "gpt2",
                           "--out", tok, *s], [text], [f"{tok}/meta.json"], tok),
        Stage("pretrain", [py, "train_pretrain.py", "--data", tok, "--out", f"{o}/pretrain", *f["model"],
                           *f["pretrain"], *s, *dev], [f"{tok}/meta.json"], [f"{o}/pretrain/ckpt.pt"], f"{o}/pretrain"),
        Stage("sft", [py, "train_sft.py", "--init", f"{o}/pretrain/ckpt.pt", "--data", cfg.sft_data, "--val-data",
                      cfg.sft_val_data, "--out", f"{o}/sft", *none, *f["sft"], *s, *dev],
              [f"{o}/pretrain/ckpt.pt", cfg.sft_data], [f"{o}/sft/ckpt.pt"], f"{o}/sft"),
        Stage("prompts", [py, "data/prepare_prompts.py", "--input", cfg.pref_data, "--out", prompts],
              [cfg.pref_data], [prompts], o),
        Stage("rm", [py, "train_rm.py", "--init", f"{o}/sft/ckpt.pt", "--data", cfg.pref_data, "--val-fraction",
                     "0.1", "--out", f"{o}/rm", *none, *f["rm"], *s, *dev],
              [f"{o}/sft/ckpt.pt", cfg.pref_data], [f"{o}/rm/ckpt.pt"], f"{o}/rm"),
        Stage("rlhf_dpo", [py, "train_rlhf.py", "--algo", "dpo", "--init", f"{o}/sft/ckpt.pt", "--data",
                           cfg.pref_data, "--out", f"{o}/rlhf_dpo", *none, *f["dpo"], *s, *dev],
              [f"{o}/sft/ckpt.pt", cfg.pref_data], [f"{o}/rlhf_dpo/ckpt.pt"], f"{o}/rlhf_dpo"),
        Stage("rlhf_ppo", [py, "train_rlhf.py", "--algo", "ppo", "--init", f"{o}/sft/ckpt.pt", "--reward",
                           f"{o}/rm/ckpt.pt", "--data", prompts, "--out", f"{o}/rlhf_ppo", *none, *f["ppo"], *s,
                           *dev], [f"{o}/sft/ckpt.pt", f"{o}/rm/ckpt.pt", prompts], [f"{o}/rlhf_ppo/ckpt.pt"],
              f"{o}/rlhf_ppo"),
    ]


def estimate_real_gpu(peak_flops: float = 989e12, mfu: float = 0.4) -> list[tuple[str, float, float]]:
    """(stage, FLOPs, hours) of the real preset on one H100 (989 TFLOP/s dense bf16) at an assumed 40% MFU.

    Training costs 6N + 12*L*C*T FLOPs per token (GPT.flops_per_token); generation and reference passes cost a third
    of that (forward only). Token counts come from the preset's flags: steps x sequences x sequence length.
    """
    from nanotrain.gpt import GPT, GPTConfig, PRESETS

    model = GPT(GPTConfig(**PRESETS["gpt2"], vocab_size=50304))
    T = model.config.block_size
    train = model.flops_per_token(T)
    fwd = train / 3
    rows = [
        ("pretrain", 2000 * 16 * 32 * T * train),  # 1.05B tokens: about two epochs of TinyStories
        ("sft", 300 * 8 * 4 * T * train),
        ("rm", 1000 * 16 * 2 * 512 * train),  # pairs of <= 512 tokens
        ("dpo", 1000 * 16 * 2 * 512 * (train + fwd)),  # policy trained, reference forward once
        ("ppo", 200 * 64 * (256 * fwd * 3 + 256 * train * 4)),  # rollout/ref/rm forwards; 4 PPO epochs
    ]
    return [(name, flops, flops / (peak_flops * mfu) / 3600) for name, flops in rows]


def file_digest(path: Path) -> str:
    """Content hash of an input (so regenerating identical data does not make the next stage stale); files over
    1 GiB (real corpora) are identified by size and modification time instead, to keep the check instant. A folder
    is the digests of its files."""
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file())
        return hashlib.sha256("".join(f"{f.relative_to(path)}:{file_digest(f)};" for f in files).encode()).hexdigest()
    st = path.stat()
    if st.st_size > 1 << 30:
        return f"{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sources(script: Path) -> list[Path]:
    """The script and every nanotrain module it imports, directly or through another one (found by reading the
    import statements with ast; nothing is imported)."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # from nanotrain import x
            else:
                continue
            for name in names:
                if name.split(".")[0] == "nanotrain":
                    module = ROOT / (name.replace(".", "/") + ".py")
                    package = ROOT / name.replace(".", "/") / "__init__.py"
                    todo += [f for f in (module, package) if f.exists()]
    return sorted(seen)


def stamp_of(stage: Stage) -> str:
    """What the stage's result depends on: its command, the source of its script and of the library modules the
    script uses, and its inputs' contents."""
    h = hashlib.sha256(json.dumps(stage.argv[1:]).encode())
    for path in sources(ROOT / stage.argv[1]):
        h.update(f"{path.relative_to(ROOT)}:".encode() + path.read_bytes())
    for f in stage.inputs:
        h.update(f"{f}:{file_digest(ROOT / f)}".encode())
    return h.hexdigest()


def up_to_date(stage: Stage) -> bool:
    stamp = ROOT / stage.stamp_dir / "stamp.json"
    if not stamp.exists() or not all((ROOT / f).exists() for f in stage.outputs + stage.inputs):
        return False
    # a checkpoint's own record of how far its run got, not the stamp's word for it
    if not all(is_complete(ROOT / f) for f in stage.outputs if f.endswith("ckpt.pt")):
        return False
    return json.loads(stamp.read_text()).get("stamp") == stamp_of(stage)


def resolve_auto_dtype(device: str, out: Path) -> tuple[str, str]:
    """(dtype, how it was chosen) for --dtype auto: one timing for the whole run, not one per stage, kept in OUT so
    that the next run into OUT computes in the same precision. A timing taken again could come out differently on a
    busier machine, change every stage's command and so redo every stage that was up to date."""
    kept = out / "auto_dtype.json"
    chosen = json.loads(kept.read_text()) if kept.exists() else {}
    if device in chosen:
        return chosen[device], f"as measured by the first run into {out}; --dtype overrides"
    chosen[device] = auto_dtype(device)
    out.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(chosen) + "\n")
    return chosen[device], "measured now"


def peak_child_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB


def main(argv=None):
    cfg = parse_config(PipelineConfig, argv, description=__doc__.split("\n\n")[0])
    if cfg.estimate:
        rows = estimate_real_gpu()
        print("real preset on one H100 at 40% MFU (from the FLOPs count):")
        for name, flops, hours in rows:
            print(f"  {name:<10} {flops:.2e} FLOPs  {hours * 60:6.0f} min")
        print(f"  {'total':<10} {sum(r[1] for r in rows):.2e} FLOPs  {sum(r[2] for r in rows) * 60:6.0f} min")
        return
    if cfg.preset not in ("tinyworld", "real"):
        sys.exit(f"pipeline: --preset must be tinyworld or real, not {cfg.preset!r}")
    cfg.out = cfg.out or ("out/real" if cfg.preset == "real" else "out")
    if cfg.dtype == "auto":
        device = cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
        cfg.dtype, how = resolve_auto_dtype(device, ROOT / cfg.out)
        print(f"precision of every stage: {cfg.dtype} (--dtype auto on {device}, {how})")
    only = set(filter(None, cfg.only.split(",")))
    timings: dict[str, dict] = {}
    t_all = time.perf_counter()
    # the stages import this checkout's nanotrain, whatever copy (if any) pip has installed
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)
    for st in stages(cfg):
        if only and st.name not in only:
            continue
        if not cfg.force and up_to_date(st):
            print(f"== {st.name}: up to date, skipped")
            timings[st.name] = {**json.loads((ROOT / st.stamp_dir / "stamp.json").read_text()), "skipped": True}
            continue
        print(f"== {st.name}: {' '.join(['python', *st.argv[1:]])}", flush=True)
        (ROOT / st.stamp_dir / "stamp.json").unlink(missing_ok=True)  # valid again only once the stage finishes
        t0 = time.perf_counter()
        r = subprocess.run(st.argv, cwd=ROOT, env=env)
        if r.returncode != 0:
            sys.exit(f"pipeline: stage {st.name} failed (exit {r.returncode}); fix it and re-run: finished stages "
                     f"are kept and skipped")
        timings[st.name] = {"time_s": time.perf_counter() - t0, "peak_rss_mib": peak_child_rss_mib()}
        (ROOT / st.stamp_dir / "stamp.json").write_text(json.dumps({"stamp": stamp_of(st), **timings[st.name]}))
    total = time.perf_counter() - t_all
    peak = peak_child_rss_mib()
    if cfg.preset == "real":
        print(f"\npipeline (real preset): {total / 60:.1f} minutes; checkpoints under {cfg.out}/")
        return
    report = write_report(ROOT / cfg.out, ROOT / cfg.world, timings, total_s=total, peak_rss_mib=peak,
                          precision=cfg.dtype)
    print(report)
    print(f"\npipeline: {total / 60:.1f} minutes, peak memory of any stage {peak / 1024:.2f} GiB; report: "
          f"{Path(cfg.out) / 'report.md'}")


if __name__ == "__main__":
    main()
