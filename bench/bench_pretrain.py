"""Pretraining throughput and KV-cache decoding speed, each beside a baseline measured in the same run.

    python bench/bench_pretrain.py                 # the bench config: 6 layers, 6 heads, width 384, block 256,
                                                   # batch 8, GPT-2's vocabulary (50257 -> 50304 rows)
    python bench/bench_pretrain.py --compile       # also time torch.compile

1. Training: tokens/s of full optimizer steps (forward, backward, AdamW) in fp32 and under bf16 autocast, and MFU =
   achieved model FLOP/s over the peak FLOP/s of a 1024x1024 matmul measured in this run on this machine (the faster
   of bf16 and fp32; on a CPU the published peak says little: turbo clocks, shared cores).
2. Decoding: batch 1, 256 new tokens, greedy, with the KV cache vs recomputing the whole prefix every step.
3. Peak resident memory of the process.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch

from nanotrain.cli import flag, parse_config
from nanotrain.gpt import GPT, GPTConfig, padded_vocab
from nanotrain.runtime import measure_matmul_peak
from nanotrain.trainer import make_optimizer


@dataclass
class BenchConfig:
    n_layer: int = flag(6, "layers")
    n_head: int = flag(6, "heads")
    n_embd: int = flag(384, "width")
    block_size: int = flag(256, "sequence length")
    batch_size: int = flag(8, "sequences per step")
    vocab: int = flag(50257, "vocabulary (GPT-2's)")
    steps: int = flag(8, "timed optimizer steps per variant")
    decode_tokens: int = flag(256, "new tokens for the decoding comparison")
    compile: bool = flag(False, "also time torch.compile (slow to start on a CPU)")
    device: str = flag("cpu", "cpu | cuda")


def time_training(model, x, y, steps, dtype, device):
    opt = make_optimizer(model, 1e-4, 0.1, device_type=device.type)

    def step():
        if dtype == torch.float32:
            loss = model(x, y)[1]
        else:
            with torch.autocast(device.type, dtype=dtype):
                loss = model(x, y)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):  # warm up allocator, kernels, compile
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return x.numel() * steps / (time.perf_counter() - t0)


@torch.no_grad()
def time_decoding(model, n_new, device, dtype):
    prompt = torch.randint(0, model.config.vocab_size, (1, 8), device=device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        t0 = time.perf_counter()
        cached = model.generate(prompt, n_new, temperature=0)
        t_cache = time.perf_counter() - t0
        t0 = time.perf_counter()
        seq = prompt
        for _ in range(n_new):
            seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], 1)
        t_full = time.perf_counter() - t0
    same = torch.equal(cached, seq[:, 8:])
    return n_new / t_cache, n_new / t_full, same


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    gcfg = GPTConfig(block_size=cfg.block_size + cfg.decode_tokens, vocab_size=padded_vocab(cfg.vocab),
                     n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)
    model = GPT(gcfg).to(device)
    x = torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), device=device)
    y = torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), device=device)
    fpt = model.flops_per_token(cfg.block_size)
    print(f"model: {model.num_params() / 1e6:.1f}M parameters ({cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}, vocab "
          f"{gcfg.vocab_size}), {fpt / 1e6:.0f} MFLOP per token; batch {cfg.batch_size} x {cfg.block_size}; "
          f"{torch.get_num_threads()} threads")

    peaks = {"bf16": measure_matmul_peak(device, torch.bfloat16, seconds=1.0),
             "fp32": measure_matmul_peak(device, torch.float32, seconds=1.0)}
    rows = []
    for name, dtype, m in [("fp32", torch.float32, model), ("bf16 autocast", torch.bfloat16, model)] + (
            [("bf16 + torch.compile", torch.bfloat16, torch.compile(model))] if cfg.compile else []):
        rows.append((name, time_training(m, x, y, cfg.steps, dtype, device)))
    peaks["bf16"] = max(peaks["bf16"], measure_matmul_peak(device, torch.bfloat16, seconds=1.0))
    peaks["fp32"] = max(peaks["fp32"], measure_matmul_peak(device, torch.float32, seconds=1.0))
    # MFU's denominator is the fastest matmul this machine did in this run, whichever the dtype: on some CPUs with
    # bf16 instructions PyTorch's fp32 matmul is still the faster one, and a flattering denominator would hide that.
    peak = max(peaks.values())
    print(f"\nmatmul peak measured in this run (1024x1024, best of before/after): bf16 {peaks['bf16'] / 1e9:.0f} "
          f"GFLOP/s, fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s")
    print(f"{'training':<24}{'tokens/s':>12}{'MFU':>8}")
    for name, tps in rows:
        print(f"{name:<24}{tps:>12,.0f}{fpt * tps / peak:>8.1%}")

    model.eval()
    kv, full, same = time_decoding(model, cfg.decode_tokens, device, torch.float32)
    print(f"\ndecoding, batch 1, {cfg.decode_tokens} new tokens: KV cache {kv:,.1f} tok/s, full recomputation "
          f"{full:,.1f} tok/s -> {kv / full:.1f}x (same tokens: {same})")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_rss:,.0f} MiB")


if __name__ == "__main__":
    main()
