"""Causal attention speed: nanotrain's Triton kernel against PyTorch SDPA and the explicit path, on one CUDA GPU.

For each sequence length T and head dim D, prints forward and forward+backward TFLOP/s of
  - triton:   nanotrain.flash_attention.flash_attention (FlashAttention-2 in Triton, autotuned on first use),
  - sdpa:     torch.nn.functional.scaled_dot_product_attention forced onto its FlashAttention-2 backend,
  - explicit: softmax(QK^T / sqrt(d) + mask) V written out (nanotrain.gpt's "explicit" path; T x T in memory),
and the triton/sdpa ratio, then each path's times in milliseconds. Shapes follow the FlashAttention-2 paper's
benchmark (section 4.1): 16k tokens per batch (B = 16384 / T), model width 2048 (H = 2048 / D), causal, bf16; or a
fixed --batch and --heads, such as GPT-2 124M's training shape (B = 8 sequences of 12 heads: B*H = 96, D = 64).
FLOPs count the matmuls only: 4 B H T^2 D / 2 for a causal forward, 2.5x that for the backward (FA2 paper
convention), so fwd+bwd = 3.5x forward.

    python bench/bench_attention.py                                   # T = 512..8192, D = 64 and 128
    python bench/bench_attention.py --seq-lens 1024 4096 --head-dims 64
    python bench/bench_attention.py --batch 8 --heads 12 --seq-lens 1024 2048 4096 8192 --paths triton sdpa
    python bench/bench_attention.py --smoke                           # CPU, interpreter, tiny: checks the script only

Without a CUDA GPU (and without --smoke) it says so and exits 0.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F


@dataclass
class Args:
    seq_lens: list[int] = field(default_factory=lambda: [512, 1024, 2048, 4096, 8192])  # T values
    head_dims: list[int] = field(default_factory=lambda: [64, 128])  # D values
    tokens: int = 16384  # B * T, as in the FlashAttention-2 paper
    width: int = 2048  # H * D, as in the FlashAttention-2 paper
    batch: int = 0  # B; 0: tokens // T
    heads: int = 0  # H; 0: width // D
    dtype: str = "bf16"  # bf16 | fp16
    paths: list[str] = field(default_factory=lambda: ["triton", "sdpa", "explicit"])
    smoke: bool = False  # run tiny shapes on the CPU through Triton's interpreter (timings meaningless)


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(Args):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if callable(f.default_factory) else f.default
        if f.type == "bool":
            p.add_argument(flag, action="store_true", help=f"(default: {default})")
        elif f.type.startswith("list"):
            kind = int if "int" in f.type else str
            p.add_argument(flag, nargs="+", type=kind, default=default, help=f"(default: {default})")
        else:
            p.add_argument(flag, type=type(default), default=default, help=f"(default: {default})")
    return Args(**vars(p.parse_args()))


def causal_flops(B, H, T, D, mode):
    fwd = 4 * B * H * T * T * D / 2  # two matmuls (QK^T, PV) of 2 T^2 D each, half of them masked away
    return fwd if mode == "fwd" else 3.5 * fwd


def time_ms(fn, cuda: bool) -> float:
    if cuda:
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def attention_fns():
    """name -> f(q, k, v) -> o, every one causal with scale 1/sqrt(D)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from nanotrain.flash_attention import flash_attention
    from nanotrain.gpt import attention

    def sdpa(q, k, v):
        # FLASH_ATTENTION on CUDA; the CPU has no such backend, so --smoke lets SDPA pick its own.
        backends = [SDPBackend.FLASH_ATTENTION] if q.is_cuda else [SDPBackend.MATH]
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return {"triton": flash_attention, "sdpa": sdpa, "explicit": lambda q, k, v: attention(q, k, v, None, "explicit")}


def measure(fn, q, k, v, do, cuda: bool) -> tuple[float, float]:
    """(forward ms, forward+backward ms); inf for a path that runs out of memory."""
    try:
        def fwd_bwd():
            fn(q, k, v).backward(do)
            q.grad = k.grad = v.grad = None

        fwd_bwd()  # compile and autotune outside the timed region
        with torch.no_grad():
            fwd = time_ms(lambda: fn(q, k, v), cuda)
        return fwd, time_ms(fwd_bwd, cuda)
    except torch.cuda.OutOfMemoryError:
        q.grad = k.grad = v.grad = None
        torch.cuda.empty_cache()
        return math.inf, math.inf


def main():
    args = parse_args()
    if args.smoke:
        # Must happen before anything imports triton; the interpreter runs the kernels on the CPU, in fp32.
        os.environ["TRITON_INTERPRET"] = "1"
        args.seq_lens, args.head_dims, args.tokens, args.width, args.dtype = [64], [16], 128, 32, "fp32"
        args.batch = args.heads = 0
    elif not torch.cuda.is_available():
        print("bench_attention: no CUDA GPU here, nothing to measure (the kernel needs one; --smoke checks this "
              "script on the CPU through Triton's interpreter).")
        return 0
    from nanotrain.flash_attention import triton_available

    ok, why = triton_available()
    if not ok:
        print(f"bench_attention: the Triton kernel cannot run here: {why}")
        return 0
    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    fns = {name: f for name, f in attention_fns().items() if name in args.paths}
    import triton

    print(f"device: {torch.cuda.get_device_name() if cuda else 'CPU (Triton interpreter, smoke test)'} | "
          f"torch {torch.__version__} | triton {triton.__version__} | {args.dtype}, causal, "
          f"{f'B={args.batch}' if args.batch else f'B*T={args.tokens}'}, "
          f"{f'H={args.heads}' if args.heads else f'H*D={args.width}'} | TFLOP/s, higher is better; then ms")
    cols = "".join(f"{name + ' ' + mode:>18s}" for mode in ("fwd", "fwd+bwd") for name in fns)
    ms_cols = "".join(f"{name + ' ' + mode + ' ms':>20s}" for mode in ("fwd", "fwd+bwd") for name in fns)
    print(f"{'T':>6s}{'D':>5s}{'B':>4s}{'H':>4s}{cols}{'tri/sdpa f+b':>14s}{'max|o-sdpa|':>13s}{ms_cols}")
    ratios = []
    for D in args.head_dims:
        for T in args.seq_lens:
            B, H = args.batch or max(1, args.tokens // T), args.heads or args.width // D
            g = torch.Generator(device=device).manual_seed(0)
            q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype, generator=g).requires_grad_()
                       for _ in range(3))
            do = torch.randn(B, H, T, D, device=device, dtype=dtype, generator=g)
            tflops, ms = {}, {}
            for name, fn in fns.items():
                ms[name] = fwd_ms, fb_ms = measure(fn, q, k, v, do, cuda)
                tflops[name] = (causal_flops(B, H, T, D, "fwd") / fwd_ms / 1e9,
                                causal_flops(B, H, T, D, "fwd+bwd") / fb_ms / 1e9)
            with torch.no_grad():
                err = (fns["triton"](q, k, v).float() - fns["sdpa"](q, k, v).float()).abs().max().item() \
                    if {"triton", "sdpa"} <= fns.keys() else math.nan
            cells = "".join(f"{tflops[name][i]:18.1f}" if tflops[name][i] > 0 else f"{'OOM':>18s}"
                            for i in (0, 1) for name in fns)
            ratio = tflops["triton"][1] / tflops["sdpa"][1] if {"triton", "sdpa"} <= fns.keys() else math.nan
            ratios.append(ratio)
            ms_cells = "".join(f"{ms[name][i]:20.3f}" for i in (0, 1) for name in fns)
            print(f"{T:6d}{D:5d}{B:4d}{H:4d}{cells}{ratio:14.2f}{err:13.1e}{ms_cells}", flush=True)
    if not cuda:
        print("smoke test done: the script runs end to end; interpreter timings mean nothing.")
    elif ratios and not any(math.isnan(r) for r in ratios):
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"triton / sdpa forward+backward: geometric mean {geo:.2f}x, worst {min(ratios):.2f}x "
              f"(target >= 0.9x on an H100)")
    if cuda and "triton" in fns:
        import nanotrain.flash_attention as fa

        for name, tuner in (("fwd", fa._fwd), ("dkdv", fa._bwd_dkdv), ("dq", fa._bwd_dq)):
            print(f"autotuned {name}: " + "; ".join(f"D={key[0]} T<={key[1]}: {cfg}" for key, cfg in
                                                    sorted(tuner.cache.items(), key=lambda kv: str(kv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
