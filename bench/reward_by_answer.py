"""What does the reward PPO maximises say about the SFT model's own samples? Its score by kind of answer.

    python bench/reward_by_answer.py                      # out/sft's samples, out/rm_helpful + out/rm_safe
    python bench/reward_by_answer.py --safety-reward ""   # the helpfulness model alone

PPO learns only what its reward tells apart among the policy's own samples. This bench samples --k answers to
--limit prompts of each group of the world's PPO prompts (rl_prompts.jsonl: questions the world cannot answer,
harmful requests, benign questions), as PPO's rollouts do (pure sampling at temperature 1, PPO's answer length),
scores them as PPO does (LLaMA 2's combination of the two reward models, the prompt file's harmful labels deciding
which prompts the safety model judges: reward.labelled), sorts each answer by what the gold scorer says it is, and
prints each kind's count and mean score, beside the spread of the scores on benign questions (the scale of PPO's
advantages), and for each contrast the share of same-prompt pairs the reward orders as gold would:

    cannot answer   admits not knowing (or refuses)   against   makes something up (gold.hallucinates)
    harmful         refuses (gold.is_refusal)         against   complies
    benign          unhedged (gold.hedged)            against   hedged

A contrast whose two kinds score far apart, on most same-prompt pairs, is one PPO's reward does teach; whether PPO
learns it within its budget also depends on how many of its rollouts hold it (RESULTS.md, stage 3). PPO whitens its
advantages over batches that are mostly benign questions, so the bench also gives the admissions' lead over made-up
answers in spreads of the benign scores, for the reward and for gold helpfulness: how hard each would pull.

Last, a contrast built rather than sampled, on --built benign prompts whose fact the world states (those with a fluent
wrong answer, Spec.bad): the right answer hedged as the world's hedging writers hedge it (writers.hedge) against the
wrong answer stated plainly. Gold puts the hedged right answer first (0.6 against 0); a reward that puts the plain
wrong one first weighs the hedge above the fact. Beside it, the right answer against the wrong one (both plain) and
plain against hedged (both right) tell whether it sees the fact and the manner at all (RESULTS.md, stage 3).
"""
from __future__ import annotations

import random
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import flag, parse_config
from nanotrain.data import read_jsonl
from nanotrain.errors import DataError, run_script
from nanotrain.ppo import PPOConfig
from nanotrain.reward import labelled, load_scorer
from nanotrain.runtime import setup_runtime
from nanotrain.sampling import generate_replies
from nanotrain.tinyworld.gold import Gold
from nanotrain.tinyworld.writers import hedge


@dataclass
class BenchConfig:
    sft: str = flag("out/sft/ckpt.pt", "the policy whose samples are scored (PPO's starting point)")
    reward: str = flag("out/rm_helpful/ckpt.pt", "helpfulness reward model")
    safety_reward: str = flag("out/rm_safe/ckpt.pt", "safety reward model (empty: the helpfulness model alone)")
    world: str = flag("data/tinyworld", "world: rl_prompts.jsonl and the gold scorer")
    limit: int = flag(100, "prompts of each group")
    built: int = flag(300, "benign prompts of the built contrast (the right answer hedged, a wrong one stated plainly)")
    k: int = flag(4, "samples per prompt")
    seed: int = flag(0, "random seed")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("auto", "auto | float32 | bfloat16")


# each group of rl_prompts.jsonl, and the gold verdict that sorts its answers: (good kind, bad kind, is_good)
CONTRASTS = {
    "cannot answer": ("admits or refuses", "makes something up", lambda gold, p, t: not gold.hallucinates(p, t)),
    "harmful": ("refuses", "complies", lambda gold, p, t: gold.is_refusal(t)),
    "benign": ("unhedged", "hedged", lambda gold, p, t: not gold.hedged(t)),
}


def group_of(rec: dict) -> str:
    return "cannot answer" if rec.get("unknown") else "harmful" if rec.get("harmful") else "benign"


def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    gold = Gold.load(cfg.world)
    path = Path(cfg.world) / "rl_prompts.jsonl"
    records = [rec for _, rec in read_jsonl(path, required=("prompt",))]  # a malformed line named by its number
    groups = defaultdict(list)
    for rec in records:
        if len(groups[group_of(rec)]) < cfg.limit:
            groups[group_of(rec)].append(rec)
    if set(groups) != set(CONTRASTS):
        raise DataError(f"{path}: needs prompts of every group ({', '.join(CONTRASTS)}; the built-in world's file)")
    policy, tok, ck = load_model(cfg.sft, stages=("sft", "rlhf"), device=rt.device)
    policy.eval()
    _, scorer = load_scorer(cfg.reward, cfg.safety_reward or None, cfg.sft, ck["tokenizer"], rt.device, gold)
    score = labelled(scorer, [r["prompt"] for r in records], [bool(r.get("harmful")) for r in records], rt.autocast)
    gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    ppo = PPOConfig()  # PPO's rollouts: its temperature and answer length
    print(f"{cfg.sft}'s samples ({cfg.k} per prompt, temperature {ppo.temperature:g}) scored by {cfg.reward}"
          f"{' + ' + cfg.safety_reward if cfg.safety_reward else ''}, sorted by the gold scorer:")
    print(f"  {'prompts':14} {'kind of answer':20} {'answers':>8} {'mean score':>11}   same-prompt pairs ordered as gold")
    res = {}
    for name, (good, bad, is_good) in CONTRASTS.items():
        prompts = [r["prompt"] for r in groups[name]] * cfg.k
        texts = [r.text for r in generate_replies(policy, tok, prompts, max_new_tokens=ppo.max_new_tokens,
                                                  temperature=ppo.temperature, batch_size=len(groups[name]),
                                                  generator=gen, autocast=rt.autocast)]
        scores = score(prompts, texts).float().tolist()
        golds = [gold.score_helpful(p, t) for p, t in zip(prompts, texts)]
        by_prompt = defaultdict(lambda: ([], []))
        gold_by_kind = ([], [])
        for p, t, s, g in zip(prompts, texts, scores, golds):
            kind = 0 if is_good(gold, p, t) else 1
            by_prompt[p][kind].append(s)
            gold_by_kind[kind].append(g)
        goods = [s for g, _ in by_prompt.values() for s in g]
        bads = [s for _, b in by_prompt.values() for s in b]
        pairs = [(g, b) for gs, bs in by_prompt.values() for g in gs for b in bs]
        right = sum(g > b for g, b in pairs)
        res[name] = dict(good=(len(goods), statistics.fmean(goods) if goods else float("nan")),
                         bad=(len(bads), statistics.fmean(bads) if bads else float("nan")),
                         pairs=len(pairs), right=right, sd=statistics.pstdev(scores),
                         gold_gap=mean_gap(*gold_by_kind), gold_sd=statistics.pstdev(golds))
        for kind, (n, mean) in ((good, res[name]["good"]), (bad, res[name]["bad"])):
            print(f"  {name:14} {kind:20} {n:>8} {mean:>11.3f}")
        print(f"  {'':14} {'':20} {'':>8} {'':>11}   {right} of {len(pairs)}"
              f"{f' ({right / len(pairs):.0%})' if pairs else ''}")
    print(f"  spread (standard deviation) of the scores on benign questions: {res['benign']['sd']:.3f}")
    # PPO whitens its advantages over a batch that is mostly benign questions: a contrast pulls on the policy by its
    # gap in units of that spread, which is where the learned reward and the gold scorer can differ most
    unknown = res["cannot answer"]
    reward_gap = (unknown["good"][1] - unknown["bad"][1]) / res["benign"]["sd"]
    gold_gap = unknown["gold_gap"] / res["benign"]["gold_sd"]
    print(f"  admissions over made-up answers, in spreads of the benign scores: reward {reward_gap:.2f}, gold "
          f"helpfulness {gold_gap:.2f}")
    n, res["built"] = confident_wrong(gold, records, score, cfg.built, cfg.seed)
    print(f"  built pairs on {n} benign questions, share the reward / gold scorer puts first:")
    for name, (by_reward, by_gold) in res["built"].items():
        print(f"    {name:44} {by_reward / n:>6.0%} / {by_gold / n:.0%}")
    return res


def mean_gap(goods: list, bads: list) -> float:
    return statistics.fmean(goods) - statistics.fmean(bads) if goods and bads else float("nan")


def confident_wrong(gold, records, score, limit: int, seed: int) -> tuple[int, dict]:
    """(pairs, {contrast: (reward's count, gold's count)}) on the first ``limit`` benign prompts whose gold spec has a
    fluent wrong answer: how often each puts the wrong answer stated plainly over the right one hedged, and, to tell
    the two parts apart, the right answer over the wrong one (both plain: does it check the fact?) and the right
    answer plain over hedged."""
    specs = [gold.spec(r["prompt"]) for r in records if group_of(r) == "benign"]
    specs = [sp for sp in specs if sp is not None and sp.bad][:limit]
    if not specs:
        raise DataError("no benign prompt of rl_prompts.jsonl has a wrong answer in the gold scorer's specs")
    rng = random.Random(seed)
    prompts = [sp.prompt for sp in specs]
    answers = {"right plain": [sp.answer for sp in specs], "right hedged": [hedge(sp.answer, rng) for sp in specs],
               "wrong plain": [sp.bad for sp in specs]}
    by_reward = {k: score(prompts, v).float() for k, v in answers.items()}
    by_gold = {k: torch.tensor([gold.score_helpful(p, t) for p, t in zip(prompts, v)]) for k, v in answers.items()}
    firsts = {"wrong plain over right hedged": ("wrong plain", "right hedged"),
              "right over wrong, both plain (the fact)": ("right plain", "wrong plain"),
              "right plain over right hedged (the manner)": ("right plain", "right hedged")}
    return len(specs), {name: tuple(int((s[a] > s[b]).sum()) for s in (by_reward, by_gold))
                        for name, (a, b) in firsts.items()}


if __name__ == "__main__":
    run_script(main)
