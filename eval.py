"""Evaluate a pretrained checkpoint: HellaSwag accuracy and WikiText-2 perplexity.

    python eval.py --init out/pretrain/ckpt.pt
    python eval.py --init out/gpt2/ckpt.pt --hellaswag-limit 0     # all 10,042 items (GPU)

HellaSwag (Zellers et al. 2019), completion style as llm.c and nanochat score it: the context followed by each of the
four endings is scored by the model, and the ending with the lowest *mean* per-token loss wins (acc_norm; the
lowest total loss gives acc). GPT-2 124M scores about 29.6% acc_norm this way (28.6% acc); chance is 25%. Only a
model with GPT-2-scale knowledge of English gets above chance: the built-in world's model is expected at ~25%.

WikiText-2 perplexity: the raw test split, tokenized with the checkpoint's tokenizer, scored with a sliding window
(each token predicted with up to ``block_size`` tokens of context). Perplexity per token depends on the tokenizer,
so bits per byte (tokenizer-independent) is printed too.
"""
from __future__ import annotations

import bz2
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nanotrain.checkpoint import load_model
from nanotrain.cli import flag, parse_config
from nanotrain.errors import DataError, run_script
from nanotrain.runtime import setup_runtime

SHARED = Path(__file__).resolve().parent.parent / "shared" / "data"


@dataclass
class EvalConfig:
    init: str = flag("out/pretrain/ckpt.pt", "checkpoint to evaluate")
    hellaswag: str = flag(str(SHARED / "hellaswag" / "hellaswag_val_full.txt.bz2"),
                          "HellaSwag validation items (6 lines each: label: context / gold / 4 endings); 'none' skips")
    hellaswag_limit: int = flag(500, "items to score (0: all)")
    wikitext: str = flag(str(SHARED / "wikitext2_raw" / "wiki.test.raw"), "WikiText-2 raw test text; 'none' skips")
    wikitext_tokens: int = flag(100_000, "tokens of WikiText-2 to score (0: all)")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("auto", "auto | float32 | bfloat16")


def read_hellaswag(path, limit: int = 0) -> list[dict]:
    """Items {context, endings[4], label}. Lines: 'activity label: context', gold index, four endings."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (HellaSwag's validation set)")
    with (bz2.open(path, "rt", encoding="utf-8") if path.suffix == ".bz2" else path.open(encoding="utf-8")) as f:
        lines = f.read().splitlines()
    if len(lines) % 6:
        raise DataError(f"{path}: {len(lines)} lines is not a multiple of 6 (label: context, gold, 4 endings)")
    items = []
    for i in range(0, len(lines), 6):
        label = lines[i + 1].strip()
        if label not in {"0", "1", "2", "3"}:
            raise DataError(f"{path}:{i + 2}: gold label must be 0-3, got {label!r}")
        context = lines[i].split(": ", 1)[-1]  # drop the activity label, as rowanz's "ctx" field does
        items.append({"context": context, "endings": lines[i + 2:i + 6], "label": int(label)})
        if limit and len(items) == limit:
            break
    return items


@torch.no_grad()
def score_item(model, tok, item, device) -> tuple[int, int]:
    """(prediction by mean loss, prediction by total loss) over the four endings, batched as 4 right-padded rows."""
    ctx = tok.encode(item["context"])
    rows = [ctx + tok.encode(" " + e) for e in item["endings"]]
    rows = [r[-model.config.block_size:] for r in rows]
    n_end = [len(r) - len(ctx) if len(r) > len(ctx) else 1 for r in rows]
    T = max(map(len, rows))
    idx = torch.full((4, T), tok.pad, dtype=torch.long)
    for i, r in enumerate(rows):
        idx[i, :len(r)] = torch.tensor(r)
    idx = idx.to(device)
    logits = model(idx)[0].float()
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), idx[:, 1:], reduction="none")  # (4, T-1)
    total = torch.stack([nll[i, len(r) - 1 - n:len(r) - 1].sum() for i, (r, n) in enumerate(zip(rows, n_end))])
    mean = total / torch.tensor(n_end, device=device)
    return int(mean.argmin()), int(total.argmin())


def hellaswag(model, tok, items, device, autocast) -> dict:
    norm = raw = 0
    for it in tqdm(items, desc="hellaswag", leave=False):
        with autocast():
            p_norm, p_raw = score_item(model, tok, it, device)
        norm += p_norm == it["label"]
        raw += p_raw == it["label"]
    return {"hellaswag_acc_norm": norm / len(items), "hellaswag_acc": raw / len(items), "hellaswag_items": len(items)}


@torch.no_grad()
def perplexity(model, tok, text: str, device, autocast, max_tokens: int = 0) -> dict:
    """Sliding-window perplexity: windows of block_size advancing by half a window; each window scores only the
    tokens the previous one did not, so every token (after the first window) has at least half a window of context."""
    ids = tok.encode(text)
    if max_tokens:
        ids = ids[:max_tokens]
    n_bytes = len(tok.decode(ids).encode("utf-8"))
    T = model.config.block_size
    stride = T // 2
    nll_sum, counted = 0.0, 0
    for start in tqdm(range(0, max(1, len(ids) - 1), stride), desc="perplexity", leave=False):
        window = ids[start:start + T + 1]
        if len(window) < 2:
            break
        x = torch.tensor(window[:-1], device=device)[None]
        y = torch.tensor(window[1:], device=device)[None]
        first_new = 0 if start == 0 else T - stride  # the tokens before this were scored by the previous window
        with autocast():
            logits = model(x)[0].float()
        nll = F.cross_entropy(logits[0], y[0], reduction="none")[first_new:]
        nll_sum += nll.sum().item()
        counted += nll.numel()
        if start + T + 1 >= len(ids):
            break
    return {"wikitext_ppl": math.exp(nll_sum / counted), "wikitext_bits_per_byte": nll_sum / math.log(2) / n_bytes,
            "wikitext_tokens": counted}


def main(argv=None) -> dict:
    cfg = parse_config(EvalConfig, argv, description=__doc__.split("\n\n")[0])
    rt = setup_runtime(cfg.device, cfg.dtype)
    model, tok, ckpt = load_model(cfg.init, device=rt.device)
    model.eval()
    results = {}
    if cfg.hellaswag.lower() != "none":
        results.update(hellaswag(model, tok, read_hellaswag(cfg.hellaswag, cfg.hellaswag_limit), rt.device,
                                 rt.autocast))
    if cfg.wikitext.lower() != "none":
        text = Path(cfg.wikitext).read_text(encoding="utf-8")
        results.update(perplexity(model, tok, text, rt.device, rt.autocast, cfg.wikitext_tokens))
    print(f"{cfg.init} ({ckpt['stage']}, {tok.name}):")
    for k, v in results.items():
        print(f"  {k:<24} {v:.4f}" if isinstance(v, float) else f"  {k:<24} {v}")
    return results


if __name__ == "__main__":
    run_script(main)
