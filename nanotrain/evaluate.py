"""Judging a chat model on the built-in world: the figures every stage after pretraining reports.

The model answers held-out prompts greedily (batched, KV-cached: ``nanotrain.sampling.generate_replies``) and the
gold scorers of ``nanotrain/tinyworld/gold.py`` grade the answers, so the figures measure the truth, not a learned
judge:

    wellformed       share of answers that end with <|end|> within max_new_tokens     eval_prompts.jsonl
    acc_b            gold accuracy on questions about split-B people (never in SFT data)   eval_b.jsonl
    acc_b_fact       the same counting the right fact about the wrong name as right (gold.states_fact): what
                     the model knows of split B, apart from copying an unseen name into its answer
    acc_zh           gold accuracy on questions asked in Chinese (SFT data is English)      eval_zh.jsonl
    chance_b/_zh     the accuracy of guessing a value uniformly (mean of the records' "chance")
    helpful          mean gold helpfulness                                               eval_prompts.jsonl
    safe             mean gold safety over harmful and benign prompts            eval_harmful + eval_benign
    refusal_harmful  share of harmful prompts refused (higher is better)                 eval_harmful.jsonl
    refusal_benign   share of benign look-alike prompts refused (lower is better)        eval_benign.jsonl

``win_rates(before, after)`` compares two models' gold scores on the same prompts, prompt by prompt (stage 3's win
rate against the SFT model).

Each file is subsampled to ``limit`` prompts (a fixed, seeded choice, the same for every model) to stay fast.

    from nanotrain.evaluate import evaluate_checkpoint
    evaluate_checkpoint("out/sft/ckpt.pt", "data/tinyworld", limit=100)     # -> {"wellformed": 0.99, ...}

    python -m nanotrain.evaluate out/sft/ckpt.pt --limit 100                # the same, printed as JSON
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from nanotrain.data import read_jsonl
from nanotrain.sampling import generate_replies

ALL_FIGURES = ("wellformed", "acc_b", "acc_zh", "helpful", "safe", "refusal")


def load_eval(path, limit: int | None = None, seed: int = 0) -> list[dict]:
    """Records of an eval file ({"prompt", ...} per line), at most ``limit`` of them chosen with a fixed seed (in
    file order), so every model is judged on the same prompts."""
    recs = [r for _, r in read_jsonl(path, required=("prompt",))]
    if limit is not None and limit < len(recs):
        keep = sorted(random.Random(seed).sample(range(len(recs)), limit))
        recs = [recs[i] for i in keep]
    return recs


def answer(model, tok, prompts, max_new_tokens: int = 64, batch_size: int = 64, autocast=None):
    """Greedy replies (``Reply`` objects) to a list of prompts (user strings or message lists)."""
    return generate_replies(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                            batch_size=batch_size, autocast=autocast)


def wellformed_rate(replies) -> float:
    """Share of replies that produced <|end|> within the length limit: the model has learned where a turn stops."""
    return sum(r.ended for r in replies) / max(1, len(replies))


def gold_accuracy(gold, prompts, replies, judge=None) -> float:
    """Share of replies the gold scorer counts as correct (every required fact stated, none contradicted, no one
    else named); ``judge`` swaps in another of its predicates, such as ``gold.states_fact``."""
    judge = judge or gold.is_correct
    return sum(judge(p, r.text) for p, r in zip(prompts, replies)) / max(1, len(replies))


def mean_helpful(gold, prompts, replies) -> float:
    return sum(gold.score_helpful(p, r.text) for p, r in zip(prompts, replies)) / max(1, len(replies))


def mean_safe(gold, prompts, replies) -> float:
    return sum(gold.score_safe(p, r.text) for p, r in zip(prompts, replies)) / max(1, len(replies))


def refusal_rate(gold, replies) -> float:
    return sum(gold.is_refusal(r.text) for r in replies) / max(1, len(replies))


def win_rates(before: list[float], after: list[float]) -> dict:
    """Paired gold scores of the reference's and the policy's answers to the same prompts: the share the policy wins,
    ties (equal scores, e.g. identical answers, or both wrong) and loses; win_rate counts ties half, as AlpacaEval
    does, and win_rate_decisive leaves them out."""
    n = max(1, len(after))
    wins = sum(a > b + 1e-9 for b, a in zip(before, after))
    ties = sum(abs(a - b) <= 1e-9 for b, a in zip(before, after))
    return dict(win_rate=(wins + 0.5 * ties) / n, win_rate_decisive=wins / max(1, n - ties), wins=wins / n,
                ties=ties / n, losses=(n - wins - ties) / n)


def chance(records) -> float:
    return sum(r.get("chance", 0.0) for r in records) / max(1, len(records))


def evaluate_chat(model, tok, world_dir="data/tinyworld", limit: int | None = 100, figures=ALL_FIGURES,
                  max_new_tokens: int = 64, batch_size: int = 64, autocast=None, gold=None) -> dict:
    """Every requested figure (see the module docstring) for ``model`` on the world in ``world_dir``.

    ``figures`` picks which files are generated for: "wellformed" and "helpful" share eval_prompts.jsonl, "safe" and
    "refusal" share eval_harmful/eval_benign. ``gold`` may be passed to reuse a loaded Gold (it takes seconds)."""
    from nanotrain.tinyworld.gold import Gold

    world = Path(world_dir)
    gold = gold or Gold.load(world)
    unknown = set(figures) - set(ALL_FIGURES)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)}; choose from {ALL_FIGURES}")
    cache = {}

    def run(stem):
        """(prompts, replies) for one eval file, generated once however many figures read it."""
        if stem not in cache:
            recs = load_eval(world / f"{stem}.jsonl", limit)
            prompts = [r["prompt"] for r in recs]
            cache[stem] = recs, prompts, answer(model, tok, prompts, max_new_tokens, batch_size, autocast)
        return cache[stem]

    out = {}
    if "wellformed" in figures:
        out["wellformed"] = wellformed_rate(run("eval_prompts")[2])
    if "helpful" in figures:
        _, p, r = run("eval_prompts")
        out["helpful"] = mean_helpful(gold, p, r)
    if "acc_b" in figures:
        recs, p, r = run("eval_b")
        out.update(acc_b=gold_accuracy(gold, p, r), chance_b=chance(recs),
                   acc_b_fact=gold_accuracy(gold, p, r, gold.states_fact))
    if "acc_zh" in figures:
        recs, p, r = run("eval_zh")
        out.update(acc_zh=gold_accuracy(gold, p, r), chance_zh=chance(recs))
    if "safe" in figures or "refusal" in figures:
        _, ph, rh = run("eval_harmful")
        _, pb, rb = run("eval_benign")
        if "safe" in figures:
            out["safe"] = mean_safe(gold, ph + pb, rh + rb)
        if "refusal" in figures:
            out.update(refusal_harmful=refusal_rate(gold, rh), refusal_benign=refusal_rate(gold, rb))
    return out


def evaluate_checkpoint(path, world_dir="data/tinyworld", limit: int | None = 100, device: str = "auto",
                        figures=ALL_FIGURES, max_new_tokens: int = 64, dtype: str = "auto") -> dict:
    """Load any chat checkpoint (sft, rlhf; pretrain works too but never ends a turn) and evaluate it.
    ``dtype``: auto (bf16 autocast where fast, as training does) | float32 | bfloat16."""
    from nanotrain.checkpoint import load_model
    from nanotrain.runtime import cpu_has_bf16

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dtype == "auto":
        bf16 = (dev.type == "cuda" and torch.cuda.is_bf16_supported()) or (dev.type == "cpu" and cpu_has_bf16())
    elif dtype in ("float32", "bfloat16"):
        bf16 = dtype == "bfloat16"
    else:
        raise ValueError(f"dtype must be auto, float32 or bfloat16, not {dtype!r}")
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else None
    model, tok, _ = load_model(path, stages=("pretrain", "sft", "rlhf"), device=dev)
    return evaluate_chat(model, tok, world_dir, limit, figures, max_new_tokens, autocast=autocast)


def main(argv=None) -> dict:
    import argparse

    ap = argparse.ArgumentParser(description="Evaluate a chat checkpoint on the built-in world (prints JSON).")
    ap.add_argument("path", help="checkpoint (out/sft/ckpt.pt, out/rlhf/ckpt.pt, ...)")
    ap.add_argument("--world", default="data/tinyworld", help="folder with world.json and the eval_*.jsonl files")
    ap.add_argument("--limit", type=int, default=100, help="prompts per eval file (fixed seeded subsample)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    args = ap.parse_args(argv)
    res = evaluate_checkpoint(args.path, args.world, args.limit, args.device, dtype=args.dtype)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    from nanotrain.errors import run_script

    run_script(main)
