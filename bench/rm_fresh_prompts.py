"""Do the reward models order the SFT model's answers to fresh prompts as the gold scorers do?

    python bench/rm_fresh_prompts.py                     # out/rm_helpful and out/rm_safe, 1,000 fresh prompts
    python bench/rm_fresh_prompts.py --labels out/labels # and the pipeline's labelled held-out pairs beside them

train_rm.py's val_acc_gold scores a reward model on the labelled pairs of the prompts data/label.py held out: a tenth
of the labelling prompts, about 90 on the built-in world, of which about 70 give helpfulness pairs and 20 safety
pairs. A prompt's pairs are its answers ranked against each other, so they move together, and one seed's figure is
uncertain by several points (the interval printed beside each figure: the bootstrap over prompts,
reward.prompt_interval). This bench draws --prompts more prompts of the same kinds in the same proportions
(tinyworld.chat.sample_label_prompt, from a stream of its own) that neither the reward models' training files nor the
held-out evaluation files hold, has the SFT model answer each as the labelling stage does (--samples answers at
--temperature), and counts, over every two different answers to a prompt that gold scores apart, the share each
reward model orders as gold does: the labelled held-out pairs' figure without their labellers' noise (it never reads
the labels' order), on ten times the prompts, split by whether the SFT model trained on the prompt, and its misses
per kind of task.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import check_counts, flag, parse_config
from nanotrain.data import read_jsonl
from nanotrain.errors import DataError, run_script
from nanotrain.pref_data import load_pairs
from nanotrain.reward import load_reward_model, pair_agreements, prompt_interval
from nanotrain.runtime import setup_runtime
from nanotrain.sampling import generate_replies
from nanotrain.tinyworld.chat import sample_label_prompt
from nanotrain.tinyworld.gold import Gold


@dataclass
class BenchConfig:
    sft: str = flag("out/sft/ckpt.pt", "the model whose answers are ranked (the labelling stage's)")
    helpful: str = flag("out/rm_helpful/ckpt.pt", "helpfulness reward model (empty: skip)")
    safe: str = flag("out/rm_safe/ckpt.pt", "safety reward model (empty: skip)")
    labels: str = flag("", "the labelling stage's folder: also score its held-out pairs (prefs_*_val.jsonl)")
    world: str = flag("data/tinyworld", "world: the gold scorers and the files whose prompts are not fresh")
    prompts: int = flag(1000, "fresh prompts")
    samples: int = flag(4, "answers per prompt (data/label.py's --samples)")
    temperature: float = flag(0.7, "sampling temperature (data/label.py's)")
    max_new_tokens: int = flag(48, "longest answer (data/label.py's)")
    seed: int = flag(0, "seed of the fresh prompts and of the samples")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("auto", "auto | float32 | bfloat16")


# the files whose prompts are not fresh: what the reward models train on (the labelling prompts, the world's own
# pairs) and the held-out evaluation files. The SFT model's prompts stay in: the labelling prompts are drawn beside
# them, so the labelled held-out pairs hold some, and the bench splits its figure by them.
NOT_FRESH = ("label_prompts", "prefs_helpful_train", "prefs_helpful_val", "prefs_safe_train", "prefs_safe_val",
             "eval_b", "eval_zh", "eval_prompts", "eval_harmful", "eval_benign", "eval_unknown")


def prompts_of(path: Path) -> set[str]:
    """The prompts of a world file: its records' "prompt", or the user turns of its conversations."""
    out = set()
    for _, rec in read_jsonl(path):
        if isinstance(rec.get("prompt"), str):
            out.add(rec["prompt"].strip())
        out.update(m["content"].strip() for m in rec.get("messages", []) if m.get("role") == "user")
    return out


def fresh_prompts(world: str, n: int, seed: int, gold: Gold) -> list[str]:
    """About ``n`` distinct label-like prompts that none of the world's NOT_FRESH files holds, each kind of task in the
    share it has among the distinct labelling prompts. (Drawn without the quotas, the fresh prompts would lean to the
    tasks with the most phrasings, a retelling or a comparison, since the labelling prompts already took many of the
    few phrasings of a short fact question.) They are drawn from the gold scorer's own tasks, so it knows what each
    asks: it knows every prompt of one subject, but of several people only those drawn from its tasks."""
    taken = set().union(*(prompts_of(Path(world) / f"{name}.jsonl") for name in NOT_FRESH))
    labelling = {rec["prompt"]: rec.get("kind") for _, rec in read_jsonl(Path(world) / "label_prompts.jsonl")}
    share = Counter(labelling.values())
    quota = {kind: round(n * c / len(labelling)) for kind, c in share.items()}
    rng, out, have = random.Random(f"rm-fresh-prompts-{seed}"), {}, Counter()
    for _ in range(200 * n):
        spec = sample_label_prompt(gold.tasks, rng)
        if spec.prompt.strip() not in taken and spec.prompt not in out and have[spec.kind] < quota.get(spec.kind, 0):
            out[spec.prompt], have[spec.kind] = None, have[spec.kind] + 1
            if have == quota:
                break
    short = {k: f"{have[k]}/{q}" for k, q in quota.items() if have[k] < q}
    if short:
        print(f"fewer fresh prompts than their share for: {short} (the world has few more of them)")
    if not out:
        raise DataError(f"{world}: no fresh label-like prompts")
    return list(out)


def agreement(rm, prompts: list[str], answers: list[list[str]], score, autocast) -> tuple[list[float], list[str]]:
    """Per pair of two different answers to one prompt that gold scores apart: whether ``rm`` orders it as gold
    (reward.pair_agreements: 1, 0, or 0.5 on a tie), and the pair's prompt."""
    rows = [(p, sorted(set(a))) for p, a in zip(prompts, answers)]  # each two texts once, as the labellers pair them
    flat_p = [p for p, texts in rows for _ in texts]
    flat_t = [t for _, texts in rows for t in texts]
    r_model = rm.score(flat_p, flat_t, autocast=autocast).tolist()
    r_gold = [score(p, t) for p, t in zip(flat_p, flat_t)]
    ok, where, i = [], [], 0
    for p, texts in rows:
        got = pair_agreements(r_model[i:i + len(texts)], r_gold[i:i + len(texts)])
        ok += got
        where += [p] * len(got)
        i += len(texts)
    return ok, where


def labelled_agreement(rm, path: Path, autocast) -> tuple[list[bool], list]:
    """train_rm.py's val_acc_gold on the labelling stage's held-out pairs, per pair, read as train_rm.py reads them."""
    pairs = [p for p in load_pairs(path) if p.gold is not None and p.gold[0] != p.gold[1]]
    ps = [p.messages for p in pairs]
    c = rm.score(ps, [p.chosen for p in pairs], autocast=autocast)
    r = rm.score(ps, [p.rejected for p in pairs], autocast=autocast)
    ok = [bool(x > y) == (p.gold[0] > p.gold[1]) for x, y, p in zip(c.tolist(), r.tolist(), pairs)]
    return ok, ps


def line(name: str, ok: list[bool], where: list[str]) -> str:
    if not ok:
        return f"  {name:40} no pairs"
    lo, hi = prompt_interval(ok, where)
    return (f"  {name:40} {100 * sum(ok) / len(ok):5.1f}%  (95% interval {100 * lo:.1f}-{100 * hi:.1f}%; "
            f"{len(ok)} pairs, {len({repr(w) for w in where})} prompts)")


def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    check_counts(cfg, "prompts", "samples", "max_new_tokens")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    gold = Gold.load(cfg.world)
    prompts = fresh_prompts(cfg.world, cfg.prompts, cfg.seed, gold)
    sft_prompts = prompts_of(Path(cfg.world) / "sft_train.jsonl")
    sft, tok, _ = load_model(cfg.sft, stages=("sft", "rlhf"), device=rt.device)
    flat = [p for p in prompts for _ in range(cfg.samples)]
    g = torch.Generator().manual_seed(cfg.seed)
    texts = [r.text for r in generate_replies(sft, tok, flat, cfg.max_new_tokens, cfg.temperature, batch_size=256,
                                              generator=g, autocast=rt.autocast)]
    answers = [texts[i:i + cfg.samples] for i in range(0, len(texts), cfg.samples)]
    print(f"{len(prompts)} fresh prompts x {cfg.samples} answers of {cfg.sft} at temperature {cfg.temperature}; "
          f"each reward model's order against the gold scorer's, on the pairs gold scores apart:")
    res = {}
    for kind, path, score in (("helpful", cfg.helpful, gold.score_helpful), ("safe", cfg.safe, gold.score_safe)):
        if not path:
            continue
        rm = load_reward_model(path, rt.device)[0]
        ok, where = agreement(rm, prompts, answers, score, rt.autocast)
        res[kind] = sum(ok) / max(1, len(ok))
        print(line(f"{kind}: fresh prompts", ok, where))
        for name, keep in (("SFT trained on the prompt", True), ("SFT never saw it", False)):
            sel = [i for i, p in enumerate(where) if (p.strip() in sft_prompts) == keep]
            print(line(f"  {name}", [ok[i] for i in sel], [where[i] for i in sel]))
        misses = Counter(gold.spec(p).kind for o, p in zip(ok, where) if not o)
        print("    misses per task kind, in points of the figure: " + ", ".join(
            f"{k} {100 * m / len(ok):.1f}" for k, m in misses.most_common()))
        if cfg.labels:
            ok, where = labelled_agreement(rm, Path(cfg.labels) / f"prefs_{kind}_val.jsonl", rt.autocast)
            res[f"{kind}_labelled"] = sum(ok) / max(1, len(ok))
            print(line(f"{kind}: labelled held-out pairs", ok, where))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    run_script(main)
