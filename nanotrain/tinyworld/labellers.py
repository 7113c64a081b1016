"""Tinyworld's labellers: the people who rank the model's own answers, simulated from the gold scorer with noise.

In RLHF (Ouyang et al. 2022, "InstructGPT", §3.4-3.5) the model answers a prompt K times and a labeller ranks the
answers; every pair of a ranking is one comparison for the reward model. Labellers are not perfect: InstructGPT
reports that they agree with each other on 72.6% of comparisons. Here a labeller sees each answer's gold score g
(gold.py: helpfulness for the helpfulness labellers, safety for the safety ones) through noise: she ranks the K
answers by

    g_i / tau + Gumbel noise        (a Plackett-Luce choice, Luce 1959 / Plackett 1975)

so that any two answers come out in the gold order with probability sigma((g_a - g_b) / tau), the Bradley-Terry
model the reward model then fits (InstructGPT eq. 1). Answers the gold scorer scores alike (within ``eps``) are a
tie and give no pair; tau is the one noise setting, chosen so that two labellers agree about as often as
InstructGPT's on close pairs (``CLOSE``: gold scores at most 0.4 apart, such as a hedged and a direct answer). A
thumbs up or down (KTO's feedback) is the same noise against a bar: up with probability sigma((g - bar) / tau).

    rng = random.Random(0)
    order = rank([1.0, 0.6, 0.0, 0.6], tau=0.1, rng=rng)      # e.g. [0, 3, 1, 2]: best first
    ranked_pairs(order, [1.0, 0.6, 0.0, 0.6])                 # [(0, 3), (0, 1), (0, 2), (3, 2), (1, 2)]
"""
from __future__ import annotations

import math
import random

TAU = 0.2  # the labellers' noise (see above): two of them agree on ~73% of close pairs of the SFT model's answers
CLOSE = 0.4  # gold scores at most this far apart make a close pair
EPS = 1e-6  # gold scores closer than this are a tie
BAR = 0.7  # thumbs up: the answer's noisy gold score clears this bar (a hedged right answer, 0.6, mostly does not)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def rank(scores: list[float], tau: float, rng: random.Random) -> list[int]:
    """A labeller's ranking of answers with gold ``scores`` (indices, best first): Plackett-Luce by the Gumbel trick,
    sorting g / tau + Gumbel(0, 1) noise. At tau 0 the labeller is the gold scorer itself (its order, no noise)."""
    if tau == 0:
        return sorted(range(len(scores)), key=lambda i: -scores[i])
    noisy = [g / tau - math.log(-math.log(max(rng.random(), 1e-300))) for g in scores]
    return sorted(range(len(scores)), key=lambda i: -noisy[i])


def ranked_pairs(order: list[int], scores: list[float], eps: float = EPS) -> list[tuple[int, int]]:
    """Every (preferred, other) pair a ranking gives, leaving out pairs the gold scorer ties (a labeller sees no
    difference there)."""
    return [(order[a], order[b]) for a in range(len(order)) for b in range(a + 1, len(order))
            if abs(scores[order[a]] - scores[order[b]]) > eps]


def thumbs_up(score: float, tau: float, rng: random.Random, bar: float = BAR) -> bool:
    """A labeller's thumbs up (True) or down for one answer: its noisy gold score clears ``bar`` (at tau 0, its
    gold score itself)."""
    return score > bar if tau == 0 else rng.random() < sigmoid((score - bar) / tau)


def agreement(scores_per_prompt: list[list[float]], tau: float, seed: int = 0, close: float = CLOSE) -> dict:
    """How two independent labellers (and one labeller and the gold order) agree on the pairs of answers the gold
    scorer tells apart, over all such pairs and over the close ones: what a reward model trained on their labels
    can hope to match (``labeller_gold``) and the figure InstructGPT reports (``labeller_agreement_close``)."""
    rng = random.Random(seed)
    stats = {k: [0, 0] for k in ("agree_all", "agree_close", "gold_all", "gold_close")}
    for scores in scores_per_prompt:
        first, second = rank(scores, tau, rng), rank(scores, tau, rng)
        pos1, pos2 = {i: r for r, i in enumerate(first)}, {i: r for r, i in enumerate(second)}
        for i in range(len(scores)):
            for j in range(i + 1, len(scores)):
                gap = scores[i] - scores[j]
                if abs(gap) <= EPS:
                    continue
                same = (pos1[i] < pos1[j]) == (pos2[i] < pos2[j])
                right = (pos1[i] < pos1[j]) == (gap > 0)
                for k, v in (("agree", same), ("gold", right)):
                    stats[f"{k}_all"][0] += v
                    stats[f"{k}_all"][1] += 1
                    if abs(gap) <= close:
                        stats[f"{k}_close"][0] += v
                        stats[f"{k}_close"][1] += 1
    out = {}
    for k, (hit, n) in stats.items():
        name = {"agree": "labeller_agreement", "gold": "labeller_gold"}[k.split("_")[0]] + "_" + k.split("_")[1]
        out[name] = hit / n if n else float("nan")
        out[f"pairs_{k.split('_')[1]}"] = n
    return out


def label_answers(records: list[dict], answers: list[str], k: int, gold, tau: float, bar: float,
                  val_fraction: float, rng: random.Random) -> tuple[dict[str, list[dict]], dict[str, list]]:
    """The labelling stage's work (data/label.py): ``answers`` holds ``k`` answers to each prompt record, in order.
    Helpfulness labellers rank each prompt's answers by gold helpfulness and safety labellers by gold safety; each
    ranking gives its pairs (answers that differ, each two texts once), held out for ``val_fraction`` of the
    distinct prompts; each answer to a training prompt gets a thumbs up or down by gold helpfulness. Returns the
    files' records and, per kind of labeller, every prompt's gold scores (for ``agreement``)."""
    # Held out by the prompt's text, not by record: the world's label prompts repeat (a prompt drawn twice is answered
    # twice), and a held-out record whose prompt also came up in training would score the reward model on a prompt
    # it learned from.
    distinct = list(dict.fromkeys(rec["prompt"] for rec in records))
    held = set(rng.sample(distinct, round(val_fraction * len(distinct))))
    files = {name: [] for name in ("prefs_helpful_train", "prefs_helpful_val", "prefs_safe_train", "prefs_safe_val",
                                   "feedback_train")}
    scored = {"helpful": [], "safe": []}
    for n, rec in enumerate(records):
        texts = answers[n * k:(n + 1) * k]
        split = "val" if rec["prompt"] in held else "train"
        for kind, score in (("helpful", gold.score_helpful), ("safe", gold.score_safe)):
            scores = [score(rec["prompt"], t) for t in texts]
            scored[kind].append(scores)
            seen = set()
            for i, j in ranked_pairs(rank(scores, tau, rng), scores):
                if texts[i] != texts[j] and (texts[i], texts[j]) not in seen:  # one pair per two different texts
                    seen.add((texts[i], texts[j]))
                    files[f"prefs_{kind}_{split}"].append(
                        {"prompt": rec["prompt"], "chosen": texts[i], "rejected": texts[j], "kind": rec.get("kind"),
                         "gold_chosen": round(scores[i], 4), "gold_rejected": round(scores[j], 4)})
        if split == "train":
            for t, g in zip(texts, scored["helpful"][-1]):
                files["feedback_train"].append({"prompt": rec["prompt"], "completion": t, "kind": rec.get("kind"),
                                                "label": thumbs_up(g, tau, rng, bar), "gold": round(g, 4)})
    return files, scored
