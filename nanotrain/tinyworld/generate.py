"""Tinyworld's files: draw the world, render every file the pipeline reads, write them next to world.json.

    python data/tinyworld.py --out data/tinyworld --seed 0        # the CLI around write_world()

The entities, facts and pretraining text come from world.py; every chat, preference, feedback and evaluation file
from chat.py (build_chat); the web crawl (crawl.warc.gz: the pretraining text in web pages, plus junk and some of
the evaluation questions with their answers) from web.py. This module only puts them on disk.
"""
from __future__ import annotations

import json
from pathlib import Path

from nanotrain.tinyworld.chat import build_chat
from nanotrain.tinyworld.web import crawl_pages, write_warc
from nanotrain.tinyworld.world import WorldConfig, make_world, pretrain_docs

CRAWL = "crawl.warc.gz"
FILES = ["pretrain", "sft_train", "sft_val", "prefs_helpful_train", "prefs_helpful_val", "prefs_safe_train",
         "prefs_safe_val", "feedback_train", "eval_b", "eval_zh", "eval_prompts", "eval_harmful", "eval_benign",
         "eval_unknown", "rl_prompts", "label_prompts"]  # each written as <stem>.jsonl next to world.json


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_world(cfg: WorldConfig) -> dict[str, list]:
    """Generate the world and write every file into cfg.out; returns {file stem: records} (for the crawl, its
    web.Page list)."""
    w = make_world(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "world.json").write_text(w.to_json() + "\n", encoding="utf-8")
    docs = pretrain_docs(w, cfg)
    files = {"pretrain": [{"text": d} for d in docs]}
    files.update(build_chat(w, cfg)[0])
    files = {stem: files[stem] for stem in FILES}
    for stem, records in files.items():
        write_jsonl(out / f"{stem}.jsonl", records)
    pages = crawl_pages(w, cfg, docs, files["eval_b"] + files["eval_prompts"])
    write_warc(out / CRAWL, pages, cfg.seed)
    return {**files, "crawl": pages}
