"""Self-Instruct (Wang et al. 2022, "Self-Instruct: Aligning Language Models with Self-Generated Instructions"):
grow an instruction set from a few human-written seed tasks by asking a model to continue a list of tasks.

    python data/self_instruct.py --init out/sft/ckpt.pt --out /tmp/self_instruct.jsonl
    python data/self_instruct.py --init out/pretrain/ckpt.pt --num-instructions 50 --no-responses
    python train_sft.py --data /tmp/self_instruct.jsonl ...        # the output is SFT data (messages or alpaca)

The loop of the paper's §2, with the instruction-generation prompt of its Table 6:

1. The task pool starts as the 175 seed instructions (../shared/data/self_instruct_seed/seed_tasks.jsonl).
2. Each prompt lists 8 instructions from the pool, 6 human-written and 2 generated earlier (when there are any), as
   "Task 1: ... Task 8:", and ends with "Task 9:"; the model continues the list (temperature 0.7, top-p 0.5 as in the
   paper) and every "Task k:" it writes is a candidate.
3. A candidate is kept only if its ROUGE-L F with *every* instruction already in the pool is below 0.7
   (nanotrain/rouge.py), and if it passes the paper's heuristics: not empty, 3 to 150 words, does not start with
   punctuation or a non-ASCII character, and does not mention what a text model cannot see or do (images, files,
   graphs, ...). Kept instructions join the pool, so later prompts show them too.
4. With ``--responses`` the model then answers each kept instruction, and the pairs are written as SFT data.

A pretrain checkpoint is prompted with plain text; a chat checkpoint (sft, rlhf) gets the list as a user turn. The
built-in world's tiny models know nothing of the seed tasks' topics, so there this script demonstrates the mechanism
(how many proposals survive each filter); pointed at a GPT-2-size model it produces usable instructions.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import flag, parse_config
from nanotrain.data import read_jsonl
from nanotrain.errors import run_script
from nanotrain.rouge import rouge_l_tokens, tokenize
from nanotrain.runtime import precision, setup_runtime
from nanotrain.sampling import generate_replies, left_pad

# Instructions that need a modality a text model lacks (the paper's filter list).
BLOCKED = re.compile(r"\b(image|images|graph|graphs|picture|pictures|file|files|map|maps|draw|plot|go to|video|"
                     r"audio|photo|photos)\b", re.I)


@dataclass
class SelfInstructConfig:
    init: str = flag("out/sft/ckpt.pt", "any checkpoint (pretrain: plain-text prompt; sft/rlhf: chat prompt)")
    seeds: str = flag("../shared/data/self_instruct_seed/seed_tasks.jsonl", "seed tasks, JSONL with 'instruction'")
    out: str = flag("out/self_instruct/instructions.jsonl", "where to write the new instructions (JSONL)")
    write_format: str = flag("messages", "messages ({'messages': [...]}) | alpaca ({instruction, input, output})")
    num_instructions: int = flag(100, "stop once this many new instructions are kept")
    max_rounds: int = flag(50, "at most this many rounds of prompts")
    batch_size: int = flag(16, "prompts per round (decoded together)")
    num_shots: int = flag(8, "instructions listed in each prompt")
    machine_shots: int = flag(2, "how many of them come from the generated ones (once there are enough)")
    rouge_threshold: float = flag(0.7, "keep a candidate only if its ROUGE-L F with every pool instruction is below")
    min_words: int = flag(3, "shortest instruction kept, in words")
    max_words: int = flag(150, "longest instruction kept, in words")
    max_new_tokens: int = flag(96, "tokens generated per prompt")
    temperature: float = flag(0.7, "sampling temperature")
    top_p: float = flag(0.5, "nucleus sampling")
    responses: bool = flag(True, "also have the model answer each kept instruction (needed for SFT data; without "
                                 "it each line is {'instruction'})")
    response_tokens: int = flag(128, "longest answer in tokens")
    seed: int = flag(0, "random seed (shots and sampling)")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("auto", "auto | float32 | bfloat16")


# ----------------------------------------------------------------------------------------------------------------
# The prompt, the parser, the filters


def few_shot_prompt(instructions: list[str]) -> str:
    """Table 6 of the paper: the task list the model is asked to continue."""
    lines = "".join(f"Task {i}: {x}\n" for i, x in enumerate(instructions, 1))
    return f"Come up with a series of tasks:\n\n{lines}Task {len(instructions) + 1}:"


def parse_instructions(text: str) -> list[str]:
    """The tasks in a continuation of ``few_shot_prompt``: the text up to the first "Task k:" is the first one, and
    each later "Task k:" starts another. Whitespace is collapsed; empty pieces are dropped."""
    pieces = re.split(r"\s*Task \d+\s*:", text)
    return [" ".join(p.split()) for p in pieces if p.strip()]


def rejection(instruction: str, min_words: int = 3, max_words: int = 150) -> str | None:
    """Why a candidate fails the paper's heuristic filters, or None if it passes."""
    if not instruction:
        return "empty"
    n = len(instruction.split())
    if n < min_words:
        return "too short"
    if n > max_words:
        return "too long"
    if not instruction[0].isascii():
        return "non-ascii start"
    if not instruction[0].isalnum():
        return "punctuation start"
    if BLOCKED.search(instruction):
        return "needs another modality"
    return None


class TaskPool:
    """The instructions so far (seeds first) with their tokens, for the ROUGE-L novelty test."""

    def __init__(self, seeds: list[str], threshold: float = 0.7):
        self.seeds, self.generated, self.threshold = list(seeds), [], threshold
        self.tokens = [tokenize(s) for s in seeds]
        self.seen = {" ".join(t) for t in self.tokens}

    def most_similar(self, candidate: str) -> float:
        """max over the pool of ROUGE-L F(candidate, instruction)."""
        c = tokenize(candidate)
        return max((rouge_l_tokens(c, t)[2] for t in self.tokens), default=0.0)

    def offer(self, candidate: str, min_words: int = 3, max_words: int = 150) -> str | None:
        """Add ``candidate`` if it passes every filter; returns the reason it was rejected, or None if kept."""
        reason = rejection(candidate, min_words, max_words)
        if reason:
            return reason
        key = " ".join(tokenize(candidate))
        if key in self.seen:
            return "duplicate"
        if self.most_similar(candidate) >= self.threshold:
            return "similar (ROUGE-L)"
        self.generated.append(candidate)
        self.tokens.append(tokenize(candidate))
        self.seen.add(key)
        return None


def bootstrap(complete, seeds: list[str], num_instructions: int, max_rounds: int = 50, batch_size: int = 16,
              num_shots: int = 8, machine_shots: int = 2, threshold: float = 0.7, min_words: int = 3,
              max_words: int = 150, rng: random.Random | None = None, log=print) -> tuple[list[str], Counter]:
    """The Self-Instruct loop. ``complete(prompts) -> texts`` is the model. Returns (new instructions, counts of
    the fate of every candidate: "kept" or a rejection reason)."""
    rng = rng or random.Random(0)
    pool = TaskPool(seeds, threshold)
    stats: Counter = Counter()
    for r in range(max_rounds):
        prompts = []
        for _ in range(batch_size):
            m = min(machine_shots, len(pool.generated))
            shots = rng.sample(pool.seeds, min(num_shots - m, len(pool.seeds))) + rng.sample(pool.generated, m)
            rng.shuffle(shots)
            prompts.append(few_shot_prompt(shots))
        for text in complete(prompts):
            for cand in parse_instructions(text):
                if len(pool.generated) >= num_instructions:
                    break
                stats[pool.offer(cand, min_words, max_words) or "kept"] += 1
        log(f"round {r + 1}: {len(pool.generated)} kept; " + ", ".join(f"{k} {v}" for k, v in stats.most_common()))
        if len(pool.generated) >= num_instructions:
            break
    return pool.generated, stats


# ----------------------------------------------------------------------------------------------------------------
# The model as a text completer


def make_completer(model, tok, chat: bool, max_new_tokens: int, temperature: float, top_p: float, generator,
                   autocast=None):
    """``complete(prompts) -> texts``: a chat model answers each prompt as a user turn; a pretrained model
    continues the plain text (up to its end-of-text token)."""

    def complete(prompts):
        if chat:
            replies = generate_replies(model, tok, prompts, max_new_tokens, temperature, top_p=top_p,
                                       generator=generator, autocast=autocast)
            return [r.text for r in replies]
        device = next(model.parameters()).device
        limit = model.config.block_size - max_new_tokens
        seqs = [([tok.eot] + tok.encode(p))[-limit:] for p in prompts]
        idx, mask = left_pad(seqs, tok.pad, device)
        with precision(autocast, device):
            out = model.generate(idx, max_new_tokens, temperature=temperature, top_p=top_p, stop_token=tok.eot,
                                 pad_mask=mask, pad_id=tok.pad, generator=generator)
        return [tok.decode(row) for row in out.tolist()]

    return complete


def main(argv=None) -> dict:
    cfg = parse_config(SelfInstructConfig, argv, description=__doc__.split("\n\n")[0])
    if cfg.write_format not in ("messages", "alpaca"):
        raise ValueError(f"--write-format must be messages or alpaca, not {cfg.write_format!r}")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model, tok, ckpt = load_model(cfg.init, device=rt.device)
    model.eval()
    chat = ckpt["stage"] in ("sft", "rlhf")
    seeds = [rec["instruction"].strip() for _, rec in read_jsonl(cfg.seeds, required=("instruction",))]
    gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    complete = make_completer(model, tok, chat, cfg.max_new_tokens, cfg.temperature, cfg.top_p, gen, rt.autocast)
    print(f"{len(seeds)} seed tasks; prompting {cfg.init} ({'chat' if chat else 'plain text'})")
    new, stats = bootstrap(complete, seeds, cfg.num_instructions, cfg.max_rounds, cfg.batch_size, cfg.num_shots,
                           cfg.machine_shots, cfg.rouge_threshold, cfg.min_words, cfg.max_words,
                           random.Random(cfg.seed))
    records = [{"instruction": x} for x in new]
    if cfg.responses and new:
        if chat:
            answers = [r.text.strip() for r in generate_replies(model, tok, new, cfg.response_tokens, cfg.temperature,
                                                                top_p=cfg.top_p, generator=gen,
                                                                autocast=rt.autocast)]
        else:
            raw = make_completer(model, tok, False, cfg.response_tokens, cfg.temperature, cfg.top_p, gen,
                                 rt.autocast)([f"Task: {x}\nOutput:" for x in new])
            answers = [re.split(r"\n\s*\n|\nTask:", a)[0].strip() for a in raw]
        records = [{"instruction": x, "output": a} for x, a in zip(new, answers) if a]
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in records:
            if cfg.write_format == "messages" and "output" in r:
                r = {"messages": [{"role": "user", "content": r["instruction"]},
                                  {"role": "assistant", "content": r["output"]}]}
            elif cfg.write_format == "alpaca" and "output" in r:
                r = {"instruction": r["instruction"], "input": "", "output": r.get("output", "")}
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    proposed = sum(stats.values())
    dropped = f", {len(new) - len(records)} dropped for an empty answer" if len(records) < len(new) else ""
    print(f"{len(records)} instructions -> {out} ({proposed} candidates: {stats['kept']} kept{dropped}; rejected: "
          + (", ".join(f"{k} {v}" for k, v in stats.items() if k != "kept") or "none") + ")")
    return {"written": len(records), "proposed": proposed, **stats}


if __name__ == "__main__":
    run_script(main)
