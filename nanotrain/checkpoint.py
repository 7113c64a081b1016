"""Checkpoints: one file per stage, ``out/<stage>/ckpt.pt``, plain data only, written atomically.

A checkpoint is a dict of plain types and tensors, loadable with ``torch.load(weights_only=True)``:

    format     FORMAT_VERSION
    stage      "pretrain" | "sft" | "rm" | "rlhf"
    model_config  GPTConfig as a dict (the architecture is never re-typed on the command line)
    tokenizer  Tokenizer.to_dict() (name, special tokens, and for the small BPE its tokens)
    model      the state dict (for "rm": trunk + scalar head)
    train_config, step, metrics   how it was trained, how far, and its final figures

Resume state (optimizer moments, the step) lives beside it in ``resume.pt``. Both are written to a temporary file
and renamed into place, so a run killed mid-write leaves the previous good file, never a broken one.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from nanotrain.errors import CheckpointError

FORMAT_VERSION = 1


def atomic_save(obj, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half of one


def load_checkpoint(path, stages: tuple[str, ...] | None = None, mmap: bool = False) -> dict:
    """Load a checkpoint, checking that it exists, is readable, and comes from one of ``stages``. With ``mmap`` the
    weights stay on disk until read: a cheap way to learn a checkpoint's tokenizer and architecture.

    Every failure is one sentence naming the file and what to do.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: run the stage that writes it first, or pass --init")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt or "stage" not in ckpt:
        raise CheckpointError(f"{path} is not a nanotrain checkpoint (no 'format'/'stage' keys)")
    if ckpt["format"] != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {ckpt['format']}, this code reads {FORMAT_VERSION}")
    if stages is not None and ckpt["stage"] not in stages:
        raise CheckpointError(f"{path} is a '{ckpt['stage']}' checkpoint, but this needs one from "
                         f"{' or '.join(repr(s) for s in stages)}")
    return ckpt


def add_metrics(path, figures: dict, stages: tuple[str, ...] | None = None) -> dict:
    """Write figures measured after training (held-out evaluations) into the checkpoint training saved; returns its
    metrics. The checkpoint is on disk first, so an evaluation that crashes never costs the trained weights."""
    ckpt = load_checkpoint(path, stages)
    ckpt["metrics"].update(figures)
    atomic_save(ckpt, path)
    return ckpt["metrics"]


def make_checkpoint(stage: str, model, tokenizer, train_config: dict, step: int, metrics: dict, **extra) -> dict:
    """The checkpoint dict for ``model`` (a GPT, or anything with ``.config`` and a state dict)."""
    return dict(format=FORMAT_VERSION, stage=stage, model_config=model.config.to_dict(),
                tokenizer=tokenizer.to_dict(), model=unwrap(model).state_dict(), train_config=train_config,
                step=step, metrics=metrics, **extra)


def unwrap(model):
    """The plain module inside DDP and torch.compile wrappers (their state dicts carry prefixes)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def check_tokenizer(ckpt_tok: dict, data_tok: dict, ckpt_path, data_path) -> None:
    """Refuse to train a model on data tokenized with a different vocabulary (the ids would mean other things)."""
    if ckpt_tok != data_tok:
        raise CheckpointError(f"tokenizer mismatch: {ckpt_path} uses '{ckpt_tok['name']}' but {data_path} was tokenized "
                         f"with '{data_tok['name']}'; re-run data preparation with the checkpoint's tokenizer")


def load_model(path, stages=None, device="cpu", attn: str | None = None):
    """Build the GPT stored in a checkpoint. Returns (model, tokenizer, ckpt)."""
    from nanotrain.gpt import GPT, GPTConfig
    from nanotrain.tokenizer import Tokenizer

    ckpt = load_checkpoint(path, stages)
    cfg = GPTConfig.from_dict(ckpt["model_config"])
    if attn is not None:
        cfg.attn = attn
    model = GPT(cfg)
    model.load_state_dict(ckpt["model"])  # strict: a missing or extra key is an error
    return model.to(device), Tokenizer.from_dict(ckpt["tokenizer"]), ckpt
