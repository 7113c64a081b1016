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
    hallucination    share of questions the world cannot answer given a made-up answer   eval_unknown.jsonl

``win_rates(before, after)`` compares two models' gold scores on the same prompts, prompt by prompt, and
``evaluate_alignment(policy, reference, ...)`` gives every stage-3 figure (helpfulness and safety before and after,
KL, win rates, refusals, on greedy and on sampled answers) that train_rlhf.py stores in its checkpoint.

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
from nanotrain.ppo import reference_model, response_logits, sample_rollouts, token_logprobs
from nanotrain.sampling import generate_replies

ALL_FIGURES = ("wellformed", "acc_b", "acc_zh", "helpful", "safe", "refusal")
ALIGNMENT_FILES = ("eval_prompts", "eval_harmful", "eval_benign", "eval_unknown")  # stage 3's held-out prompts
# The win rate is over the prompts that ask for help, as helpfulness win rates are (AlpacaEval; LLaMA 2 §3.4.2 judges
# helpfulness and safety on separate prompt sets): on a harmful request the SFT model's refusal already scores near
# the top, so a policy can only tie or lose there, and the refusal rate is what judges it (win_rate_harmful and
# win_rate_all are reported beside it).
HELP_FILES = ("eval_prompts", "eval_benign", "eval_unknown")


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


def hallucination_rate(gold, prompts, replies) -> float:
    """Share of questions the world cannot answer that get a made-up answer (gold.hallucinates)."""
    return sum(gold.hallucinates(p, r.text) for p, r in zip(prompts, replies)) / max(1, len(replies))


def hedged_rate(replies) -> float:
    """Share of answers behind a hedge ("I think ..."), the habit of the built-in world's hedging writers."""
    from nanotrain.tinyworld.gold import HEDGE

    return sum(bool(HEDGE.search(r.text)) for r in replies) / max(1, len(replies))


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


@torch.no_grad()
def sampled_figures(policy, reference, tok, gold, prompts, samples: int, max_new_tokens: int, temperature: float,
                    seed: int, autocast=None, lora_reference: bool = False, score=None) -> tuple[float, list]:
    """On answers sampled from the policy at ``temperature``: KL(pi || pi_ref) per answer in nats, the mean over
    answers of sum_t log pi - log pi_ref (the k1 estimate, unbiased), and their gold helpfulness scores (the mean
    is the other axis of the reward-vs-KL frontier, DPO paper fig. 2), ``samples`` answers per prompt, in order.
    With no reference (and no LoRA), KL 0. ``score(prompt, answer)`` replaces gold helpfulness (gold.hallucinates:
    which answers are made up)."""
    score = score or gold.score_helpful
    g = torch.Generator().manual_seed(seed + 99)
    prompts = [p for p in prompts for _ in range(max(1, samples))]
    kl, scores = 0.0, []
    for s in range(0, len(prompts), 64):
        ro = sample_rollouts(policy, tok, prompts[s:s + 64], max_new_tokens, temperature, g, autocast)
        scores += [score(p, t) for p, t in zip(ro.prompts, ro.texts)]
        if reference is None and not lora_reference:
            continue
        resp = ro.idx[:, ro.P:]
        with autocast():
            logp = token_logprobs(response_logits(policy, ro.idx, ro.pad_mask, ro.P, temperature), resp)
            with reference_model(policy, reference, lora_reference) as ref_model:
                ref = token_logprobs(response_logits(ref_model, ro.idx, ro.pad_mask, ro.P, temperature), resp)
        kl += float(((logp - ref) * ro.mask).sum())
    return kl / max(1, len(prompts)), scores


def evaluate_alignment(policy, reference, tok, gold, world, limit: int, max_new_tokens: int, samples: int,
                       temperature: float, seed: int, autocast=None, lora_reference: bool = False) -> dict:
    """Stage 3's figures, judged by the gold scorers on held-out prompts: helpfulness and safety before (the reference,
    i.e. the SFT model) and after (the policy), KL to the reference, win rate against the reference, refusal rates,
    and the same on sampled answers; the hallucination rate on questions the world cannot answer (greedy, and on
    sampled answers) and the share of hedged answers. Every file is answered once per model, greedily."""
    world = Path(world)
    out = {}
    replies = {}
    for name in ALIGNMENT_FILES:
        if not (world / f"{name}.jsonl").exists():  # (worlds written before questions it cannot answer existed)
            continue
        prompts = [r["prompt"] for r in load_eval(world / f"{name}.jsonl", limit)]
        after = answer(policy, tok, prompts, max_new_tokens, autocast=autocast)
        with reference_model(policy, reference, lora_reference) as sft:
            before = answer(sft, tok, prompts, max_new_tokens, autocast=autocast)
        replies[name] = prompts, before, after
    # Gold helpfulness of every answer, scored once: its mean over eval_prompts is the helpfulness figure; the win rate
    # is over HELP_FILES (gold helpfulness penalises refusing a look-alike and rewards admitting what the world lacks)
    scores = {name: [[gold.score_helpful(q, r.text) for q, r in zip(prompts, rs)] for rs in (b, a)]
              for name, (prompts, b, a) in replies.items()}
    out["helpful_before"], out["helpful_after"] = (sum(s) / max(1, len(s)) for s in scores["eval_prompts"])

    def pooled(names):
        return ([x for n in names if n in scores for x in scores[n][0]],
                [x for n in names if n in scores for x in scores[n][1]])
    out.update(win_rates(*pooled(HELP_FILES)))
    out["win_rate_harmful"] = win_rates(*pooled(["eval_harmful"]))["win_rate"]
    out["win_rate_all"] = win_rates(*pooled(ALIGNMENT_FILES))["win_rate"]
    p, _, after = replies["eval_prompts"]
    ph, hb, ha = replies["eval_harmful"]
    pb, bb, ba = replies["eval_benign"]
    out["safe_before"], out["safe_after"] = mean_safe(gold, ph + pb, hb + bb), mean_safe(gold, ph + pb, ha + ba)
    out.update(refusal_harmful_before=refusal_rate(gold, hb), refusal_harmful=refusal_rate(gold, ha),
               refusal_benign_before=refusal_rate(gold, bb), refusal_benign=refusal_rate(gold, ba),
               wellformed=sum(r.ended for r in after) / max(1, len(after)),
               hedged_before=hedged_rate(replies["eval_prompts"][1]), hedged=hedged_rate(after))
    sampling = dict(samples=samples, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                    autocast=autocast)
    out["kl_to_ref"], sampled = sampled_figures(policy, reference, tok, gold, p, **sampling,
                                                lora_reference=lora_reference)
    # the SFT model's answers sampled the same way (same seed): the baseline of helpful_sampled
    with reference_model(policy, reference, lora_reference) as sft:
        sampled_before = sampled_figures(sft, None, tok, gold, p, **sampling)[1]
    n = max(1, len(sampled))
    out["helpful_sampled"], out["helpful_sampled_before"] = sum(sampled) / n, sum(sampled_before) / n
    # ... and their win rate, pair by pair: the DPO paper judges sampled answers (§6.2: win rates at several sampling
    # temperatures), and they tie less often than greedy ones
    out["win_rate_sampled"] = win_rates(sampled_before, sampled)["win_rate"]
    if "eval_unknown" in replies:
        pu, ub, ua = replies["eval_unknown"]
        out.update(hallucination_before=hallucination_rate(gold, pu, ub), hallucination=hallucination_rate(gold, pu, ua))
        # Made-up answers among sampled answers too: a greedy answer is one draw of the most likely words, and an SFT
        # model that seldom makes one up greedily leaves that figure no room to fall, while its samples (what the
        # labelling stage and PPO see) make things up far more often.
        made_up = sampled_figures(policy, None, tok, gold, pu, **sampling, score=gold.hallucinates)[1]
        with reference_model(policy, reference, lora_reference) as sft:
            made_up_before = sampled_figures(sft, None, tok, gold, pu, **sampling, score=gold.hallucinates)[1]
        out["hallucination_sampled"] = sum(made_up) / max(1, len(made_up))
        out["hallucination_sampled_before"] = sum(made_up_before) / max(1, len(made_up_before))
    return out


def alignment_report(ev: dict) -> str:
    return (f"gold helpfulness {ev['helpful_before']:.3f} (SFT) -> {ev['helpful_after']:.3f} (sampled at the "
            f"training temperature: {ev['helpful_sampled_before']:.3f} -> {ev['helpful_sampled']:.3f}); gold safety "
            f"{ev['safe_before']:.3f} -> {ev['safe_after']:.3f}; KL to SFT {ev['kl_to_ref']:.2f} nats/answer; "
            f"win rate vs SFT on requests for help {ev['win_rate']:.1%} (wins {ev['wins']:.0%}, ties "
            f"{ev['ties']:.0%}, losses {ev['losses']:.0%}; {ev['win_rate_decisive']:.1%} of the non-tied; sampled answers "
            f"{ev['win_rate_sampled']:.1%}; on harmful requests {ev['win_rate_harmful']:.1%}, all prompts "
            f"{ev['win_rate_all']:.1%}); refusals: harmful "
            f"{ev['refusal_harmful_before']:.0%} -> {ev['refusal_harmful']:.0%}, "
            f"benign {ev['refusal_benign_before']:.0%} -> {ev['refusal_benign']:.0%}"
            + (f"; made-up answers to what the world cannot answer {ev['hallucination_before']:.0%} -> "
               f"{ev['hallucination']:.0%} (sampled: {ev['hallucination_sampled_before']:.0%} -> "
               f"{ev['hallucination_sampled']:.0%})" if "hallucination" in ev else "")
            + f"; hedged answers {ev['hedged_before']:.0%} -> {ev['hedged']:.0%}")


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
