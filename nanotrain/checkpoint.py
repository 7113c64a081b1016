"""Checkpoints: one file per stage, ``out/<stage>/ckpt.pt``, plain data only, written atomically.

A checkpoint is a dict of plain types and tensors, loadable with ``torch.load(weights_only=True)``:

    format     FORMAT_VERSION
    stage      "pretrain" | "sft" | "rm" | "rlhf"
    model_config  GPTConfig as a dict (the architecture is never re-typed on the command line)
    tokenizer  Tokenizer.to_dict() (name, special tokens, and for the small BPE its tokens)
    model      the state dict (for "rm": trunk + scalar head)
    train_config, step, metrics   how it was trained, how far, and its final figures

Resume state (optimizer moments, the step, the resolved precision, the flags, the clock) lives beside it in
``resume.pt``. Both are written to a temporary file and renamed into place, so a run killed mid-write leaves the
previous good file, never a broken one; a failed write (a full disk) removes its temporary file and says so in one
sentence. A run holds ``OUT/.lock`` while it writes into OUT, so a second run on the same folder is refused instead of
interleaving its files with the first one's.
"""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import torch

from nanotrain.errors import CheckpointError

FORMAT_VERSION = 1


def atomic_save(obj, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)  # a failed write (disk full, quota) surfaces as OSError or as torch's RuntimeError
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
        raise CheckpointError(f"could not write {path}, with {free / 2**20:,.0f} MiB free on its disk (a full disk or "
                              f"a quota?): {str(e).splitlines()[0] if str(e) else type(e).__name__}; {kept}") from None
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half of one


def claim_output(out) -> None:
    """Hold ``OUT/.lock`` until this process exits, so that a second run writing into the same folder stops with one
    sentence instead of interleaving metrics.jsonl and racing on the same temporary files. An OS lock (flock): a
    killed run releases it with its last breath, no stale lock file to delete. Claiming a folder this process
    already holds is a no-op (a test resuming in-process, or post-training writes)."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no lock
        return
    path = (Path(out) / ".lock").resolve()
    if path in _CLAIMED:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise CheckpointError(f"{out} is in use by another run ({holder}): wait for it to finish, stop it, or "
                              f"choose another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    _CLAIMED[path] = f  # kept open (and so locked) for the life of the process


_CLAIMED: dict = {}  # lock files this process holds: an OS resource that must outlive the call, not configuration


WRITERS = {"pretrain": "train_pretrain.py", "sft": "train_sft.py", "rm": "train_rm.py", "rlhf": "train_rlhf.py"}


def load_checkpoint(path, stages: tuple[str, ...] | None = None, mmap: bool = False) -> dict:
    """Load a checkpoint, checking that it exists, is readable, and comes from one of ``stages``. With ``mmap`` the
    weights stay on disk until read: a cheap way to learn a checkpoint's tokenizer and architecture.

    Every failure is one sentence naming the file and what to do.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.exists():
        writers = " or ".join(WRITERS.get(s, s) for s in stages) if stages else "the stage that writes it"
        raise CheckpointError(f"no checkpoint at {path}: run {writers} first, or give the path of one")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:  # torch's own message goes on to suggest weights_only=False: not here
        if "Unsupported global" not in str(e):  # random bytes, a damaged or foreign pickle
            raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt, or not written by "
                                  f"torch.save?)") from None
        raise CheckpointError(f"{path} holds objects other than tensors and plain values, which loading with "
                              f"weights_only=True refuses: not a checkpoint nanotrain wrote") from None
    except Exception as e:  # torch's first sentence is the cause; the rest is advice for its own API
        cause = str(e).splitlines()[0].split(". ")[0][:160] if str(e).strip() else ""
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: "
                              f"{cause}") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt or "stage" not in ckpt:
        raise CheckpointError(f"{path} is not a nanotrain checkpoint (no 'format'/'stage' keys)")
    if ckpt["format"] != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {ckpt['format']}, this code reads {FORMAT_VERSION}")
    if stages is not None and ckpt["stage"] not in stages:
        raise CheckpointError(f"{path} is a '{ckpt['stage']}' checkpoint, but this needs one from "
                         f"{' or '.join(repr(s) for s in stages)}")
    if not mmap:  # (a memory-mapped peek reads the architecture and tokenizer only)
        check_finite(ckpt.get("model", {}), path)
    return ckpt


def check_finite(state_dict: dict, path) -> None:
    """Refuse weights with NaN or infinite entries (saved by a run that diverged): every output would be NaN."""
    bad = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}"
                              f"): it was saved by a run that diverged; use an earlier checkpoint")


def load_resume(path, map_location) -> dict:
    """A ``resume.pt`` (trainer.train_loop's, ppo.train's), with a one-sentence error for a truncated, foreign or
    diverged one."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable resume state (truncated, or not written by nanotrain?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; delete it to start "
                              f"over") from None
    if not isinstance(state, dict) or not {"step", "model", "optimizer"} <= set(state):
        raise CheckpointError(f"{path} is not a nanotrain resume state (no step/model/optimizer); delete it to start "
                              f"over")
    check_finite(state["model"], path)
    return state


def is_complete(path) -> bool:
    """Whether ``path`` is a checkpoint whose run reached its configured number of steps. A killed run, or a rerun
    killed early, leaves a readable ckpt.pt of an earlier step: present, but not the stage's result."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return ckpt["step"] >= ckpt["train_config"]["steps"]
    except Exception:  # unreadable, or not a training checkpoint: not a finished stage
        return False


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
    if ckpt_tok == data_tok:
        return
    if ckpt_tok.get("name") != data_tok.get("name"):
        what = f"{ckpt_path} uses '{ckpt_tok.get('name')}' but {data_path} was tokenized with '{data_tok.get('name')}'"
    else:  # same kind of tokenizer (two small BPEs trained on different text, say): different vocabularies
        diff = sorted(k for k in set(ckpt_tok) | set(data_tok) if ckpt_tok.get(k) != data_tok.get(k))
        what = (f"{ckpt_path} and {data_path} both use a '{ckpt_tok.get('name')}' tokenizer, but not the same one "
                f"(they differ in {', '.join(diff)})")
    raise CheckpointError(f"tokenizer mismatch: {what}; re-run data preparation with the checkpoint's tokenizer")


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
