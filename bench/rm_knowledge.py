"""Where does the helpfulness reward model order held-out pairs against the gold scorer? Split by what the SFT model
knows.

    python bench/rm_knowledge.py                          # out/rm_helpful on out/labels/prefs_helpful_val.jsonl
    python bench/rm_knowledge.py --rm out/rm_safe/ckpt.pt --pairs out/labels/prefs_safe_val.jsonl

The labelled pairs are the SFT model's own answers, so two answers to one prompt differ most where the model is
unsure, and the reward model starts from that same model. This bench asks the SFT model each pair's prompt once,
greedily, and prints the reward model's agreement with the gold order (train_rm.py's val_acc_gold: pairs the gold
scorer tells apart) on the pairs whose prompt it answers right (gold.is_correct) and on the others. It also prints
the agreement of each of the reward's two terms alone (nanotrain/reward.py: the head, and the reply's mean
log-likelihood under the trunk), which says where the ordering comes from, and the reward's misses per task
kind (the pairs' "kind"), most first: which of the world's tasks the misses come from. Two more columns split the
pairs by how far apart gold scores their answers (--close: at most that far, or more), and a last row gives the
labels' own agreement with gold on each group: on close pairs the labellers themselves often disagree with gold, and
a reward model that learns their order cannot be expected to beat them. The reward's agreement on all pairs comes with
a 95% interval over prompts: a few prompts answered many times hold most of the pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import flag, parse_config
from nanotrain.data import read_jsonl
from nanotrain.errors import DataError, run_script
from nanotrain.evaluate import answer
from nanotrain.pref_data import gold_scores
from nanotrain.reward import load_reward_model, prompt_interval
from nanotrain.runtime import setup_runtime
from nanotrain.tinyworld.gold import Gold


@dataclass
class BenchConfig:
    rm: str = flag("out/rm_helpful/ckpt.pt", "reward model")
    sft: str = flag("out/sft/ckpt.pt", "the SFT model whose answers the pairs are (its greedy answer decides 'knows')")
    pairs: str = flag("out/labels/prefs_helpful_val.jsonl", "held-out labelled pairs with gold_chosen / gold_rejected")
    world: str = flag("data/tinyworld", "world: the gold scorer")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("float32", "float32 | bfloat16")
    close: float = flag(0.3, "pairs whose gold scores are at most this far apart count as close")


def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    rt = setup_runtime(cfg.device, cfg.dtype, 0)
    gold = Gold.load(cfg.world)
    fields = ("prompt", "chosen", "rejected", "gold_chosen", "gold_rejected")
    pairs = []
    for lineno, p in read_jsonl(cfg.pairs, required=fields):  # a malformed record is named by file and line
        where = f"{cfg.pairs}:{lineno}"
        if not all(isinstance(p[k], str) for k in fields[:3]):
            raise DataError(f"{where}: prompt, chosen and rejected must be text (labelled pairs of data/label.py)")
        gold_scores(p, where)  # the check every reader of labelled pairs makes of the two numbers
        pairs.append(p)
    if not pairs:
        raise DataError(f"{cfg.pairs}: needs labelled pairs with gold_chosen and gold_rejected (data/label.py)")
    pairs = [p for p in pairs if p["gold_chosen"] != p["gold_rejected"]]
    rm = load_reward_model(cfg.rm, rt.device)[0]
    sft, sft_tok, _ = load_model(cfg.sft, stages=("sft", "rlhf"), device=rt.device)
    sft.eval()
    prompts = sorted({p["prompt"] for p in pairs})
    replies = answer(sft, sft_tok, prompts, 48, autocast=rt.autocast)
    knows = {p: gold.is_correct(p, a.text) for p, a in zip(prompts, replies)}
    gold_first = torch.tensor([p["gold_chosen"] > p["gold_rejected"] for p in pairs])
    ps = [p["prompt"] for p in pairs]
    h_c, l_c = rm.raw_terms(ps, [p["chosen"] for p in pairs], autocast=rt.autocast)
    h_r, l_r = rm.raw_terms(ps, [p["rejected"] for p in pairs], autocast=rt.autocast)
    if l_c is None:  # a head-only reward model (train_rm.py --no-likelihood)
        l_c, l_r = torch.zeros_like(h_c), torch.zeros_like(h_r)
    w = rm.likelihood_weight.item() if rm.likelihood_weight is not None else 0.0
    right = {"reward": ((h_c + w * l_c > h_r + w * l_r) == gold_first),
             "head alone": ((h_c > h_r) == gold_first), "likelihood alone": ((l_c > l_r) == gold_first)}
    known = torch.tensor([knows[p] for p in ps])
    close = torch.tensor([abs(p["gold_chosen"] - p["gold_rejected"]) <= cfg.close + 1e-9 for p in pairs])
    # the labels' order is the chosen reply first: it agrees with gold where gold scores the chosen one higher
    right["labels (noisy)"] = gold_first
    print(f"{cfg.rm} on {len(pairs)} held-out pairs the gold scorer tells apart ({cfg.pairs}); learned weight of "
          f"the likelihood {w:.3f}")
    groups = {"all": torch.ones_like(known), "SFT right": known, "SFT wrong": ~known,
              f"gold <={cfg.close:g} apart": close, f"gold >{cfg.close:g} apart": ~close}
    print(f"  {'':34} " + " ".join(f"{g:>16}" for g in groups))
    res = {}
    for name, ok in right.items():
        cells = [ok[sel].float().mean() if sel.any() else float("nan") for sel in groups.values()]
        res[name] = [float(c) for c in cells]
        # (a dash where a group has no pairs)
        print(f"  {name:34} " + " ".join(f"{100 * c:>15.1f}%" if c == c else f"{'—':>16}" for c in cells))
    print("  pairs: " + ", ".join(f"{g} {int(sel.sum())}" for g, sel in groups.items()))
    lo, hi = res["reward_interval"] = prompt_interval(right["reward"].tolist(), ps)
    print(f"  reward, all pairs: 95% interval {100 * lo:.1f}-{100 * hi:.1f}% "
          f"(bootstrap over the {len(set(ps))} prompts)")
    kinds = sorted({p.get("kind", "?") for p in pairs})
    per_kind = {k: [not ok for ok, p in zip(right["reward"].tolist(), pairs) if p.get("kind", "?") == k] for k in kinds}
    res["misses_per_kind"] = {k: (sum(m), len(m)) for k, m in per_kind.items()}
    print("  misses per task kind (misses / pairs): " + ", ".join(
        f"{k} {sum(m)}/{len(m)}" for k, m in sorted(per_kind.items(), key=lambda kv: -sum(kv[1])) if sum(m)))
    return res


if __name__ == "__main__":
    run_script(main)
