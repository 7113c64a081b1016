"""Stage 1: pretrain a GPT on a token stream (next-token prediction).

    python data/tinyworld.py && python data/prepare_pretrain.py     # the built-in world, tokenized
    python train_pretrain.py                                        # ~4 minutes on a 2-core CPU -> out/pretrain/ckpt.pt
    python sample.py --prompt "Lena lives in"

    torchrun --nproc_per_node=8 train_pretrain.py --preset gpt2 --data data/fineweb --batch-size 32 --grad-accum 2

Skeleton shared by every stage script: setup -> data -> model -> loop -> save. Only the data and the loss are this
stage's own: random windows of the corpus, cross-entropy on every next token.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.checkpoint import check_tokenizer, load_checkpoint, make_checkpoint
from nanotrain.cli import config_dict, flag, parse_config
from nanotrain.data import TokenBin, token_meta
from nanotrain.errors import CheckpointError, run_script
from nanotrain.gpt import GPT, PRESETS as ARCH, GPTConfig, padded_vocab
from nanotrain.hf import hf_info, load_hf_gpt2
from nanotrain.runtime import setup_runtime, teardown
from nanotrain.tokenizer import Tokenizer
from nanotrain.trainer import TrainConfig, train_loop


@dataclass
class PretrainConfig(TrainConfig):
    init: str = flag("scratch", "scratch | a nanotrain checkpoint to continue | hf:PATH (a Hugging Face GPT-2 folder, "
                                "model.safetensors or pytorch_model.bin; the data must use its tokenizer)")
    data: str = flag("data/tinyworld/tokens", "folder with train.bin, val.bin, meta.json (data/prepare_pretrain.py)")
    out: str = flag("out/pretrain", "output folder")
    preset: str = flag("tiny", f"run size: {' | '.join(ARCH)}; sets the architecture (and for gpt2 sizes the "
                               f"training recipe) of every flag not given")
    block_size: int = flag(ARCH["tiny"]["block_size"], "context length (from scratch)")
    n_layer: int = flag(ARCH["tiny"]["n_layer"], "transformer blocks (from scratch)")
    n_head: int = flag(ARCH["tiny"]["n_head"], "attention heads (from scratch)")
    n_embd: int = flag(ARCH["tiny"]["n_embd"], "width (from scratch)")
    attn: str = flag("auto", "attention path: auto | explicit | sdpa | triton")
    dropout: float = flag(0.0, "dropout (from scratch only)")
    steps: int = flag(420, "optimizer steps (the default fits the built-in world into ~5 minutes on 2 CPU cores)")
    batch_size: int = flag(16, "sequences per micro-batch per process")
    lr: float = flag(2e-3, "peak learning rate")
    warmup: int = flag(30, "linear warmup steps")
    eval_every: int = flag(100, "evaluate every this many steps")
    eval_batches: int = flag(16, "validation batches per evaluation")
    save_every: int = flag(100, "checkpoint every this many steps")


# What --preset sets, for every flag not given. GPT-2 sizes: ~0.5M tokens per optimizer step (16 x 1024 tokens x 32
# micro-batches per process; divide --grad-accum by the number of GPUs), as GPT-2 and nanoGPT train.
GPT2_RECIPE = dict(batch_size=16, grad_accum=32, steps=2000, lr=6e-4, warmup=100, eval_every=250, save_every=250)
PRESETS = {"tiny": {}, "small": ARCH["small"], "gpt2": {**ARCH["gpt2"], **GPT2_RECIPE},
           "gpt2-medium": {**ARCH["gpt2-medium"], **GPT2_RECIPE}}


def defaults(cfg: PretrainConfig, given: set) -> dict:
    if cfg.preset not in PRESETS:
        raise CheckpointError(f"--preset must be one of {list(PRESETS)}, not {cfg.preset!r}")
    return PRESETS[cfg.preset]


def context_length(cfg: PretrainConfig) -> int:
    """The model's block size, known before it is built: the data are windows of that many tokens."""
    if cfg.init == "scratch":
        return cfg.block_size
    if cfg.init.startswith("hf:"):
        return hf_info(cfg.init[3:])[1]
    return load_checkpoint(cfg.init, stages=("pretrain",), mmap=True)["model_config"]["block_size"]


def build_model(cfg: PretrainConfig, tok: Tokenizer, data_dir: Path) -> GPT:
    if cfg.init == "scratch":
        arch = {k: getattr(cfg, k) for k in ("block_size", "n_layer", "n_head", "n_embd")}
        return GPT(GPTConfig(**arch, vocab_size=padded_vocab(tok.n_vocab), dropout=cfg.dropout, attn=cfg.attn))
    if cfg.init.startswith("hf:"):
        model, hf_tok = load_hf_gpt2(cfg.init[3:], attn=cfg.attn)
        check_tokenizer(hf_tok.to_dict(), tok.to_dict(), cfg.init, data_dir)  # GPT-2's weights: GPT-2-tokenized data
        return model
    ckpt = load_checkpoint(cfg.init, stages=("pretrain",))
    check_tokenizer(ckpt["tokenizer"], tok.to_dict(), cfg.init, data_dir)
    model = GPT(GPTConfig.from_dict({**ckpt["model_config"], "attn": cfg.attn}))
    model.load_state_dict(ckpt["model"])
    return model


def main(argv=None) -> dict:
    cfg = parse_config(PretrainConfig, argv, __doc__.split("\n\n")[0], defaults)
    # --- setup
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed, resume_dir=cfg.out if cfg.resume else None)
    # --- data: random windows of the token stream, as long as the model's context
    data_dir = Path(cfg.data)
    meta = token_meta(data_dir)
    tok = Tokenizer.from_dict(meta["tokenizer"])
    T = context_length(cfg)
    train = TokenBin(data_dir / "train.bin", T, cfg.batch_size, rt.device, cfg.seed, rt.rank, rt.world,
                     cfg.grad_accum)
    val = TokenBin(data_dir / "val.bin", T, cfg.batch_size, rt.device, cfg.seed)
    # --- model
    model = build_model(cfg, tok, data_dir).to(rt.device)
    if rt.master:
        print(f"model: {model.num_params() / 1e6:.2f}M parameters, {model.config}; data: {meta['train_tokens']:,} "
              f"train tokens ({tok.name}); {cfg.steps} steps x {cfg.batch_size * cfg.grad_accum * rt.world * T:,} "
              f"tokens on {rt.device} ({rt.dtype or torch.float32})")

    # --- loop
    def loss_fn(m, batch):
        x, y = batch
        return m(x, y)[1], {}

    def eval_fn(m):
        losses = [m(x, y)[1].item() for x, y in val.eval_batches(cfg.eval_batches)]
        return {"val_loss": sum(losses) / len(losses)}

    def checkpoint_fn(m, step, metrics):
        metrics = {**metrics, "unigram_entropy": meta["unigram_entropy"], "params": m.num_params()}
        return make_checkpoint("pretrain", m, tok, config_dict(cfg), step, metrics, data=str(data_dir))

    metrics = train_loop(rt, cfg, model, get_batch=train.batch, loss_fn=loss_fn, eval_fn=eval_fn,
                         checkpoint_fn=checkpoint_fn, tokens_per_micro=cfg.batch_size * T,
                         flops_per_token=model.flops_per_token(T))
    # --- save (train_loop wrote the checkpoint; no held-out figure is measured after training here)
    if rt.master and "val_loss" in metrics:
        print(f"val loss {metrics['val_loss']:.3f} nats vs unigram entropy {meta['unigram_entropy']:.3f} nats "
              f"(a model that knows only token frequencies); checkpoint: {Path(cfg.out) / 'ckpt.pt'}")
    teardown(rt)
    return metrics


if __name__ == "__main__":
    run_script(main)
