"""Stage 3: train a reward model on preference pairs (Bradley-Terry), for helpfulness or for safety.

    python train_rm.py --name helpful      # out/sft/ckpt.pt + data/tinyworld/prefs_helpful_*.jsonl -> out/rm_helpful
    python train_rm.py --name safe         # ... prefs_safe_*.jsonl -> out/rm_safe
    python sample.py --init out/sft/ckpt.pt --prompt "What colour is Lena's bicycle?" --best-of 8 \\
        --reward out/rm_helpful/ckpt.pt

    # real data (Anthropic HH-RLHF test splits, 10% of the prompts held out), a tiny model from scratch on a CPU:
    python train_rm.py --init scratch --tokenizer gpt2 --data ../shared/data/hh_rlhf --out /tmp/rm_hh
    # the same on GPUs from a GPT-2-sized SFT checkpoint (GPT-2 tokenizer), under DDP:
    torchrun --nproc_per_node=8 train_rm.py --init out/sft/ckpt.pt --data ../shared/data/hh_rlhf --out out/rm_hh \\
        --steps 600 --batch-size 8 --grad-accum 2 --lr 1e-5 --eval-every 100

Skeleton shared by every stage script: setup -> data -> model -> loop -> save. This stage's own parts: each batch is
B chosen + B rejected conversations in one forward pass, the loss is nanotrain.reward.bradley_terry_loss, the
held-out figure is pairwise accuracy (does the chosen reply get the higher reward?). After training, every
checkpoint stores the reward normalisation, and the script measures how well the reward model ranks fresh
samples of the init policy on held-out prompts the way the gold scorer does (nanotrain/tinyworld/gold.py), which is what
best-of-N and PPO rely on, and stores that in the checkpoint's metrics too.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanotrain.checkpoint import atomic_save, load_model, make_checkpoint
from nanotrain.cli import config_dict, flag, parse_config
from nanotrain.errors import CheckpointError, DataError, run_script
from nanotrain.gpt import GPT, PRESETS, GPTConfig, padded_vocab
from nanotrain.pref_data import load_pairs, split_pairs
from nanotrain.reward import (RewardModel, bradley_terry_loss, pairwise_agreement, reply_row, right_pad,
                              spearman)
from nanotrain.runtime import setup_runtime, teardown
from nanotrain.sampling import generate_replies
from nanotrain.tokenizer import Tokenizer
from nanotrain.trainer import TrainConfig, train_loop


@dataclass
class RMConfig(TrainConfig):
    init: str = flag("out/sft/ckpt.pt", "sft or pretrain checkpoint to start from | scratch (a fresh --preset "
                                        "model, --tokenizer)")
    name: str = flag("helpful", "helpful | safe: picks the default data, output folder and gold scorer")
    data: str = flag("", "preference data: file(s) or folder, {prompt,chosen,rejected} / HH-RLHF / OASST trees "
                         "(default: data/tinyworld/prefs_NAME_train.jsonl)")
    val_data: str = flag("", "held-out pairs (default: prefs_NAME_val.jsonl, or --val-fraction of --data)")
    val_fraction: float = flag(0.1, "share of --data's prompts held out when --val-data is not given")
    world: str = flag("data/tinyworld", "world with gold scorers and held-out prompts for the rank-agreement "
                                        "check after training ('none': skip it)")
    out: str = flag("", "output folder (default: out/rm_NAME)")
    margin: float = flag(0.0, "Bradley-Terry margin m in -log sigma(r_c - r_r - m) (LLaMA 2 eq. 2)")
    center: float = flag(0.01, "weight of the reward-centring term c * (r_c + r_r)^2")
    likelihood: bool = flag(True, "add w * the reply's mean log-likelihood under the trunk's language-model head "
                                  "to the reward (w learned; nanotrain/reward.py); --no-likelihood: the head alone")
    mismatch: float = flag(0.25, "share of pairs whose rejected reply becomes the chosen reply to another prompt")
    norm_pairs: int = flag(256, "training pairs whose replies set the reward normalisation (mean, std)")
    agree_prompts: int = flag(32, "held-out prompts per eval file for the rank agreement with the gold scorer")
    agree_samples: int = flag(4, "fresh samples of the init policy per prompt")
    agree_tokens: int = flag(48, "max new tokens per sample")
    agree_temperature: float = flag(0.7, "sampling temperature of those samples")
    preset: str = flag("tiny", f"model size with --init scratch: {' | '.join(PRESETS)}")
    n_layer: int = flag(0, "with --init scratch: override the preset's layers (0: keep)")
    n_embd: int = flag(0, "with --init scratch: override the preset's width (0: keep; heads = width / 64)")
    block_size: int = flag(0, "with --init scratch: context length (0: the preset's)")
    tokenizer: str = flag("gpt2", "with --init scratch: gpt2, or a folder whose meta.json holds one "
                                  "(data/prepare_pretrain.py)")
    steps: int = flag(0, "optimizer steps (0: 80 for --name helpful, 60 for safe; with a safety RM of 40 steps PPO "
                         "found non-refusals it scored like refusals: harmful-prompt refusals 97% -> 75%)")
    batch_size: int = flag(32, "pairs per micro-batch per process")
    lr: float = flag(2e-4, "peak learning rate")
    warmup: int = flag(10, "linear warmup steps")
    eval_every: int = flag(50, "evaluate held-out pairwise accuracy every this many steps")
    save_every: int = flag(1000, "checkpoint every this many steps (and at the end)")


def build_model(cfg: RMConfig) -> tuple[RewardModel, Tokenizer]:
    """A reward model on the init checkpoint's trunk (its tokenizer comes along), or a fresh one."""
    if cfg.init != "scratch":
        gpt, tok, _ = load_model(cfg.init, stages=("sft", "pretrain"))
        return RewardModel.from_gpt(gpt, tok, cfg.likelihood), tok
    if cfg.preset not in PRESETS:
        raise CheckpointError(f"--preset must be one of {list(PRESETS)}, not {cfg.preset!r}")
    if cfg.tokenizer == "gpt2":
        tok = Tokenizer.gpt2()
    else:
        meta = Path(cfg.tokenizer) / "meta.json"
        if not meta.exists():
            raise FileNotFoundError(f"--tokenizer: {meta} not found (use gpt2 or a data/prepare_pretrain.py folder)")
        tok = Tokenizer.from_dict(json.loads(meta.read_text())["tokenizer"])
    arch = dict(PRESETS[cfg.preset])
    arch.update({k: getattr(cfg, k) for k in ("n_layer", "n_embd", "block_size") if getattr(cfg, k)})
    if cfg.n_embd:
        arch["n_head"] = max(1, cfg.n_embd // 64)
    return RewardModel(GPTConfig(**arch, vocab_size=padded_vocab(tok.n_vocab)), tok, cfg.likelihood), tok


def main(argv=None) -> dict:
    cfg = parse_config(RMConfig, argv, description=__doc__.split("\n\n")[0])
    if cfg.name not in ("helpful", "safe"):
        raise CheckpointError(f"--name must be helpful or safe, not {cfg.name!r}")
    cfg = dataclasses.replace(cfg, out=cfg.out or f"out/rm_{cfg.name}",
                              steps=cfg.steps or {"helpful": 80, "safe": 60}[cfg.name])
    # --- setup
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    # --- data
    world = Path(cfg.world)
    if cfg.data:
        train_pairs = load_pairs(cfg.data)
        if cfg.val_data:
            val_pairs = load_pairs(cfg.val_data)
        else:
            train_pairs, val_pairs = split_pairs(train_pairs, cfg.val_fraction, cfg.seed)
    elif cfg.world.lower() == "none":
        raise DataError("--world none has no built-in preference pairs: give --data (and --val-data or "
                        "--val-fraction)")
    else:
        train_pairs = load_pairs(world / f"prefs_{cfg.name}_train.jsonl")
        val_pairs = load_pairs(cfg.val_data or world / f"prefs_{cfg.name}_val.jsonl")
    # --- model
    rm, tok = build_model(cfg)
    rm = rm.to(rt.device)
    T = rm.config.block_size

    def encode(pairs):
        """Each pair as (prompt ids ending with the assistant marker, chosen reply ids, rejected reply ids); a
        row is prompt + reply, cut from the left to the context (the same ids as reward.encode_reply)."""
        return [(tok.render_prompt(p.messages), tok.encode_message(p.chosen) + [tok.end],
                 tok.encode_message(p.rejected) + [tok.end])
                for p in pairs]

    def batch_of(rows):
        """Right-padded ids, lengths and reply start columns of [(prompt ids, reply ids)]."""
        rows = [reply_row(p, r, T) for p, r in rows]
        idx, lengths = right_pad([ids for ids, _ in rows], tok.pad, rt.device)
        return idx, lengths, torch.tensor([start for _, start in rows], device=rt.device)
    train, val = encode(train_pairs), encode(val_pairs)
    mean_len = float(np.mean([len(p) + (len(c) + len(r)) / 2 for p, c, r in train]))
    # A baseline that reads no meaning: "the longer reply is better" (ties count half). On real data it is often
    # well above 50%, and a reward model is only worth what it adds to it.
    longer = float(np.mean([(len(c) > len(r)) + 0.5 * (len(c) == len(r)) for _, c, r in val]))
    if rt.master:
        print(f"reward model '{cfg.name}': {rm.trunk.num_params() / 1e6:.2f}M parameters from {cfg.init}; "
              f"{len(train)} train / {len(val)} held-out pairs, {mean_len:.0f} tokens per conversation on average "
              f"(the longer reply is the chosen one in {longer:.1%} of held-out pairs); {cfg.steps} steps x "
              f"{cfg.batch_size * cfg.grad_accum * rt.world} pairs on {rt.device} ({rt.dtype or torch.float32})")

    G = cfg.batch_size * cfg.grad_accum * rt.world  # pairs per optimizer step, all ranks together
    if len(train) < G:
        raise DataError(f"{len(train)} training pairs is fewer than one batch of {G}: lower --batch-size")
    n_batches = len(train) // G  # per epoch; each epoch leaves out a different random remainder

    @functools.lru_cache(maxsize=2)
    def epoch_batches(epoch: int) -> list[np.ndarray]:
        """This epoch's global batches, length-grouped: replies run from ~10 to ~180 tokens and a batch is padded to
        its longest, so random batches spend most of their compute on pads. Sorting windows of 16 batches by
        length, cutting them into batches and shuffling the batches (as Hugging Face's group_by_length) keeps
        the order random and roughly triples the useful work per step."""
        rng = np.random.default_rng([cfg.seed, epoch])
        perm = rng.permutation(len(train))[:n_batches * G]
        size = np.array([len(p) + max(len(c), len(r)) for p, c, r in train])
        grouped = np.concatenate([w[np.argsort(size[w], kind="stable")]
                                  for w in np.split(perm, range(16 * G, len(perm), 16 * G))])
        batches = np.split(grouped, n_batches)
        return [batches[i] for i in rng.permutation(n_batches)]

    def get_batch(step, micro):
        """This rank's micro-batch: B chosen rows then B rejected rows, a pure function of (step, micro) so a resumed
        run sees the same data. With --mismatch, some pairs' rejected reply is swapped for the chosen reply to
        another prompt in the batch: a reply written for a different request is worse than one written for this
        one. Without such pairs a reward model can often rank replies without reading the prompt at all (the
        built-in safety pairs: refusals there are either specific, and good, or generic, and bad)."""
        batch = epoch_batches(step // n_batches)[step % n_batches]  # the global batch; this rank takes a slice
        swap = np.random.default_rng([cfg.seed, step]).random(G) < cfg.mismatch
        first = rt.rank * cfg.batch_size * cfg.grad_accum + micro * cfg.batch_size
        chosen, rejected = [], []
        for k in range(first, first + cfg.batch_size):
            prompt, good, bad = train[batch[k]]
            other = train[batch[(k + 1) % G]]
            if swap[k] and other[0] != prompt:
                bad = other[1]
            chosen.append((prompt, good))
            rejected.append((prompt, bad))
        return batch_of(chosen + rejected)

    # --- loop
    def loss_fn(m, batch):
        idx, lengths, starts = batch
        r = m(idx, lengths, starts=starts)
        r_chosen, r_rejected = r.chunk(2)
        loss, acc = bradley_terry_loss(r_chosen, r_rejected, cfg.margin, cfg.center)
        return loss, {"acc": acc.item(), "reward_gap": (r_chosen - r_rejected).mean().item()}

    def eval_fn(m):
        losses, accs = [], []
        for i in range(0, len(val), 64):
            chunk = val[i:i + 64]
            idx, lengths, starts = batch_of([(p, c) for p, c, _ in chunk] + [(p, r) for p, _, r in chunk])
            r_chosen, r_rejected = m(idx, lengths, starts=starts).chunk(2)
            loss, acc = bradley_terry_loss(r_chosen, r_rejected)
            losses.append(loss.item() * len(chunk))
            accs.append(acc.item() * len(chunk))
        return {"val_loss": sum(losses) / len(val), "val_acc": sum(accs) / len(val)}

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

    metrics = train_loop(rt, cfg, rm, get_batch=get_batch, loss_fn=loss_fn, eval_fn=eval_fn,
                         checkpoint_fn=checkpoint_fn, tokens_per_micro=int(2 * cfg.batch_size * mean_len))
    # --- report: does the reward model rank fresh samples the way the gold scorer does?
    if rt.master:
        metrics.update(reward_mean=float(rm.reward_mean), reward_std=float(rm.reward_std), val_acc_longer=longer)
        if cfg.world.lower() != "none" and cfg.init != "scratch" and cfg.agree_prompts > 0:
            t0 = time.perf_counter()
            metrics.update(gold_agreement(cfg, rm, rt))
            metrics["agree_time_s"] = time.perf_counter() - t0
            atomic_save(make_checkpoint("rm", rm, tok, config_dict(cfg), cfg.steps, metrics, reward_name=cfg.name,
                                        init=cfg.init, likelihood=cfg.likelihood), Path(cfg.out) / "ckpt.pt")
        print(f"held-out pairwise accuracy {metrics['val_acc']:.3f} ({len(val)} pairs; 'the longer reply wins': "
              f"{longer:.3f}); checkpoint: {Path(cfg.out) / 'ckpt.pt'}")
        for k in sorted(k for k in metrics if k.startswith("gold_")):
            print(f"  {k} {metrics[k]:.3f}" if isinstance(metrics[k], float) else f"  {k} {metrics[k]}")
    teardown(rt)
    return metrics


def gold_agreement(cfg: RMConfig, rm: RewardModel, rt) -> dict:
    """Sample ``agree_samples`` replies of the init policy to held-out prompts, score them with the reward model and
    the gold scorer of the same kind (helpful or safe), and compare the two rankings: Spearman over all replies,
    and pairwise agreement within each prompt (the choice best-of-N makes)."""
    from nanotrain.tinyworld.gold import Gold  # the built-in world's oracle: only this check needs it

    gold = Gold.load(cfg.world)
    gold_score = gold.score_helpful if cfg.name == "helpful" else gold.score_safe
    policy, tok, _ = load_model(cfg.init, stages=("sft", "pretrain"), device=rt.device)
    gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    out, pooled_rm, pooled_gold = {}, [], []
    for fname in ("eval_prompts", "eval_harmful"):
        path = Path(cfg.world) / f"{fname}.jsonl"
        if not path.exists():
            continue
        prompts = [json.loads(ln)["prompt"] for ln in path.read_text().splitlines()[:cfg.agree_prompts]]
        rep = [p for p in prompts for _ in range(cfg.agree_samples)]
        texts = [r.text for r in generate_replies(policy, tok, rep, cfg.agree_tokens, cfg.agree_temperature,
                                                  generator=gen, autocast=rt.autocast)]
        r_model = rm.score(rep, texts, autocast=rt.autocast).tolist()
        r_gold = [gold_score(p, t) for p, t in zip(rep, texts)]
        k = cfg.agree_samples
        groups = [(r_model[i:i + k], r_gold[i:i + k]) for i in range(0, len(rep), k)]
        agree, n_pairs = pairwise_agreement(groups)
        out.update({f"gold_spearman_{fname}": spearman(r_model, r_gold), f"gold_pairwise_{fname}": agree,
                    f"gold_pairs_{fname}": n_pairs})
        pooled_rm += r_model
        pooled_gold += r_gold
    if pooled_rm:
        out["gold_spearman"] = spearman(pooled_rm, pooled_gold)
    return out


if __name__ == "__main__":
    run_script(main)
