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
data (``reference_logprobs``): no reference model sits in memory during DPO or KTO. A training step is then an
ordinary supervised step through trainer.train_loop: ``PairData`` / ``FeedbackData`` serve the batches and
``dpo_loss_fn`` / ``kto_loss_fn`` turn one into a loss. The file reads top-down: tokenizing, the losses, the data, the
step.

    python train_rlhf.py --algo dpo            # offline DPO on data/tinyworld/prefs_{helpful,safe}_train.jsonl
    python train_rlhf.py --algo kto            # KTO on data/tinyworld/feedback_train.jsonl
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanotrain.cli import check_choice, check_next, flag
from nanotrain.data import batch_indices
from nanotrain.errors import DataError
from nanotrain.runtime import precision
from nanotrain.sampling import as_messages


LOSS_TYPES = ("dpo", "ipo")  # DPO (eq. 7, or conservative with label smoothing) and IPO


@dataclass
class DPOConfig:
    """The hyperparameters of DPO, IPO, cDPO and KTO (train_rlhf.py exposes them as flags; beta is shared with PPO)."""
    loss_type: str = flag("dpo", " | ".join(LOSS_TYPES))
    label_smoothing: float = flag(0.1, "conservative DPO: assumed share of flipped labels (0: plain DPO eq. 7)")
    nll_weight: float = flag(2.0, "DPO/IPO: add this times the chosen answers' NLL per token (Llama 3, RPO; 0: none)")
    lambda_d: float | None = flag(None, "KTO weight of desirable examples (none, with --lambda-u none: set from the "
                                        "data's imbalance, as the KTO paper advises; else none means 1)")
    lambda_u: float | None = flag(None, "KTO weight of undesirable examples (see --lambda-d)")

    def __post_init__(self):
        check_choice(self.loss_type, LOSS_TYPES, "loss_type")
        check_next(self, DPOConfig)


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
        with precision(autocast, device):
            out[chunk] = sequence_logprobs(model, idx, tgt).float().cpu()
    model.train(was_training)
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
    else:  # DPOConfig refuses any other --loss-type before a run starts; this guards direct calls
        raise ValueError(f"loss_type must be one of {list(LOSS_TYPES)}, not {loss_type!r}")
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
# The data: tokenized examples with their reference log-probabilities, computed once


def encode_rows(tok, items, max_len):
    """Tokenize (messages, response) items; returns (rows, kept indices) - too-long ones are dropped."""
    rows, kept = [], []
    for i, (messages, response) in enumerate(items):
        r = render_response(tok, messages, response, max_len)
        if r is not None:
            rows.append(r)
            kept.append(i)
    return rows, kept


def needed_indices(n, cfg, rt) -> list[int]:
    """Every example this process will read (get_batch is a pure function of the step): the only ones whose
    reference log-probabilities have to be computed."""
    return sorted({i for s in range(cfg.steps) for m in range(cfg.grad_accum)
                   for i in batch_indices(n, s, m, cfg.batch_size, cfg.grad_accum, rt.rank, rt.world, cfg.seed)})


class PairData:
    """Tokenized (chosen, rejected) pairs with their reference log-probabilities, computed once."""

    def __init__(self, chosen, rejected, model, tok, cfg, rt):
        self.chosen, self.rejected, self.pad, self.device = chosen, rejected, tok.pad, rt.device
        self.cfg, self.rt = cfg, rt
        self.ref_c, self.ref_r = torch.zeros(len(chosen)), torch.zeros(len(chosen))
        need = needed_indices(len(chosen), cfg, rt)
        ref = reference_logprobs(model, [chosen[i] for i in need] + [rejected[i] for i in need], tok.pad,
                                 autocast=rt.autocast)
        self.ref_c[need], self.ref_r[need] = ref[:len(need)], ref[len(need):]

    @classmethod
    def from_pairs(cls, pairs, source, policy, tok, cfg, rt) -> "PairData":
        """The preference pairs (pref_data.load_pairs's, read from ``source``) whose replies both fit the context."""
        T = policy.config.block_size + 1
        if not pairs:
            raise DataError(f"{source}: no preference pairs (an empty file, or only pairs whose two replies are the "
                            f"same or whose preferred reply is empty)")
        chosen, kc = encode_rows(tok, [(p.messages, p.chosen) for p in pairs], T)
        rejected, kr = encode_rows(tok, [(p.messages, p.rejected) for p in pairs], T)
        both = sorted(set(kc) & set(kr))
        chosen = [chosen[kc.index(i)] for i in both]
        rejected = [rejected[kr.index(i)] for i in both]
        if not chosen:
            raise DataError(f"{source}: no preference pair fits in {T - 1} tokens")
        if rt.master:
            print(f"{len(chosen)} preference pairs ({len(pairs) - len(chosen)} too long) from {source}")
        return cls(chosen, rejected, policy, tok, cfg, rt)

    def batch(self, step, micro):
        idx = batch_indices(len(self.chosen), step, micro, self.cfg.batch_size, self.cfg.grad_accum, self.rt.rank,
                            self.rt.world, self.cfg.seed)
        x, y = collate([self.chosen[i] for i in idx] + [self.rejected[i] for i in idx], self.pad, self.device)
        return x, y, self.ref_c[idx].to(self.device), self.ref_r[idx].to(self.device)


class FeedbackData:
    """KTO's data: (prompt, completion, label) rows, and for each a mismatched (prompt, another completion) row for
    the KL reference point. The partner is fixed (the next example in a seeded shuffle), so its reference
    log-probability can be computed once too."""

    def __init__(self, fb, source, policy, tok, cfg, rt):
        T = policy.config.block_size + 1
        if not fb:
            raise DataError(f"{source}: no feedback records (an empty file, or only thumbs-up for empty completions)")
        rows, kept = encode_rows(tok, [(f.messages, f.completion) for f in fb], T)
        if not rows:
            raise DataError(f"{source}: no feedback example fits in {T - 1} tokens")
        fb = [fb[i] for i in kept]
        g = torch.Generator().manual_seed(cfg.seed)
        order = torch.randperm(len(fb), generator=g).tolist()
        partner = [0] * len(fb)
        for a, b in zip(order, order[1:] + order[:1]):
            partner[a] = b
        kl_items = [(fb[i].messages, fb[partner[i]].completion) for i in range(len(fb))]
        kl_rows = [render_response(tok, m, c, T) or rows[i] for i, (m, c) in enumerate(kl_items)]
        self.rows, self.kl_rows, self.pad, self.device, self.cfg, self.rt = rows, kl_rows, tok.pad, rt.device, cfg, rt
        self.label = torch.tensor([f.label for f in fb])
        need = needed_indices(len(rows), cfg, rt)
        ref = reference_logprobs(policy, [rows[i] for i in need] + [kl_rows[i] for i in need], tok.pad,
                                 autocast=rt.autocast)
        self.ref, self.ref_kl = torch.zeros(len(rows)), torch.zeros(len(rows))
        self.ref[need], self.ref_kl[need] = ref[:len(need)], ref[len(need):]
        n_d = int(self.label.sum())
        if cfg.lambda_d is not None or cfg.lambda_u is not None:
            self.lambda_d = cfg.lambda_d if cfg.lambda_d is not None else 1.0
            self.lambda_u = cfg.lambda_u if cfg.lambda_u is not None else 1.0
        else:
            self.lambda_d, self.lambda_u = kto_lambdas(n_d, len(rows) - n_d)
        if rt.master:
            print(f"{len(rows)} feedback examples ({n_d} desirable) from {source}; lambda_D {self.lambda_d:.3g}, "
                  f"lambda_U {self.lambda_u:.3g}")

    def batch(self, step, micro):
        idx = batch_indices(len(self.rows), step, micro, self.cfg.batch_size, self.cfg.grad_accum, self.rt.rank,
                            self.rt.world, self.cfg.seed)
        B = len(idx)
        x, y = collate([self.rows[i] for i in idx] + [self.kl_rows[i] for i in idx], self.pad, self.device)
        return (x, y, B, self.label[idx].to(self.device), self.ref[idx].to(self.device),
                self.ref_kl[idx].to(self.device))


# ----------------------------------------------------------------------------------------------------------------
# The step: a batch to a loss, for trainer.train_loop (which trains a SequenceLogprob around the policy)


def dpo_loss_fn(cfg):
    def loss_fn(model, batch):
        x, y, ref_c, ref_r = batch
        logp = model(x, y)  # log pi(y|x) of chosen and rejected rows, in one forward pass
        B = ref_c.shape[0]
        return preference_loss(logp[:B], logp[B:], ref_c, ref_r, cfg.beta, cfg.loss_type, cfg.label_smoothing,
                               cfg.nll_weight, (y[:B] >= 0).sum(-1))
    return loss_fn


def kto_loss_fn(cfg, data: FeedbackData, rt):
    def loss_fn(model, batch):
        x, y, B, label, ref, ref_kl = batch
        logp = model(x, y)
        # the mismatched rows only set z0, which is detached: their gradient would be thrown away anyway
        return kto_loss(logp[:B], ref, label, logp[B:].detach(), ref_kl, cfg.beta, data.lambda_d, data.lambda_u,
                        rt.all_reduce_mean if rt.ddp else None)
    return loss_fn
