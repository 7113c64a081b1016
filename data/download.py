"""Download the real datasets the GPU presets use (needs internet; everything else in nanotrain works offline).

    python data/download.py tinystories --out data/tinystories       # ~2 GB text -> train.jsonl / valid.jsonl
    python data/download.py hh-rlhf --out data/hh_rlhf               # Anthropic's preference dialogues (MIT)
    python data/download.py alpaca --out data/alpaca                 # 52k instructions (CC BY-NC 4.0)
    python data/download.py cc-warc --out data/cc_warc --files 1      # raw web: 1 Common Crawl WARC file (~1 GB)
    python data/clean.py --input data/cc_warc --out data/cc_clean/clean.jsonl   # ... then clean it

Datasets that need an account or a parquet reader (FineWeb-Edu, LIMA) are given as local files instead: any
JSONL(.gz) with a "text" field works for pretraining (data/prepare_pretrain.py), and LIMA's lima.json for SFT.
Small samples of all of them, for tests, are in ../shared/data.
"""
from __future__ import annotations

import gzip
import json
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nanotrain.cli import flag, parse_config
from nanotrain.errors import NanotrainError, run_script

HF = "https://huggingface.co/datasets"
GH = "https://raw.githubusercontent.com"
SOURCES = {
    "tinystories": {f"{s}.txt": f"{HF}/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-{s}.txt"
                    for s in ("train", "valid")},
    "hh-rlhf": {f"{part}_{s}.jsonl.gz": f"{GH}/anthropics/hh-rlhf/master/{part}/{s}.jsonl.gz"
                for part in ("helpful-base", "harmless-base") for s in ("train", "test")},
    "alpaca": {"alpaca_data.json": f"{GH}/tatsu-lab/stanford_alpaca/main/alpaca_data.json"},
}
# Raw web pages as crawled: the first --files WARC files of a Common Crawl crawl, as listed in its warc.paths.gz
# (each about 1 GB gzip, some 30-40 thousand HTML pages). data/clean.py reads WARC files directly.
CC = "https://data.commoncrawl.org"
CC_WARC = "cc-warc"


@dataclass
class DownloadConfig:
    dataset: str = flag("tinystories", f"one of {', '.join([*SOURCES, CC_WARC])}")
    out: str = flag("", "destination folder (default: data/<dataset>)")
    crawl: str = flag("CC-MAIN-2024-33", f"{CC_WARC}: the Common Crawl crawl (see commoncrawl.org/get-started)")
    files: int = flag(1, f"{CC_WARC}: how many of the crawl's WARC files")


def fetch(url: str, dest: Path) -> None:
    if dest.exists():
        print(f"{dest} exists, skipped")
        return
    tmp = dest.with_name(dest.name + ".part")
    print(f"{url} -> {dest}")
    try:
        with urllib.request.urlopen(url) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, length=1 << 20)
    except (urllib.error.URLError, OSError) as e:
        raise NanotrainError(f"{url} could not be downloaded ({getattr(e, 'reason', e)}); without internet, use local "
                             f"files (small samples of each dataset are in ../shared/data)") from None
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
    if cfg.dataset not in SOURCES and cfg.dataset != CC_WARC:
        raise FileNotFoundError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join([*SOURCES, CC_WARC])}")
    out = Path(cfg.out or f"data/{cfg.dataset.replace('-', '_')}")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.dataset == CC_WARC:
        fetch(f"{CC}/crawl-data/{cfg.crawl}/warc.paths.gz", out / "warc.paths.gz")
        paths = gzip.decompress((out / "warc.paths.gz").read_bytes()).decode().split()[:cfg.files]
        for path in paths:
            fetch(f"{CC}/{path}", out / Path(path).name)
        print(f"clean them with: python data/clean.py --input {out} --out {out}_clean/clean.jsonl")
        return
    for name, url in SOURCES[cfg.dataset].items():
        fetch(url, out / name)
        if cfg.dataset == "tinystories":
            n = stories_to_jsonl(out / name, out / name.replace(".txt", ".jsonl"))
            print(f"{out / name.replace('.txt', '.jsonl')}: {n:,} stories")


if __name__ == "__main__":
    run_script(main)
