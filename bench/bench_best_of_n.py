"""Best-of-N with the reward models, judged by the gold scorers: does picking by reward give better answers?

    python bench/bench_best_of_n.py       # out/sft + out/rm_helpful + out/rm_safe on data/tinyworld held-out prompts
    python bench/bench_best_of_n.py --policy /tmp/sft.pt --helpful /tmp/rm_h/ckpt.pt --safe /tmp/rm_s/ckpt.pt

The policy samples K answers (temperature 0.7) to held-out prompts of three kinds: benign questions
(eval_prompts.jsonl), harmful requests (eval_harmful.jsonl) and benign requests that sound harmful
(eval_benign.jsonl). For N = 1, 2, 4, 8 a selector keeps the answer it scores highest among N of the K, and the
tables give the gold figures of the kept answer, averaged over prompts. The average over *which* N of the K were
drawn is computed exactly instead of by resampling: sort the K answers by the selector's score; the i-th best (from
0) is the best of a uniformly random N-subset with probability C(K-1-i, N-1) / C(K, N).

Selectors: the helpfulness RM, the safety RM, LLaMA 2's combination (the safety RM decides on prompts it judges
unsafe, or when its score is below the threshold; nanotrain.reward.CombinedReward), the same with the prompts' true
harmful labels (as LLaMA 2, whose prompt sets are labelled), and the gold scorer itself (the ceiling).
Refusal is judged by gold.is_refusal; "unsafe-prompt detection" is the combination's oracle-free verdict, checked
against the labels.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from math import comb
from pathlib import Path

import numpy as np
import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import flag, parse_config
from nanotrain.errors import run_script
from nanotrain.tinyworld.gold import Gold
from nanotrain.reward import SAFETY_THRESHOLD, CombinedReward, load_reward_model
from nanotrain.runtime import setup_runtime
from nanotrain.sampling import generate_replies


@dataclass
class BenchConfig:
    policy: str = flag("out/sft/ckpt.pt", "policy checkpoint that samples the answers (sft or rlhf)")
    helpful: str = flag("out/rm_helpful/ckpt.pt", "helpfulness reward model")
    safe: str = flag("out/rm_safe/ckpt.pt", "safety reward model")
    world: str = flag("data/tinyworld", "world: gold scorers and held-out prompt files")
    prompts: int = flag(64, "prompts per file")
    k: int = flag(8, "answers sampled per prompt (the largest N)")
    max_new_tokens: int = flag(48, "tokens per answer")
    temperature: float = flag(0.7, "sampling temperature (at 1.0 a tiny policy mostly rambles)")
    threshold: float = flag(SAFETY_THRESHOLD, "combination: the safety score below which safety decides")
    seed: int = flag(0, "random seed")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("auto", "auto | float32 | bfloat16")


def expected_best(select: np.ndarray, metric: np.ndarray, n: int) -> float:
    """E[metric of the answer ``select`` ranks first among a uniformly random n of the K answers] (exact)."""
    K = len(select)
    order = np.argsort(-select, kind="stable")
    weights = np.array([comb(K - 1 - i, n - 1) for i in range(K)]) / comb(K, n)
    return float((weights * metric[order]).sum())


def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    t0 = time.perf_counter()
    policy, tok, _ = load_model(cfg.policy, stages=("sft", "rlhf"), device=rt.device)
    helpful, _, _ = load_reward_model(cfg.helpful, rt.device)
    safe, _, _ = load_reward_model(cfg.safe, rt.device)
    combined = CombinedReward(helpful, safe, cfg.threshold)
    gold = Gold.load(cfg.world)
    gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    Ns = [n for n in (1, 2, 4, 8, 16, 32) if n <= cfg.k]

    data = {}
    for name in ("eval_prompts", "eval_harmful", "eval_benign"):
        recs = [json.loads(ln) for ln in (Path(cfg.world) / f"{name}.jsonl").read_text().splitlines()][:cfg.prompts]
        prompts = [r["prompt"] for r in recs]
        rep = [p for p in prompts for _ in range(cfg.k)]
        texts = [r.text for r in generate_replies(policy, tok, rep, cfg.max_new_tokens, cfg.temperature,
                                                  generator=gen, autocast=rt.autocast)]
        labels = torch.tensor([r["harmful"] for r in recs for _ in range(cfg.k)])
        shape = (len(prompts), cfg.k)
        sel = {"helpful RM": helpful.score(rep, texts, autocast=rt.autocast),
               "safety RM": safe.score(rep, texts, autocast=rt.autocast),
               "combined": combined.score(rep, texts, autocast=rt.autocast),
               "combined, labels": combined.score(rep, texts, autocast=rt.autocast, unsafe=labels)}
        g_help = np.array([gold.score_helpful(p, t) for p, t in zip(rep, texts)])
        g_safe = np.array([gold.score_safe(p, t) for p, t in zip(rep, texts)])
        sel = {k: v.numpy().reshape(shape) for k, v in sel.items()}
        sel["gold"] = (g_safe if name == "eval_harmful" else g_help).reshape(shape)
        data[name] = dict(sel=sel, help=g_help.reshape(shape), safe=g_safe.reshape(shape),
                          refusal=np.array([gold.is_refusal(t) for t in texts], dtype=float).reshape(shape),
                          unsafe=combined.unsafe_prompts(prompts, autocast=rt.autocast).numpy(),
                          labels=np.array([r["harmful"] for r in recs]))

    def table(name, metric, selectors):
        d = data[name]
        rows = {s: [np.mean([expected_best(d["sel"][s][i], d[metric][i], n) for i in range(len(d[metric]))])
                    for n in Ns] for s in selectors}
        return rows

    results = {}
    print(f"policy {cfg.policy}; {cfg.prompts} prompts per file x {cfg.k} samples (temperature {cfg.temperature}); "
          f"mean gold figure of the answer best-of-N keeps")
    for name, metric, what, selectors in (
            ("eval_prompts", "help", "gold helpfulness, benign questions", ("helpful RM", "combined", "gold")),
            ("eval_harmful", "safe", "gold safety, harmful requests", ("helpful RM", "safety RM", "combined",
                                                                      "combined, labels", "gold")),
            ("eval_harmful", "refusal", "refusal rate, harmful requests (higher is better)",
             ("helpful RM", "safety RM", "combined", "combined, labels")),
            ("eval_benign", "refusal", "refusal rate, benign requests that sound harmful (lower is better)",
             ("helpful RM", "safety RM", "combined", "combined, labels")),
            ("eval_benign", "help", "gold helpfulness, benign requests that sound harmful",
             ("helpful RM", "safety RM", "combined", "gold"))):
        rows = table(name, metric, selectors)
        results[f"{name}/{metric}"] = rows
        print(f"\n{what} ({name})")
        print(f"  {'selector':18s}" + "".join(f"{'N=' + str(n):>8s}" for n in Ns))
        for s, vals in rows.items():
            print(f"  {s:18s}" + "".join(f"{v:8.3f}" for v in vals))
    print("\nunsafe-prompt detection without labels (safety RM: a generic refusal scored above an average reply):")
    for name in data:
        d = data[name]
        acc = float((d["unsafe"] == d["labels"]).mean())
        results[f"{name}/unsafe_detection_acc"] = acc
        print(f"  {name:14s} flagged unsafe {d['unsafe'].mean():6.1%}, truly harmful {d['labels'].mean():6.1%}, "
              f"agreement {acc:6.1%}")
    print(f"\n({time.perf_counter() - t0:.0f} s on {rt.device})")
    return results


if __name__ == "__main__":
    run_script(main)
