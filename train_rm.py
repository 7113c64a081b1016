"""Stage 3: train a reward model on preference pairs (Bradley-Terry), for helpfulness or for safety.

    python train_rm.py --name helpful      # out/sft/ckpt.pt + data/tinyworld/prefs_helpful_*.jsonl -> out/rm_helpful
    python train_rm.py --name safe         # ... prefs_safe_*.jsonl -> out/rm_safe
    # on another trunk than the policy's (here the SFT recipe run longer), judging the SFT model's answers
    python train_rm.py --name helpful --init out/sft_long/ckpt.pt --policy out/sft/ckpt.pt
    python sample.py --init out/sft/ckpt.pt --prompt "What colour is Lena's bicycle?" --best-of 8 \\
        --reward out/rm_helpful/ckpt.pt

    # real data (Anthropic HH-RLHF test splits, 10% of the prompts held out), a tiny model from scratch on a CPU:
    python train_rm.py --init scratch --tokenizer gpt2 --data ../shared/data/hh_rlhf --out /tmp/rm_hh
    # the same on GPUs from a GPT-2-sized SFT checkpoint (GPT-2 tokenizer), under DDP:
    torchrun --nproc_per_node=8 train_rm.py --init out/sft/ckpt.pt --data ../shared/data/hh_rlhf --out out/rm_hh \\
        --steps 600 --batch-size 8 --grad-accum 2 --lr 1e-5 --eval-every 100 --world none

Skeleton shared by every stage script: setup -> data -> model -> loop -> save. This stage's own parts: each batch is
B chosen + B rejected conversations in one forward pass (reward.PairBatches), the loss is
reward.bradley_terry_loss, the held-out figure is pairwise accuracy (does the chosen reply get the higher reward?).
Every checkpoint stores the reward normalisation, and after training the script measures how well the reward model
ranks fresh samples of the policy it will judge (--policy, by default the init model) on held-out prompts the way the
gold scorer does (reward.gold_agreement), which is what best-of-N and PPO rely on, and adds that to the checkpoint's
metrics.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanotrain.checkpoint import add_metrics, load_checkpoint, load_model, make_checkpoint
from nanotrain.cli import check_choice, check_next, config_dict, flag, parse_config
from nanotrain.data import read_jsonl
from nanotrain.errors import DataError, run_script
from nanotrain.gpt import PRESETS as ARCH, GPTConfig, padded_vocab
from nanotrain.pref_data import load_pairs, split_pairs
from nanotrain.reward import (PairBatches, RewardModel, bradley_terry_loss, encode_pairs, gold_agreement, pad_replies,
                              prompt_interval, with_world_pairs)
from nanotrain.runtime import setup_runtime, teardown
from nanotrain.tokenizer import Tokenizer
from nanotrain.trainer import TrainConfig, train_loop

TW = "data/tinyworld"


@dataclass
class RMConfig(TrainConfig):
    init: str = flag("out/sft/ckpt.pt", "sft or pretrain checkpoint to start from | scratch (a fresh model of "
                                        "--n-layer x --n-embd, with --tokenizer)")
    name: str = flag("helpful", "helpful | safe: picks the default data, output folder, steps and gold scorer")
    labels: str = flag("out/labels", "folder of ranked pairs, prefs_NAME_{train,val}.jsonl: the labelling stage's "
                                     "(data/label.py), or the built-in world's hand-built ones (data/tinyworld)")
    data: str = flag("out/labels/prefs_helpful_train.jsonl", "preference data: file(s) or folder, {prompt,chosen,"
                                                             "rejected} / HH-RLHF / OASST trees (default: "
                                                             "LABELS/prefs_NAME_train.jsonl and the --world's "
                                                             "prefs_NAME_train.jsonl)")
    val_data: str | None = flag("out/labels/prefs_helpful_val.jsonl", "held-out pairs (default: "
                                                                      "LABELS/prefs_NAME_val.jsonl; with your own "
                                                                      "--data: --val-fraction of it)")
    val_fraction: float = flag(0.1, "share of --data's prompts held out when --val-data is none")
    world: str = flag(TW, "world with gold scorers and held-out prompts for the rank-agreement check after training "
                          "('none': skip it)")
    out: str = flag("out/rm_helpful", "output folder (default: out/rm_NAME)")
    margin: float = flag(0.0, "Bradley-Terry margin m in -log sigma(r_c - r_r - m) (LLaMA 2 eq. 2)")
    center: float = flag(0.01, "weight of the reward-centring term c * (r_c + r_r)^2")
    likelihood: bool = flag(True, "add w * the reply's mean log-likelihood under the trunk's language-model head "
                                  "to the reward (w learned; nanotrain/reward.py); --no-likelihood: the head alone")
    mismatch: float = flag(0.25, "share of pairs whose rejected reply becomes the chosen reply to another prompt")
    norm_pairs: int = flag(256, "training pairs whose replies set the reward normalisation (mean, std)")
    agree_prompts: int = flag(32, "held-out prompts per eval file for the rank agreement with the gold scorer")
    policy: str = flag("", "the model whose fresh samples that check ranks, the one the reward model will judge "
                           "(default: --init)")
    agree_samples: int = flag(4, "fresh samples of --policy per prompt")
    agree_tokens: int = flag(48, "max new tokens per sample")
    agree_temperature: float = flag(0.7, "sampling temperature of those samples")
    preset: str = flag("tiny", f"run size: {' | '.join(ARCH)}; sets the architecture with --init scratch (and for "
                               f"gpt2 sizes the training recipe) of every flag not given")
    n_layer: int = flag(ARCH["tiny"]["n_layer"], "with --init scratch: transformer blocks")
    n_embd: int = flag(ARCH["tiny"]["n_embd"], "with --init scratch: width (heads = width / 64)")
    block_size: int = flag(ARCH["tiny"]["block_size"], "with --init scratch: context length")
    tokenizer: str = flag("gpt2", "with --init scratch: gpt2, or a folder whose meta.json holds one "
                                  "(data/prepare_pretrain.py)")
    steps: int = flag(160, "optimizer steps (default: 160 for --name helpful, 100 for safe)")
    batch_size: int = flag(32, "pairs per micro-batch per process")
    lr: float = flag(2e-4, "peak learning rate")
    warmup: int = flag(10, "linear warmup steps")
    eval_every: int = flag(50, "evaluate held-out pairwise accuracy every this many steps")
    save_every: int = flag(1000, "checkpoint every this many steps (and at the end)")

    def __post_init__(self):
        check_choice(self.name, STEPS, "name")  # each sets the default data, steps and gold scorer
        check_choice(self.preset, PRESETS, "preset")
        check_next(self, RMConfig)


# What --preset sets, for every flag not given (the architecture matters with --init scratch only): GPT-2 sizes
# train on HH-RLHF from a GPT-2-size SFT model on a GPU (pipeline.py --preset real).
GPT2_RECIPE = dict(batch_size=16, steps=1000, lr=1e-5, warmup=50, eval_every=200)
PRESETS = {"tiny": {}, "small": ARCH["small"], "gpt2": {**ARCH["gpt2"], **GPT2_RECIPE},
           "gpt2-medium": {**ARCH["gpt2-medium"], **GPT2_RECIPE}}
# Each default sees each of the model's pairs about once (32 a step): the helpfulness model's ~5,400 (labels and the
# world's pairs) in 160 steps, the safety model's ~2,900 in 100. With fewer, PPO found non-refusals that the safety
# model scored like refusals ("I'm sor in Tinytead.": RESULTS.md, stage 3).
STEPS = {"helpful": 160, "safe": 100}


def defaults(cfg: RMConfig, given: set) -> dict:
    d = {"steps": STEPS[cfg.name], **{k: v for k, v in PRESETS[cfg.preset].items() if k != "n_head"},
         "out": f"out/rm_{cfg.name}"}
    if "data" in given:  # your own pairs: hold out a share of them unless --val-data is given
        d["val_data"] = None
    else:
        # with the world's hand-built pairs of the same kind (reward.world_pairs_file): the safety model reads them for
        # the refusals the SFT model's samples lack; the helpfulness model for pairs whose order does not hang on what
        # the SFT model is unsure of (the oracle's answer against a wrong fact, a refusal, rudeness, rambling), which
        # its own samples' pairs are full of (RESULTS.md, stage 3: reward models)
        d.update(data=with_world_pairs(f"{cfg.labels}/prefs_{cfg.name}_train.jsonl", cfg.name, cfg.labels, cfg.world),
                 val_data=f"{cfg.labels}/prefs_{cfg.name}_val.jsonl")
    return d


def load_tokenizer(cfg: RMConfig) -> Tokenizer:
    """The tokenizer of --init (its weights are not read here), or with --init scratch the one --tokenizer names."""
    if cfg.init != "scratch":
        return Tokenizer.from_dict(load_checkpoint(cfg.init, stages=("sft", "pretrain"), mmap=True)["tokenizer"])
    if cfg.tokenizer == "gpt2":
        return Tokenizer.gpt2()
    meta = Path(cfg.tokenizer) / "meta.json"
    if not meta.exists():
        raise FileNotFoundError(f"--tokenizer: {meta} not found (use gpt2 or a data/prepare_pretrain.py folder)")
    return Tokenizer.from_dict(json.loads(meta.read_text())["tokenizer"])


def build_model(cfg: RMConfig, tok: Tokenizer) -> RewardModel:
    """A reward model on the init checkpoint's trunk, or a fresh one."""
    if cfg.init != "scratch":
        gpt, _, _ = load_model(cfg.init, stages=("sft", "pretrain"))
        return RewardModel.from_gpt(gpt, tok, cfg.likelihood)
    arch = GPTConfig(n_layer=cfg.n_layer, n_head=max(1, cfg.n_embd // 64), n_embd=cfg.n_embd,
                     block_size=cfg.block_size, vocab_size=padded_vocab(tok.n_vocab))
    return RewardModel(arch, tok, cfg.likelihood)


def main(argv=None) -> dict:
    cfg = parse_config(RMConfig, argv, __doc__.split("\n\n")[0], defaults)
    # --- setup
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed, resume_dir=cfg.out if cfg.resume else None)
    # --- data: (prompt, chosen, rejected) token ids, replies cut to the model's context when batched
    train_pairs = load_pairs(cfg.data)
    if cfg.val_data is not None:
        val_pairs = load_pairs(cfg.val_data)
    else:
        train_pairs, val_pairs = split_pairs(train_pairs, cfg.val_fraction, cfg.seed)
    if cfg.val_data is None and val_pairs and not train_pairs:  # few prompts, each with all its pairs held out
        raise DataError(f"{cfg.data}: --val-fraction {cfg.val_fraction} held out every prompt's pairs, leaving none "
                        f"to learn from: give more prompts, or --val-data")
    held_out = cfg.val_data or f"--val-fraction {cfg.val_fraction} of {cfg.data}"
    for source, pairs, use in ((cfg.data, train_pairs, "to learn from"), (held_out, val_pairs, "held out")):
        if not pairs:
            raise DataError(f"{source}: no preference pairs {use}")
    oracle = world_gold(cfg)  # before training: a wrong --world is refused before the time is spent
    tok = load_tokenizer(cfg)
    train, val = encode_pairs(tok, train_pairs), encode_pairs(tok, val_pairs)
    mean_len = float(np.mean([len(p) + (len(c) + len(r)) / 2 for p, c, r in train]))
    # A baseline that reads no meaning: "the longer reply is better" (ties count half). On real data it is often
    # well above 50%, and a reward model is only worth what it adds to it.
    longer = float(np.mean([(len(c) > len(r)) + 0.5 * (len(c) == len(r)) for _, c, r in val]))
    # --- model
    rm = build_model(cfg, tok).to(rt.device)
    T = rm.config.block_size
    batches = PairBatches(train, cfg.batch_size, cfg.grad_accum, rt.rank, rt.world, T, tok.pad, rt.device, cfg.seed,
                          cfg.mismatch)
    if rt.master:
        print(f"reward model '{cfg.name}': {rm.trunk.num_params() / 1e6:.2f}M parameters from {cfg.init}; "
              f"{len(train)} train / {len(val)} held-out pairs, {mean_len:.0f} tokens per conversation on average "
              f"(the longer reply is the chosen one in {longer:.1%} of held-out pairs); {cfg.steps} steps x "
              f"{batches.G} pairs on {rt.device} ({rt.dtype or torch.float32})")

    # --- loop
    def loss_fn(m, batch):
        idx, lengths, starts = batch
        r_chosen, r_rejected = m(idx, lengths, starts=starts).chunk(2)
        loss, acc = bradley_terry_loss(r_chosen, r_rejected, cfg.margin, cfg.center)
        return loss, {"acc": acc.item(), "reward_gap": (r_chosen - r_rejected).mean().item()}

    # Labels from people are noisy: where the pairs carry their true scores (the built-in world's labelling stage),
    # also measure the reward model against the noise-free order, beside how often the labels themselves follow it
    # (the share a perfect reward model would get right of these labels).
    gold = [p.gold for p in val_pairs]
    has_gold = all(g is not None for g in gold) and any(g[0] != g[1] for g in gold)
    labels_right = float(np.mean([g[0] > g[1] for g in gold if g[0] != g[1]])) if has_gold else None
    gold_prompts = [repr(p.messages) for p, g in zip(val_pairs, gold) if has_gold and g[0] != g[1]]

    def eval_fn(m):
        losses, accs, gaps = [], [], []
        for i in range(0, len(val), 64):
            chunk = val[i:i + 64]
            idx, lengths, starts = pad_replies([(p, c) for p, c, _ in chunk] + [(p, r) for p, _, r in chunk], T,
                                               tok.pad, rt.device)
            r_chosen, r_rejected = m(idx, lengths, starts=starts).chunk(2)
            loss, acc = bradley_terry_loss(r_chosen, r_rejected)
            losses.append(loss.item() * len(chunk))
            accs.append(acc.item() * len(chunk))
            gaps += (r_chosen - r_rejected).tolist()
        out = {"val_loss": sum(losses) / len(val), "val_acc": sum(accs) / len(val)}
        if has_gold:  # the reward model's order against the gold order, on the pairs the gold scorer tells apart
            right = [(d > 0) == (g[0] > g[1]) for d, g in zip(gaps, gold) if g[0] != g[1]]
            out.update(val_acc_gold=float(np.mean(right)), val_labels_gold=labels_right, val_pairs_gold=len(right))
            # a prompt's pairs move together, and the held-out pairs come from few prompts: the 95% interval
            out["val_acc_gold_lo"], out["val_acc_gold_hi"] = prompt_interval(right, gold_prompts)
            out["val_prompts_gold"] = len(set(gold_prompts))
        return out

    norm_set = [train_pairs[i] for i in np.random.default_rng([cfg.seed, 10 ** 9]).permutation(len(train_pairs))
                [:cfg.norm_pairs]]

    def checkpoint_fn(m, step, metrics):
        """Normalise the reward on a reference set (both replies of some training pairs), then package."""
        stats = m.normalise([p.messages for p in norm_set] * 2, [p.chosen for p in norm_set] +
                            [p.rejected for p in norm_set], autocast=rt.autocast)
        metrics = {**metrics, **stats, "params": m.trunk.num_params(), "val_acc_longer": longer}
        if m.likelihood_weight is not None:
            metrics["likelihood_weight"] = m.likelihood_weight.item()
        return make_checkpoint("rm", m, tok, config_dict(cfg), step, metrics, reward_name=cfg.name, init=cfg.init,
                               likelihood=cfg.likelihood)

    metrics = train_loop(rt, cfg, rm, get_batch=batches.batch, loss_fn=loss_fn, eval_fn=eval_fn,
                         checkpoint_fn=checkpoint_fn, tokens_per_micro=int(2 * cfg.batch_size * mean_len))
    # --- save: does the reward model rank fresh samples the way the gold scorer does? Added to the checkpoint.
    out = Path(cfg.out)
    if rt.master:
        if oracle is not None:
            t0 = time.perf_counter()
            figs = agreement_with_gold(cfg, oracle, rm, rt)
            metrics = add_metrics(out / "ckpt.pt", {**figs, "agree_time_s": time.perf_counter() - t0}, ("rm",))
        print(f"held-out pairwise accuracy {metrics['val_acc']:.3f} ({len(val)} pairs; 'the longer reply wins': "
              f"{longer:.3f}); checkpoint: {out / 'ckpt.pt'}")
        for k in sorted(k for k in metrics if k.startswith("gold_")):
            print(f"  {k} {metrics[k]:.3f}" if isinstance(metrics[k], float) else f"  {k} {metrics[k]}")
    teardown(rt)
    return metrics


def world_gold(cfg: RMConfig):
    """The --world's gold scorers for the rank-agreement check after training, or None where it does not run."""
    if cfg.world.lower() == "none" or cfg.init == "scratch" or cfg.agree_prompts <= 0:
        return None
    from nanotrain.tinyworld.gold import Gold  # the built-in world's oracle: only this check needs it
    return Gold.load(cfg.world)


def agreement_with_gold(cfg: RMConfig, gold, rm: RewardModel, rt) -> dict:
    """reward.gold_agreement on --agree-prompts held-out prompts of the world's eval files, with the gold scorer of
    the reward model's kind (helpful or safe) and fresh samples of --policy."""
    policy, tok, _ = load_model(cfg.policy or cfg.init, stages=("sft", "pretrain"), device=rt.device)
    files = {}
    for fname in ("eval_prompts", "eval_harmful"):
        path = Path(cfg.world) / f"{fname}.jsonl"
        if path.exists():
            recs = [rec for _, rec in read_jsonl(path, required=("prompt",))]
            files[fname] = [rec["prompt"] for rec in recs[:cfg.agree_prompts]]
    return gold_agreement(rm, policy, tok, gold.score_helpful if cfg.name == "helpful" else gold.score_safe, files,
                          cfg.agree_samples, cfg.agree_tokens, cfg.agree_temperature,
                          torch.Generator(device=rt.device).manual_seed(cfg.seed), rt.autocast)


if __name__ == "__main__":
    run_script(main)
