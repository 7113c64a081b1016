"""AI feedback (RLAIF): preference pairs built from the model's own samples, judged by a model instead of a person.

Iterative online DPO (as in Self-Rewarding LMs, Yuan et al. 2024) repeats: sample several answers per prompt, judge
them, pair the best with the worst, and train one round of DPO (nanotrain/dpo.py) with the model at the round's start
as the reference. The judge is a reward model (``--labeler rm``) or the policy itself asked whether an answer is good
(``--labeler self``, Bai et al. 2022, "Constitutional AI").

    python train_rlhf.py --algo dpo --online-rounds 3 --labeler rm      # judged by the reward model
    python train_rlhf.py --algo dpo --online-rounds 3 --labeler self    # ... or by the policy itself
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from nanotrain.cli import check_choice, check_next, flag
from nanotrain.data import batch_indices
from nanotrain.dpo import PairData, render_response
from nanotrain.errors import ConfigError, DataError
from nanotrain.reward import labelled
from nanotrain.runtime import precision
from nanotrain.sampling import generate_replies, left_pad


@dataclass
class RLAIFConfig:
    """Online DPO's flags (train_rlhf.py exposes them)."""
    online_rounds: int = flag(0, "DPO: rounds of sampling pairs from the policy itself (0: offline on --data)")
    online_samples: int = flag(4, "online DPO: answers sampled per prompt (best and worst make a pair)")
    labeler: str = flag("rm", "online DPO judge: rm (the reward model) | self (the policy's own Yes/No)")

    def __post_init__(self):
        check_choice(self.labeler, ("rm", "self"), "labeler")
        if self.online_samples < 2:
            raise ConfigError(f"--online-samples must be at least 2 (a pair is the best and the worst answer), not "
                              f"{self.online_samples}")
        check_next(self, RLAIFConfig)


JUDGE_TEMPLATE = ("Here is a question and an answer.\n\nQuestion: {prompt}\n\nAnswer: {answer}\n\nIs the answer "
                  "correct, polite and helpful? Reply Yes or No.")


@torch.no_grad()
def self_judge(model, tok, prompts, answers, batch_size: int = 64, autocast=None) -> torch.Tensor:
    """The model as its own judge (RL from AI feedback: Bai et al. 2022, "Constitutional AI", §4): the log-odds of
    "Yes" over "No" as the first word of its reply to a judging prompt. (N,) scores; higher = judged better."""
    yes, no = tok.encode_message("Yes")[0], tok.encode_message("No")[0]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, len(prompts), batch_size):
        rendered = [tok.render_prompt([{"role": "user", "content": JUDGE_TEMPLATE.format(
            prompt=p if isinstance(p, str) else p[-1]["content"], answer=a)}])[-model.config.block_size:]
            for p, a in zip(prompts[s:s + batch_size], answers[s:s + batch_size])]
        idx, pad_mask = left_pad(rendered, tok.pad, device)  # every row's next token in the last column
        with precision(autocast, device):
            logits = model(idx, pad_mask=pad_mask)[0][:, -1].float()
        logp = logits.log_softmax(-1)
        out.append((logp[:, yes] - logp[:, no]).cpu())
    model.train(was_training)
    return torch.cat(out)


def pairs_from_samples(prompts, samples, scores, min_gap: float = 1e-6):
    """For each prompt, its best and worst sampled answer (by the judge's ``scores``) as (prompt, chosen, rejected);
    prompts whose samples all score alike (or are identical texts) give no pair. ``samples``/``scores``: per prompt,
    a list of answers and their scores."""
    out = []
    for p, answers, sc in zip(prompts, samples, scores):
        best, worst = int(np.argmax(sc)), int(np.argmin(sc))
        if sc[best] - sc[worst] > min_gap and answers[best] != answers[worst]:
            out.append((p, answers[best], answers[worst]))
    return out


class OnlinePairs:
    """Iterative online DPO: the run's steps are split into ``online_rounds`` rounds; at the start of each, the
    policy samples ``online_samples`` answers to fresh prompts, a judge (the reward model or the policy itself)
    scores them, the best and worst answer of each prompt become a pair, and the policy as it is now becomes the
    reference for the round."""

    def __init__(self, prompts, harmful, cfg, policy, tok, rt, scorer=None):
        self.cfg, self.policy, self.tok, self.rt, self.scorer, self.prompts = cfg, policy, tok, rt, scorer, prompts
        self.score = labelled(scorer, self.prompts, harmful, rt.autocast) if scorer is not None else None
        self.round_len = math.ceil(cfg.steps / cfg.online_rounds)
        self.round, self.data, self.stats = -1, None, {}

    def build(self, r):
        cfg, rt, tok = self.cfg, self.rt, self.tok
        n_prompts = self.round_len * cfg.batch_size * cfg.grad_accum
        idx = batch_indices(len(self.prompts), r, 0, n_prompts, 1, rt.rank, rt.world, cfg.seed + 7)
        prompts = [self.prompts[i] for i in idx]
        g = torch.Generator().manual_seed(cfg.seed * 7919 + r * 31 + rt.rank)
        rep = generate_replies(self.policy, tok, [p for p in prompts for _ in range(cfg.online_samples)],
                               cfg.max_new_tokens, cfg.temperature, generator=g, autocast=rt.autocast)
        texts = [x.text for x in rep]
        flat = [p for p in prompts for _ in range(cfg.online_samples)]
        if cfg.labeler == "rm":
            scores = self.score(flat, texts)
        else:
            scores = self_judge(self.policy, tok, flat, texts, autocast=rt.autocast)
        k = cfg.online_samples
        triples = pairs_from_samples(prompts, [texts[i * k:(i + 1) * k] for i in range(len(prompts))],
                                     [scores[i * k:(i + 1) * k].tolist() for i in range(len(prompts))])
        if not triples:
            raise DataError(f"online round {r}: every prompt's {k} samples were judged alike; no pairs to learn from")
        T = self.policy.config.block_size + 1
        rows = [(render_response(tok, p, c, T), render_response(tok, p, w, T)) for p, c, w in triples]
        rows = [(c, w) for c, w in rows if c is not None and w is not None]
        self.data = PairData([c for c, _ in rows], [w for _, w in rows], self.policy, tok,
                             dataclasses.replace(cfg, steps=self.round_len), rt)
        self.round = r
        self.stats = {"round": r, "round_pairs": len(rows)}
        if self.scorer is not None and self.cfg.labeler == "rm":
            self.stats["round_score"] = float(scores.mean())

    def batch(self, step, micro):
        r = step // self.round_len
        if r != self.round:
            self.build(r)
        return self.data.batch(step - r * self.round_len, micro)
