"""How high can a gold-judged win rate against the SFT model go? The ceilings beside the stage-3 models' figures.

    python bench/win_rate_ceiling.py                      # out/sft against the oracle, best-of-N and out/rlhf_*
    python bench/win_rate_ceiling.py --policies out/rlhf_dpo/ckpt.pt --k 16

train_rlhf.py's final evaluation answers the same held-out requests for help (eval_limit of each of eval_prompts,
eval_benign and eval_unknown: evaluate.HELP_FILES) greedily with the policy and with the SFT model, and counts a win
when the policy's answer has the higher gold helpfulness (ties count half: nanotrain.evaluate.win_rates). This
bench puts three answers in the policy's place:

    oracle        the generator's ideal answer to every prompt (gold.answer): the most any model can win, since
                  on the prompts where SFT already answers perfectly even the oracle only ties
    best-of-N     the SFT model's own samples (temperature --temperature), the one the gold scorer likes best of
                  the first N: what preference learning could reach by always choosing as the gold judge would,
                  without learning anything the SFT model cannot already say
    each --policies checkpoint, greedy, as train_rlhf.py judges it

and prints, for each, the win rate, its wins / ties / losses and the mean gold helpfulness of its answers; for the
greedy ones also where the points go: their gold helpfulness without the manner factor (gold.py: hedges, a late
answer, padding) and the share of benign questions (eval_prompts) that gold counts answered right.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import flag, parse_config
from nanotrain.errors import run_script
from nanotrain.evaluate import HELP_FILES as FILES, answer, load_eval, win_rates  # FILES: as train_rlhf.py
from nanotrain.tinyworld.gold import Gold
from nanotrain.runtime import setup_runtime
from nanotrain.sampling import generate_replies


@dataclass
class BenchConfig:
    sft: str = flag("out/sft/ckpt.pt", "the SFT model every answer is compared with")
    policies: str = flag("out/rlhf_ppo/ckpt.pt,out/rlhf_dpo/ckpt.pt,out/rlhf_kto/ckpt.pt",
                         "comma-separated stage-3 checkpoints to judge the same way (missing ones are skipped)")
    world: str = flag("data/tinyworld", "world: gold scorer and held-out prompt files")
    eval_limit: int = flag(100, "prompts per file (train_rlhf.py's --eval-limit)")
    eval_tokens: int = flag(48, "reply length limit (train_rlhf.py's --eval-tokens)")
    k: int = flag(8, "SFT samples per prompt (the largest N of best-of-N)")
    temperature: float = flag(0.7, "sampling temperature of best-of-N")
    seed: int = flag(0, "random seed")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("auto", "auto | float32 | bfloat16")


def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    t0 = time.perf_counter()
    gold = Gold.load(cfg.world)
    per_file = {name: [r["prompt"] for r in load_eval(Path(cfg.world) / f"{name}.jsonl", cfg.eval_limit)]
                for name in FILES}
    prompts = [p for ps in per_file.values() for p in ps]
    sft, tok, _ = load_model(cfg.sft, stages=("sft", "rlhf"), device=rt.device)
    sft.eval()

    benign = set(per_file["eval_prompts"])
    where = {}  # answers' name -> (gold helpfulness without manner, share of benign questions answered right)

    def greedy_scores(name, model) -> list[float]:
        texts = [r.text for r in answer(model, tok, prompts, cfg.eval_tokens, autocast=rt.autocast)]
        where[name] = (sum(gold.score_helpful(p, t, manner=False) for p, t in zip(prompts, texts)) / len(prompts),
                       sum(bool(gold.is_correct(p, t)) for p, t in zip(prompts, texts) if p in benign) / len(benign))
        return [gold.score_helpful(p, t) for p, t in zip(prompts, texts)]

    base = greedy_scores("SFT (itself: all ties)", sft)
    rows = {"SFT (itself: all ties)": base, "oracle": [gold.score_helpful(p, gold.answer(p)) for p in prompts]}
    gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    texts = [r.text for r in generate_replies(sft, tok, [p for p in prompts for _ in range(cfg.k)], cfg.eval_tokens,
                                              cfg.temperature, generator=gen, autocast=rt.autocast)]
    samples = [[gold.score_helpful(p, t) for t in texts[i * cfg.k:(i + 1) * cfg.k]] for i, p in enumerate(prompts)]
    for n in [n for n in (1, 2, 4, 8, 16, 32) if n <= cfg.k]:
        rows[f"SFT best-of-{n} by gold"] = [max(s[:n]) for s in samples]
    for path in [p for p in cfg.policies.split(",") if p]:
        if not Path(path).exists():
            print(f"(skipped {path}: not found)")
            continue
        policy = load_model(path, stages=("sft", "rlhf"), device=rt.device)[0]
        policy.eval()
        rows[path] = greedy_scores(path, policy)

    print(f"{len(prompts)} held-out prompts ({cfg.eval_limit} of each of {', '.join(FILES)}), each answer against "
          f"{cfg.sft}'s greedy one, judged by gold helpfulness; ties count half")
    print(f"  {'answers':40s}{'win rate':>10s}{'wins':>8s}{'ties':>8s}{'losses':>8s}{'helpful':>9s}"
          f"{'no manner':>11s}{'right':>8s}")
    results = {}
    for name, scores in rows.items():
        w = win_rates(base, scores)
        results[name] = dict(w, helpful=sum(scores) / len(scores))
        extra = ""
        if name in where:
            results[name].update(helpful_no_manner=where[name][0], right_benign=where[name][1])
            extra = f"{where[name][0]:11.3f}{where[name][1]:8.0%}"
        print(f"  {name:40s}{w['win_rate']:10.1%}{w['wins']:8.0%}{w['ties']:8.0%}{w['losses']:8.0%}"
              f"{results[name]['helpful']:9.3f}{extra}")
    print(f"({time.perf_counter() - t0:.0f} s on {rt.device})")
    return results


if __name__ == "__main__":
    run_script(main)
