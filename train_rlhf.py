"""Stage 4: align the SFT model with feedback: PPO against a reward model, DPO / IPO / cDPO on preference pairs, KTO on
thumbs up / down, or iterative online DPO on pairs the model's own samples make (AI feedback).

    python train_rlhf.py --algo ppo    # out/sft + out/rm_helpful, data/tinyworld/rl_prompts.jsonl -> out/rlhf_ppo (~2 min)
    python train_rlhf.py --algo dpo    # data/tinyworld/prefs_{helpful,safe}_train.jsonl -> out/rlhf_dpo (~1 min; cDPO)
    python train_rlhf.py --algo kto    # data/tinyworld/feedback_train.jsonl -> out/rlhf_kto (~1 min)
    python train_rlhf.py --algo ppo --safety-reward out/rm_safe/ckpt.pt    # LLaMA 2's two reward models
    python train_rlhf.py --algo dpo --loss-type ipo --beta 0.5             # IPO (tau = beta); --label-smoothing 0: DPO
    python train_rlhf.py --algo dpo --online-rounds 3 --labeler rm         # RLAIF: judged by the reward model
    python train_rlhf.py --algo dpo --online-rounds 3 --labeler self       # ... or by the policy itself
    python train_rlhf.py --algo ppo --lora-rank 8                          # LoRA policy; reference = adapter off
    torchrun --nproc_per_node=2 train_rlhf.py --algo ppo                   # DDP (advantages whitened across ranks)
    python chat.py --init out/rlhf_ppo/ckpt.pt

Same skeleton as the other stages (setup -> data -> model -> loop -> save). DPO and KTO are ordinary supervised
losses and run through trainer.train_loop; PPO alternates sampling and learning, so it has its own outer loop here
(built from the trainer's optimizer, schedule, metrics log and checkpoint helpers; the algorithm is nanotrain/ppo.py).
The checkpoint is a plain GPT (LoRA merged) whose metrics hold the final evaluation, judged by the gold scorers on
held-out prompts: helpfulness and safety before (the SFT model) and after, the KL to the reference, the gold-judged
win rate against the SFT model, and refusal rates on harmful and on benign look-alike prompts.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nanotrain.checkpoint import atomic_save, check_tokenizer, load_model, make_checkpoint
from nanotrain.cli import config_dict, flag, parse_config
from nanotrain.data import read_jsonl
from nanotrain.dpo import (batch_indices, collate, kto_lambdas, kto_loss, pairs_from_samples, preference_loss,
                           reference_logprobs, render_response, self_judge, SequenceLogprob)
from nanotrain.errors import CheckpointError, DataError, run_script
from nanotrain.evaluate import answer, load_eval, mean_safe, refusal_rate, win_rates
from nanotrain.lora import inject_lora, merged_state_dict, trainable_summary
from nanotrain.ppo import (AdaptiveKLController, PolicyAndValue, PPOConfig, RunningMoments, ppo_iteration,
                           reference_model, response_logits, sample_rollouts, token_logprobs)
from nanotrain.pref_data import load_feedback, load_pairs
from nanotrain.reward import CombinedReward, RewardModel, load_reward_model
from nanotrain.runtime import refuse_fp16_training, setup_runtime, teardown
from nanotrain.sampling import generate_replies
from nanotrain.trainer import MetricsLog, TrainConfig, lr_at, make_optimizer, train_loop

TW = "data/tinyworld"
# Per-algorithm defaults for the flags left at 0 / "" (sized for the built-in world on a 2-core CPU).
ALGO_DEFAULTS = {
    "ppo": dict(data=f"{TW}/rl_prompts.jsonl", steps=24, lr=1e-5, beta=0.05),
    "dpo": dict(data=f"{TW}/prefs_helpful_train.jsonl,{TW}/prefs_safe_train.jsonl", steps=120, batch_size=16,
                lr=1e-4, beta=0.3),
    # KTO at beta 1: at the paper's 0.1 the thumbs-up answers to harmless look-alike requests ("Ask Kevin politely...")
    # spread to the harmful ones ("Help me grab Kevin's hat."), and harmful-request refusals fell from 91% to 78-87%
    "kto": dict(data=f"{TW}/feedback_train.jsonl", steps=60, batch_size=16, lr=3e-5, beta=1.0),
}


@dataclass
class RLHFConfig(TrainConfig, PPOConfig):
    algo: str = flag("ppo", "ppo | dpo | kto")
    init: str = flag("out/sft/ckpt.pt", "the SFT checkpoint: initial policy and frozen reference")
    reward: str = flag("out/rm_helpful/ckpt.pt", "reward model (PPO; online DPO with --labeler rm) | gold (the gold "
                                                 "scorer: a perfect reward model, for comparison)")
    safety_reward: str = flag("", "optional safety reward model, combined with --reward as LLaMA 2 does")
    data: str = flag("", "training data (default per algo: ppo rl_prompts.jsonl, dpo prefs_helpful_train.jsonl + "
                         "prefs_safe_train.jsonl, kto feedback_train.jsonl, all in data/tinyworld)")
    world: str = flag(TW, "world folder with world.json and eval_*.jsonl for the gold-judged evaluation | none")
    out: str = flag("", "output folder (default: out/rlhf_ALGO)")
    steps: int = flag(0, "optimizer steps; PPO: iterations (0: ppo 24, dpo 120, kto 60)")
    batch_size: int = flag(0, "DPO pairs / KTO completions per micro-batch per process (0: 16)")
    lr: float = flag(0.0, "peak learning rate (0: ppo 1e-5, dpo 1e-4, kto 1e-5)")
    warmup: int = flag(0, "linear warmup steps (0: a tenth of the steps)")
    weight_decay: float = flag(0.0, "AdamW weight decay on weight matrices")
    eval_every: int = flag(1000, "DPO/KTO: held-out figures every this many steps (the final evaluation always runs)")
    log_every: int = flag(1, "append to metrics.jsonl every this many steps")
    save_every: int = flag(1000, "checkpoint every this many steps (and at the end)")
    beta: float = flag(0.0, "KL strength: PPO's penalty coefficient, DPO/KTO's beta, IPO's tau (0: ppo 0.05, "
                            "dpo 0.3, kto 1)")
    loss_type: str = flag("dpo", "dpo | ipo")
    label_smoothing: float = flag(0.1, "conservative DPO: assumed share of flipped labels (0: plain DPO, which on "
                                       "the built-in world garbles refusals: 75-85% kept over seeds, at 0.1 92-94%)")
    nll_weight: float = flag(2.0, "DPO/IPO: add this times the chosen answers' NLL per token (Llama 3, RPO; 0: "
                                  "plain DPO, which on the built-in world drifts far from SFT: KL 10 nats, gold "
                                  "helpfulness 0.59 -> 0.37)")
    lambda_d: float = flag(0.0, "KTO weight of desirable examples (0 and --lambda-u 0: set from the data's "
                                "imbalance, as the KTO paper advises; else used as given, 0 meaning 1)")
    lambda_u: float = flag(0.0, "KTO weight of undesirable examples (see --lambda-d)")
    online_rounds: int = flag(0, "DPO: rounds of sampling pairs from the policy itself (0: offline on --data)")
    online_samples: int = flag(4, "online DPO: answers sampled per prompt (best and worst make a pair)")
    labeler: str = flag("rm", "online DPO judge: rm (the reward model) | self (the policy's own Yes/No)")
    lora_rank: int = flag(0, "LoRA rank of the policy (0: full fine-tuning); the reference is the adapter off")
    lora_alpha: float = flag(16.0, "LoRA alpha")
    eval_limit: int = flag(100, "held-out prompts per eval file in the final evaluation (0: skip it)")
    eval_tokens: int = flag(48, "reply length limit in the final evaluation")
    eval_samples: int = flag(2, "answers sampled per held-out prompt for the sampled figures (KL, sampled "
                                "helpfulness): one sample each leaves them noisy (+-0.04 on 100 prompts; 2: +-0.03)")


def resolve(cfg: RLHFConfig) -> RLHFConfig:
    if cfg.algo not in ALGO_DEFAULTS:
        raise ValueError(f"--algo must be one of {list(ALGO_DEFAULTS)}, not {cfg.algo!r}")
    if cfg.labeler not in ("rm", "self"):
        raise ValueError(f"--labeler must be rm or self, not {cfg.labeler!r}")
    d = {k: v for k, v in ALGO_DEFAULTS[cfg.algo].items() if not getattr(cfg, k)}
    if cfg.algo == "dpo" and cfg.online_rounds > 0 and not cfg.data:  # online DPO samples its own pairs: prompts
        d["data"] = ALGO_DEFAULTS["ppo"]["data"]
    cfg = dataclasses.replace(cfg, **d)
    if not cfg.warmup:
        cfg.warmup = max(1, cfg.steps // 10)
    if not cfg.out:
        cfg.out = f"out/rlhf_{cfg.algo}"
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# The final evaluation: gold-judged, on held-out prompts, the policy against the SFT model


@torch.no_grad()
def sampled_figures(policy, reference, tok, gold, prompts, cfg, autocast, lora_reference: bool) -> tuple[float, list]:
    """On answers sampled from the policy (at --temperature): KL(pi || pi_ref) per answer in nats, the mean over
    answers of sum_t log pi - log pi_ref (the k1 estimate, unbiased), and their gold helpfulness scores (the mean
    is the other axis of the reward-vs-KL frontier, DPO paper fig. 2), --eval-samples answers per prompt, in order.
    With no reference (and no LoRA), KL 0."""
    g = torch.Generator().manual_seed(cfg.seed + 99)
    prompts = [p for p in prompts for _ in range(max(1, cfg.eval_samples))]
    kl, scores = 0.0, []
    for s in range(0, len(prompts), 64):
        ro = sample_rollouts(policy, tok, prompts[s:s + 64], cfg.eval_tokens, cfg.temperature, g, autocast)
        scores += [gold.score_helpful(p, t) for p, t in zip(ro.prompts, ro.texts)]
        if reference is None and not lora_reference:
            continue
        resp = ro.idx[:, ro.P:]
        with autocast():
            logp = token_logprobs(response_logits(policy, ro.idx, ro.pad_mask, ro.P, cfg.temperature), resp)
            with reference_model(policy, reference, lora_reference) as ref_model:
                ref = token_logprobs(response_logits(ref_model, ro.idx, ro.pad_mask, ro.P, cfg.temperature), resp)
        kl += float(((logp - ref) * ro.mask).sum())
    return kl / max(1, len(prompts)), scores


def final_evaluation(policy, reference, tok, gold, cfg, rt, lora_reference: bool = False) -> dict:
    """Gold helpfulness and safety before (reference) and after (policy), KL to the reference, win rate against the
    reference, refusal rates. Every file is answered once per model, greedily."""
    world = Path(cfg.world)
    out = {}
    replies = {}
    for name in ("eval_prompts", "eval_harmful", "eval_benign"):
        prompts = [r["prompt"] for r in load_eval(world / f"{name}.jsonl", cfg.eval_limit)]
        after = answer(policy, tok, prompts, cfg.eval_tokens, autocast=rt.autocast)
        with reference_model(policy, reference, lora_reference) as sft:
            before = answer(sft, tok, prompts, cfg.eval_tokens, autocast=rt.autocast)
        replies[name] = prompts, before, after
    # Gold helpfulness of every answer, scored once: its mean over eval_prompts is the helpfulness figure, and the win
    # rate is over every held-out prompt (gold helpfulness also rewards refusing harmful requests and penalises
    # refusing benign ones).
    scores = {name: [[gold.score_helpful(q, r.text) for q, r in zip(prompts, rs)] for rs in (b, a)]
              for name, (prompts, b, a) in replies.items()}
    out["helpful_before"], out["helpful_after"] = (sum(s) / max(1, len(s)) for s in scores["eval_prompts"])
    out.update(win_rates([x for b, _ in scores.values() for x in b], [x for _, a in scores.values() for x in a]))
    p, _, after = replies["eval_prompts"]
    ph, hb, ha = replies["eval_harmful"]
    pb, bb, ba = replies["eval_benign"]
    out["safe_before"], out["safe_after"] = mean_safe(gold, ph + pb, hb + bb), mean_safe(gold, ph + pb, ha + ba)
    out.update(refusal_harmful_before=refusal_rate(gold, hb), refusal_harmful=refusal_rate(gold, ha),
               refusal_benign_before=refusal_rate(gold, bb), refusal_benign=refusal_rate(gold, ba),
               wellformed=sum(r.ended for r in after) / max(1, len(after)))
    out["kl_to_ref"], sampled = sampled_figures(policy, reference, tok, gold, p, cfg, rt.autocast, lora_reference)
    # the SFT model's answers sampled the same way (same seed): the baseline of helpful_sampled
    with reference_model(policy, reference, lora_reference) as sft:
        sampled_before = sampled_figures(sft, None, tok, gold, p, cfg, rt.autocast, False)[1]
    n = max(1, len(sampled))
    out["helpful_sampled"], out["helpful_sampled_before"] = sum(sampled) / n, sum(sampled_before) / n
    # ... and their win rate, pair by pair: the DPO paper judges sampled answers (§6.2: win rates at several sampling
    # temperatures), and they tie less often than greedy ones
    out["win_rate_sampled"] = win_rates(sampled_before, sampled)["win_rate"]
    return out


def report(ev: dict) -> str:
    return (f"gold helpfulness {ev['helpful_before']:.3f} (SFT) -> {ev['helpful_after']:.3f} (sampled at the "
            f"training temperature: {ev['helpful_sampled_before']:.3f} -> {ev['helpful_sampled']:.3f}); gold safety "
            f"{ev['safe_before']:.3f} -> {ev['safe_after']:.3f}; KL to SFT {ev['kl_to_ref']:.2f} nats/answer; "
            f"win rate vs SFT {ev['win_rate']:.1%} (wins {ev['wins']:.0%}, ties {ev['ties']:.0%}, losses "
            f"{ev['losses']:.0%}; {ev['win_rate_decisive']:.1%} of the non-tied; sampled answers "
            f"{ev['win_rate_sampled']:.1%}); refusals: harmful "
            f"{ev['refusal_harmful_before']:.0%} -> {ev['refusal_harmful']:.0%}, "
            f"benign {ev['refusal_benign_before']:.0%} -> {ev['refusal_benign']:.0%}")


# ----------------------------------------------------------------------------------------------------------------
# Reward models (PPO, online DPO with --labeler rm)


class GoldReward:
    """The gold scorer as the reward model (``--reward gold``): PPO with a perfect judge, the upper bound a learned
    reward model is measured against (and a check that the RL machinery works, separate from the reward model)."""

    def __init__(self, gold):
        self.gold = gold

    def score(self, prompts, responses, autocast=None, unsafe=None):
        return torch.tensor([self.gold.score_helpful(p, r) for p, r in zip(prompts, responses)])


def load_scorer(cfg, tok_dict, device, gold=None):
    """(reward model, scorer): the reward model, or LLaMA 2's helpful + safety combination (tokenizers must be the
    policy's). With ``--reward gold`` the scorer is the gold scorer and the "reward model" (what the value model
    starts from) is the SFT model's trunk with a zero head."""
    if cfg.reward == "gold":
        if gold is None:
            raise CheckpointError("--reward gold needs a world with gold scorers (--world)")
        sft = load_model(cfg.init, stages=("sft", "rlhf"), device=device)[0]  # the policy may carry LoRA layers
        return RewardModel.from_gpt(sft).requires_grad_(False), GoldReward(gold)
    rm, _, ck = load_reward_model(cfg.reward, device)
    check_tokenizer(tok_dict, ck["tokenizer"], cfg.init, cfg.reward)
    scorer = rm
    if cfg.safety_reward:
        safe, _, ck2 = load_reward_model(cfg.safety_reward, device)
        check_tokenizer(tok_dict, ck2["tokenizer"], cfg.init, cfg.safety_reward)
        scorer = CombinedReward(rm, safe)
    for m in (rm, getattr(scorer, "safe", rm)):
        m.requires_grad_(False)
    return rm, scorer


def labelled(scorer, prompts, harmful, autocast):
    """score(prompts, texts) of ``scorer``; with LLaMA 2's combination and a prompt file that labels its prompts
    harmful or not (LLaMA 2's prompt sets are labelled, as rl_prompts.jsonl is), the labels decide which prompts the
    safety model judges, instead of the combination's own probe."""
    label = None if harmful is None else {repr(p): h for p, h in zip(prompts, harmful)}

    def score(ps, texts):
        if isinstance(scorer, CombinedReward) and label is not None:
            return scorer.score(ps, texts, autocast=autocast, unsafe=torch.tensor([label[repr(p)] for p in ps]))
        return scorer.score(ps, texts, autocast=autocast)
    return score


def read_prompts(path) -> tuple[list, list]:
    """Prompts (and their "harmful" labels, None when absent) from a JSONL of {"prompt", ...}."""
    prompts, harmful = [], []
    for _, rec in read_jsonl(path, required=("prompt",)):
        prompts.append(rec["prompt"])
        harmful.append(rec.get("harmful"))
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts, (harmful if all(h is not None for h in harmful) else None)


# ----------------------------------------------------------------------------------------------------------------
# PPO: its own outer loop (sampling and learning alternate)


def train_ppo(rt, cfg, policy, reference, tok, init_ckpt, gold, checkpoint_fn) -> dict:
    refuse_fp16_training(rt)
    out = Path(cfg.out)
    rm, scorer = load_scorer(cfg, init_ckpt["tokenizer"], rt.device, gold)
    prompts, harmful = read_prompts(cfg.data)
    value = copy.deepcopy(rm).requires_grad_(True)  # the value model starts as the reward model
    if value.likelihood_weight is not None:  # values() reads the head only: a weight without gradients (DDP)
        value.likelihood_weight.requires_grad_(False)
    actor_critic = PolicyAndValue(policy, value)
    opt = make_optimizer(actor_critic, cfg.lr, cfg.weight_decay, device_type=rt.device.type)
    kl_ctl, moments, start = AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.kl_horizon), RunningMoments(), 0
    resume_path = out / "resume.pt"
    if cfg.resume and resume_path.exists():
        st = torch.load(resume_path, map_location=rt.device, weights_only=True)
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
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not rt.master, dynamic_ncols=True,
               desc=out.name)
    for step in bar:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = [prompts[i] for i in batch_indices(len(prompts), step, 0, cfg.rollout_batch, 1, rt.rank, rt.world,
                                                   cfg.seed)]
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1009 + rt.rank)
        ro, stats = ppo_iteration(batch, actor_critic, reference, tok, score_fn, opt, cfg, kl_ctl.beta, moments, g,
                                  rt, model, cfg.grad_clip, lora_reference=reference is None)
        stats["gold"] = sum(gold.score_helpful(p, t) for p, t in zip(ro.prompts, ro.texts)) / len(ro.texts) \
            if gold else float("nan")
        keys = sorted(stats)
        vals = rt.all_reduce_mean(torch.tensor([stats[k] for k in keys], dtype=torch.float64))
        stats = dict(zip(keys, vals.tolist()))
        kl_ctl.update(stats["kl"], cfg.rollout_batch * rt.world)
        done = step + 1
        rec = {"step": done, "lr": lr, **stats}
        if done % cfg.log_every == 0 or done == cfg.steps:
            log.write(rec)
        bar.set_postfix({k: f"{stats[k]:.3g}" for k in ("score", "gold", "kl")})
        metrics.update(step=done, time_s=time.perf_counter() - t0, **{f"train_{k}": stats[k] for k in
                                                                       ("score", "gold", "kl", "entropy", "length")})
        if rt.master and (done % cfg.save_every == 0 or done == cfg.steps):
            atomic_save({"step": done, "model": actor_critic.state_dict(), "optimizer": opt.state_dict(),
                         "beta": kl_ctl.beta, "moments": moments.state()}, resume_path)
            atomic_save(checkpoint_fn(policy, done, dict(metrics)), out / "ckpt.pt")
    bar.close()
    return metrics


# ----------------------------------------------------------------------------------------------------------------
# DPO / IPO / cDPO / KTO: supervised losses through trainer.train_loop


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
        self.ref_c, self.ref_r = torch.zeros(len(chosen)), torch.zeros(len(chosen))
        need = needed_indices(len(chosen), cfg, rt)
        ref = reference_logprobs(model, [chosen[i] for i in need] + [rejected[i] for i in need], tok.pad,
                                 autocast=rt.autocast)
        self.ref_c[need], self.ref_r[need] = ref[:len(need)], ref[len(need):]

    def batch(self, idx):
        x, y = collate([self.chosen[i] for i in idx] + [self.rejected[i] for i in idx], self.pad, self.device)
        return x, y, self.ref_c[idx].to(self.device), self.ref_r[idx].to(self.device)


def dpo_loss_fn(cfg):
    def loss_fn(model, batch):
        x, y, ref_c, ref_r = batch
        logp = model(x, y)  # log pi(y|x) of chosen and rejected rows, in one forward pass
        B = ref_c.shape[0]
        return preference_loss(logp[:B], logp[B:], ref_c, ref_r, cfg.beta, cfg.loss_type, cfg.label_smoothing,
                               cfg.nll_weight, (y[:B] >= 0).sum(-1))
    return loss_fn


def offline_pairs(cfg, policy, tok, rt):
    pairs = load_pairs(cfg.data)
    T = policy.config.block_size + 1
    chosen, kc = encode_rows(tok, [(p.messages, p.chosen) for p in pairs], T)
    rejected, kr = encode_rows(tok, [(p.messages, p.rejected) for p in pairs], T)
    both = sorted(set(kc) & set(kr))
    chosen = [chosen[kc.index(i)] for i in both]
    rejected = [rejected[kr.index(i)] for i in both]
    if not chosen:
        raise DataError(f"{cfg.data}: no preference pair fits in {T - 1} tokens")
    if rt.master:
        print(f"{len(chosen)} preference pairs ({len(pairs) - len(chosen)} too long) from {cfg.data}")
    return PairData(chosen, rejected, policy, tok, cfg, rt)


class OnlinePairs:
    """Iterative online DPO: the run's steps are split into ``online_rounds`` rounds; at the start of each, the
    policy samples ``online_samples`` answers to fresh prompts, a judge (the reward model or the policy itself)
    scores them, the best and worst answer of each prompt become a pair, and the policy as it is now becomes the
    reference for the round."""

    def __init__(self, cfg, policy, tok, rt, scorer):
        self.cfg, self.policy, self.tok, self.rt, self.scorer = cfg, policy, tok, rt, scorer
        self.prompts, harmful = read_prompts(cfg.data)
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
        local = step - r * self.round_len
        return self.data.batch(batch_indices(len(self.data.chosen), local, micro, self.cfg.batch_size,
                                             self.cfg.grad_accum, self.rt.rank, self.rt.world, self.cfg.seed))


class FeedbackData:
    """KTO's data: (prompt, completion, label) rows, and for each a mismatched (prompt, another completion) row for
    the KL reference point. The partner is fixed (the next example in a seeded shuffle), so its reference
    log-probability can be computed once too."""

    def __init__(self, cfg, policy, tok, rt):
        fb = load_feedback(cfg.data)
        T = policy.config.block_size + 1
        rows, kept = encode_rows(tok, [(f.messages, f.completion) for f in fb], T)
        fb = [fb[i] for i in kept]
        g = torch.Generator().manual_seed(cfg.seed)
        order = torch.randperm(len(fb), generator=g).tolist()
        partner = [0] * len(fb)
        for a, b in zip(order, order[1:] + order[:1]):
            partner[a] = b
        kl_items = [(fb[i].messages, fb[partner[i]].completion) for i in range(len(fb))]
        kl_rows = [render_response(tok, m, c, T) or rows[i] for i, (m, c) in enumerate(kl_items)]
        self.rows, self.kl_rows, self.pad, self.device = rows, kl_rows, tok.pad, rt.device
        self.label = torch.tensor([f.label for f in fb])
        need = needed_indices(len(rows), cfg, rt)
        ref = reference_logprobs(policy, [rows[i] for i in need] + [kl_rows[i] for i in need], tok.pad,
                                 autocast=rt.autocast)
        self.ref, self.ref_kl = torch.zeros(len(rows)), torch.zeros(len(rows))
        self.ref[need], self.ref_kl[need] = ref[:len(need)], ref[len(need):]
        n_d = int(self.label.sum())
        if cfg.lambda_d or cfg.lambda_u:
            self.lambda_d, self.lambda_u = cfg.lambda_d or 1.0, cfg.lambda_u or 1.0
        else:
            self.lambda_d, self.lambda_u = kto_lambdas(n_d, len(rows) - n_d)
        if rt.master:
            print(f"{len(rows)} feedback examples ({n_d} desirable) from {cfg.data}; lambda_D {self.lambda_d:.3g}, "
                  f"lambda_U {self.lambda_u:.3g}")

    def batch(self, idx):
        B = len(idx)
        x, y = collate([self.rows[i] for i in idx] + [self.kl_rows[i] for i in idx], self.pad, self.device)
        return (x, y, B, self.label[idx].to(self.device), self.ref[idx].to(self.device),
                self.ref_kl[idx].to(self.device))


def kto_loss_fn(cfg, data, rt):
    def loss_fn(model, batch):
        x, y, B, label, ref, ref_kl = batch
        logp = model(x, y)
        # the mismatched rows only set z0, which is detached: their gradient would be thrown away anyway
        return kto_loss(logp[:B], ref, label, logp[B:].detach(), ref_kl, cfg.beta, data.lambda_d, data.lambda_u,
                        rt.all_reduce_mean if rt.ddp else None)
    return loss_fn


def train_preference(rt, cfg, policy, tok, init_ckpt, gold, checkpoint_fn) -> dict:
    if cfg.algo == "kto":
        data = FeedbackData(cfg, policy, tok, rt)
        loss_fn = kto_loss_fn(cfg, data, rt)

        def get_batch(step, micro):
            return data.batch(batch_indices(len(data.rows), step, micro, cfg.batch_size, cfg.grad_accum, rt.rank,
                                            rt.world, cfg.seed))
    elif cfg.online_rounds > 0:
        scorer = load_scorer(cfg, init_ckpt["tokenizer"], rt.device, gold)[1] if cfg.labeler == "rm" else None
        data = OnlinePairs(cfg, policy, tok, rt, scorer)
        loss_fn, get_batch = dpo_loss_fn(cfg), data.batch
    else:
        data = offline_pairs(cfg, policy, tok, rt)
        loss_fn = dpo_loss_fn(cfg)

        def get_batch(step, micro):
            return data.batch(batch_indices(len(data.chosen), step, micro, cfg.batch_size, cfg.grad_accum, rt.rank,
                                            rt.world, cfg.seed))

    def loss_and_round(model, batch):
        loss, info = loss_fn(model, batch)
        return loss, {**info, **getattr(data, "stats", {})}

    # train_loop trains (and DDP wraps) the log-probability wrapper; the checkpoint holds the GPT inside it
    return train_loop(rt, cfg, SequenceLogprob(policy), get_batch=get_batch, loss_fn=loss_and_round,
                      checkpoint_fn=lambda m, step, metrics: checkpoint_fn(m.model, step, metrics))


# ----------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    cfg = resolve(parse_config(RLHFConfig, argv, description=__doc__.split("\n\n")[0]))
    # --- setup
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    out = Path(cfg.out)
    # --- model: the policy starts as the SFT model, which is also the reference
    policy, tok, init_ckpt = load_model(cfg.init, stages=("sft", "rlhf"), device=rt.device)
    lora = cfg.lora_rank > 0
    if lora:
        inject_lora(policy, r=cfg.lora_rank, alpha=cfg.lora_alpha)
        if rt.master:
            print(f"LoRA policy: {trainable_summary(policy)}; the reference is the same weights, adapter off")
    # PPO keeps a frozen copy of the SFT model (except with LoRA); DPO/KTO precompute the reference log-probs instead,
    # and load it again only for the final evaluation.
    reference = None
    if cfg.algo == "ppo" and not lora:
        reference = load_model(cfg.init, stages=("sft", "rlhf"), device=rt.device)[0].eval().requires_grad_(False)
    gold = None
    if cfg.world.lower() != "none" and (Path(cfg.world) / "world.json").exists():
        from nanotrain.gold import Gold
        gold = Gold.load(cfg.world)
    if rt.master:
        print(f"{cfg.algo}: policy {policy.num_params() / 1e6:.2f}M parameters from {cfg.init}; {cfg.steps} steps "
              f"on {rt.device} ({rt.dtype or torch.float32}), beta {cfg.beta}, lr {cfg.lr:g} -> {out}")

    def checkpoint_fn(m, step, metrics):
        ck = make_checkpoint("rlhf", m, tok, config_dict(cfg), step, metrics, algo=cfg.algo, init=cfg.init,
                             reward=cfg.reward if cfg.algo == "ppo" or cfg.online_rounds else "")
        if lora:  # an ordinary GPT: the adapter folded into the weights
            ck["model"] = merged_state_dict(m)
        return ck

    # --- loop
    if cfg.algo == "ppo":
        metrics = train_ppo(rt, cfg, policy, reference, tok, init_ckpt, gold, checkpoint_fn)
    else:
        metrics = train_preference(rt, cfg, policy, tok, init_ckpt, gold, checkpoint_fn)
    # --- final evaluation (the checkpoint is already on disk; this adds the figures to it)
    if rt.master and gold is not None and cfg.eval_limit > 0:
        if reference is None and not lora:
            reference = load_model(cfg.init, stages=("sft", "rlhf"), device=rt.device)[0].eval()
        policy.eval()
        ev = final_evaluation(policy, reference, tok, gold, cfg, rt, lora_reference=lora)
        metrics.update(ev)
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": metrics.get("step", cfg.steps), **ev}) + "\n")
        atomic_save(checkpoint_fn(policy, metrics.get("step", cfg.steps), dict(metrics)), out / "ckpt.pt")
        print(report(ev))
        print(f"checkpoint: {out / 'ckpt.pt'}")
    teardown(rt)
    return metrics


if __name__ == "__main__":
    run_script(main)
