"""Pretraining throughput and KV-cache decoding speed, each beside a baseline measured in the same run.

    python bench/bench_pretrain.py                 # the bench config: 6 layers, 6 heads, width 384, block 256,
                                                   # batch 8, GPT-2's vocabulary (50257 -> 50304 rows)
    python bench/bench_pretrain.py --compile       # also time torch.compile (slow to start on a CPU)
    python bench/bench_pretrain.py --device cuda --preset gpt2 --batch-size 16 --compile --no-decode
    python bench/bench_pretrain.py --device cuda --preset gpt2 --no-train --decode-batches 1,64

1. Training: tokens/s of full optimizer steps (forward, backward, AdamW) in fp32 and under bf16 autocast (and, with
   --compile, bf16 + torch.compile), and MFU = achieved model FLOP/s over the peak FLOP/s of a square matmul measured
   in this run on this machine (the faster of bf16 and fp32; 1024 x 1024 on a CPU, where the published peak says
   little, 8192 x 8192 on a GPU). Each row is timed again for transformers' GPT2LMHeadModel holding the same weights,
   under the same batch, dtype, optimizer (nanotrain's AdamW) and loss, for the ratio ours / transformers.
2. Decoding: greedy, --decode-tokens new tokens after an 8-token prompt, for each --decode-batches size: tokens/s
   with nanotrain's KV cache beside transformers' ``generate`` (its own KV cache) on the same weights, and at batch 1
   beside recomputing the whole prefix every step.
3. Peak resident memory of the process (and of the GPU).

transformers is optional: without it the comparisons are skipped with a message.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanotrain.cli import flag, parse_config
from nanotrain.gpt import GPT, PRESETS, GPTConfig, padded_vocab
from nanotrain.runtime import measure_matmul_peak
from nanotrain.trainer import make_optimizer


@dataclass
class BenchConfig:
    preset: str = flag("", f"a model size from nanotrain.gpt ({' | '.join(PRESETS)}); overrides the four flags below")
    n_layer: int = flag(6, "layers")
    n_head: int = flag(6, "heads")
    n_embd: int = flag(384, "width")
    block_size: int = flag(256, "sequence length")
    batch_size: int = flag(8, "sequences per step")
    vocab: int = flag(50257, "vocabulary (GPT-2's)")
    steps: int = flag(8, "timed optimizer steps per variant")
    fp32: bool = flag(True, "time fp32 training too")
    compile: bool = flag(False, "also time torch.compile (slow to start on a CPU)")
    train: bool = flag(True, "time training")
    decode: bool = flag(True, "time decoding")
    decode_tokens: int = flag(256, "new tokens for the decoding comparison")
    decode_batches: str = flag("1", "comma-separated batch sizes for the decoding comparison")
    hf: bool = flag(True, "compare with transformers' GPT2LMHeadModel when transformers is installed")
    device: str = flag("cpu", "cpu | cuda")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(model, x, y, steps, dtype, device):
    """Tokens/s of full optimizer steps. ``model(x)`` may be ours or transformers'; both get the same loss."""
    opt = make_optimizer(model, 1e-4, 0.1, device_type=device.type)
    ours = isinstance(getattr(model, "_orig_mod", model), GPT)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(x)[0] if ours else model(input_ids=x).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):  # warm up allocator, kernels, autotuning, compile
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return x.numel() * steps / (time.perf_counter() - t0)


def to_transformers(model: GPT):
    """transformers' GPT2LMHeadModel holding ``model``'s weights (the inverse of GPT.from_hf_gpt2: its Conv1D layers
    store weights as (in, out)), or None without transformers. The two must give the same logits."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as err:
        print(f"(transformers is not installed: no comparison with GPT2LMHeadModel; {err})")
        return None
    c = model.config
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                                    n_layer=c.n_layer, n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                    attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=None))
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    hf.load_state_dict({k: v.t() if k.endswith(conv1d) else v for k, v in model.state_dict().items()})
    return hf.to(next(model.parameters()).device)


@torch.no_grad()
def time_decoding(model, hf, batch, n_new, device, dtype):
    """(ours, transformers, full recomputation) tokens/s of greedy decoding, None where not measured, and whether
    ours and transformers' chose the same tokens."""
    g = torch.Generator(device="cpu").manual_seed(batch)
    prompt = torch.randint(0, model.config.vocab_size, (batch, 8), generator=g).to(device)

    def timed(fn):
        fn(8)  # warm-up: kernels, allocator, caches
        sync(device)
        t0 = time.perf_counter()
        out = fn(n_new)
        sync(device)
        return out, batch * n_new / (time.perf_counter() - t0)

    def full_recomputation(n):
        seq = prompt
        for _ in range(n):
            seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], 1)
        return seq[:, 8:]

    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        ours, ours_tps = timed(lambda n: model.generate(prompt, n, temperature=0))
        theirs = theirs_tps = full_tps = None
        if hf is not None:
            mask = torch.ones_like(prompt)
            theirs, theirs_tps = timed(lambda n: hf.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=n,
                                                             min_new_tokens=n, do_sample=False, pad_token_id=0)[:, 8:])
        if batch == 1:
            full, full_tps = timed(full_recomputation)
            assert torch.equal(full, ours) or dtype != torch.float32, "the KV cache changed the greedy tokens"
    same = None if theirs is None else torch.equal(ours, theirs)
    return ours_tps, theirs_tps, full_tps, same


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    if cfg.preset:
        for k, v in PRESETS[cfg.preset].items():
            setattr(cfg, k, v)
    batches = [int(b) for b in cfg.decode_batches.split(",")]
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    gcfg = GPTConfig(block_size=cfg.block_size + cfg.decode_tokens, vocab_size=padded_vocab(cfg.vocab),
                     n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)
    model = GPT(gcfg).to(device)
    hf = to_transformers(model) if cfg.hf else None
    x = torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), device=device)
    y = torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), device=device)
    fpt = model.flops_per_token(cfg.block_size)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"model: {model.num_params() / 1e6:.1f}M parameters ({cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}, vocab "
          f"{gcfg.vocab_size}), {fpt / 1e6:.0f} MFLOP per token; batch {cfg.batch_size} x {cfg.block_size}; {where}; "
          f"torch {torch.__version__}")
    if hf is not None:
        import transformers

        with torch.no_grad():
            gap = (model(x[:2])[0] - hf(input_ids=x[:2]).logits).abs().max().item()
        print(f"transformers {transformers.__version__} GPT2LMHeadModel ({hf.config._attn_implementation} attention) "
              f"with the same weights: max |logit difference| {gap:.1e} (fp32)")

    if cfg.train:
        peaks = {"bf16": measure_matmul_peak(device, torch.bfloat16, seconds=1.0),
                 "fp32": measure_matmul_peak(device, torch.float32, seconds=1.0)}
        print(f"\nmatmul peak measured now: bf16 {peaks['bf16'] / 1e12:.3g} TFLOP/s, fp32 {peaks['fp32'] / 1e12:.3g} "
              f"TFLOP/s")
        # MFU's denominator is the fastest matmul this machine did in this run, whichever the dtype: on some CPUs with
        # bf16 instructions PyTorch's fp32 matmul is still the faster one, and a flattering denominator would hide it.
        peak = max(peaks.values())
        variants = ([("fp32", torch.float32, False)] if cfg.fp32 else []) + [("bf16 autocast", torch.bfloat16, False)]
        variants += [("bf16 + torch.compile", torch.bfloat16, True)] if cfg.compile else []
        print(f"{'training':<24}{'ours tok/s':>12}{'MFU':>8}{'transformers':>14}{'MFU':>8}{'ours/tf':>9}", flush=True)
        rows = []
        for name, dtype, compiled in variants:
            ours = time_training(torch.compile(model) if compiled else model, x, y, cfg.steps, dtype, device)
            theirs = (time_training(torch.compile(hf) if compiled else hf, x, y, cfg.steps, dtype, device)
                      if hf is not None else None)
            rows.append((name, ours, theirs))
            cells = f"{theirs:>14,.0f}{fpt * theirs / peak:>8.1%}{ours / theirs:>8.2f}x" if theirs else ""
            print(f"{name:<24}{ours:>12,.0f}{fpt * ours / peak:>8.1%}{cells}", flush=True)
        again = {"bf16": measure_matmul_peak(device, torch.bfloat16, seconds=1.0),
                 "fp32": measure_matmul_peak(device, torch.float32, seconds=1.0)}
        print(f"matmul peak measured again after the runs: bf16 {again['bf16'] / 1e12:.3g} TFLOP/s, fp32 "
              f"{again['fp32'] / 1e12:.3g} TFLOP/s; MFU above is against the first, "
              f"{max(again.values()) / peak:.2f}x of it")

    if cfg.decode:
        model.eval()
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        print(f"\ndecoding, greedy, {cfg.decode_tokens} new tokens after 8, "
              f"{'bf16 autocast' if dtype == torch.bfloat16 else 'fp32'}; tokens/s over the batch:")
        print(f"{'batch':>6}{'ours (KV cache)':>18}{'transformers':>14}{'ours/tf':>9}{'full recompute':>16}"
              f"{'same tokens as tf':>19}", flush=True)
        for b in batches:
            ours, theirs, full, same = time_decoding(model, hf, b, cfg.decode_tokens, device, dtype)
            cells = (f"{theirs:>14,.1f}{ours / theirs:>8.2f}x" if theirs else f"{'-':>14}{'-':>9}")
            full_cell = f"{full:>16,.1f}" if full else f"{'-':>16}"
            print(f"{b:>6}{ours:>18,.1f}{cells}{full_cell}{str(same):>19}", flush=True)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f", GPU {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB" if device.type == "cuda" else ""
    print(f"peak resident memory: {peak_rss:,.0f} MiB{gpu}")


if __name__ == "__main__":
    main()
