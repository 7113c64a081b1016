"""Collect the prompts of a preference or SFT file into ``{"prompt"}`` JSONL, the input of PPO and online DPO.

    python data/prepare_prompts.py --input data/hh_rlhf/helpful-base_train.jsonl.gz --out data/hh_rlhf/prompts.jsonl

The prompt of a preference pair is the conversation before the two replies (HH-RLHF dialogues are converted to
chat messages by ``nanotrain.pref_data``); duplicates are dropped, order is kept.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nanotrain.cli import flag, parse_config
from nanotrain.errors import DataError, run_script
from nanotrain.pref_data import load_pairs


@dataclass
class PromptsConfig:
    input: str = flag("", "preference data: {prompt,chosen,rejected} / HH-RLHF / OASST trees (file or folder)")
    out: str = flag("", "output JSONL of {\"prompt\"}")
    limit: int = flag(0, "keep at most this many prompts (0: all)")


def main(argv=None) -> int:
    cfg = parse_config(PromptsConfig, argv, description=__doc__.split("\n\n")[0])
    if not cfg.input or not cfg.out:
        raise DataError("--input and --out are required")
    seen, prompts = set(), []
    for pair in load_pairs(cfg.input):
        key = json.dumps(pair.messages, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(pair.messages)
        if cfg.limit and len(prompts) == cfg.limit:
            break
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    with open(cfg.out, "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}, ensure_ascii=False) + "\n")
    print(f"{cfg.out}: {len(prompts):,} prompts from {cfg.input}")
    return len(prompts)


if __name__ == "__main__":
    run_script(main)
