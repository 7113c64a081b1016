"""Benchmark the Tinyworld gold scorers: do they tell good replies from bad ones on every evaluation file?

    python data/tinyworld.py && python bench/bench_gold.py       # (generates the world first if it is missing)

For every held-out evaluation file it prints the mean gold helpfulness, safety and accuracy (is_correct) of:
    oracle    gold.answer(prompt), the ideal reply                                  (should be >= 0.95)
    shuffled  the oracle answer of a different prompt drawn at random from all files (should be <= 0.3)
    refuse    always "I'm sorry, but I can't help with that."      (good only on harmful prompts)
    bad       a fluent wrong reply: a wrong value of the asked fact, or compliance on harmful prompts
and how fast the scorers run.
"""
import random
import time
from dataclasses import dataclass
from pathlib import Path

from nanotrain.cli import flag, parse_config
from nanotrain.tinyworld.gold import Gold, read_jsonl
from nanotrain.tinyworld.generate import write_world
from nanotrain.tinyworld.world import WorldConfig

EVAL_FILES = ["eval_b", "eval_zh", "eval_prompts", "eval_harmful", "eval_benign"]


@dataclass
class Config:
    world: str = flag("data/tinyworld", "folder written by data/tinyworld.py")
    seed: int = flag(0, "seed for drawing the shuffled answers")


def main():
    cfg = parse_config(Config, description=__doc__.split("\n")[0])
    if not (Path(cfg.world) / "world.json").exists():
        print(f"{cfg.world}/world.json missing: generating the default world there")
        write_world(WorldConfig(out=cfg.world))
    t0 = time.time()
    gold = Gold.load(cfg.world)
    print(f"Gold.load: {time.time() - t0:.2f}s, {len(gold.specs):,} prompts known")
    data = {f: read_jsonl(Path(cfg.world) / f"{f}.jsonl") for f in EVAL_FILES}
    pool = [(r["prompt"], gold.answer(r["prompt"])) for rs in data.values() for r in rs]
    rng = random.Random(cfg.seed)

    def shuffled(prompt):
        while True:  # the answer to some *other* prompt
            other, ans = rng.choice(pool)
            if other != prompt:
                return ans

    policies = {"oracle": gold.answer, "shuffled": shuffled,
                "refuse": lambda p: "I'm sorry, but I can't help with that.",
                "bad": lambda p: (gold.spec(p).bad or shuffled(p))}
    print(f"{'file':14s} {'n':>5s} {'chance':>7s} | " + " | ".join(f"{k:^20s}" for k in policies))
    print(f"{'':14s} {'':>5s} {'':>7s} | " + " | ".join(f"{'help  safe   acc':^20s}" for _ in policies))
    totals = {k: [0.0, 0.0, 0.0] for k in policies}
    n_all, n_scored, t_score = 0, 0, 0.0
    for f, rs in data.items():
        chance = sum(r["chance"] for r in rs) / len(rs)
        cells = []
        for k, policy in policies.items():
            replies = [policy(r["prompt"]) for r in rs]
            t1 = time.time()
            h = [gold.score_helpful(r["prompt"], y) for r, y in zip(rs, replies)]
            s = [gold.score_safe(r["prompt"], y) for r, y in zip(rs, replies)]
            c = [gold.is_correct(r["prompt"], y) for r, y in zip(rs, replies)]
            t_score += time.time() - t1
            n_scored += 3 * len(rs)
            m = [sum(h) / len(rs), sum(s) / len(rs), sum(c) / len(rs)]
            totals[k] = [t + x * len(rs) for t, x in zip(totals[k], m)]
            cells.append(f"{m[0]:.3f} {m[1]:.3f} {m[2]:.3f}")
        n_all += len(rs)
        print(f"{f:14s} {len(rs):5d} {chance:7.3f} | " + " | ".join(f"{c:^20s}" for c in cells))
    print(f"{'all':14s} {n_all:5d} {'':7s} | " + " | ".join(
        f"{' '.join(f'{t / n_all:.3f}' for t in totals[k]):^20s}" for k in policies))
    print(f"scoring speed: {n_scored / t_score:,.0f} scores/s")


if __name__ == "__main__":
    main()
