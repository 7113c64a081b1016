"""Does a checkpoint still know where each person lives? A probe of stored knowledge, apart from answering questions.

    python bench/bench_knowledge.py                                   # out/pretrain, out/sft, out/sft_scratch
    python bench/bench_knowledge.py --checkpoints out/pretrain/ckpt.pt,/tmp/x/ckpt.pt

For every person of the built-in world, the plain text "<|endoftext|> {name} lives in {town}." is scored for each
town (the sum of the town's and the full stop's log-probabilities), and the person counts as known if the true town
scores highest: chance is one in the number of towns. The name is the token with its leading space, as in running
text and at the start of a chat reply. No chat template is involved, so a pretrained model and a chat
model are measured the same way, by split: split-B people appear only in pretraining, so an SFT model's split-B
figure against the pretrained model's is what SFT forgot (README, stage 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import flag, parse_config
from nanotrain.errors import run_script
from nanotrain.runtime import setup_runtime
from nanotrain.tinyworld.world import World


@dataclass
class KnowledgeConfig:
    checkpoints: str = flag("out/pretrain/ckpt.pt,out/sft/ckpt.pt,out/sft_scratch/ckpt.pt",
                            "comma-separated checkpoints (pretrain, sft or rlhf)")
    world: str = flag("data/tinyworld", "the built-in world's folder (world.json)")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("float32", "auto | float32 | bfloat16")


@torch.no_grad()
def town_known(model, tok, world: World, device) -> dict[str, float]:
    """Share of each split's people whose true town scores highest among all towns."""
    towns = list(world.towns)
    hits = {"A": [], "B": []}
    for p in world.people:
        prefix = [tok.eot] + tok.encode(f" {p.name} lives in")
        rows = [prefix + tok.encode(f" {t}.") for t in towns]
        T = max(map(len, rows))
        idx = torch.tensor([r + [tok.pad] * (T - len(r)) for r in rows], device=device)
        logp = torch.log_softmax(model(idx)[0].float(), -1)  # (towns, T, V)
        scores = [sum(float(logp[i, j - 1, r[j]]) for j in range(len(prefix), len(r))) for i, r in enumerate(rows)]
        hits[p.split].append(towns[max(range(len(towns)), key=scores.__getitem__)] == p.town)
    return {s: sum(h) / max(1, len(h)) for s, h in hits.items()}


def main(argv=None) -> dict:
    cfg = parse_config(KnowledgeConfig, argv, description=__doc__.split("\n\n")[0])
    rt = setup_runtime(cfg.device, cfg.dtype, 0)
    world = World.from_json((Path(cfg.world) / "world.json").read_text(encoding="utf-8"))
    results = {}
    print("| checkpoint | split A: town known | split B: town known | chance |\n|---|---|---|---|")
    for path in cfg.checkpoints.split(","):
        model, tok, _ = load_model(path, stages=("pretrain", "sft", "rlhf"), device=rt.device)
        model.eval()
        r = results[path] = town_known(model, tok, world, rt.device)
        print(f"| {path} | {r['A']:.1%} | {r['B']:.1%} | {1 / len(world.towns):.1%} |")
    return results


if __name__ == "__main__":
    run_script(main)
