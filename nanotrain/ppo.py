"""PPO against a learned reward model: the RL step of RLHF (Ouyang et al. 2022, "InstructGPT"; Schulman et al. 2017).

One PPO iteration, in the order the papers state it:

1. **Rollouts.** The policy answers a batch of prompts by pure sampling at temperature T (KV-cached, batched:
   ``sampling.generate_replies``). Each row is laid out as [left-padded prompt | response | right padding].
2. **Old log-probs, reference log-probs, values.** One forward pass of the policy, of the frozen reference (the
   SFT model) and of the value model over the rollouts, at the same temperature T as the sampling. The policy's
   log-probs are recomputed rather than kept from sampling so that step 4 starts from exactly ratio = 1.
3. **Rewards.** Per token, a KL penalty -beta * KL_t toward the reference (Ziegler et al. 2019; InstructGPT eq. 2:
   R(x, y) = r(x, y) - beta log(pi(y|x) / pi_ref(y|x))), with KL_t the k1 estimate log pi - log pi_ref or the
   non-negative k3 estimate (r - 1) - log r, r = pi_ref / pi (Schulman 2020, "Approximating KL divergence"). The
   reward model's score, normalised by running moments and clipped, is added at the response's last token; a
   response that never produced its end token is penalised. Advantages come from GAE(gamma, lambda) (Schulman et
   al. 2016; PPO paper eqs. 11-12) and are whitened (across processes under DDP).
4. **Updates.** Several epochs over shuffled minibatches of the clipped surrogate objective (PPO eq. 7) and a
   clipped value loss (as in OpenAI's baselines ppo2), policy and value trained together.

5. **The outer loop** (``train``) repeats the iteration over batches of the prompt set, with the trainer's
   learning-rate schedule, and logs, checkpoints and resumes like every other stage.

An adaptive KL controller (Ziegler et al. 2019, §2.2) may steer beta toward a target KL.

The value model is a copy of the reward model (a GPT trunk + a scalar head, nanotrain/reward.py), so it starts out
already knowing what a good answer looks like; it reads every position, while the reward model reads only the last.

    python train_rlhf.py --algo ppo                 # the script: data, models, then train() and the evaluation
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nanotrain.checkpoint import atomic_save
from nanotrain.cli import check_choice, check_counts, check_next, flag
from nanotrain.data import batch_indices
from nanotrain.errors import ConfigError, NanotrainError, NonFiniteLoss
from nanotrain.gpt import enable_grad_checkpoint
from nanotrain.reward import labelled
from nanotrain.runtime import precision, refuse_fp16_training
from nanotrain.sampling import generate_replies, left_pad
from nanotrain.trainer import MetricsLog, clip_gradients, lr_at, make_optimizer, run_record, start_run


KL_ESTIMATORS = ("k1", "k3")  # Schulman's estimators of KL(pi || pi_ref) from samples of pi: kl_per_token


@dataclass
class PPOConfig:
    """PPO's own hyperparameters (train_rlhf.py exposes them as flags)."""
    rollout_batch: int = flag(32, "prompts per PPO iteration per process")
    max_new_tokens: int = flag(40, "longest sampled answer")
    temperature: float = flag(1.0, "sampling temperature; log-probs are computed at the same temperature")
    ppo_epochs: int = flag(2, "passes over each batch of rollouts")
    minibatch: int = flag(16, "rollouts per gradient step")
    kl_estimator: str = flag("k1", "per-token KL in the reward: k1 (log pi - log pi_ref) | k3 (non-negative)")
    target_kl: float = flag(0.0, "adaptive KL controller: steer the sequence KL to this many nats (0: fixed beta)")
    kl_horizon: int = flag(10000, "adaptive KL controller horizon (in rollouts)")
    gamma: float = flag(1.0, "GAE discount")
    lam: float = flag(0.95, "GAE lambda")
    clip: float = flag(0.2, "policy ratio clip range epsilon")
    clip_value: float = flag(0.2, "value clip range")
    vf_coef: float = flag(0.1, "weight of the value loss")
    value_lr: float = flag(1e-4, "the value model's own peak learning rate (its head starts at zero: it has to "
                                 "learn quickly, the policy slowly)")
    value_warmup: int = flag(2, "iterations at the start that train the value model only (the policy waits for "
                                "advantages that mean something)")
    samples_per_prompt: int = flag(1, "answers per prompt in an iteration; above 1 each answer's score is judged "
                                      "against the mean of the other answers to its prompt (RLOO)")
    score_clip: float = flag(5.0, "clip the normalised reward-model score to +-this (0: no clipping)")
    normalize_score: bool = flag(True, "normalise reward-model scores by their running mean and std")
    missing_end_penalty: float = flag(1.0, "subtracted from the score of an answer that never ended")

    def __post_init__(self):
        check_counts(self, "rollout_batch", "max_new_tokens", "ppo_epochs", "minibatch", "samples_per_prompt")
        check_choice(self.kl_estimator, KL_ESTIMATORS, "kl_estimator")
        if not self.temperature > 0:  # the log-probs PPO needs are those of the tempered distribution it samples
            raise ConfigError(f"--temperature must be above 0 for sampled rollouts, not {self.temperature}")
        if self.rollout_batch % self.samples_per_prompt:
            raise ConfigError(f"--rollout-batch {self.rollout_batch} must be a multiple of --samples-per-prompt "
                              f"{self.samples_per_prompt} (each prompt's answers share an iteration)")
        check_next(self, PPOConfig)


# ----------------------------------------------------------------------------------------------------------------
# Small tensor helpers

def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x, mask, all_reduce_mean=None, shift_mean: bool = True, eps: float = 1e-8):
    """(x - mean) / std over the masked entries of the whole batch (and of every process, if ``all_reduce_mean``
    averages over them): advantages of the same scale whatever the rewards' scale, so one learning rate fits all."""
    stats = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()]).float()
    if all_reduce_mean is not None:
        stats = all_reduce_mean(stats)  # means of sums: the ratios below are unchanged
    mean = stats[0] / stats[2]
    var = (stats[1] / stats[2] - mean ** 2).clamp(min=0)
    out = (x - mean) * torch.rsqrt(var + eps)
    return (out if shift_mean else out + mean) * mask


class RunningMoments:
    """Mean and standard deviation of every reward-model score seen so far (Chan et al.'s parallel update), shared
    across processes: the reward is normalised by the history, so a policy that improves still sees its gain."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 0.0

    def update(self, x: torch.Tensor, all_reduce_mean=None):
        x = x.detach().double()
        s = torch.stack([x.sum(), (x * x).sum(), torch.tensor(float(x.numel()), dtype=torch.double, device=x.device)])
        if all_reduce_mean is not None:
            s = all_reduce_mean(s)
        n = float(s[2])
        mean = float(s[0]) / n
        var = max(float(s[1]) / n - mean ** 2, 0.0)
        delta, total = mean - self.mean, self.count + n
        self.var = (self.var * self.count + var * n + delta ** 2 * self.count * n / total) / total
        self.mean += delta * n / total
        self.count = total

    def state(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load(self, d: dict):
        self.mean, self.var, self.count = d["mean"], d["var"], d["count"]


@contextmanager
def adapters_off(model):
    """Run a LoRA-adapted model as its frozen base: with LoRA the reference policy is the same weights without the
    adapter, so PPO keeps one copy of the model in memory instead of two."""
    from nanotrain.lora import lora_layers
    layers = list(lora_layers(model).values())
    scales = [m.scale for m in layers]
    for m in layers:
        m.scale = 0.0
    try:
        yield model
    finally:
        for m, s in zip(layers, scales):
            m.scale = s


def reference_model(policy, reference, lora_reference: bool):
    """The reference (SFT) policy as a context: the frozen ``reference`` copy, or with ``lora_reference`` the policy
    itself with its adapters off. ``with reference_model(policy, reference, lora) as ref: ref(idx)``."""
    return adapters_off(policy) if lora_reference else nullcontext(reference)


# ----------------------------------------------------------------------------------------------------------------
# 1-2. Rollouts and the log-probabilities of their responses

@dataclass
class Rollouts:
    """A batch of sampled answers and everything PPO computes about them. Responses occupy columns P..P+R-1."""
    prompts: list  # the prompts as given (strings or message lists)
    texts: list[str]  # the answers as the user sees them
    idx: torch.Tensor  # (B, P+R) [left-padded prompt | response | right padding]
    pad_mask: torch.Tensor  # (B, P+R) bool, True on real tokens
    mask: torch.Tensor  # (B, R) float, 1 on response tokens (the end token included)
    ended: torch.Tensor  # (B,) bool: the answer produced its end token
    P: int  # prompt columns
    logp: torch.Tensor | None = None  # (B, R) log-probs of the response under the sampling policy ("old")
    ref_logp: torch.Tensor | None = None  # (B, R) ... under the reference
    values: torch.Tensor | None = None  # (B, R) value estimates V(s_t) before each response token
    score: torch.Tensor | None = None  # (B,) reward-model score as given (before normalisation)
    rewards: torch.Tensor | None = None  # (B, R) per-token rewards
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None


@torch.no_grad()
def sample_rollouts(policy, tok, prompts, max_new_tokens: int, temperature: float, generator=None,
                    autocast=None) -> Rollouts:
    """Sample one answer per prompt (pure sampling: no top-k/top-p, so the log-probs below are the sampler's)."""
    replies = generate_replies(policy, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                               batch_size=len(prompts), generator=generator, autocast=autocast)
    device = next(policy.parameters()).device
    p_idx, p_mask = left_pad([r.prompt_ids for r in replies], tok.pad, device)
    R = max(len(r.ids) for r in replies)
    r_idx = torch.full((len(replies), R), tok.pad, dtype=torch.long)
    mask = torch.zeros(len(replies), R)
    for i, r in enumerate(replies):
        r_idx[i, :len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
        mask[i, :len(r.ids)] = 1
    r_idx, mask = r_idx.to(device), mask.to(device)
    return Rollouts(list(prompts), [r.text for r in replies], torch.cat([p_idx, r_idx], 1),
                    torch.cat([p_mask, mask.bool()], 1), mask, torch.tensor([r.ended for r in replies], device=device),
                    p_idx.shape[1])


def response_logits(model, idx, pad_mask, P: int, temperature: float):
    """Logits (B, R, V) / T of the response tokens: position t predicts token t+1, so columns P-1 .. end-1. Only
    those rows go through the output layer (the prompt's predictions are never needed)."""
    h = model.hidden_states(idx, pad_mask)[:, P - 1:-1]
    return model.lm_head(h).float() / temperature


def token_logprobs(logits, tokens):
    """log softmax(logits)[token] for each position: (B, R)."""
    return torch.gather(logits.log_softmax(-1), -1, tokens[..., None]).squeeze(-1)


def entropy(logits):
    """Entropy of each position's tempered distribution, (B, R)."""
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def value_estimates(value_model, idx, pad_mask, P: int):
    """V(s_t) for every response token: the value head on the hidden state of the token before it, (B, R)."""
    return value_model.head(value_model.trunk.hidden_states(idx, pad_mask)[:, P - 1:-1]).squeeze(-1).float()


class PolicyAndValue(nn.Module):
    """The two trained networks as one module, so one optimizer and one DDP wrapper cover both and a single
    forward call returns what the PPO losses need."""

    def __init__(self, policy, value):
        super().__init__()
        self.policy, self.value = policy, value

    def forward(self, idx, pad_mask, P: int, temperature: float):
        return (response_logits(self.policy, idx, pad_mask, P, temperature),
                value_estimates(self.value, idx, pad_mask, P))


# ----------------------------------------------------------------------------------------------------------------
# 3. Rewards and advantages

def kl_per_token(logp, ref_logp, estimator: str = "k1"):
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi.
    k1 = log pi - log pi_ref: unbiased, but negative on some samples.
    k3 = (r - 1) - log r with r = pi_ref / pi: also unbiased, and never negative (log r <= r - 1)."""
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k3":
        log_r = ref_logp - logp
        return torch.expm1(log_r) - log_r
    raise ValueError(f"kl estimator must be one of {list(KL_ESTIMATORS)}, not {estimator!r}")  # PPOConfig checks it


def shape_rewards(score, kl, mask, beta: float):
    """InstructGPT's reward as per-token rewards: -beta * KL_t at every response token, plus the (normalised)
    reward-model score at the last one. Padding gets nothing."""
    rewards = -beta * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    return rewards.scatter_add(1, last[:, None], score[:, None].to(rewards.dtype))


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation (PPO paper eqs. 11-12, from Schulman et al. 2016):
        delta_t = r_t + gamma V(s_{t+1}) - V(s_t),   A_t = delta_t + gamma lambda A_{t+1}
    The episode ends at the last response token: there V(s_{t+1}) and A_{t+1} are 0, and padding positions after it
    get advantage 0 (the masks are a prefix of ones). Returns (advantages, returns = advantages + values)."""
    values, rewards = values * mask, rewards * mask
    R = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(R)):
        next_value = values[:, t + 1] if t + 1 < R else torch.zeros_like(next_adv)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        adv[:, t] = next_adv
    return adv, adv + values


class AdaptiveKLController:
    """Ziegler et al. 2019, §2.2: beta <- beta * (1 + K e), e = clip(KL / target - 1, -0.2, 0.2), K = n / horizon."""

    def __init__(self, beta: float, target: float, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n: int):
        if self.target > 0:
            err = min(max(kl / self.target - 1, -0.2), 0.2)
            self.beta *= 1 + err * n / self.horizon


# ----------------------------------------------------------------------------------------------------------------
# 4. The losses

def policy_loss(logp, old_logp, advantages, mask, clip: float):
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:
        L = -E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)],  rho = pi(a|s) / pi_old(a|s).
    Also returns the share of tokens where the clipped term was the one used, and the k3 estimate of
    KL(pi_old || pi) (how far this update has moved the policy)."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return loss, clipfrac.detach(), approx_kl.detach(), ratio.detach()


def value_loss(values, old_values, returns, mask, clip: float):
    """0.5 * max((V - G)^2, (V_clipped - G)^2), V_clipped = V_old + clip(V - V_old, -eps, eps): the value function
    may not move further than eps per iteration unless that moves it closer to the return."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2), mask)
    clipfrac = masked_mean(((v_clipped - returns) ** 2 > (values - returns) ** 2).float(), mask)
    return loss, clipfrac.detach()


# ----------------------------------------------------------------------------------------------------------------
# One whole iteration

@torch.no_grad()
def score_and_advantages(ro: Rollouts, actor_critic: PolicyAndValue, reference, score: torch.Tensor,
                         cfg: PPOConfig, beta: float, moments: RunningMoments | None = None, all_reduce_mean=None,
                         autocast=None, lora_reference: bool = False) -> dict:
    """Fill in ro.logp, ref_logp, values, rewards, advantages, returns from the raw reward-model ``score`` (B,).
    ``reference`` is the frozen SFT model, or None with ``lora_reference`` (the policy with its adapter off)."""
    ctx = lambda: precision(autocast, ro.idx.device)
    policy = actor_critic.policy
    was_training = actor_critic.training
    actor_critic.eval()  # the "old" policy is the one that sampled: no dropout (and no other train-time noise)
    with ctx():
        ro.logp = token_logprobs(response_logits(policy, ro.idx, ro.pad_mask, ro.P, cfg.temperature),
                                 ro.idx[:, ro.P:])
        with reference_model(policy, reference, lora_reference) as ref:
            ref_logits = response_logits(ref, ro.idx, ro.pad_mask, ro.P, cfg.temperature)
        ro.ref_logp = token_logprobs(ref_logits, ro.idx[:, ro.P:])
        ro.values = value_estimates(actor_critic.value, ro.idx, ro.pad_mask, ro.P) * ro.mask
    actor_critic.train(was_training)
    ro.logp, ro.ref_logp = ro.logp * ro.mask, ro.ref_logp * ro.mask
    ro.score = score.float().to(ro.idx.device)
    s = ro.score - cfg.missing_end_penalty * (~ro.ended).float()
    if cfg.samples_per_prompt > 1:  # RLOO (Ahmadian et al. 2024): the other answers to the same prompt are the baseline
        s = rloo(s, cfg.samples_per_prompt)
    if cfg.normalize_score and moments is not None:
        moments.update(s, all_reduce_mean)
        s = (s - moments.mean) / math.sqrt(moments.var + 1e-8)
    if cfg.score_clip > 0:
        s = s.clamp(-cfg.score_clip, cfg.score_clip)
    kl = kl_per_token(ro.logp, ro.ref_logp, cfg.kl_estimator) * ro.mask
    ro.rewards = shape_rewards(s, kl, ro.mask, beta)
    adv, ro.returns = gae(ro.rewards, ro.values, ro.mask, cfg.gamma, cfg.lam)
    ro.advantages = masked_whiten(adv, ro.mask, all_reduce_mean)
    seq_kl = (kl_per_token(ro.logp, ro.ref_logp, "k1") * ro.mask).sum(1)  # nats per answer
    return {"score": ro.score.mean().item(), "score_norm": s.mean().item(), "kl": seq_kl.mean().item(),
            "kl_penalty": (beta * kl).sum(1).mean().item(), "length": ro.mask.sum(1).mean().item(),
            "ended": ro.ended.float().mean().item(), "beta": beta}


def rloo(score, k: int):
    """Each score minus the mean of the other k - 1 scores of its prompt (rows come in groups of k answers to one
    prompt): REINFORCE's leave-one-out baseline, unbiased because it does not depend on the answer itself."""
    g = score.view(-1, k)
    return (g - (g.sum(1, keepdim=True) - g) / (k - 1)).view(-1)


def ppo_update(ro: Rollouts, model, optimizer, cfg: PPOConfig, grad_clip: float = 1.0, generator=None,
               autocast=None, raw=None, train_policy: bool = True) -> dict:
    """``cfg.ppo_epochs`` passes over the rollouts in shuffled minibatches, one optimizer step each. ``model`` is
    the PolicyAndValue (or its DDP wrapper; ``raw`` the unwrapped one, for gradient clipping). With
    ``train_policy`` False only the value loss is minimised (the value warm-up). Stops before the optimizer step if
    the loss is not finite, leaving the weights as they were."""
    raw = raw or model
    ctx = lambda: precision(autocast, ro.idx.device)
    B = ro.idx.shape[0]
    stats = {k: 0.0 for k in ("policy_loss", "value_loss", "clipfrac", "approx_kl", "value_clipfrac", "entropy",
                              "ratio_first")}
    n = 0
    model.train()
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(B, generator=generator).to(ro.idx.device)
        for start in range(0, B, cfg.minibatch):
            mb = order[start:start + cfg.minibatch]
            m = ro.mask[mb]
            with ctx():
                logits, values = model(ro.idx[mb], ro.pad_mask[mb], ro.P, cfg.temperature)
            logp = token_logprobs(logits, ro.idx[mb, ro.P:])
            pl, clipfrac, approx_kl, ratio = policy_loss(logp, ro.logp[mb], ro.advantages[mb], m, cfg.clip)
            vl, vclip = value_loss(values, ro.values[mb], ro.returns[mb], m, cfg.clip_value)
            loss = (pl if train_policy else 0.0 * pl) + cfg.vf_coef * vl
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"PPO loss became {loss.item()} (policy {pl.item()}, value {vl.item()}); stopped "
                                    f"without updating the weights (try a lower --lr or --dtype float32)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(raw.parameters(), grad_clip, "in a PPO minibatch (try a lower --lr or --dtype float32)")
            optimizer.step()
            if n == 0:  # the first minibatch of the first epoch: the policy has not moved yet, so rho must be 1
                stats["ratio_first"] = masked_mean((ratio - 1).abs(), m).item()
                stats["clipfrac_first"] = clipfrac.item()
            with torch.no_grad():
                ent = masked_mean(entropy(logits.detach()), m)
            for k, v in (("policy_loss", pl.detach()), ("value_loss", vl.detach()), ("clipfrac", clipfrac),
                         ("approx_kl", approx_kl), ("value_clipfrac", vclip), ("entropy", ent)):
                stats[k] += v.item()
            n += 1
    for k in ("policy_loss", "value_loss", "clipfrac", "approx_kl", "value_clipfrac", "entropy"):
        stats[k] /= max(n, 1)
    return stats


def ppo_iteration(prompts, actor_critic, reference, tok, score_fn, optimizer, cfg: PPOConfig, beta: float,
                  moments=None, generator=None, rt=None, model=None, grad_clip: float = 1.0,
                  lora_reference: bool = False, train_policy: bool = True):
    """Rollout -> scoring -> training for one batch of prompts. ``score_fn(rollouts) -> (B,)`` is the reward
    model's judgement; ``model`` is the (DDP-wrapped) actor_critic to train through, default itself. Returns
    (rollouts, stats) with the seconds spent in each phase."""
    autocast = rt.autocast if rt is not None else None
    all_reduce = rt.all_reduce_mean if rt is not None and rt.ddp else None
    t0 = time.perf_counter()
    ro = sample_rollouts(actor_critic.policy, tok, prompts, cfg.max_new_tokens, cfg.temperature, generator, autocast)
    t1 = time.perf_counter()
    with torch.no_grad():
        with precision(autocast, ro.idx.device):
            score = score_fn(ro)
    stats = score_and_advantages(ro, actor_critic, reference, score, cfg, beta, moments, all_reduce, autocast,
                                 lora_reference)
    t2 = time.perf_counter()
    stats.update(ppo_update(ro, model or actor_critic, optimizer, cfg, grad_clip, generator, autocast,
                            raw=actor_critic, train_policy=train_policy))
    t3 = time.perf_counter()
    stats.update(time_rollout=t1 - t0, time_scoring=t2 - t1, time_training=t3 - t2)
    return ro, stats


# ----------------------------------------------------------------------------------------------------------------
# 5. The outer loop

def train(rt, cfg, policy, reference, tok, rm, scorer, prompts, harmful, gold, checkpoint_fn,
          held_out: list | None = None, monitors: dict | None = None) -> dict:
    """``cfg.steps`` PPO iterations over batches of ``prompts`` (``harmful``: their labels, or None), scored by
    ``scorer``; the value model starts as ``rm``'s trunk with a zero head. ``reference`` is the frozen SFT model, or
    None for a LoRA policy (the reference is then the policy with its adapter off). Every ``cfg.eval_every``
    iterations the policy answers the ``held_out`` prompts greedily, scored by the reward model and by ``gold``: the
    learning curve on prompts it never trains on. ``monitors`` ({name: f(prompt, answer) -> float}) are averaged
    over each iteration's rollouts and logged, never trained on. Writes metrics.jsonl, resume.pt and, through
    ``checkpoint_fn(policy, step, metrics)``, ckpt.pt; returns the last metrics."""
    refuse_fp16_training(rt)
    if cfg.fsdp or cfg.time_limit:
        raise NanotrainError("--fsdp and --time-limit are not available for PPO yet (its loop is not trainer's); "
                             "use DDP (torchrun without --fsdp) and --steps")
    out = Path(cfg.out)
    # The value model: the reward model's trunk (it already reads answers) with a zero head, so every value starts at
    # 0 rather than at a reward read at the wrong positions; its own, higher learning rate and a few iterations of
    # warm-up let it learn the returns before they steer the policy.
    value = copy.deepcopy(rm).requires_grad_(True)
    torch.nn.init.zeros_(value.head.weight)
    torch.nn.init.zeros_(value.head.bias)
    if value.likelihood_weight is not None:  # values() reads the head only: a weight without gradients (DDP)
        value.likelihood_weight.requires_grad_(False)
    actor_critic = PolicyAndValue(policy, value)
    if cfg.grad_checkpoint:
        enable_grad_checkpoint(actor_critic)
    opt = make_optimizer(actor_critic, cfg.lr, cfg.weight_decay, device_type=rt.device.type,
                         lr_scales={"value.": cfg.value_lr / cfg.lr})
    kl_ctl, moments, start = AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.kl_horizon), RunningMoments(), 0
    resume_path = out / "resume.pt"
    st = start_run(cfg, rt)  # one run per --out; with --resume, resume.pt checked against this run's flags
    if st:
        actor_critic.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start, kl_ctl.beta = st["step"], st["beta"]
        moments.load(st["moments"])
    model = DDP(actor_critic) if rt.ddp else actor_critic

    score = labelled(scorer, prompts, harmful, rt.autocast)

    def score_fn(ro):  # ppo_iteration hands over its rollouts
        return score(ro.prompts, ro.texts)

    log = MetricsLog(out / "metrics.jsonl", resume_step=start or None, enabled=rt.master)
    metrics: dict = {}
    t0, time_before = time.perf_counter(), st.get("time_s", 0.0) if st else 0.0
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not rt.master, dynamic_ncols=True,
               desc=out.name)
    k = max(1, cfg.samples_per_prompt)
    for step in bar:
        lr = lr_at(step, cfg)
        warmup = step < cfg.value_warmup  # the value model learns alone: the policy's learning rate is 0
        for group in opt.param_groups:
            group["lr"] = 0.0 if warmup and group["prefix"] != "value." else lr * group["lr_scale"]
        batch = [prompts[i] for i in batch_indices(len(prompts), step, 0, cfg.rollout_batch // k, 1, rt.rank,
                                                   rt.world, cfg.seed) for _ in range(k)]
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1009 + rt.rank)
        ro, stats = ppo_iteration(batch, actor_critic, reference, tok, score_fn, opt, cfg, kl_ctl.beta, moments, g,
                                  rt, model, cfg.grad_clip, lora_reference=reference is None,
                                  train_policy=not warmup)
        for name, f in {"gold": gold.score_helpful if gold else None, **(monitors or {})}.items():
            stats[name] = sum(f(p, t) for p, t in zip(ro.prompts, ro.texts)) / len(ro.texts) if f else float("nan")
        keys = sorted(stats)
        vals = rt.all_reduce_mean(torch.tensor([stats[k] for k in keys], dtype=torch.float64))
        stats = dict(zip(keys, vals.tolist()))
        kl_ctl.update(stats["kl"], cfg.rollout_batch * rt.world)
        done = step + 1
        rec = {"step": done, "lr": lr, **stats}
        if held_out and rt.master and (done % cfg.eval_every == 0 or done == cfg.steps or step == 0):
            rec.update(held_out_figures(policy, tok, held_out, scorer, gold, cfg.max_new_tokens, rt.autocast))
        if done % cfg.log_every == 0 or done == cfg.steps:
            log.write(rec)
        bar.set_postfix({k: f"{stats[k]:.3g}" for k in ("score", "gold", "kl")})
        metrics.update(step=done, time_s=time_before + time.perf_counter() - t0, **{f"train_{k}": stats[k] for k in
                                                                       ("score", "gold", "kl", "entropy", "length")})
        if rt.master and (done % cfg.save_every == 0 or done == cfg.steps):
            atomic_save({"step": done, "model": actor_critic.state_dict(), "optimizer": opt.state_dict(),
                         "beta": kl_ctl.beta, "moments": moments.state(), **run_record(cfg, rt, metrics["time_s"], 0)},
                        resume_path)
            atomic_save(checkpoint_fn(policy, done, dict(metrics)), out / "ckpt.pt")
    bar.close()
    return metrics


@torch.no_grad()
def held_out_figures(policy, tok, prompts, scorer, gold, max_new_tokens: int, autocast=None) -> dict:
    """The policy's greedy answers to held-out prompts: their mean reward-model score and gold helpfulness."""
    was_training = policy.training
    policy.eval()
    texts = [r.text for r in generate_replies(policy, tok, prompts, max_new_tokens, 0.0, autocast=autocast)]
    policy.train(was_training)
    out = {"heldout_score": float(scorer.score(prompts, texts, autocast=autocast).mean())}
    if gold is not None:
        out["heldout_gold"] = sum(gold.score_helpful(p, t) for p, t in zip(prompts, texts)) / len(texts)
    return out
