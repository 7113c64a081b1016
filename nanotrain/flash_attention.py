"""Causal self-attention as fused Triton kernels, FlashAttention-2 style (Dao 2023, arXiv:2307.08691).

Plain attention, O = softmax(S) V with S = QK^T / sqrt(d) and future keys masked, writes the T x T matrices S and
P = softmax(S) to GPU memory and reads them back: memory traffic and footprint grow as T^2, and on a modern GPU that
traffic, not the arithmetic, is what takes the time. FlashAttention never materialises S or P. Each program loads one
block of queries into on-chip memory and streams the key/value blocks past it, keeping a *running* softmax (the
"online softmax": a running row maximum m, a running denominator l, and an output accumulator that is rescaled
whenever m grows). Only O and one number per row, the log-sum-exp L = m + log(l), go back to memory. The backward
pass recomputes P block by block from Q, K and L instead of storing it.

The kernels, in the order of the paper:
  - ``_fwd_kernel``        Algorithm 1: one program per query block; online softmax over key blocks; saves L.
  - ``_bwd_preprocess``    Algorithm 2, line 4: D_i = rowsum(dO_i * O_i), one number per query row.
  - ``_bwd_dkdv_kernel``   Algorithm 2, outer loop over key blocks j: accumulates dK_j and dV_j over query blocks i.
  - ``_bwd_dq_kernel``     dQ_i, accumulated over key blocks j. The paper adds into dQ from inside the dK/dV loop
                           with atomic adds (Algorithm 2, line 15); a separate pass that recomputes P costs two more
                           small matmuls per block but needs no atomics and is deterministic (as in Triton's
                           fused-attention tutorial).
Causality halves the work: blocks entirely above the diagonal (keys after every query in the block) are skipped,
blocks entirely below it need no mask, and only the blocks that straddle the diagonal pay for masking (section 3.1.1,
"Causal masking").
Softmax runs in base 2 (exp2 is one hardware instruction), so scores are pre-multiplied by log2(e).

Public API (``nanotrain/gpt.py`` calls ``flash_attention`` for training-time causal attention on CUDA):

    from nanotrain.flash_attention import flash_attention, triton_available
    ok, why = triton_available()
    o = flash_attention(q, k, v)            # q, k, v: (B, H, T, D), fp16/bf16 on CUDA, fp32/fp16 interpreted

On a CPU the kernels run through Triton's interpreter (set ``TRITON_INTERPRET=1`` before Triton is imported; the
test suite does); that is slow and for testing only. Tests: ``pytest tests/test_flash_attention.py``; speed against
PyTorch's SDPA: ``python bench/bench_attention.py``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl

    _TRITON_IMPORT_ERROR = None
    _jit = triton.jit
except ImportError as err:  # macOS/Windows, or a minimal install: the module still imports, triton_available says no
    _TRITON_IMPORT_ERROR = f"triton is not importable ({err})"
    triton = None

    class tl:  # stand-in for the one name evaluated at import time (signatures, constants); never run
        constexpr = float

    def _jit(fn):
        return fn

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * log2(e)); the kernels work in base 2
LN2 = tl.constexpr(0.6931471805599453)  # log(x) = log2(x) * ln(2)


def triton_available() -> tuple[bool, str]:
    """Whether the kernels can run here, and why not when they cannot."""
    if _TRITON_IMPORT_ERROR is not None:
        return False, _TRITON_IMPORT_ERROR
    if _interpreted():
        return True, "Triton interpreter (TRITON_INTERPRET=1): CPU tensors, slow, for testing"
    if torch.cuda.is_available():
        return True, f"CUDA device {torch.cuda.get_device_name()}"
    return False, "no CUDA device, and TRITON_INTERPRET=1 was not set before triton was imported"


def _interpreted() -> bool:
    # triton.jit decides between compiling and interpreting when the decorator runs, i.e. when this module was
    # imported, so ask the kernel itself rather than the environment.
    return _TRITON_IMPORT_ERROR is None and type(_fwd_kernel).__name__ == "InterpretedFunction"


# ------------------------------------------------------------------------------------------------------------------
# Forward: Algorithm 1
# ------------------------------------------------------------------------------------------------------------------

@_jit
def _fwd_inner(acc, l_i, m_i, q, K, V, s_in_t, start_m, lo, hi, T, qk_scale,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               MASK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold key/value blocks [lo, hi) into the running softmax of one query block (Algorithm 1, lines 6-11).

    MASK=False for blocks wholly below the diagonal (every key visible to every query, no bounds to check);
    MASK=True for the blocks straddling the diagonal, which also hold the last, possibly partial, key block.
    """
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kT_ptrs = K + offs_n[None, :] * s_in_t + offs_d[:, None]  # K_j^T, (HEAD_DIM, BLOCK_N)
        v_ptrs = V + offs_n[:, None] * s_in_t + offs_d[None, :]  # V_j, (BLOCK_N, HEAD_DIM)
        if MASK:
            kT = tl.load(kT_ptrs, mask=offs_n[None, :] < T, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < T, other=0.0)
        else:
            kT = tl.load(kT_ptrs)
            v = tl.load(v_ptrs)
        # Line 8: S_ij = Q_i K_j^T. The softmax scale (times log2(e), as we use exp2) is folded into the
        # subtraction of the max below, one fused multiply-add per score instead of a multiply and a subtract.
        s = tl.dot(q, kT, input_precision=DOT_PRECISION)
        if MASK:  # causal: query t sees keys <= t. Keys past T only reach padding rows, which are never stored.
            s = tl.where(offs_m[:, None] >= offs_n[None, :], s, float("-inf"))
        # Line 9: the new running max, the block's unnormalised probabilities, and their row sums.
        # Every row has seen at least one visible key by now (key 0, or its own position on the diagonal),
        # so m_new is finite and no -inf - -inf = NaN can occur.
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_new[:, None])
        # Line 10: rescale what was accumulated under the old max by exp(m_old - m_new), then add this block.
        # (Unlike FlashAttention-1, the accumulator stays unnormalised; we divide by l once at the end, line 12.)
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@_jit
def _fwd_kernel(Q, K, V, O, LSE, sm_scale, H, T, T_BUCKET,
                s_in_b, s_in_h, s_in_t, s_out_b, s_out_h, s_out_t,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    """One program = one block of BLOCK_M query rows of one (batch, head). T_BUCKET only keys the autotuner."""
    tl.static_assert(BLOCK_M % BLOCK_N == 0)  # so the diagonal starts on a key-block boundary
    # Programs with the most work (query blocks near the end see the most keys) get the lowest ids and so are
    # scheduled first; the short ones then fill in the tail.
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    Q += b.to(tl.int64) * s_in_b + h.to(tl.int64) * s_in_h
    K += b.to(tl.int64) * s_in_b + h.to(tl.int64) * s_in_h
    V += b.to(tl.int64) * s_in_b + h.to(tl.int64) * s_in_h
    O += b.to(tl.int64) * s_out_b + h.to(tl.int64) * s_out_h
    LSE += bh.to(tl.int64) * T

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    # Line 4: Q_i stays in registers/shared memory for the whole loop. Rows past T (last block) load as zeros.
    q = tl.load(Q + offs_m[:, None] * s_in_t + offs_d[None, :], mask=offs_m[:, None] < T, other=0.0)
    # Line 5: running max m (in log2 units), running denominator l, unnormalised output accumulator.
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * LOG2E

    # Lines 6-11, causal: key blocks before start_m are fully visible; blocks after the diagonal are skipped.
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, s_in_t, start_m, 0, start_m, T, qk_scale,
                               BLOCK_M, BLOCK_N, HEAD_DIM, False, DOT_PRECISION)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, s_in_t, start_m, start_m, tl.minimum(start_m + BLOCK_M, T),
                               T, qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, True, DOT_PRECISION)

    # Line 12: normalise once. Line 13: L_i = m_i + log(l_i), stored in natural-log units. Lines 14-15: write both.
    o = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * LN2
    tl.store(O + offs_m[:, None] * s_out_t + offs_d[None, :], o.to(O.dtype.element_ty), mask=offs_m[:, None] < T)
    tl.store(LSE + offs_m, lse, mask=offs_m < T)


# ------------------------------------------------------------------------------------------------------------------
# Backward: Algorithm 2. With P = softmax(S) and S = sm_scale * Q K^T:
#   dV = P^T dO,   dP = dO V^T,   dS = P * (dP - D) with D_i = rowsum(dO_i * O_i),   dQ = sm_scale dS K,
#   dK = sm_scale dS^T Q.   P is recomputed from S and the saved L as P = exp(S - L) (Algorithm 2, line 11).
# ------------------------------------------------------------------------------------------------------------------

@_jit
def _bwd_preprocess(O, DO, DELTA, H, T, s_out_b, s_out_h, s_out_t,
                    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """Algorithm 2, line 4: D_i = rowsum(dO_i * O_i), which equals rowsum(P_i * dP_i) (the softmax Jacobian's
    correction term, section 3.1.2), computed once here instead of once per key block."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    off = (bh // H).to(tl.int64) * s_out_b + (bh % H).to(tl.int64) * s_out_h
    offs = off + offs_m[:, None] * s_out_t + tl.arange(0, HEAD_DIM)[None, :]
    o = tl.load(O + offs, mask=offs_m[:, None] < T, other=0.0).to(tl.float32)
    do = tl.load(DO + offs, mask=offs_m[:, None] < T, other=0.0).to(tl.float32)
    tl.store(DELTA + bh.to(tl.int64) * T + offs_m, tl.sum(o * do, 1), mask=offs_m < T)


@_jit
def _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, s_in_t, s_out_t, start_n, lo, hi, T, qk_scale,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                    MASK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Accumulate dK_j, dV_j over query blocks [lo, hi) (Algorithm 2, lines 8-17, inner loop over i).

    Everything is computed transposed (key rows x query columns), so that dK and dV come out of the matmuls in the
    (BLOCK_N, HEAD_DIM) shape of the key block without transposing the big accumulators.
    """
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        qT_ptrs = Q + offs_m[None, :] * s_in_t + offs_d[:, None]  # Q_i^T, (HEAD_DIM, BLOCK_M)
        do_ptrs = DO + offs_m[:, None] * s_out_t + offs_d[None, :]  # dO_i, (BLOCK_M, HEAD_DIM)
        if MASK:
            qT = tl.load(qT_ptrs, mask=offs_m[None, :] < T, other=0.0)
            do = tl.load(do_ptrs, mask=offs_m[:, None] < T, other=0.0)
            lse = tl.load(LSE + offs_m, mask=offs_m < T, other=0.0)
            delta = tl.load(DELTA + offs_m, mask=offs_m < T, other=0.0)
        else:
            qT = tl.load(qT_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(LSE + offs_m)
            delta = tl.load(DELTA + offs_m)
        # Lines 10-11: recompute S^T and P^T = exp(S^T - L) (base 2) from the saved log-sum-exp: no max, no sum.
        sT = tl.dot(k, qT, input_precision=DOT_PRECISION)
        if MASK:  # causal (query t sees keys <= t), and query rows past T contribute nothing
            sT = tl.where((offs_m[None, :] >= offs_n[:, None]) & (offs_m[None, :] < T), sT, float("-inf"))
        pT = tl.math.exp2(sT * qk_scale - lse[None, :] * LOG2E)
        # Line 12: dV_j += P_ij^T dO_i.
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        # Lines 13-14: dP_ij^T = V_j dO_i^T, then dS_ij^T = P_ij^T * (dP_ij^T - D_i).
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        dsT = pT * (dpT - delta[None, :])
        # Line 16: dK_j += dS_ij^T Q_i (the softmax scale is applied once, after the loop).
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=DOT_PRECISION)
    return dk, dv


@_jit
def _bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, sm_scale, H, T, T_BUCKET,
                     s_in_b, s_in_h, s_in_t, s_out_b, s_out_h, s_out_t,
                     HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     DOT_PRECISION: tl.constexpr):
    """One program = one block of BLOCK_N keys (Algorithm 2, outer loop over j: lines 5-7 and 18)."""
    tl.static_assert(BLOCK_N % BLOCK_M == 0)  # so the diagonal ends on a query-block boundary
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    off_in = b.to(tl.int64) * s_in_b + h.to(tl.int64) * s_in_h
    off_out = b.to(tl.int64) * s_out_b + h.to(tl.int64) * s_out_h
    Q += off_in
    K += off_in
    V += off_in
    DO += off_out
    DK += off_out
    DV += off_out
    LSE += bh.to(tl.int64) * T
    DELTA += bh.to(tl.int64) * T

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    # Lines 6-7: K_j and V_j stay on chip; dK_j and dV_j accumulate in fp32.
    kv_offs = offs_n[:, None] * s_in_t + offs_d[None, :]
    k = tl.load(K + kv_offs, mask=offs_n[:, None] < T, other=0.0)
    v = tl.load(V + kv_offs, mask=offs_n[:, None] < T, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * LOG2E

    # Causal: only queries at or after the first key of the block see it. Queries in [start_n, start_n + BLOCK_N)
    # straddle the diagonal (masked); later full query blocks see every key of the block (no mask); a last, partial
    # query block needs its rows past T masked.
    diag_end = start_n + BLOCK_N
    full_end = diag_end + tl.maximum(T - diag_end, 0) // BLOCK_M * BLOCK_M
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, s_in_t, s_out_t, start_n, start_n, diag_end, T,
                             qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, True, DOT_PRECISION)
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, s_in_t, s_out_t, start_n, diag_end, full_end, T,
                             qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, False, DOT_PRECISION)
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, s_in_t, s_out_t, start_n, full_end, T, T,
                             qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, True, DOT_PRECISION)

    # Line 18: write dK_j (S = sm_scale Q K^T, so dK = sm_scale dS^T Q) and dV_j.
    out_offs = offs_n[:, None] * s_out_t + offs_d[None, :]
    tl.store(DK + out_offs, (dk * sm_scale).to(DK.dtype.element_ty), mask=offs_n[:, None] < T)
    tl.store(DV + out_offs, dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < T)


@_jit
def _bwd_dq_inner(dq, q, do, lse, delta, K, V, s_in_t, start_m, lo, hi, T, qk_scale,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                  MASK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Accumulate dQ_i over key blocks [lo, hi): the same P and dS as in the dK/dV pass, row-major this time."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kvT_offs = offs_n[None, :] * s_in_t + offs_d[:, None]  # (HEAD_DIM, BLOCK_N)
        if MASK:
            kT = tl.load(K + kvT_offs, mask=offs_n[None, :] < T, other=0.0)
            vT = tl.load(V + kvT_offs, mask=offs_n[None, :] < T, other=0.0)
        else:
            kT = tl.load(K + kvT_offs)
            vT = tl.load(V + kvT_offs)
        s = tl.dot(q, kT, input_precision=DOT_PRECISION)
        if MASK:
            s = tl.where(offs_m[:, None] >= offs_n[None, :], s, float("-inf"))
        p = tl.math.exp2(s * qk_scale - lse[:, None])
        dp = tl.dot(do, vT, input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        # Algorithm 2, line 15 (without the atomic add): dQ_i += dS_ij K_j.
        dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq, input_precision=DOT_PRECISION)
    return dq


@_jit
def _bwd_dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, sm_scale, H, T, T_BUCKET,
                   s_in_b, s_in_h, s_in_t, s_out_b, s_out_h, s_out_t,
                   HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   DOT_PRECISION: tl.constexpr):
    """One program = one block of BLOCK_M queries; loops over the key blocks it can see."""
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M  # longest rows first, as in the forward
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    off_in = b.to(tl.int64) * s_in_b + h.to(tl.int64) * s_in_h
    off_out = b.to(tl.int64) * s_out_b + h.to(tl.int64) * s_out_h
    Q += off_in
    K += off_in
    V += off_in
    DO += off_out
    DQ += off_out
    LSE += bh.to(tl.int64) * T
    DELTA += bh.to(tl.int64) * T

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q = tl.load(Q + offs_m[:, None] * s_in_t + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + offs_m[:, None] * s_out_t + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    # Padding rows get L = 0 and D = 0: their P is finite and their dS is 0 (dO is 0), and they are never stored.
    lse = tl.load(LSE + offs_m, mask=row_ok, other=0.0) * LOG2E
    delta = tl.load(DELTA + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * LOG2E

    dq = _bwd_dq_inner(dq, q, do, lse, delta, K, V, s_in_t, start_m, 0, start_m, T, qk_scale,
                       BLOCK_M, BLOCK_N, HEAD_DIM, False, DOT_PRECISION)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K, V, s_in_t, start_m, start_m, tl.minimum(start_m + BLOCK_M, T), T,
                       qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, True, DOT_PRECISION)
    tl.store(DQ + offs_m[:, None] * s_out_t + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None])


# ------------------------------------------------------------------------------------------------------------------
# Launch configurations. Under the interpreter: one small configuration (every program is run in Python, so fewer,
# smaller blocks are faster), chosen so that BLOCK_M != BLOCK_N exercises the sub-blocks of the diagonal. On a GPU:
# four Hopper-minded candidates per kernel and head-dim class, benchmarked by triton.autotune once per (head dim,
# power-of-two bucket of T, dtype). The shapes follow FlashAttention-2's choices on H100 and Triton's fused-attention
# tutorial: 128-row query blocks against 32-128 keys for the forward, narrow query strips against 64-128-key blocks
# for dK/dV (and the mirror image for dQ), 8 warps where the fp32 accumulators are large (head dim 128). Every
# candidate was compiled for sm_90 with bf16 inputs and checked to fit in shared memory without register spills.
# ------------------------------------------------------------------------------------------------------------------

_INTERPRETER_BLOCKS = {"fwd": (32, 16), "dkdv": (16, 32), "dq": (32, 16)}  # (BLOCK_M, BLOCK_N)
_GPU_CONFIGS = {  # kernel -> head dim class (<= 64, 128) -> [(BLOCK_M, BLOCK_N, num_warps, num_stages)], the first
    "fwd": {64: [(64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 3)],  # also the one used untuned
            128: [(64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2), (128, 32, 8, 3)]},  # for short sequences
    "dkdv": {64: [(32, 64, 4, 3), (32, 128, 8, 4), (64, 128, 8, 3), (64, 64, 4, 3)],
             128: [(32, 64, 4, 3), (32, 128, 8, 3), (16, 128, 8, 3), (64, 64, 8, 3)]},
    "dq": {64: [(64, 32, 4, 3), (128, 32, 4, 5), (128, 64, 8, 3), (64, 64, 4, 3)],
           128: [(64, 32, 4, 3), (128, 32, 8, 4), (128, 64, 8, 3), (64, 64, 4, 3)]},
}


def _configs(kind: str) -> list:
    if _interpreted():
        bm, bn = _INTERPRETER_BLOCKS[kind]
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn})]
    shapes = dict.fromkeys(c for by_dim in _GPU_CONFIGS[kind].values() for c in by_dim)  # union, in order
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in shapes]


def _for_head_dim(kind: str):
    """An autotune pruner that keeps the candidates listed for this call's head-dim class, and only the first of
    them for short sequences (a few microseconds of kernel time do not repay compiling and timing four variants)."""
    def prune(configs, named_args, **kwargs):
        head_dim, t_bucket = ({**named_args, **kwargs}[name] for name in ("HEAD_DIM", "T_BUCKET"))
        wanted = _GPU_CONFIGS[kind][64 if head_dim <= 64 else 128][:1 if t_bucket <= 256 else None]
        return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in wanted]
    return prune


if _TRITON_IMPORT_ERROR is None:
    _fwd, _bwd_dkdv, _bwd_dq = (
        triton.autotune(_configs(kind), key=["HEAD_DIM", "T_BUCKET"],
                        prune_configs_by={"early_config_prune": _for_head_dim(kind)})(kernel)
        for kind, kernel in (("fwd", _fwd_kernel), ("dkdv", _bwd_dkdv_kernel), ("dq", _bwd_dq_kernel)))


def _alloc_out(q: torch.Tensor) -> torch.Tensor:
    """An empty (B, H, T, D) tensor laid out (B, T, H, D) in memory, the layout gpt.py's heads come from and go back
    to: the caller's ``transpose(1, 2).contiguous()`` is then free, and so is the gradient's way back."""
    B, H, T, D = q.shape
    return q.new_empty(B, T, H, D).transpose(1, 2)


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _options(x: torch.Tensor) -> dict:
    """Compile options shared by the main kernels."""
    # fp16/bf16 inputs always multiply exactly into fp32; fp32 inputs would silently drop to TF32 on a GPU.
    # The softmax's scale-and-subtract is written to become one fused multiply-add: ask for FMAs explicitly (the
    # default is changing in Triton 3.10, and 3.9 warns about it).
    return dict(DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32", enable_fp_fusion=True)


# The kernels enter PyTorch as two custom operators (forward, backward) joined by an autograd formula, rather than as
# a torch.autograd.Function: torch.compile then treats each as one opaque call with a known output shape and layout
# (the register_fake functions) instead of tracing into Triton's launcher and autotuner, so a compiled model keeps
# one graph with the kernels inside it.

@torch.library.custom_op("nanotrain::flash_attention_fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, T, D = q.shape
    o = _alloc_out(q)
    lse = torch.empty(B, H, T, device=q.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)  # noqa: E731
    _fwd[grid](q, k, v, o, lse, sm_scale, H, T, triton.next_power_of_2(T), *_strides(q), *_strides(o),
               HEAD_DIM=D, **_options(q))
    return o, lse


@_fwd_op.register_fake
def _fwd_fake(q, k, v, sm_scale):
    B, H, T, D = q.shape
    return _alloc_out(q), q.new_empty(B, H, T, dtype=torch.float32)


@torch.library.custom_op("nanotrain::flash_attention_bwd", mutates_args=())
def _bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
            sm_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, H, T, D = q.shape
    if do.stride() != o.stride():  # the kernels share one stride set for o, dO, dQ, dK, dV
        do = _alloc_out(q).copy_(do)
    delta = torch.empty_like(lse)
    _bwd_preprocess[(triton.cdiv(T, 64), B * H)](o, do, delta, H, T, *_strides(o), HEAD_DIM=D, BLOCK_M=64,
                                                 enable_fp_fusion=True)
    dq, dk, dv = _alloc_out(q), _alloc_out(q), _alloc_out(q)
    args = (H, T, triton.next_power_of_2(T), *_strides(q), *_strides(o))
    meta = dict(HEAD_DIM=D, **_options(q))
    _bwd_dkdv[lambda m: (triton.cdiv(T, m["BLOCK_N"]), B * H)](q, k, v, do, dk, dv, lse, delta, sm_scale, *args, **meta)
    _bwd_dq[lambda m: (triton.cdiv(T, m["BLOCK_M"]), B * H)](q, k, v, do, dq, lse, delta, sm_scale, *args, **meta)
    return dq, dk, dv


@_bwd_op.register_fake
def _bwd_fake(do, q, k, v, o, lse, sm_scale):
    return _alloc_out(q), _alloc_out(q), _alloc_out(q)


def _save_for_backward(ctx, inputs, output):
    q, k, v, sm_scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.sm_scale = sm_scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, do, dlse):
    # lse is returned for tests only; nothing differentiates through it (flash_attention drops it).
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = _bwd_op(do, q, k, v, o, lse, ctx.sm_scale)
    return dq, dk, dv, None


_fwd_op.register_autograd(_backward, setup_context=_save_for_backward)


def flash_attention_with_lse(q, k, v, sm_scale=None):
    """Causal attention and its per-row log-sum-exp: (o, lse) with o (B, H, T, D) and lse (B, H, T) fp32,
    lse = log(sum_{s <= t} exp(sm_scale * q_t . k_s)). Differentiable in q, k, v through o."""
    ok, why = triton_available()
    if not ok:
        raise RuntimeError(f"flash_attention cannot run: {why}")
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must share one (B, H, T, D) shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share one dtype of fp16/bf16/fp32, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not _interpreted() and not q.is_cuda:
        raise ValueError("flash_attention runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1)")
    if _interpreted() and q.dtype == torch.bfloat16:  # the interpreter computes in numpy, which has no bfloat16
        raise ValueError("bf16 under Triton's interpreter gives wrong results; use fp16 or fp32 on the CPU")
    D = q.shape[-1]
    if D > 128:
        raise ValueError(f"head dim {D} > 128 is not supported; use scaled_dot_product_attention")
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)
    if not sm_scale > 0:  # the kernels fold the scale into exp2 after taking the max, which needs scale > 0
        raise ValueError(f"sm_scale must be positive, got {sm_scale}")
    # The kernels want a power-of-two head dim of at least 16 (the smallest tensor-core matmul). Zero columns
    # change no dot product q.k, and the zero columns they add to o are cut off again; autograd sees the pad/slice.
    d_pad = max(16, triton.next_power_of_2(D))
    if d_pad != D:
        q, k, v = (F.pad(x, (0, d_pad - D)) for x in (q, k, v))
    # One stride set for q, k and v (true for slices of one fused qkv projection, and for contiguous tensors),
    # with unit stride along the head dim; anything else is copied once.
    if not (q.stride() == k.stride() == v.stride()) or q.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o, lse = _fwd_op(q, k, v, sm_scale)
    return o[..., :D], lse


def flash_attention(q, k, v, sm_scale=None):
    """Causal self-attention softmax(sm_scale * q k^T + causal mask) v for q, k, v of shape (B, H, T, D);
    sm_scale defaults to 1/sqrt(D). Differentiable with respect to q, k and v."""
    return flash_attention_with_lse(q, k, v, sm_scale)[0]
