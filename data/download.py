"""Download the real datasets the GPU presets use (needs internet; everything else in nanotrain works offline).

    python data/download.py tinystories --out data/tinystories       # ~2 GB text -> train.jsonl / valid.jsonl
    python data/download.py hh-rlhf --out data/hh_rlhf               # Anthropic's preference dialogues (MIT)
    python data/download.py alpaca --out data/alpaca                 # 52k instructions (CC BY-NC 4.0)

Datasets that need an account or a parquet reader (FineWeb-Edu, LIMA) are given as local files instead: any
JSONL(.gz) with a "text" field works for pretraining (data/prepare_pretrain.py), and LIMA's lima.json for SFT.
Small samples of all of them, for tests, are in ../shared/data.
"""
from __future__ import annotations

import json
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nanotrain.cli import flag, parse_config
from nanotrain.errors import run_script

HF = "https://huggingface.co/datasets"
GH = "https://raw.githubusercontent.com"
SOURCES = {
    "tinystories": {f"{s}.txt": f"{HF}/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-{s}.txt"
                    for s in ("train", "valid")},
    "hh-rlhf": {f"{part}_{s}.jsonl.gz": f"{GH}/anthropics/hh-rlhf/master/{part}/{s}.jsonl.gz"
                for part in ("helpful-base", "harmless-base") for s in ("train", "test")},
    "alpaca": {"alpaca_data.json": f"{GH}/tatsu-lab/stanford_alpaca/main/alpaca_data.json"},
}


@dataclass
class DownloadConfig:
    dataset: str = flag("tinystories", f"one of {', '.join(SOURCES)}")
    out: str = flag("", "destination folder (default: data/<dataset>)")


def fetch(url: str, dest: Path) -> None:
    if dest.exists():
        print(f"{dest} exists, skipped")
        return
    tmp = dest.with_name(dest.name + ".part")
    print(f"{url} -> {dest}")
    with urllib.request.urlopen(url) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f, length=1 << 20)
    tmp.rename(dest)  # only complete downloads get the final name


def stories_to_jsonl(txt: Path, out: Path, sep: str = "<|endoftext|>") -> int:
    """TinyStories V2 separates stories by a literal '<|endoftext|>' line; write one {"text"} record per story, so the
    marker becomes our real end-of-text token instead of being tokenized as text."""
    n, buf = 0, []
    with open(txt, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
        for line in f:
            if line.strip() == sep:
                story = "".join(buf).strip()
                if story:
                    g.write(json.dumps({"text": story}, ensure_ascii=False) + "\n")
                    n += 1
                buf = []
            else:
                buf.append(line)
        story = "".join(buf).strip()
        if story:
            g.write(json.dumps({"text": story}, ensure_ascii=False) + "\n")
            n += 1
    return n


def main(argv=None):
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--dataset", argv[0], *argv[1:]]
    cfg = parse_config(DownloadConfig, argv, description=__doc__.split("\n\n")[0])
    if cfg.dataset not in SOURCES:
        raise FileNotFoundError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(SOURCES)}")
    out = Path(cfg.out or f"data/{cfg.dataset.replace('-', '_')}")
    out.mkdir(parents=True, exist_ok=True)
    for name, url in SOURCES[cfg.dataset].items():
        fetch(url, out / name)
        if cfg.dataset == "tinystories":
            n = stories_to_jsonl(out / name, out / name.replace(".txt", ".jsonl"))
            print(f"{out / name.replace('.txt', '.jsonl')}: {n:,} stories")


if __name__ == "__main__":
    run_script(main)
