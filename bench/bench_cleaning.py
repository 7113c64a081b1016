"""What each cleaning step buys: the same tiny model and token budget pretrained on the built-in world's raw crawl,
on the cleaned one, and on the cleaned one with one big step left out.

    python bench/bench_cleaning.py                              # 6 runs of 150 steps on data/tinyworld's crawl
    python bench/bench_cleaning.py --runs raw,clean --steps 300
    python bench/bench_cleaning.py --reuse                      # measure again, keeping the trained checkpoints

The corpora, all from data/tinyworld/crawl.warc.gz (nanotrain/tinyworld/web.py) through nanotrain.cleaning.clean:

    raw         every page's visible text (no boilerplate removal), nothing filtered, nothing deduplicated
    clean       what pipeline.py pretrains on: text without the page chrome, content filter, Gopher's rules,
                decontamination against the world's held-out files, exact and near dedup
    -dedup, -quality, -decontam, -content     clean without that step (dedup: exact and near)

--held-out of the content pages (not the many-times mirrored ones) are taken out of every corpus, copies included,
and their clean text is every run's validation set; one tokenizer (the BPE data/prepare_pretrain.py trains on the
cleaned corpus) serves all runs, so the losses compare. Each run is train_pretrain.py with its defaults (the tiny
model, 16 x 256 tokens a step) for --steps steps. Measured on each model:

    clean val loss    nats per token on the held-out clean text
    memorised         of the pages mirrored web.VIRAL_COPIES times in the raw crawl, the share whose continuation the
                      model emits verbatim, greedy, from their first --prompt-tokens tokens: --span tokens (Lee et
                      al. 2021 count 50-token spans; the world's pages are short, so the prompt is 32 tokens and the
                      pages are at least 100 words), and the mean number of tokens it gets right before the first
                      divergence; beside it the same for as many pages that appear once in the crawl. Also the
                      model's loss on both sets of pages: how much better it knows the mirrored text.
    leaked / never    accuracy, judged by the gold scorer (gold.is_correct), on the held-out questions of eval_b and
                      eval_prompts whose oracle answer the crawl's answer keys quote ("leaked") and on the others: the
                      question as plain text, then the oracle answer or the fluent wrong one (Spec.bad), whichever
                      the model finds likelier (chance 50%; questions where gold does not tell the two apart are left
                      out). Contamination shows as a gap; decontamination should close it.
    blocklisted, boilerplate   shares of --samples unconditional samples (temperature 1, --sample-tokens tokens
                      from the end-of-text token) with a word of data/blocklist_words.txt, and with a phrase only the
                      crawl's page chrome contains (web.BOILERPLATE_MARKERS)
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanotrain.checkpoint import load_model
from nanotrain.cleaning import Decontaminator, Steps, clean
from nanotrain.cli import flag, parse_config
from nanotrain.errors import run_script
from nanotrain.extract import html_to_text, read_documents
from nanotrain.quality import Blocklist, GopherRules, content_filter
from nanotrain.runtime import auto_dtype
from nanotrain.tinyworld import web
from nanotrain.tinyworld.generate import CRAWL, write_jsonl
from nanotrain.tinyworld.gold import Gold, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
# what each corpus does: (remove boilerplate, content filter, Gopher, decontamination, exact + near dedup)
RUNS = {"raw": (False, False, False, False, False), "clean": (True, True, True, True, True),
        "-dedup": (True, True, True, True, False), "-quality": (True, True, False, True, True),
        "-decontam": (True, True, True, False, True), "-content": (True, False, True, True, True)}


@dataclass
class BenchConfig:
    world: str = flag("data/tinyworld", "the built-in world's folder (python data/tinyworld.py)")
    out: str = flag("out/bench_cleaning", "folder for the corpora, token files and checkpoints")
    runs: str = flag(",".join(RUNS), f"comma-separated corpora: {', '.join(RUNS)}")
    steps: int = flag(150, "pretraining steps per run (train_pretrain.py's tiny model)")
    seed: int = flag(0, "seed of the held-out split, of training and of the samples")
    held_out: float = flag(0.02, "share of the content pages held out as clean validation text")
    prompt_tokens: int = flag(32, "memorisation: tokens of a page given as the prompt")
    span: int = flag(50, "memorisation: tokens the model must continue verbatim")
    samples: int = flag(400, "unconditional samples per model")
    sample_tokens: int = flag(128, "tokens per sample")
    workers: int = flag(2, "processes for the cleaning")
    device: str = flag("cpu", "device for training and measuring")
    dtype: str = flag("auto", "precision of every run: auto (chosen once here, as pipeline.py does) | float32 | "
                              "bfloat16")
    reuse: bool = flag(False, "keep corpora and checkpoints already in --out (after a run with the same flags)")


def steps_for(run: str, world: Path) -> Steps:
    extract, content, quality, decontam, dedup = RUNS[run]
    evals = [str(world / f"{e}.jsonl") for e in web.EVAL_FILES]
    return Steps(remove_boilerplate=extract,
                 blocklist=Blocklist.from_files(ROOT / "data" / "blocklist_words.txt",
                                                ROOT / "data" / "blocklist_domains.txt") if content else None,
                 gopher=GopherRules() if quality else None,
                 decontaminator=Decontaminator.from_paths(evals, web.DECONTAM_NGRAM, question=web.DECONTAM_QUESTION)
                 if decontam else None, exact_dedup=dedup, near_dedup=dedup)


def run(cmd: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench_cleaning: {' '.join(cmd[:1])} failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")


# ----------------------------------------------------------------------------------------------------------------
# The measures

@torch.no_grad()
def val_loss(model, tokens: np.ndarray) -> float:
    """Mean next-token loss over the whole validation stream, in windows of the model's context."""
    T = model.config.block_size
    n = (len(tokens) - 1) // T * T
    x = torch.from_numpy(tokens[:n].astype(np.int64)).view(-1, T)
    y = torch.from_numpy(tokens[1:n + 1].astype(np.int64)).view(-1, T)
    return sum(model(x[i:i + 32], y[i:i + 32])[1].item() * len(x[i:i + 32]) for i in range(0, len(x), 32)) / len(x)


@torch.no_grad()
def text_loss(model, tok, texts: list[str]) -> float:
    """Mean next-token loss on the texts (each from the end-of-text token): how well the model knows them."""
    losses = []
    for t in texts:
        ids = torch.tensor([[tok.eot] + tok.encode(t)])[:, :model.config.block_size + 1]
        losses.append(model(ids[:, :-1], ids[:, 1:])[1].item())
    return float(np.mean(losses))


@torch.no_grad()
def memorised(model, tok, texts: list[str], prompt: int, span: int) -> tuple[float, float]:
    """Greedy continuations of each text's first ``prompt`` tokens: the share that reproduce the next ``span``
    tokens verbatim (Lee et al. 2021's measure), and the mean number of tokens reproduced before the first
    divergence (a graded view of the same)."""
    ids = [tok.encode(t)[:prompt + span] for t in texts]
    x = torch.tensor([i[:prompt] for i in ids])
    out = model.generate(x, span, temperature=0.0).tolist()
    agree = [next((k for k, (a, b) in enumerate(zip(o, i[prompt:])) if a != b), span) for o, i in zip(out, ids)]
    return float(np.mean([a == span for a in agree])), float(np.mean(agree))


@torch.no_grad()
def scores(model, tok, pairs: list[tuple[str, list[str]]]) -> list[list[float]]:
    """For each (question, candidates): each candidate's summed log-probability after the question (the plain text
    "question candidate", from the end-of-text token)."""
    rows, spans = [], []
    for q, cands in pairs:
        prefix = [tok.eot] + tok.encode(q)
        for c in cands:
            rows.append(prefix + tok.encode(" " + c))
            spans.append((len(prefix), len(rows[-1])))
    flat = []
    for i in range(0, len(rows), 64):
        batch = rows[i:i + 64]
        T = max(map(len, batch))
        logp = torch.log_softmax(model(torch.tensor([r + [tok.pad] * (T - len(r)) for r in batch]))[0].float(), -1)
        for j, r in enumerate(batch):
            s, e = spans[i + j]
            flat.append(sum(float(logp[j, k - 1, r[k]]) for k in range(s, e)))
    out, at = [], 0
    for _, cands in pairs:
        out.append(flat[at:at + len(cands)])
        at += len(cands)
    return out


@torch.no_grad()
def samples(model, tok, n: int, length: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = model.generate(torch.full((n, 1), tok.eot), length, temperature=1.0, generator=g)
    return [tok.decode(row.tolist()) for row in out]


# ----------------------------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    world, out = Path(cfg.world), Path(cfg.out)
    runs = [r.strip() for r in cfg.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown or "clean" not in runs:
        sys.exit(f"bench_cleaning: --runs must include clean (its tokenizer serves all runs) and name only "
                 f"{', '.join(RUNS)}; got {cfg.runs!r}")
    if not (world / CRAWL).exists():
        raise FileNotFoundError(f"{world / CRAWL}: no crawl here (make the world with python data/tinyworld.py)")

    dtype = auto_dtype(cfg.device) if cfg.dtype == "auto" else cfg.dtype  # one timing: every run the same precision
    print(f"precision of every run: {dtype}")

    # --- the crawl's truth: content pages, their mirrors, the answer keys
    pages = [(d.record["kind"], int(d.record["page"]), d.html) for d in read_documents([str(world / CRAWL)], [])]
    content = {p: html_to_text(h) for k, p, h in pages if k in ("clean", "zh")}
    english = {p for k, p, _ in pages if k == "clean"}
    copies = Counter(p for k, p, _ in pages if p >= 0 and k not in ("clean", "zh"))  # mirrors, re-crawls, fragments
    mirrors = Counter(p for k, p, _ in pages if k == "exact_dup")
    viral = sorted(p for p in content if mirrors[p] >= web.VIRAL_COPIES)
    rng = random.Random(f"bench-cleaning-{cfg.seed}")
    held = set(rng.sample(sorted(p for p in content if p not in viral), round(cfg.held_out * len(content))))
    once = rng.sample(sorted(p for p in english if p not in held and not copies[p]
                             and len(content[p].split()) >= web.VIRAL_MIN_WORDS), len(viral))
    leak_text = "\n".join(html_to_text(h) for k, _, h in pages if k == "eval_leak")
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "val.jsonl", [{"text": content[p]} for p in sorted(held)])
    print(f"{world / CRAWL}: {len(pages)} pages, {len(content)} content pages ({len(held)} held out as validation "
          f"text), {len(viral)} mirrored {web.VIRAL_COPIES}x, {sum(k == 'eval_leak' for k, _, _ in pages)} answer keys")

    # --- corpora and tokens: the cleaned corpus first, its BPE serves every run
    info = {}
    for name in ["clean"] + [r for r in runs if r != "clean"]:
        d = out / name
        if not (cfg.reuse and (d / "tokens" / "meta.json").exists()):
            t0 = time.time()
            rep = clean([str(world / CRAWL)], d / "cleaned.jsonl", steps_for(name, world), workers=cfg.workers,
                        progress=False)
            write_jsonl(d / "train.jsonl", [{"text": r["text"]} for r in read_jsonl(d / "cleaned.jsonl")
                                            if int(r["page"]) not in held])
            tok_flags = ["--tokenizer", "bpe"] if name == "clean" else ["--tokenizer", str(out / "clean" / "tokens")]
            run(["data/prepare_pretrain.py", "--input", str(d / "train.jsonl"), "--val-input", str(out / "val.jsonl"),
                 "--out", str(d / "tokens"), "--seed", str(cfg.seed), *tok_flags])
            print(f"  {name:10s} {rep.entered['extract']} pages -> {rep.documents_out} ({time.time() - t0:.0f} s)")
        info[name] = json.loads((d / "tokens" / "meta.json").read_text())

    # --- pretraining: the same model, steps and batches for every corpus
    for name in runs:
        d = out / name
        if cfg.reuse and (d / "model" / "ckpt.pt").exists():
            continue
        t0 = time.time()
        run(["train_pretrain.py", "--data", str(d / "tokens"), "--out", str(d / "model"), "--steps", str(cfg.steps),
             "--warmup", str(max(1, cfg.steps // 10)), "--eval-every", str(cfg.steps), "--save-every",
             str(cfg.steps), "--seed", str(cfg.seed), "--device", cfg.device, "--dtype", dtype])
        info[name]["train_s"] = time.time() - t0
        print(f"  pretrained on {name}: {info[name]['train_tokens']:,} tokens, {cfg.steps} steps, "
              f"{info[name]['train_s']:.0f} s")

    # --- the measures
    gold = Gold.load(world)
    questions = []  # (question, [oracle answer, fluent wrong one], leaked)
    for stem in ("eval_b", "eval_prompts"):
        for r in read_jsonl(world / f"{stem}.jsonl"):
            spec = gold.spec(r["prompt"])
            if r["lang"] != "en" or r["harmful"] or spec is None or not spec.bad:
                continue
            if gold.is_correct(r["prompt"], r["answer"]) and not gold.is_correct(r["prompt"], spec.bad):
                questions.append((r["prompt"], [r["answer"], spec.bad], f"{r['prompt']} {r['answer']}" in leak_text))
    words = Blocklist.from_files(ROOT / "data" / "blocklist_words.txt")
    val_tokens = np.fromfile(out / "clean" / "tokens" / "val.bin", dtype=np.uint16)
    results = {}
    for name in runs:
        model, tok, _ = load_model(out / name / "model" / "ckpt.pt", stages=("pretrain",), device=cfg.device)
        model.eval()
        logps = scores(model, tok, [(q, c) for q, c, _ in questions])
        right = [gold.is_correct(q, c[int(np.argmax(lp))]) for (q, c, _), lp in zip(questions, logps)]
        leaked = [lk for _, _, lk in questions]
        texts = samples(model, tok, cfg.samples, cfg.sample_tokens, cfg.seed)
        mem_viral = memorised(model, tok, [content[p] for p in viral], cfg.prompt_tokens, cfg.span)
        mem_once = memorised(model, tok, [content[p] for p in once], cfg.prompt_tokens, cfg.span)
        results[name] = {
            "train_tokens": info[name]["train_tokens"],
            "val_loss": val_loss(model, val_tokens),
            "memorised_viral": mem_viral[0], "memorised_once": mem_once[0],
            "loss_viral": text_loss(model, tok, [content[p] for p in viral]),
            "loss_once": text_loss(model, tok, [content[p] for p in once]),
            "verbatim_tokens_viral": mem_viral[1], "verbatim_tokens_once": mem_once[1],
            "acc_leaked": float(np.mean([r for r, lk in zip(right, leaked) if lk])),
            "acc_never": float(np.mean([r for r, lk in zip(right, leaked) if not lk])),
            "blocklisted": float(np.mean([content_filter(t, None, words) is not None for t in texts])),
            "boilerplate": float(np.mean([any(m in t.lower() for m in web.BOILERPLATE_MARKERS) for t in texts])),
            "example_sample": texts[0][:300]}
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))

    n_leaked = sum(lk for _, _, lk in questions)
    print(f"\n{cfg.steps} steps of the tiny model per corpus (same batches, same tokenizer); validation: "
          f"{len(val_tokens):,} tokens of held-out clean pages; memorised: {len(viral)} pages mirrored "
          f"{web.VIRAL_COPIES}x in the raw crawl / {len(once)} pages there once, {cfg.span} tokens after "
          f"{cfg.prompt_tokens}; questions: {n_leaked} leaked, {len(questions) - n_leaked} never leaked "
          f"(chance 50%); {cfg.samples} samples of {cfg.sample_tokens} tokens\n")
    print("| corpus | train tokens | clean val loss | memorised: mirrored / once (verbatim tokens) | loss: mirrored / "
          "once | accuracy: leaked / never (gap) | samples with blocklisted words | with boilerplate |")
    print("|---|---:|---:|---|---|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['train_tokens']:,} | {r['val_loss']:.3f} | {r['memorised_viral']:.0%} / "
              f"{r['memorised_once']:.0%} ({r['verbatim_tokens_viral']:.1f} / {r['verbatim_tokens_once']:.1f}) | "
              f"{r['loss_viral']:.2f} / {r['loss_once']:.2f} | "
              f"{r['acc_leaked']:.1%} / {r['acc_never']:.1%} ({100 * (r['acc_leaked'] - r['acc_never']):+.1f} pt) | "
              f"{r['blocklisted']:.1%} | {r['boilerplate']:.0%} |")
    for name, r in results.items():
        print(f"\n{name}, sample 1: {r['example_sample']!r}")
    return results


if __name__ == "__main__":
    run_script(main)
