"""Reading records and serving pretraining batches.

- ``read_jsonl``: JSONL (optionally .gz), one record per line; a malformed line raises ``DataError`` naming the file
  and the line number.
- ``read_texts``: documents from plain .txt (one document per file) or JSONL(.gz) with a "text" field.
- ``batch_indices``: which examples a micro-batch of a step reads: epochs of seeded permutations, a pure function of
  the step (DPO, KTO, PPO's prompts).
- ``token_meta``: a token folder's meta.json (its tokenizer, token counts), with a clear error when it is missing.
- ``TokenBin``: the uint16 token stream written by data/prepare_pretrain.py, served as random windows. The windows of
  optimizer step ``s`` are a pure function of (seed, s), and each DDP rank takes its own slice of the same global
  batch: one process and N processes with the same global batch see the same sequences, and a resumed run sees the
  data the uninterrupted run would have.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import torch

from nanotrain.errors import DataError


def open_bytes(path):
    path = Path(path)
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def decode(blob: bytes, path) -> str:
    """UTF-8 text of a whole file; DataError naming the line of the first bad byte (a text-mode reader decodes in
    chunks and can only name the line its chunk began on)."""
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as e:
        line = blob.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: invalid UTF-8 ({e.reason})") from None


def read_jsonl(path, required: tuple[str, ...] = ()):
    """Yield (line_number, record) for each non-blank line; DataError on bad JSON or a missing required field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with open_bytes(path) as f:  # lines as bytes, decoded one by one, so a bad byte is reported at its own line
        lineno = 0
        try:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: invalid UTF-8 ({e.reason})") from None
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
                missing = [k for k in required if k not in rec]
                if missing:
                    raise DataError(f"{path}:{lineno}: record lacks field(s) {missing}")
                yield lineno, rec
        except (EOFError, gzip.BadGzipFile, OSError) as e:
            raise DataError(f"{path}:{lineno + 1}: unreadable compressed data ({e})") from None


def read_texts(path):
    """Yield documents: a .txt file is one document; .jsonl(.gz) yields each record's "text"."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        for _, rec in read_jsonl(path, required=("text",)):
            yield rec["text"]
    else:
        with open_bytes(path) as f:
            yield decode(f.read(), path)


def batch_indices(n: int, step: int, micro: int, batch_size: int, grad_accum: int = 1, rank: int = 0,
                  world: int = 1, seed: int = 0) -> list[int]:
    """The examples of micro-batch ``micro`` of optimizer step ``step`` on ``rank``: a pure function of its arguments
    (so a resumed run sees the same data). The data is read in epochs, each a fresh permutation seeded by
    (seed, epoch); one optimizer step consumes batch_size * grad_accum * world consecutive examples of that stream,
    and each rank takes its own slice."""
    per_step = batch_size * grad_accum * world
    first = step * per_step + (rank * grad_accum + micro) * batch_size
    out = []
    for pos in range(first, first + batch_size):
        epoch, i = divmod(pos, n)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[i]))
    return out


def token_meta(folder: str | Path) -> dict:
    """The meta.json data/prepare_pretrain.py writes beside train.bin and val.bin."""
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no meta.json: run data/prepare_pretrain.py --out {folder} first")
    return json.loads(path.read_text())


class TokenBin:
    """Random (input, target) windows of ``block_size`` tokens from a flat uint16 token file."""

    def __init__(self, path, block_size: int, batch_size: int, device, seed: int = 0, rank: int = 0,
                 world: int = 1, grad_accum: int = 1):
        path = Path(path)
        if not path.exists() or path.stat().st_size == 0:
            raise FileNotFoundError(f"{path} is missing or empty: run data/prepare_pretrain.py first")
        self.path, self.tokens = path, np.memmap(path, dtype=np.uint16, mode="r")
        if len(self.tokens) <= block_size + 1:
            raise DataError(f"{path} holds {len(self.tokens)} tokens, fewer than one block of {block_size}")
        self.block_size, self.batch_size, self.device = block_size, batch_size, device
        self.seed, self.rank, self.world, self.grad_accum = seed, rank, world, grad_accum

    def _windows(self, starts) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.block_size
        x = np.stack([self.tokens[s:s + T] for s in starts]).astype(np.int64)
        y = np.stack([self.tokens[s + 1:s + 1 + T] for s in starts]).astype(np.int64)
        return torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)

    def batch(self, step: int, micro: int = 0):
        """This rank's ``micro``-th micro-batch of optimizer step ``step``."""
        g = np.random.default_rng([self.seed, step])
        per_rank = self.batch_size * self.grad_accum
        starts = g.integers(0, len(self.tokens) - self.block_size - 1, size=per_rank * self.world)
        first = self.rank * per_rank + micro * self.batch_size
        return self._windows(starts[first:first + self.batch_size])

    def eval_batches(self, n: int):
        """``n`` fixed batches (the same at every evaluation, so val losses are comparable)."""
        g = np.random.default_rng([self.seed, 10 ** 9])
        for _ in range(n):
            yield self._windows(g.integers(0, len(self.tokens) - self.block_size - 1, size=self.batch_size))
