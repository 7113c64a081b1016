"""Stage 2: supervised instruction fine-tuning (SFT) of a pretrained GPT into a chat model, fully or with LoRA.

    python train_sft.py                                   # out/pretrain/ckpt.pt + tinyworld SFT data -> out/sft/ckpt.pt
    python train_sft.py --lora-rank 8 --out out/sft_lora  # LoRA (Hu et al. 2021): 3.8% of the weights train
    python train_sft.py --reinit --out out/sft_scratch    # control: same data and steps from random weights
    python chat.py --init out/sft/ckpt.pt

    # real data, GPT-2 size, one GPU: GPT-2 124M weights from Hugging Face, LIMA (or Dolly, OASST, Alpaca) conversations
    python train_sft.py --preset gpt2 --init hf:gpt2/pytorch_model.bin --data ../shared/data/lima/lima.json \
        --val-data ../shared/data/oasst_trees/en_100_tree.jsonl --out out/sft_gpt2
    # N GPUs: torchrun --nproc_per_node=N train_sft.py ... --grad-accum 4/N (the preset's global batch: 32 rows)

Same skeleton as train_pretrain.py (setup -> data -> model -> loop -> save); what is this stage's own: conversations
rendered with the chat template, and cross-entropy only on the tokens the assistant must produce (its replies and
their <|end|>; prompt, markers and padding get target -1). LoRA merges its update into the weights at the end, so the
checkpoint is an ordinary GPT; the adapter alone is saved beside it as adapter.pt.

After training, the master process evaluates on held-out prompts and stores the figures in the checkpoint's metrics:
val_loss, wellformed (and wellformed_init, the same for the model before SFT), and on the built-in world helpful,
acc_b / chance_b (questions about people the SFT data never mentions: only pretraining can have taught those facts;
acc_b_fact also counts the right fact stated about the wrong name)
and acc_zh / chance_zh (questions in Chinese after English-only SFT: cross-lingual transfer).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanotrain.chat_data import SFTBatches, encode_conversations, load_conversations, mean_loss, prompts_and_replies
from nanotrain.checkpoint import (add_metrics, check_tokenizer, load_checkpoint,
                                  make_checkpoint)
from nanotrain.cli import config_dict, flag, parse_config
from nanotrain.data import TokenBin, token_meta
from nanotrain.errors import CheckpointError, DataError, run_script
from nanotrain.evaluate import answer, evaluate_chat, wellformed_rate
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.hf import hf_info, load_hf_gpt2
from nanotrain.lora import DEFAULT_TARGETS, adapt_token_matrix, count_parameters, inject_lora, merge_lora, \
    merged_state_dict, save_adapter, trainable_summary
from nanotrain.runtime import setup_runtime, teardown
from nanotrain.tokenizer import Tokenizer
from nanotrain.trainer import TrainConfig, train_loop


@dataclass
class SFTConfig(TrainConfig):
    init: str = flag("out/pretrain/ckpt.pt", "checkpoint to fine-tune (pretrain or sft) | hf:PATH (a Hugging Face "
                                             "GPT-2 folder, model.safetensors or pytorch_model.bin: GPT-2's or "
                                             "export.py's)")
    data: str = flag("data/tinyworld/sft_train.jsonl", "training conversations (JSONL or JSON array; formats in "
                                                       "nanotrain/chat_data.py)")
    val_data: str = flag("data/tinyworld/sft_val.jsonl", "held-out conversations (val loss, well-formed rate)")
    format: str = flag("auto", "auto | messages | alpaca | lima | dolly | oasst | sharegpt | prompt_completion")
    world: str = flag("auto", "world folder for gold-scored evaluation: auto (the --data folder if it holds "
                              "world.json) | PATH | none")
    out: str = flag("out/sft", "output folder")
    preset: str = flag("tiny", "run size: tiny (CPU, built-in world) | gpt2 (GPT-2 size on a GPU, real data); sets "
                               "the training recipe of every flag not given")
    reinit: bool = flag(False, "control run: keep the init checkpoint's architecture and tokenizer but start from "
                               "random weights (what pretraining contributed = the difference)")
    lora_rank: int = flag(0, "LoRA rank r (0: full fine-tuning)")
    lora_alpha: float = flag(16.0, "LoRA alpha; the update is scaled by alpha / r")
    lora_dropout: float = flag(0.0, "dropout on the LoRA branch's input")
    lora_targets: str = flag(DEFAULT_TARGETS, "regex on module names of the nn.Linear layers to adapt")
    rslora: bool = flag(False, "scale by alpha / sqrt(r) (rsLoRA) instead of alpha / r")
    lora_token_rows: bool = flag(True, "with LoRA, also train the embedding rows of the special tokens (chat markers "
                                       "and <|end|> are new to the model; see nanotrain/lora.py)")
    lora_embedding: bool = flag(True, "with LoRA, also give the tied token matrix (embedding and LM head) a rank-r "
                                      "update (the blocks' LoRA alone fits the SFT data far worse; nanotrain/lora.py)")
    embeddings: str = flag("seen", "full fine-tuning: seen (freeze the rows of tokens the SFT data never contains, "
                                   "unless pretraining never trained them either) | all (train the whole token "
                                   "matrix) | new (also freeze the pretrained rows of tokens the SFT data contains); "
                                   "see main(). With --reinit no row was pretrained: all of them train")
    pack: bool = flag(True, "pack conversations end to end into full rows (--no-pack: one per row, right-padded)")
    max_len: int | None = flag(None, "longest conversation in tokens (none: the model's block size); longer ones lose "
                                     "whole turns from the end, or are skipped if their first reply does not fit")
    # 900 on the built-in world: after 300 the model was still underfit (its held-out loss kept falling), unsure of
    # facts it had seen, and the reward models, which start from it, could not order its answers by those facts
    steps: int = flag(900, "optimizer steps (default: the preset's, for full fine-tuning or LoRA)")
    batch_size: int = flag(8, "rows per micro-batch per process (packed rows or conversations)")
    # 1e-3 on the built-in world: at 5e-4 (and 300 steps) the model stayed underfit (a higher held-out loss), and it
    # took more harmless look-alikes ("What does Rex the dog need to stay healthy?") for harmful requests
    lr: float = flag(1e-3, "peak learning rate (default: the preset's, for full fine-tuning or LoRA; LoRA wants ~10x "
                           "more: its few weights start at zero)")
    warmup: int = flag(15, "linear warmup steps")
    weight_decay: float = flag(0.0, "AdamW weight decay on weight matrices")
    eval_every: int = flag(100, "held-out loss every this many steps")
    log_every: int = flag(10, "append to metrics.jsonl every this many steps")
    save_every: int = flag(150, "checkpoint every this many steps")
    eval_limit: int = flag(150, "prompts per held-out eval file for the final generation-based figures (0: skip)")
    max_new_tokens: int = flag(64, "reply length limit for the final evaluation")
    replay_rows: int = flag(1, "rows of pretraining text replayed per micro-batch beside the SFT rows, for their "
                               "next-token loss, so SFT keeps what pretraining stored (default 0 unless --init is a "
                               "nanotrain pretrain checkpoint and not --reinit; 0: none)")
    replay: str = flag("auto", "token folder to replay (data/prepare_pretrain.py's output): auto (the one the --init "
                               "checkpoint was pretrained on) | PATH")
    replay_weight: float = flag(1.0, "weight of the replayed text's loss beside the SFT loss")


# What --preset sets, for every flag not given. "gpt2": fine-tune GPT-2 124M (or a GPT-2-size pretrain checkpoint) on a
# real instruction set such as LIMA on a GPU: LIMA's recipe (small lr, several epochs over 1k examples), packed
# 1024-token rows, 32 rows per optimizer step (per process: adjust --grad-accum for the number of GPUs).
PRESETS = {
    "tiny": {},
    "gpt2": dict(batch_size=8, grad_accum=4, warmup=30, eval_every=50, save_every=100, eval_limit=100,
                 max_new_tokens=256, steps=300, lr=2e-5),
}
# LoRA's own steps and peak learning rate per preset: its update starts at zero and trains 4% of the weights, so it
# wants a ~10x higher rate; on the built-in world 600 steps (what LoRA reaches beside full fine-tuning: RESULTS.md,
# stage 2).
LORA = {"tiny": dict(steps=600, lr=1e-2), "gpt2": dict(steps=300, lr=2e-4)}


def defaults(cfg: SFTConfig, given: set) -> dict:
    if cfg.preset not in PRESETS:
        raise CheckpointError(f"--preset must be one of {list(PRESETS)}, not {cfg.preset!r}")
    d = {**PRESETS[cfg.preset], **(LORA[cfg.preset] if cfg.lora_rank > 0 else {})}
    # Replay keeps what pretraining stored (facts about people SFT never names); there is something to replay only
    # from a nanotrain pretrain checkpoint (it records its token folder), and nothing to keep from random weights.
    if cfg.reinit or cfg.init.startswith("hf:") or init_info(cfg)[2] is None:
        d["replay_rows"] = 0
    return d


def init_info(cfg: SFTConfig) -> tuple[Tokenizer, int, Path | None]:
    """What the data needs to know of the model before it is built: its tokenizer, its context length, and the token
    folder (data/prepare_pretrain.py's output) it was pretrained on when --init is a nanotrain pretrain checkpoint
    (None for GPT-2's released weights or an sft one). The weights are not read here (memory-mapped)."""
    if cfg.init.startswith("hf:"):
        return *hf_info(cfg.init[3:]), None
    ckpt = load_checkpoint(cfg.init, stages=("pretrain", "sft"), mmap=True)
    pretrained_on = Path(ckpt["data"]) if ckpt["stage"] == "pretrain" and "data" in ckpt else None
    return Tokenizer.from_dict(ckpt["tokenizer"]), ckpt["model_config"]["block_size"], pretrained_on


def build_model(cfg: SFTConfig, tok: Tokenizer) -> GPT:
    """The model to fine-tune: --init's weights, or with --reinit its architecture from random weights."""
    if cfg.init.startswith("hf:"):
        model = load_hf_gpt2(cfg.init[3:])[0]
    else:
        ckpt = load_checkpoint(cfg.init, stages=("pretrain", "sft"))
        model = GPT(GPTConfig.from_dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    if cfg.reinit:  # same architecture, fresh GPT-2 initialisation (seeded by setup_runtime)
        model = GPT(model.config)
    return model


def world_dir(cfg: SFTConfig) -> Path | None:
    if cfg.world == "none":
        return None
    path = Path(cfg.data).parent if cfg.world == "auto" else Path(cfg.world)
    if (path / "world.json").exists():
        return path
    if cfg.world != "auto":
        raise FileNotFoundError(f"--world {cfg.world}: no world.json there (use --world none to skip gold figures)")
    return None


def token_folder(folder: Path | None, tok: Tokenizer, init: str, flag_name: str) -> Path:
    """``folder``, checked: present, and tokenized with the model's own tokenizer."""
    if folder is None:
        raise CheckpointError(f"{flag_name} needs the token folder that {init} was pretrained on, and it names none "
                              f"(a nanotrain pretrain checkpoint records it; GPT-2's weights and sft ones do not)")
    check_tokenizer(tok.to_dict(), token_meta(folder)["tokenizer"], init, folder)
    return folder


def trainable_token_rows(cfg: SFTConfig, tok: Tokenizer, pretrained_on: Path | None, train_ex) -> list[int]:
    """Rows of the token matrix that SFT may change; the others keep what pretraining stored in them.
    new: the special tokens and the rows pretraining never trained, of tokens that never occur in its data (the
    built-in world never says "sorry", so its pieces are still at their random init; GPT-2's released weights: the
    special tokens only, WebText trained every other row). seen: those, and every token the SFT conversations
    contain. A pretrained row the SFT data never shows would only ever be pushed down (never a target, never an
    input), which on the built-in world is what made the model stop naming split-B people."""
    rows = set(tok.special_ids.values())
    if cfg.embeddings == "seen":
        rows = rows.union(*(ids for ids, _ in train_ex))
    if cfg.init.startswith("hf:"):
        return sorted(rows)
    folder = token_folder(pretrained_on, tok, cfg.init, f"--embeddings {cfg.embeddings} (--embeddings all needs none)")
    counts = np.bincount(np.memmap(folder / "train.bin", dtype=np.uint16, mode="r"), minlength=tok.n_vocab)
    return sorted(rows | set(np.flatnonzero(counts[:tok.n_vocab] == 0).tolist()))


def replay_batches(cfg: SFTConfig, tok: Tokenizer, pretrained_on: Path | None, rt,
                   block_size: int) -> TokenBin | None:
    """Pretraining windows of ``block_size`` tokens, ``--replay-rows`` per micro-batch, or None when not replaying.
    Like SFTBatches, a pure function of (seed, step, micro), each DDP rank taking its own slice."""
    if cfg.replay_rows <= 0:
        return None
    folder = pretrained_on if cfg.replay == "auto" else Path(cfg.replay)
    folder = token_folder(folder, tok, cfg.init, "--replay-rows")
    return TokenBin(folder / "train.bin", block_size, cfg.replay_rows, rt.device, cfg.seed, rt.rank, rt.world,
                    cfg.grad_accum)


def held_out_figures(model, tok, cfg, val_prompts, world, gold, autocast, only_wellformed=False) -> dict:
    """Generation-based figures. With a world: evaluate.evaluate_chat on its held-out eval files; without one (real
    data): the well-formed rate of greedy answers to the validation prompts."""
    if cfg.eval_limit <= 0:
        return {}
    if world is None:
        replies = answer(model, tok, val_prompts[:cfg.eval_limit], cfg.max_new_tokens, autocast=autocast)
        return {"wellformed": wellformed_rate(replies)}
    figures = ("wellformed",) if only_wellformed else ("wellformed", "helpful", "acc_b", "acc_zh")
    return evaluate_chat(model, tok, world, cfg.eval_limit, figures, cfg.max_new_tokens, autocast=autocast,
                         gold=gold)


def main(argv=None) -> dict:
    cfg = parse_config(SFTConfig, argv, __doc__.split("\n\n")[0], defaults)
    # --- setup
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed, resume_dir=cfg.out if cfg.resume else None)
    # --- data: conversations in the init model's chat template, at most its context long
    tok, block_size, pretrained_on = init_info(cfg)
    max_len = min(cfg.max_len or block_size, block_size)
    train_convs = load_conversations(cfg.data, cfg.format)
    val_convs = load_conversations(cfg.val_data, "auto")
    train_ex, skipped = encode_conversations(train_convs, tok, max_len + 1)  # +1: inputs and targets are shifted
    val_ex, val_skipped = encode_conversations(val_convs, tok, max_len + 1)
    if not val_ex:
        raise DataError(f"{cfg.val_data}: no conversation fits in {max_len} tokens")
    train = SFTBatches(train_ex, cfg.batch_size, tok.pad, max_len if cfg.pack else None, rt.device, cfg.seed,
                       rt.rank, rt.world, cfg.grad_accum)
    val = SFTBatches(val_ex, cfg.batch_size, tok.pad, None, rt.device, cfg.seed)
    replay = replay_batches(cfg, tok, pretrained_on, rt, block_size)
    world = world_dir(cfg)
    gold = None
    if world is not None and rt.master and cfg.eval_limit > 0:
        from nanotrain.tinyworld.gold import Gold
        gold = Gold.load(world)
    val_prompts, _ = prompts_and_replies(val_convs)
    # --- model
    model = build_model(cfg, tok).to(rt.device)
    metrics0 = {}  # before training: how often does the initial model end its turn? (pretraining never saw <|end|>)
    if rt.master:
        fig0 = held_out_figures(model, tok, cfg, val_prompts, world, gold, rt.autocast, only_wellformed=True)
        metrics0 = {f"{k}_init": v for k, v in fig0.items()}
    flops = model.flops_per_token(max_len)
    # Which weights train. SFT conversations name only split-A people, and AdamW pushes down the output row of every
    # token they never contain at every step; with the tied embedding that row is also the token's input, so with
    # the whole token matrix trainable the model stops naming anyone SFT never showed (RESULTS.md, stage 2).
    # --embeddings seen (the default) freezes those rows; new also freezes the pretrained rows SFT does use.
    if cfg.embeddings not in ("all", "new", "seen"):
        raise ValueError(f"--embeddings must be all, new or seen, not {cfg.embeddings!r}")
    frozen_rows = cfg.embeddings != "all" and not cfg.reinit and cfg.lora_rank == 0  # LoRA: --lora-token-rows
    if cfg.embeddings == "new" and cfg.lora_rank > 0:
        raise ValueError("--embeddings new is for full fine-tuning; LoRA freezes the token matrix itself (see "
                         "--lora-token-rows and --no-lora-embedding)")
    if cfg.lora_rank > 0:
        rows = sorted(tok.special_ids.values()) if cfg.lora_token_rows else None
        inject_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.rslora, cfg.lora_targets, rows,
                    cfg.lora_embedding)
    elif frozen_rows:
        trainable_rows = trainable_token_rows(cfg, tok, pretrained_on, train_ex)
        adapt_token_matrix(model, trainable_rows)
    wrapped = cfg.lora_rank > 0 or frozen_rows
    n_train, n_total = count_parameters(model)
    if rt.master:
        print(f"model: {model.config} from {cfg.init}{' (re-initialised)' if cfg.reinit else ''}; "
              f"{'LoRA r=%d' % cfg.lora_rank if cfg.lora_rank else 'full fine-tuning'}"
              f"{', token matrix frozen except %d rows' % len(trainable_rows) if frozen_rows else ''}; "
              f"{trainable_summary(model)}")
        print(f"data: {len(train_ex)} train conversations ({cfg.data}; {skipped} skipped: first reply longer than "
              f"{max_len} tokens), {len(val_ex)} val ({val_skipped} skipped); "
              f"{'packed into %d rows' % train.n if cfg.pack else 'padded'}; {cfg.steps} steps x "
              f"{cfg.batch_size * cfg.grad_accum * rt.world} rows on {rt.device} ({rt.dtype or torch.float32})")
        if replay:
            print(f"replay: {cfg.replay_rows} rows of pretraining text per micro-batch from {replay.path}, loss "
                  f"weight {cfg.replay_weight}")

    # --- loop
    def get_batch(step, micro):
        return train.batch(step, micro) + (replay.batch(step, micro) if replay else ())

    def loss_fn(m, batch):
        x, y, weight, *text = batch  # y is -1 except on assistant tokens: the loss is over those only
        sft = m(x, y)[1]
        if not text:
            return sft * weight, {}  # weight: this micro-batch's share of the step's tokens (chat_data.SFTBatches)
        lm = m(*text)[1]  # replay: next-token loss on every token of a pretraining window
        return sft * weight + cfg.replay_weight * lm, {"sft_loss": sft.item() * weight, "replay_loss": lm.item()}

    def eval_fn(m):
        return {"val_loss": mean_loss(m, val.eval_batches())}

    def checkpoint_fn(m, step, metrics):
        metrics = {**metrics0, **metrics, "params_trainable": n_train, "params_total": n_total,
                   "trainable_frac": n_train / n_total}
        ckpt = make_checkpoint("sft", m, tok, config_dict(cfg), step, metrics, init=cfg.init, data=cfg.data,
                               lora=cfg.lora_rank > 0)
        if wrapped:  # an ordinary GPT state dict with B A and row offsets folded in: loads like any other checkpoint
            ckpt["model"] = merged_state_dict(m)
        return ckpt

    metrics = train_loop(rt, cfg, model, get_batch=get_batch, loss_fn=loss_fn, eval_fn=eval_fn,
                         checkpoint_fn=checkpoint_fn, tokens_per_micro=int(cfg.batch_size * train.tokens_per_row),
                         flops_per_token=flops)
    # --- save: the held-out figures, added to the checkpoint training wrote
    out = Path(cfg.out)
    if rt.master:
        if cfg.lora_rank > 0:
            save_adapter(model, out / "adapter.pt", init=cfg.init)
        if wrapped:
            merge_lora(model)  # same function, no extra matmuls while generating
        figs = held_out_figures(model, tok, cfg, val_prompts, world, gold, rt.autocast)
        metrics = add_metrics(out / "ckpt.pt", figs, stages=("sft",))
        report = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("val_loss", "wellformed_init", "wellformed", "helpful",
                                                               "acc_b", "acc_b_fact", "chance_b", "acc_zh",
                                                               "chance_zh")
                           if k in metrics)
        print(f"{report}; checkpoint: {out / 'ckpt.pt'}")
    teardown(rt)
    return metrics


if __name__ == "__main__":
    run_script(main)
