"""The labelling stage: the SFT model answers each prompt several times and people rank its answers.

    python data/label.py        # out/sft/ckpt.pt + data/tinyworld/label_prompts.jsonl -> out/labels/

InstructGPT's recipe (Ouyang et al. 2022, §3.5): sample K answers of the model to each prompt, have labellers rank
them, and turn every ranking into its pairs of comparisons. On the built-in world the labellers are simulated from
the gold scorers with noise (nanotrain/tinyworld/labellers.py): helpfulness labellers rank by gold helpfulness,
safety labellers by gold safety, and a thumbs up or down goes to each answer by gold helpfulness against a bar. The
answers are the SFT model's own, so the pairs show the reward models, DPO and KTO the difference between what the
model already does (a hedge, a chatty opener, a dropped item, a generic refusal, a made-up answer) and what it does
when it does better; the hand-written demonstrations cannot show that.

Writes, with a tenth of the prompts held out (--val-fraction) for the reward models' validation:

    prefs_helpful_train/val.jsonl   {"prompt", "chosen", "rejected", "kind", "gold_chosen", "gold_rejected"}
    prefs_safe_train/val.jsonl      the same, ranked by gold safety
    feedback_train.jsonl            {"prompt", "completion", "label", "kind", "gold"}: thumbs up / down (KTO)
    report.json                     what the labellers did: pairs, their agreement with each other and with the
                                    gold order (the ceiling of a reward model's accuracy on their labels), and the
                                    habits in the SFT model's answers (hedged, hallucinated, generic refusals)
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import check_counts, flag, parse_config
from nanotrain.data import read_jsonl
from nanotrain.errors import ConfigError, DataError, run_script
from nanotrain.runtime import setup_runtime
from nanotrain.sampling import check_sampling, generate_replies
from nanotrain.tinyworld import labellers
from nanotrain.tinyworld.gold import HEDGE, Gold
from nanotrain.tinyworld.writers import GENERIC_REFUSAL


@dataclass
class LabelConfig:
    init: str = flag("out/sft/ckpt.pt", "the model whose answers are ranked (the SFT checkpoint)")
    world: str = flag("data/tinyworld", "world folder: world.json (the gold scorers) and the prompts")
    prompts: str = flag("data/tinyworld/label_prompts.jsonl", "prompts to answer ({prompt, kind, harmful})")
    out: str = flag("out/labels", "output folder")
    samples: int = flag(4, "answers per prompt (InstructGPT: K = 4 to 9)")
    temperature: float = flag(0.7, "sampling temperature of the answers (below 1 they differ less in facts the model "
                                    "is unsure of and about as much in manner)")
    max_new_tokens: int = flag(48, "longest answer")
    noise: float = flag(labellers.TAU, "the labellers' noise tau (nanotrain/tinyworld/labellers.py)")
    bar: float = flag(labellers.BAR, "thumbs up when an answer's noisy gold helpfulness clears this")
    val_fraction: float = flag(0.1, "share of prompts whose pairs are held out (prefs_*_val.jsonl)")
    batch_size: int = flag(256, "answers generated at once")
    seed: int = flag(0, "seed of the samples and of the labellers' noise")
    device: str = flag("auto", "auto | cpu | cuda")
    dtype: str = flag("auto", "auto | float32 | bfloat16")


def main(argv=None) -> dict:
    cfg = parse_config(LabelConfig, argv, __doc__.split("\n\n")[0])
    if cfg.samples < 2:  # a ranking orders at least two answers to the same prompt
        raise ConfigError(f"--samples must be at least 2, not {cfg.samples}: pairs are two answers to one prompt")
    if not 0 <= cfg.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be at least 0 and below 1, not {cfg.val_fraction}")
    if not cfg.noise >= 0:
        raise ConfigError(f"--noise must be 0 (labellers who agree with gold) or more, not {cfg.noise}")
    check_sampling(cfg.temperature)
    check_counts(cfg, "max_new_tokens", "batch_size")
    # --- setup
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    t0 = time.perf_counter()
    # --- data: the prompts and the gold scorers behind the labellers
    records = [rec for _, rec in read_jsonl(cfg.prompts, required=("prompt",))]
    if not records:
        raise DataError(f"{cfg.prompts}: no prompts")
    gold = Gold.load(cfg.world)
    # --- model: the SFT model answers every prompt --samples times
    model, tok, _ = load_model(cfg.init, stages=("sft", "rlhf"), device=rt.device)
    model.eval()
    k = cfg.samples
    flat = [r["prompt"] for r in records for _ in range(k)]
    g = torch.Generator().manual_seed(cfg.seed)
    answers = [r.text for r in generate_replies(model, tok, flat, cfg.max_new_tokens, cfg.temperature,
                                                batch_size=cfg.batch_size, generator=g, autocast=rt.autocast)]
    t_sample = time.perf_counter() - t0
    # --- the labellers: rank each prompt's answers by gold helpfulness and by gold safety; thumbs up or down
    files, scored = labellers.label_answers(records, answers, k, gold, cfg.noise, cfg.bar, cfg.val_fraction,
                                            random.Random(f"labels-{cfg.seed}"))
    # --- save
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    report = {"prompts": len(records), "samples": k, "noise": cfg.noise, **{f"{n}_records": len(r)
                                                                             for n, r in files.items()},
              "thumbs_up": sum(r["label"] for r in files["feedback_train"]) / max(1, len(files["feedback_train"])),
              "sample_time_s": t_sample, "time_s": time.perf_counter() - t0, **habits(gold, flat, answers)}
    for kind, scores in scored.items():
        report.update({f"{kind}_{key}": v for key, v in labellers.agreement(scores, cfg.noise, cfg.seed).items()})
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{len(records)} prompts x {k} answers of {cfg.init} ({t_sample:.0f} s): "
          + ", ".join(f"{len(r)} {n}" for n, r in files.items())
          + f"; labellers agree with each other on {report['helpful_labeller_agreement_close']:.1%} of close pairs "
          f"(helpfulness) and with the gold order on {report['helpful_labeller_gold_all']:.1%} of pairs -> {out}")
    return report


def habits(gold: Gold, prompts: list[str], answers: list[str]) -> dict:
    """The writers' habits in the model's answers (what the feedback can teach away): hedged answers, generic
    refusals of harmful requests, made-up answers to questions the world cannot answer."""
    unknown = [(p, a) for p, a in zip(prompts, answers) if gold.is_unanswerable(p)]
    harmful = [a for p, a in zip(prompts, answers) if gold.is_harmful(p)]
    return {"hedged": sum(bool(HEDGE.search(a)) for a in answers) / max(1, len(answers)),
            "generic_refusals": sum(a.strip() == GENERIC_REFUSAL for a in harmful) / max(1, len(harmful)),
            "hallucinated": sum(gold.hallucinates(p, a) for p, a in unknown) / max(1, len(unknown))}


if __name__ == "__main__":
    run_script(main)
