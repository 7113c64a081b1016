"""Learning from preferences without a reward model: DPO, IPO, conservative DPO, and KTO from thumbs up/down.

All four compare the policy's log-likelihood of a response with a frozen reference's (the SFT model), so that
``beta * log pi(y|x) / pi_ref(y|x)`` acts as an *implicit reward* (Rafailov et al. 2023, eq. 5):

- DPO  (Rafailov et al. 2023, eq. 7): -log sigmoid(beta * h), with h = the chosen log-ratio minus the rejected one;
  a Bradley-Terry likelihood of the preference, written in terms of the policy itself.
- cDPO (Mitchell 2023, "A note on DPO with noisy preferences"): the same with labels smoothed by eps, i.e. a
  preference that is flipped with probability eps: -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h).
- IPO  (Azar et al. 2023, §5, the empirical IPO loss): (h - 1 / (2 tau))^2, a squared loss that pulls h to a
  finite margin instead of pushing it to infinity when preferences are deterministic (tau plays beta's role).
- KTO  (Ethayarajh et al. 2024, §4.1: L_KTO = E[lambda_y - v(x, y)]): for unpaired data (a prompt, one completion,
  desirable or not), a prospect-theory value of the implicit reward relative to a reference point z0, the policy's
  KL from the reference estimated on the batch with mismatched prompt/completion pairs (not back-propagated).

The reference log-probabilities never change, so they are computed once, before training, and stored with the
data (``reference_logprobs``): no reference model sits in memory during DPO or KTO.

    python train_rlhf.py --algo dpo            # offline DPO on data/tinyworld/prefs_{helpful,safe}_train.jsonl
    python train_rlhf.py --algo kto            # KTO on data/tinyworld/feedback_train.jsonl
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nanotrain.sampling import as_messages, left_pad

# ----------------------------------------------------------------------------------------------------------------
# Tokenizing preference data


def render_response(tok, prompt, response: str, max_len: int):
    """(ids, mask) of prompt + one assistant response through the chat template; mask is 1 on the response (and
    its end token), the only tokens whose log-probabilities DPO compares. None if the response does not fit."""
    return tok.render_chat(as_messages(prompt) + [{"role": "assistant", "content": response}], max_len=max_len)


def collate(rows, pad_id: int, device="cpu"):
    """Right-pad (ids, mask) rows into inputs (B, T-1) and targets (B, T-1), targets -1 outside the response.

    Right padding needs no attention mask for a causal model: pads come after every real token."""
    T = max(len(ids) for ids, _ in rows)
    idx = torch.full((len(rows), T), pad_id, dtype=torch.long)
    tgt = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        ids_t = torch.tensor(ids, dtype=torch.long)
        idx[i, :len(ids)] = ids_t
        tgt[i, :len(ids)] = torch.where(torch.tensor(mask, dtype=torch.bool), ids_t, -1)
    return idx[:, :-1].to(device), tgt[:, 1:].to(device)


class SequenceLogprob(nn.Module):
    """log pi(y|x) of each row: the sum over the response of log p(token | everything before it), (B,).

    A wrapper around the GPT rather than a function of its logits, for two reasons: the output layer runs only on
    the positions that predict a response token (with a 50k vocabulary it is most of the model's cost, and the prompt
    is often most of the tokens), and DDP, which must see every forward call, can wrap it as a whole."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx, targets):
        h = self.model.hidden_states(idx)
        rows, cols = (targets >= 0).nonzero(as_tuple=True)
        logits = self.model.lm_head(h[rows, cols])  # (number of response tokens, V)
        nll = F.cross_entropy(logits.float(), targets[rows, cols], reduction="none")  # fused log-softmax + pick
        return -torch.zeros(idx.shape[0], device=idx.device).index_add(0, rows, nll)


def sequence_logprobs(model, idx, targets):
    """log pi(y|x) of each row of a GPT, (B,); targets are -1 outside the response."""
    return SequenceLogprob(model)(idx, targets)


@torch.no_grad()
def reference_logprobs(model, rows, pad_id: int, batch_size: int = 32, autocast=None) -> torch.Tensor:
    """log pi_ref(y|x) for each (ids, mask) row, computed once. Rows are batched by length so little is padding."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    out = torch.empty(len(rows))
    for s in range(0, len(rows), batch_size):
        chunk = order[s:s + batch_size]
        idx, tgt = collate([rows[i] for i in chunk], pad_id, device)
        with autocast() if autocast is not None else torch.autocast(device.type, enabled=False):
            out[chunk] = sequence_logprobs(model, idx, tgt).float().cpu()
    model.train(was_training)
    return out


def batch_indices(n: int, step: int, micro: int, batch_size: int, grad_accum: int = 1, rank: int = 0,
                  world: int = 1, seed: int = 0) -> list[int]:
    """The examples of micro-batch ``micro`` of optimizer step ``step`` on ``rank``: a pure function of its arguments
    (so a resumed run sees the same data). The data is read in epochs, each a fresh permutation seeded by
    (seed, epoch); one optimizer step consumes batch_size * grad_accum * world consecutive examples of that stream,
    and each rank takes its own slice."""
    per_step = batch_size * grad_accum * world
    first = step * per_step + (rank * grad_accum + micro) * batch_size
    out = []
    for pos in range(first, first + batch_size):
        epoch, i = divmod(pos, n)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[i]))
    return out


# ----------------------------------------------------------------------------------------------------------------
# The losses. Inputs are log-probabilities summed over each response, shape (B,); every loss returns the scalar to
# minimise and the figures to log.


def preference_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta: float = 0.1, loss_type: str = "dpo",
                    label_smoothing: float = 0.0, nll_weight: float = 0.0, chosen_tokens=None):
    """DPO / conservative DPO / IPO on a batch of (chosen, rejected) pairs.

    loss_type "dpo" with label_smoothing eps > 0 is conservative DPO; "ipo" uses beta as IPO's tau.
    ``nll_weight`` > 0 adds the chosen responses' negative log-likelihood per token (``chosen_tokens``: (B,) their
    lengths), as Llama 3 does (Dubey et al. 2024, §4.1.4) and RPO (Pang et al. 2024): the preference losses depend only
    on the *difference* of log-ratios, so they can be satisfied by lowering both responses' likelihood, rejected faster;
    the NLL term keeps the chosen responses likely.
    Logged: the implicit rewards beta * log(pi / pi_ref) of chosen and rejected, their margin, and the accuracy (the
    share of pairs whose chosen response gets the higher implicit reward).
    """
    chosen_ratio = pi_chosen - ref_chosen  # log pi(y_w|x) / pi_ref(y_w|x)
    rejected_ratio = pi_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if loss_type == "dpo":
        # DPO eq. 7: -log sigma(beta * h); cDPO mixes in the flipped label with weight eps, which moves the loss's
        # minimum from h = infinity to h = ln((1 - eps) / eps) / beta: the rejected answers stop being pushed down.
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        # IPO: regress h onto 1 / (2 tau).
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"loss_type must be 'dpo' or 'ipo', not {loss_type!r}")
    r_w, r_l = (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()
    info = {"reward_chosen": r_w.mean().item(), "reward_rejected": r_l.mean().item(),
            "reward_margin": (r_w - r_l).mean().item(), "reward_accuracy": (r_w > r_l).float().mean().item()}
    loss = losses.mean()
    if nll_weight:
        nll = (-pi_chosen / chosen_tokens).mean()
        info["nll_chosen"] = nll.item()
        loss = loss + nll_weight * nll
    return loss, info


def kto_loss(pi, ref, desirable, pi_kl, ref_kl, beta: float = 0.1, lambda_d: float = 1.0, lambda_u: float = 1.0,
             all_reduce_mean=None):
    """KTO (Ethayarajh et al. 2024, §4.1) on a batch of unpaired completions.

    pi, ref      (B,) log pi(y|x), log pi_ref(y|x) of each completion
    desirable    (B,) bool: thumbs up
    pi_kl, ref_kl  (B,) the same for mismatched pairs (x_i, y_j), j != i: their mean ratio estimates
                 z0 = KL(pi(y'|x) || pi_ref(y'|x)), the reference point. It is clamped at 0 and detached, as in the
                 paper: it sets the scale the rewards are judged against, it is not optimised.
    all_reduce_mean  averages z0 over processes (Runtime.all_reduce_mean) so every rank uses the same point
    """
    z0 = (pi_kl - ref_kl).mean().detach()
    if all_reduce_mean is not None:
        z0 = all_reduce_mean(z0)
    z0 = z0.clamp(min=0)
    r = pi - ref  # the implicit reward, up to beta
    # v(x, y) = lambda_D sigma(beta (r - z0)) for desirable y, lambda_U sigma(beta (z0 - r)) for undesirable y
    value = torch.where(desirable, lambda_d * torch.sigmoid(beta * (r - z0)), lambda_u * torch.sigmoid(beta * (z0 - r)))
    lam = torch.where(desirable, torch.full_like(r, lambda_d), torch.full_like(r, lambda_u))
    losses = lam - value  # L_KTO = E[lambda_y - v(x, y)]
    rewards = (beta * r).detach()
    d, u = desirable, ~desirable
    info = {"kl_ref_point": z0.item(),
            "reward_chosen": rewards[d].mean().item() if d.any() else math.nan,
            "reward_rejected": rewards[u].mean().item() if u.any() else math.nan}
    if d.any() and u.any():
        info["reward_margin"] = info["reward_chosen"] - info["reward_rejected"]
    return losses.mean(), info


def kto_lambdas(n_desirable: int, n_undesirable: int, lambda_d: float = 1.0, lambda_u: float = 1.0):
    """The KTO paper's advice for imbalanced data: keep lambda_D n_D / (lambda_U n_U) within [1, 4/3], here by
    raising the weight of the rarer kind until the ratio is 1."""
    if n_desirable and n_undesirable:
        ratio = lambda_d * n_desirable / (lambda_u * n_undesirable)
        if ratio < 1:
            lambda_d = lambda_d / ratio
        elif ratio > 4 / 3:
            lambda_u = lambda_u * ratio
    return lambda_d, lambda_u


# ----------------------------------------------------------------------------------------------------------------
# AI feedback (RLAIF): preference pairs built from the model's own samples, judged by a model instead of a person.
# Iterative online DPO (as in Self-Rewarding LMs, Yuan et al. 2024) repeats: sample, judge, train one DPO round
# with the model at the round's start as the reference.

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
        with autocast() if autocast is not None else torch.autocast(device.type, enabled=False):
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
