"""Tokenize pretraining text into ``train.bin`` / ``val.bin`` (uint16 token ids) plus ``meta.json``.

Inputs: plain .txt files (one document each) or JSONL(.gz) with a "text" field, files or folders. Documents are
separated by the end-of-text token, so the model learns where one ends. With ``--tokenizer bpe`` a small BPE is first
trained on the training documents (the built-in default world uses this); ``--tokenizer gpt2`` uses GPT-2's.

    python data/prepare_pretrain.py                                   # the built-in world -> data/tinyworld/tokens
    python data/prepare_pretrain.py --input ../shared/data/tinystories --tokenizer gpt2 --out data/tinystories
    python data/prepare_pretrain.py --input more.jsonl --tokenizer data/tinyworld/tokens --val-input held.jsonl \
        --out /tmp/more       # another corpus in the same tokens, validated on a fixed held-out set

meta.json records the tokenizer (it travels with the data and into every checkpoint), token counts, and the unigram
entropy of the training tokens: the loss of a model that knows token frequencies and nothing else, the bar a trained
model's validation loss must get under.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanotrain.cli import flag, parse_config
from nanotrain.data import read_texts, token_meta
from nanotrain.errors import DataError, run_script
from nanotrain.tokenizer import Tokenizer


@dataclass
class PrepareConfig:
    input: str = flag("data/tinyworld/pretrain.jsonl", "comma-separated files or folders (.txt, .jsonl, .jsonl.gz)")
    out: str = flag("data/tinyworld/tokens", "output folder for train.bin, val.bin, meta.json")
    tokenizer: str = flag("bpe", "bpe (train a small BPE on this data) | gpt2 (GPT-2's BPE) | a token folder whose "
                                 "tokenizer to reuse (its meta.json)")
    vocab_size: int = flag(4096, "size of the trained BPE, special tokens included")
    val_fraction: float = flag(0.01, "fraction of documents held out for validation")
    val_input: str = flag("", "files or folders whose documents are the validation set (then --input is all "
                              "training and --val-fraction is unused)")
    seed: int = flag(0, "seed for the train/validation split")


def input_files(spec: str) -> list[Path]:
    files = []
    for part in filter(None, (s.strip() for s in spec.split(","))):
        p = Path(part)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith((".txt", ".jsonl", ".gz")))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder (for the built-in world run data/tinyworld.py)")
    if not files:
        raise FileNotFoundError(f"no .txt or .jsonl files in {spec}")
    return files


def split_plain_text(text: str, chunk_chars: int = 4000) -> list[str]:
    """A .txt file is one long stream (a play, a novel): cut it at blank lines into pieces of about ``chunk_chars``
    so that a validation share can be held out. The end-of-text token then marks only these cuts."""
    pieces, cur = [], ""
    for para in text.split("\n\n"):
        cur = f"{cur}\n\n{para}" if cur else para
        if len(cur) >= chunk_chars:
            pieces.append(cur)
            cur = ""
    return pieces + ([cur] if cur.strip() else [])


def load_documents(files: list[Path]) -> list[str]:
    docs = []
    for f in files:
        for d in read_texts(f):
            docs += split_plain_text(d) if f.suffix == ".txt" else [d]
    return [d for d in docs if d.strip()]


def unigram_entropy(tokens: np.ndarray, n_vocab: int) -> float:
    """H = -sum_t p(t) ln p(t) over token frequencies, in nats (the unit of cross-entropy loss)."""
    p = np.bincount(tokens, minlength=n_vocab).astype(np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def prepare(cfg: PrepareConfig) -> dict:
    t0 = time.perf_counter()
    docs = load_documents(input_files(cfg.input))
    if cfg.val_input:
        train_docs, val_docs = docs, load_documents(input_files(cfg.val_input))
        if not train_docs or not val_docs:
            raise DataError(f"{cfg.input} / {cfg.val_input}: need training and validation documents, found "
                            f"{len(train_docs)} and {len(val_docs)}")
    else:
        if len(docs) < 2:
            raise DataError(f"{cfg.input}: need at least 2 non-empty documents, found {len(docs)}")
        order = np.random.default_rng(cfg.seed).permutation(len(docs))
        n_val = max(1, int(len(docs) * cfg.val_fraction))
        val_docs = [docs[i] for i in order[:n_val]]
        train_docs = [docs[i] for i in order[n_val:]]

    if cfg.tokenizer == "gpt2":
        tok = Tokenizer.gpt2()
    elif cfg.tokenizer == "bpe":
        print(f"training a {cfg.vocab_size}-token BPE on {len(train_docs)} documents ...")
        tok = Tokenizer.train(train_docs, cfg.vocab_size)
    elif Path(cfg.tokenizer).is_dir():
        tok = Tokenizer.from_dict(token_meta(cfg.tokenizer)["tokenizer"])
    else:
        raise DataError(f"--tokenizer must be bpe, gpt2 or a token folder, not {cfg.tokenizer!r}")
    assert tok.n_vocab < 2 ** 16, "uint16 token files need a vocabulary under 65536"

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, split_docs in (("train", train_docs), ("val", val_docs)):
        ids = tok.encode_batch(split_docs)
        flat = np.fromiter((t for doc in ids for t in (*doc, tok.eot)), dtype=np.uint16)
        flat.tofile(out / f"{split}.bin")
        counts[split] = len(flat)
        if split == "train":
            entropy = unigram_entropy(flat, tok.n_vocab)
    meta = {"tokenizer": tok.to_dict(), "n_vocab": tok.n_vocab, "train_tokens": counts["train"],
            "val_tokens": counts["val"], "train_docs": len(train_docs), "val_docs": len(val_docs),
            "unigram_entropy": entropy, "chars_per_token": sum(map(len, docs)) / sum(counts.values()),
            "input": cfg.input, **({"val_input": cfg.val_input} if cfg.val_input else {})}
    (out / "meta.json").write_text(json.dumps(meta))
    print(f"{out}: {counts['train']:,} train / {counts['val']:,} val tokens ({tok.name}, vocab {tok.n_vocab}), "
          f"{meta['chars_per_token']:.2f} chars/token, unigram entropy {entropy:.3f} nats "
          f"({entropy / math.log(2):.2f} bits) [{time.perf_counter() - t0:.1f}s]")
    return meta


def main(argv=None) -> dict:
    return prepare(parse_config(PrepareConfig, argv, description=__doc__.split("\n\n")[0]))


if __name__ == "__main__":
    run_script(main)
