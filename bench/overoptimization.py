"""Reward over-optimisation made visible, and the reward-vs-KL frontier of PPO and DPO.

    python bench/overoptimization.py      # -> out/overopt/{overoptimization,frontier}.png, results.md
    python bench/overoptimization.py --long-steps 300 --long-beta 0.002 --out /tmp/overopt

1. **Over-optimisation** (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization", fig. 1): PPO runs
   long at a small KL coefficient. Every iteration logs the learned reward model's score of the sampled answers
   (what PPO maximises) and their gold helpfulness (the truth the reward model imitates,
   nanotrain/tinyworld/gold.py), against the KL from the SFT model. The proxy keeps rising; the gold score rises,
   peaks, and falls once the policy has found what the reward model gets wrong. The x axis is sqrt(KL), as in Gao et
   al., where gold follows d (alpha - beta d).
2. **Frontier** (Rafailov et al. 2023, DPO paper fig. 2): PPO and DPO at several beta; for each run, the gold
   helpfulness of answers sampled from the final policy against their KL from the SFT model (both from
   train_rlhf.py's final evaluation). Better algorithms reach more reward for the same KL.

Every run is train_rlhf.py's ``main`` in this process, with its outputs under OUT/runs/; the figures are read back
from the runs' metrics.jsonl and checkpoints, so a finished run is reused when the bench is re-run (--force to redo).
"""
from __future__ import annotations

import json
import math
import runpy
from dataclasses import dataclass
from pathlib import Path

from nanotrain.cli import flag, parse_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class OverOptConfig:
    out: str = flag("out/overopt", "output folder: PNGs, results.md, runs/")
    init: str = flag("out/sft/ckpt.pt", "SFT checkpoint")
    reward: str = flag("out/rm_helpful/ckpt.pt", "reward model PPO optimises (the proxy)")
    world: str = flag("data/tinyworld", "world with gold scorers and eval prompts")
    long_steps: int = flag(200, "PPO iterations of the long run")
    long_beta: float = flag(0.002, "KL coefficient of the long run (small: let it over-optimise)")
    long_lr: float = flag(3e-5, "learning rate of the long run")
    ppo_betas: str = flag("0.2,0.05,0.01", "PPO KL coefficients of the frontier")
    dpo_betas: str = flag("0.5,0.1,0.02", "DPO betas of the frontier")
    ppo_steps: int = flag(40, "PPO iterations per frontier run")
    dpo_steps: int = flag(60, "DPO steps per frontier run")
    eval_limit: int = flag(100, "eval prompts per run for the frontier points")
    smooth: int = flag(10, "moving-average window over iterations for the long run's curves")
    device: str = flag("auto", "device")
    seed: int = flag(0, "seed")
    force: bool = flag(False, "re-run finished runs")


def train(cfg, name: str, argv: list[str]) -> Path:
    """Run train_rlhf.py into OUT/runs/NAME unless it already finished there; returns the folder."""
    out = Path(cfg.out) / "runs" / name
    if cfg.force or not (out / "ckpt.pt").exists() or "kl_to_ref" not in final_metrics(out):
        main = runpy.run_path(str(ROOT / "train_rlhf.py"), run_name="overopt")["main"]
        main([*argv, "--init", cfg.init, "--reward", cfg.reward, "--world", cfg.world, "--out", str(out),
              "--device", cfg.device, "--seed", str(cfg.seed), "--eval-limit", str(cfg.eval_limit)])
    return out


def final_metrics(out: Path) -> dict:
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()] if \
        (out / "metrics.jsonl").exists() else []
    return next((r for r in reversed(recs) if "kl_to_ref" in r), {})


def moving_average(xs, k):
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def main(argv=None):
    cfg = parse_config(OverOptConfig, argv, description=__doc__.split("\n\n")[0])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # --- 1. the long PPO run
    run = train(cfg, "ppo_long", ["--algo", "ppo", "--steps", str(cfg.long_steps), "--beta", str(cfg.long_beta),
                                  "--lr", str(cfg.long_lr)])
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    it = [r for r in recs if "score" in r and "gold" in r]
    kl = moving_average([max(r["kl"], 0.0) for r in it], cfg.smooth)
    proxy, gold = moving_average([r["score"] for r in it], cfg.smooth), moving_average([r["gold"] for r in it],
                                                                                         cfg.smooth)
    # the share of answers with the stock closing phrase, which careful writers use more often (so the reward model
    # can take it for quality) and the gold scorer ignores once and punishes repeated
    closing = moving_average([r.get("closing", float("nan")) for r in it], cfg.smooth)
    d = [math.sqrt(k) for k in kl]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(d, proxy, label="reward model score (proxy, normalised)", color="tab:blue")
    ax.set_xlabel("sqrt(KL to SFT)  [sqrt(nats)]")
    ax.set_ylabel("reward model score", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(d, gold, label="gold helpfulness", color="tab:red")
    ax2.plot(d, closing, label="answers with the closing phrase (share)", color="tab:green", linestyle="--")
    ax2.set_ylabel("gold helpfulness; closing-phrase share", color="tab:red")
    ax.set_title(f"PPO, beta={cfg.long_beta}: proxy vs gold (moving average of {cfg.smooth} iterations)")
    fig.legend(loc="lower center", ncol=2, fontsize=8)  # below the axes: the curves fill them
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    fig.savefig(out / "overoptimization.png", dpi=120)
    plt.close(fig)
    peak = max(range(len(gold)), key=lambda i: gold[i])

    # --- 2. the frontier
    points = []
    for algo, betas, steps in (("ppo", cfg.ppo_betas, cfg.ppo_steps), ("dpo", cfg.dpo_betas, cfg.dpo_steps)):
        for b in filter(None, betas.split(",")):
            r = train(cfg, f"{algo}_beta{b}", ["--algo", algo, "--beta", b, "--steps", str(steps)])
            m = final_metrics(r)
            points.append(dict(algo=algo, beta=float(b), kl=m["kl_to_ref"], gold_sampled=m["helpful_sampled"],
                               gold_greedy=m["helpful_after"], gold_sft=m["helpful_before"], win_rate=m["win_rate"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algo, colour in (("ppo", "tab:orange"), ("dpo", "tab:green")):
        pts = sorted((p for p in points if p["algo"] == algo), key=lambda p: p["kl"])
        ax.plot([p["kl"] for p in pts], [p["gold_sampled"] for p in pts], "o-", color=colour, label=algo.upper())
        for p in pts:
            ax.annotate(f"beta {p['beta']:g}", (p["kl"], p["gold_sampled"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("KL(policy || SFT) per answer  [nats]")
    ax.set_ylabel("gold helpfulness of sampled answers")
    ax.set_title("Reward vs KL frontier (DPO paper, fig. 2)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=120)
    plt.close(fig)

    # --- the table
    lines = ["# Over-optimisation and the reward-KL frontier", "",
             f"Long PPO run (beta {cfg.long_beta}, {len(it)} iterations, lr {cfg.long_lr}), moving averages of "
             f"{cfg.smooth} iterations of sampled answers:", "",
             "| iteration | KL (nats) | reward model score | gold helpfulness | closing-phrase share |",
             "|---:|---:|---:|---:|---:|"]
    marks = sorted({0, peak, len(it) - 1, *range(0, len(it), max(1, len(it) // 8))})
    for i in marks:
        lines.append(f"| {it[i]['step']}{' (gold peak)' if i == peak else ''} | {kl[i]:.2f} | {proxy[i]:.3f} | "
                     f"{gold[i]:.3f} | {closing[i]:.2f} |")
    lines += ["", "Frontier (final policies; gold helpfulness of answers sampled at temperature 1, and greedy):", "",
              "| algo | beta | KL (nats) | gold (sampled) | gold (greedy) | SFT gold (greedy) | win rate vs SFT |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p['algo']} | {p['beta']:g} | {p['kl']:.2f} | {p['gold_sampled']:.3f} | "
                     f"{p['gold_greedy']:.3f} | {p['gold_sft']:.3f} | {p['win_rate']:.1%} |")
    lines += ["", "![over-optimisation](overoptimization.png) ![frontier](frontier.png)", ""]
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"\nplots and table in {out}/")
    return {"long": it, "frontier": points}


if __name__ == "__main__":
    main()
