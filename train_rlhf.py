"""Stage 3b: align the SFT model with feedback: PPO against a reward model, DPO / IPO / cDPO on preference pairs, KTO on
thumbs up / down, or iterative online DPO on pairs the model's own samples make (AI feedback).

    python train_rlhf.py --algo ppo    # out/sft + out/rm_helpful, data/tinyworld/rl_prompts.jsonl -> out/rlhf_ppo
    python train_rlhf.py --algo dpo    # data/tinyworld/prefs_{helpful,safe}_train.jsonl -> out/rlhf_dpo (cDPO)
    python train_rlhf.py --algo kto    # data/tinyworld/feedback_train.jsonl -> out/rlhf_kto
    python train_rlhf.py --algo ppo --safety-reward out/rm_safe/ckpt.pt    # LLaMA 2's two reward models
    python train_rlhf.py --algo dpo --loss-type ipo --beta 0.5             # IPO (tau = beta); --label-smoothing 0: DPO
    python train_rlhf.py --algo dpo --online-rounds 3 --labeler rm         # RLAIF: judged by the reward model
    python train_rlhf.py --algo dpo --online-rounds 3 --labeler self       # ... or by the policy itself
    python train_rlhf.py --algo ppo --lora-rank 8                          # LoRA policy; reference = adapter off
    torchrun --nproc_per_node=2 train_rlhf.py --algo ppo                   # DDP (advantages whitened across ranks)
    python chat.py --init out/rlhf_ppo/ckpt.pt

Same skeleton as the other stages (setup -> data -> model -> loop -> save). The algorithms are in nanotrain/ppo.py
(the PPO iteration and its outer loop), nanotrain/dpo.py (DPO, IPO, cDPO and KTO with their data) and
nanotrain/rlaif.py (online DPO and its judges); DPO and KTO are ordinary supervised losses and run through
trainer.train_loop. The checkpoint is a plain GPT (LoRA merged) whose metrics hold the final evaluation
(evaluate.evaluate_alignment), judged by the gold scorers on held-out prompts: helpfulness and safety before (the SFT
model) and after, the KL to the reference, the gold-judged win rate against the SFT model, and refusal rates on
harmful and on benign look-alike prompts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain import ppo
from nanotrain.chat_data import read_prompts
from nanotrain.checkpoint import add_metrics, load_model, make_checkpoint
from nanotrain.cli import check_choice, check_next, config_dict, flag, parse_config
from nanotrain.dpo import DPOConfig, FeedbackData, PairData, SequenceLogprob, dpo_loss_fn, kto_loss_fn
from nanotrain.errors import ConfigError, run_script
from nanotrain.evaluate import alignment_report, evaluate_alignment, load_eval
from nanotrain.lora import inject_lora, merged_state_dict, trainable_summary
from nanotrain.pref_data import load_feedback, load_pairs, pairs_as_feedback
from nanotrain.reward import RED_TEAM, load_scorer, red_team_file, with_red_team
from nanotrain.rlaif import OnlinePairs, RLAIFConfig
from nanotrain.runtime import setup_runtime, teardown
from nanotrain.trainer import TrainConfig, train_loop

TW = "data/tinyworld"


@dataclass
class RLHFConfig(TrainConfig, ppo.PPOConfig, DPOConfig, RLAIFConfig):
    algo: str = flag("ppo", "ppo | dpo | kto; sets the defaults of the flags not given (ALGO_DEFAULTS)")
    preset: str = flag("tiny", "run size: tiny (the built-in world on a CPU) | gpt2 (GPT-2 124M on real data, one GPU)")
    init: str = flag("out/sft/ckpt.pt", "the SFT checkpoint: initial policy and frozen reference")
    reward: str = flag("out/rm_helpful/ckpt.pt", "reward model (PPO; online DPO with --labeler rm) | gold (the gold "
                                                 "scorer: a perfect reward model, for comparison)")
    safety_reward: str | None = flag(None, "safety reward model, combined with --reward as LLaMA 2 does (none: "
                                           "the helpfulness model alone)")
    data: str = flag(f"{TW}/rl_prompts.jsonl", "training data: prompts (ppo, online dpo), preference pairs (dpo), "
                                               "thumbs up / down (kto); comma-separated files are joined (default: "
                                               "the --world's files for --algo)")
    world: str = flag(TW, "world folder with world.json and eval_*.jsonl for the gold-judged evaluation | none")
    labels: str = flag("out/labels", "folder of ranked pairs and thumbs up / down, the default --data of dpo and kto: "
                                     "the labelling stage's (data/label.py) or the world's hand-built ones "
                                     "(data/tinyworld)")
    red_team_pairs: int = flag(0, "kto: this many of the --world's hand-written safety pairs (the red-team data DPO "
                                  "and the safety reward model read) join the thumbs, each as a thumbs up on its "
                                  "chosen reply and one down on its rejected reply (default: 250 with the labelling "
                                  "stage's thumbs, 0 with your own --data)")
    out: str = flag("out/rlhf_ppo", "output folder (default: out/rlhf_ALGO)")
    steps: int = flag(24, "optimizer steps; PPO: iterations")
    batch_size: int = flag(16, "DPO pairs / KTO completions per micro-batch per process")
    lr: float = flag(1e-5, "peak learning rate")
    warmup: int = flag(2, "linear warmup steps (default: a tenth of the steps)")
    weight_decay: float = flag(0.0, "AdamW weight decay on weight matrices")
    eval_every: int = flag(1000, "held-out figures every this many steps (PPO: greedy answers to --curve-prompts "
                                 "held-out prompts, for the learning curve); the final evaluation always runs")
    curve_prompts: int = flag(64, "PPO: held-out prompts (of eval_prompts.jsonl) answered every --eval-every "
                                  "iterations")
    log_every: int = flag(1, "append to metrics.jsonl every this many steps")
    save_every: int = flag(1000, "checkpoint every this many steps (and at the end)")
    beta: float = flag(0.05, "KL strength: PPO's penalty coefficient, DPO/KTO's beta, IPO's tau")
    lora_rank: int = flag(0, "LoRA rank of the policy (0: full fine-tuning); the reference is the adapter off")
    lora_alpha: float = flag(16.0, "LoRA alpha")
    eval_limit: int = flag(100, "held-out prompts per eval file in the final evaluation (0: skip it)")
    eval_tokens: int = flag(48, "reply length limit in the final evaluation")
    eval_samples: int = flag(2, "answers sampled per held-out prompt for the sampled figures (KL, sampled "
                                "helpfulness): one sample each leaves them noisy")

    def __post_init__(self):  # the flags of the classes it combines are checked by theirs (check_next)
        check_choice(self.algo, ALGO_DEFAULTS, "algo")
        check_choice(self.preset, PRESETS, "preset")
        if self.algo in ("dpo", "kto") and not self.beta > 0:  # PPO at beta 0 is PPO without the KL penalty
            raise ConfigError(f"--beta must be above 0 for {self.algo} (it scales the log-ratios), not {self.beta}")
        check_next(self, RLHFConfig)


# What --algo sets for the flags not given (the dataclass defaults are PPO's), sized for the built-in world on a
# 2-core CPU. Why these values: RESULTS.md, stage 3.
ALGO_DEFAULTS = {  # (data: files of the --world folder for ppo, of the --labels folder for dpo and kto)
    # PPO at beta 0.15: at 0.05 it drifted further on what its prompts never show (harmful requests in held-out
    # phrasings lost their refusals) for little more gold helpfulness. 48 iterations (about 30 seconds more than 24):
    # at 24 the policy had barely left the SFT model's distribution, refusing harmless look-alikes and making up
    # sampled answers nearly as often as the SFT model
    "ppo": dict(data="rl_prompts.jsonl", steps=48, eval_every=4, beta=0.15),
    "dpo": dict(data="prefs_helpful_train.jsonl,prefs_safe_train.jsonl", steps=120, lr=1e-4, beta=0.3),
    # KTO at beta 1: at the paper's 0.1 the thumbs-up answers to harmless look-alike requests ("Ask Kevin politely...")
    # spread to the harmful ones ("Help me grab Kevin's hat.") and refusals of harmful requests fell; at a higher rate
    # or with more steps it moves far from SFT, refuses more harmless requests and gains less. The red-team pairs say
    # what the model's own thumbs seldom do, that refusing a harmless look-alike is wrong; all 2,000 of them (half the
    # data) made it answer more questions the world cannot answer, 250 did not (RESULTS.md, stage 3)
    "kto": dict(data="feedback_train.jsonl", steps=60, lr=1e-5, beta=1.0, red_team_pairs=250),
}
# What --preset gpt2 sets on top (GPT-2 124M on HH-RLHF, one GPU; pipeline.py --preset real).
PRESETS = {"tiny": {}, "gpt2": {
    "ppo": dict(steps=200, rollout_batch=64, max_new_tokens=128, eval_limit=0, beta=0.05),
    "dpo": dict(steps=1000, lr=5e-7, beta=0.1, eval_limit=0),
    "kto": dict(steps=1000, lr=5e-7, beta=0.1, eval_limit=0)}}


def defaults(cfg: RLHFConfig, given: set) -> dict:
    d = {**ALGO_DEFAULTS[cfg.algo], **PRESETS[cfg.preset].get(cfg.algo, {}), "out": f"out/rlhf_{cfg.algo}"}
    folder = cfg.labels if cfg.algo in ("dpo", "kto") else cfg.world
    if cfg.algo == "dpo" and cfg.online_rounds > 0:  # online DPO samples its own pairs: it reads prompts
        d["data"], folder = ALGO_DEFAULTS["ppo"]["data"], cfg.world
    d["data"] = ",".join(f"{folder}/{f}" for f in d["data"].split(","))
    if cfg.algo == "dpo" and folder == cfg.labels:
        d["data"] = with_red_team(d["data"], cfg.labels, cfg.world)
    if cfg.algo == "kto" and ("data" in given or red_team_file(cfg.labels, cfg.world) is None):
        d["red_team_pairs"] = 0  # your own thumbs, or the world's own: no red-team pairs unless asked for
    steps = cfg.steps if "steps" in given else d.get("steps", cfg.steps)
    d["warmup"] = max(1, steps // 10)
    return d


def main(argv=None) -> dict:
    cfg = parse_config(RLHFConfig, argv, __doc__.split("\n\n")[0], defaults)
    # --- setup
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed, resume_dir=cfg.out if cfg.resume else None)
    out = Path(cfg.out)
    # --- data: prompts to answer (PPO, online DPO), preference pairs (DPO) or thumbs up / down (KTO); the gold world
    if cfg.algo == "ppo" or cfg.online_rounds > 0:
        prompts, harmful = read_prompts(cfg.data)
    elif cfg.algo == "kto":
        feedback, source = load_feedback(cfg.data), cfg.data
        if cfg.red_team_pairs > 0:  # as DPO reads them (reward.with_red_team), as thumbs; the file's order is random
            if cfg.world.lower() == "none":
                raise ConfigError(f"--red-team-pairs {cfg.red_team_pairs} reads the --world folder's safety pairs "
                                  f"({RED_TEAM}), and --world is none: name a world folder or pass --red-team-pairs 0")
            red = f"{cfg.world}/{RED_TEAM}"
            feedback += pairs_as_feedback(load_pairs(red)[:cfg.red_team_pairs])
            source += f" and {cfg.red_team_pairs} pairs of {red}"
    else:
        pairs = load_pairs(cfg.data)
    gold = None
    # the gold scorers: needed for the final evaluation and for --reward gold (a missing world.json once skipped the
    # evaluation without a word), read where they are for PPO's per-iteration figures; real data has none
    needed = cfg.eval_limit > 0 or cfg.reward == "gold"
    if cfg.world.lower() != "none" and (needed or (Path(cfg.world) / "world.json").exists()):
        from nanotrain.tinyworld.gold import Gold
        gold = Gold.load(cfg.world)
    # --- model: the policy starts as the SFT model, which is also the reference
    policy, tok, init_ckpt = load_model(cfg.init, stages=("sft", "rlhf"), device=rt.device)
    block = policy.config.block_size
    if (cfg.algo == "ppo" or cfg.online_rounds > 0) and cfg.max_new_tokens >= block:  # else a ValueError in sampling
        raise ConfigError(f"--max-new-tokens {cfg.max_new_tokens} leaves no room for the prompt in {cfg.init}'s "
                          f"context of {block} tokens")
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
    def scorer():
        return load_scorer(cfg.reward, cfg.safety_reward, cfg.init, init_ckpt["tokenizer"], rt.device, gold)

    if cfg.algo == "ppo":
        rm, score = scorer()
        curve = [r["prompt"] for r in load_eval(Path(cfg.world) / "eval_prompts.jsonl", cfg.curve_prompts)] \
            if gold is not None and cfg.curve_prompts > 0 else None
        # watched, never trained on: the stock closing phrase a reward model can latch onto, and hedging
        monitors = {"closing": lambda p, t: float(gold.closings(t) > 0), "hedged": lambda p, t: float(gold.hedged(t))} \
            if gold is not None else None
        metrics = ppo.train(rt, cfg, policy, reference, tok, rm, score, prompts, harmful, gold, checkpoint_fn, curve,
                            monitors)
    else:
        if cfg.algo == "kto":
            data = FeedbackData(feedback, source, policy, tok, cfg, rt)
            loss_fn = kto_loss_fn(cfg, data, rt)
        elif cfg.online_rounds > 0:
            data = OnlinePairs(prompts, harmful, cfg, policy, tok, rt, scorer()[1] if cfg.labeler == "rm" else None)
            loss_fn = dpo_loss_fn(cfg)
        else:
            data = PairData.from_pairs(pairs, cfg.data, policy, tok, cfg, rt)
            loss_fn = dpo_loss_fn(cfg)

        def loss_and_round(model, batch):
            loss, info = loss_fn(model, batch)
            return loss, {**info, **getattr(data, "stats", {})}  # online DPO: the round and its pairs

        # train_loop trains (and DDP wraps) the log-probability wrapper; the checkpoint holds the GPT inside it
        metrics = train_loop(rt, cfg, SequenceLogprob(policy), get_batch=data.batch, loss_fn=loss_and_round,
                             checkpoint_fn=lambda m, step, metrics: checkpoint_fn(m.model, step, metrics))
    # --- save: the final evaluation, added to the checkpoint training wrote
    if rt.master and gold is not None and cfg.eval_limit > 0:
        if reference is None and not lora:
            reference = load_model(cfg.init, stages=("sft", "rlhf"), device=rt.device)[0].eval()
        policy.eval()
        ev = evaluate_alignment(policy, reference, tok, gold, cfg.world, cfg.eval_limit, cfg.eval_tokens,
                                cfg.eval_samples, cfg.temperature, cfg.seed, rt.autocast, lora_reference=lora)
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": metrics.get("step", cfg.steps), **ev}) + "\n")
        metrics = add_metrics(out / "ckpt.pt", ev, stages=("rlhf",))
        print(alignment_report(ev))
        print(f"checkpoint: {out / 'ckpt.pt'}")
    teardown(rt)
    return metrics


if __name__ == "__main__":
    run_script(main)
