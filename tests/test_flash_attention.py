"""Tests for the Triton FlashAttention-2 kernels (nanotrain/flash_attention.py).

Every check is against attention written out naively in fp64: softmax(scale * QK^T + causal mask) V, its
log-sum-exp, and autograd's gradients through it. Without a GPU the kernels run under Triton's interpreter
(tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported), in fp32 and with small shapes because the
interpreter is slow; on a CUDA machine the same tests run compiled, plus fp16/bf16 cases.

    pytest tests/test_flash_attention.py
"""
import math
import os
import subprocess
import sys

import pytest
import torch

from nanotrain.flash_attention import flash_attention, flash_attention_with_lse, triton_available

OK, WHY = triton_available()
pytestmark = pytest.mark.skipif(not OK, reason=f"Triton kernels cannot run here: {WHY}")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference(q, k, v, sm_scale):
    """Causal attention written out in fp64: (output, log-sum-exp), differentiable."""
    q, k, v = q.double(), k.double(), v.double()
    T = q.shape[-2]
    s = sm_scale * q @ k.transpose(-2, -1)
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return torch.softmax(s, dim=-1) @ v, torch.logsumexp(s, dim=-1)


def qkv(B, H, T, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype).requires_grad_() for _ in range(3)]


def check(q, k, v, sm_scale=None, atol=1e-5, rtol=1e-4):
    """Forward output, log-sum-exp and dQ/dK/dV of the kernel against the fp64 reference."""
    scale = 1 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    o, lse = flash_attention_with_lse(q, k, v, sm_scale)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1)).to(o)
    grads = torch.autograd.grad(o, (q, k, v), do)

    ref_o, ref_lse = reference(q, k, v, scale)
    ref_grads = torch.autograd.grad(ref_o, (q, k, v), do.double())
    assert o.shape == q.shape and o.dtype == q.dtype and lse.shape == q.shape[:3]
    torch.testing.assert_close(o.double(), ref_o, atol=atol, rtol=rtol)
    torch.testing.assert_close(lse.double(), ref_lse, atol=atol, rtol=rtol)
    for name, g, ref in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g.double(), ref.double(), atol=atol, rtol=rtol, msg=lambda m: f"d{name}: {m}")


# T = 1 (a single row), 17 and 100 (partial blocks), 64 and 128 (whole blocks; several of them, with the diagonal
# split into sub-blocks, under the interpreter's 32x16 / 16x32 tiles).
@pytest.mark.parametrize("T", [1, 17, 64, 100, 128])
@pytest.mark.parametrize("D", [16, 32, 64])
def test_matches_naive_attention(T, D):
    check(*qkv(2, 2, T, D, seed=T * D))


def test_odd_head_dim_and_custom_scale():
    # D = 24 is zero-padded to 32 inside; a scale that is not 1/sqrt(D) must be honoured.
    check(*qkv(1, 3, 33, 24), sm_scale=0.3)


def test_strided_inputs_as_gpt_makes_them():
    # gpt.py splits one (B, T, 3C) projection and views it as (B, H, T, D): q, k, v are strided views of one buffer.
    B, T, H, D = 2, 40, 2, 16
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, 3 * H * D, generator=g).to(DEVICE).requires_grad_()
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in x.split(H * D, dim=2))
    assert not q.is_contiguous()
    out = flash_attention(q, k, v).transpose(1, 2).reshape(B, T, H * D)
    w = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * w).sum(), x)

    rq, rk, rv = (t.view(B, T, H, D).transpose(1, 2) for t in x.split(H * D, dim=2))
    ref = reference(rq, rk, rv, 1 / math.sqrt(D))[0].transpose(1, 2).reshape(B, T, H * D)
    (ref_grad,) = torch.autograd.grad((ref * w.double()).sum(), x)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grad, ref_grad.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 and long sequences need a GPU (the interpreter has no "
                                                           "bf16; fp16 is checked on the CPU below)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("T,D", [(100, 64), (1000, 128), (257, 32)])
def test_half_precision_on_gpu(dtype, T, D):
    # Inputs are rounded to fp16/bf16 and P is rounded before the P V matmul: errors of a few units of the format's
    # precision, larger for bf16 (8 bits of mantissa) than for fp16 (11).
    atol = 4e-2 if dtype == torch.bfloat16 else 1e-2
    check(*qkv(2, 3, T, D, dtype=dtype), atol=atol, rtol=atol)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, test_half_precision_on_gpu covers fp16")
def test_fp16_under_the_interpreter():
    # numpy, which the interpreter computes in, has float16: the half-precision path (inputs and P rounded to 16 bits
    # before the tensor-core matmuls, fp32 accumulation) is checked on the CPU too, at fp16's precision.
    check(*qkv(2, 2, 40, 32, dtype=torch.float16), atol=1e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="bf16 under Triton's interpreter"):  # numpy has no bfloat16
        flash_attention(*qkv(1, 1, 8, 16, dtype=torch.bfloat16))


def test_rejects_bad_inputs():
    q, k, v = qkv(1, 1, 8, 16)
    with pytest.raises(ValueError, match="shape"):
        flash_attention(q, k[:, :, :4], v)
    with pytest.raises(ValueError, match="dtype"):
        flash_attention(q, k.double(), v)
    with pytest.raises(ValueError, match="head dim"):
        flash_attention(*qkv(1, 1, 8, 160))


def test_module_imports_and_explains_without_triton():
    # gpt.py imports this module lazily on every machine; without Triton it must import and say why it cannot run.
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, nanotrain.flash_attention as fa\n"
            "ok, why = fa.triton_available(); assert not ok and 'triton' in why, why\n"
            "try:\n    fa.flash_attention(*[torch.randn(1, 1, 4, 16)] * 3)\nexcept RuntimeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cannot run: triton is not importable" in out.stdout


# The interpreter runs the kernels' Python, but it is more lenient than the compiler (it accepts, for instance,
# global constants that the compiler rejects). This compiles every kernel for an H100 (sm_90, bf16), which needs
# Triton's bundled ptxas but no GPU, in a fresh process where TRITON_INTERPRET is unset.
COMPILE_FOR_HOPPER = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import nanotrain.flash_attention as fa

def compile_sm90(kernel, consts, num_warps=4, num_stages=3):
    ptrs = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "DO": "*bf16", "DQ": "*bf16", "DK": "*bf16",
            "DV": "*bf16", "LSE": "*fp32", "DELTA": "*fp32", "sm_scale": "fp32"}
    sig = {name: "constexpr" if name in consts else ptrs.get(name, "i32") for name in kernel.arg_names}
    src = ASTSource(kernel, sig, constexprs=consts)
    triton.compile(src, target=GPUTarget("cuda", 90, 32),
                   options=dict(num_warps=num_warps, num_stages=num_stages, enable_fp_fusion=True))

compile_sm90(fa._bwd_preprocess, dict(HEAD_DIM=64, BLOCK_M=64))
for kind, kernel in (("fwd", fa._fwd_kernel), ("dkdv", fa._bwd_dkdv_kernel), ("dq", fa._bwd_dq_kernel)):
    bm, bn, w, s = fa._GPU_CONFIGS[kind][64][0]
    compile_sm90(kernel, dict(HEAD_DIM=64, BLOCK_M=bm, BLOCK_N=bn, DOT_PRECISION="tf32"), w, s)
print("compiled")
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the other tests compile and run the kernels")
def test_kernels_compile_for_hopper():
    pytest.importorskip("triton.backends.nvidia", reason="Triton's NVIDIA backend is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0 and "compiled" in out.stdout, out.stderr[-3000:]


def test_training_step_matches_sdpa(monkeypatch):
    """A tiny GPT gives the same loss and the same gradient on every parameter through the kernel as through
    PyTorch's SDPA (two layers: the second layer's input gradient flows through the first's attention backward)."""
    gpt = pytest.importorskip("nanotrain.gpt", reason="nanotrain/gpt.py is not importable")
    import nanotrain.flash_attention as fa

    calls = []  # make sure the "triton" model really goes through the kernel, not a silent fallback
    monkeypatch.setattr(fa, "flash_attention", lambda *a, **kw: calls.append(1) or flash_attention(*a, **kw))
    cfg = dict(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(0)
    ref_model = gpt.GPT(gpt.GPTConfig(**cfg, attn="sdpa")).to(DEVICE)
    model = gpt.GPT(gpt.GPTConfig(**cfg, attn="triton")).to(DEVICE)
    model.load_state_dict(ref_model.state_dict())
    idx = torch.randint(0, 64, (2, 21), device=DEVICE)  # T = 21: not a multiple of any block size
    targets = torch.randint(0, 64, (2, 21), device=DEVICE)

    _, ref_loss = ref_model(idx, targets)
    ref_loss.backward()
    _, loss = model(idx, targets)
    loss.backward()

    assert len(calls) == cfg["n_layer"]
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    ref_grads = dict(ref_model.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_compiles_into_one_graph_with_the_kernel_inside():
    """torch.compile sees the kernels as two opaque operators (forward, backward) with known output layouts, so a
    model compiles into one graph (fullgraph=True refuses any graph break) and trains exactly as in eager mode.
    (The aot_eager backend runs AOTAutograd's tracing, where the operators' fake and autograd formulas are used,
    without generating code; on a GPU, tests/test_cuda.py compiles with the default backend.)"""
    gpt = pytest.importorskip("nanotrain.gpt", reason="nanotrain/gpt.py is not importable")
    cfg = gpt.GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32, attn="triton")
    torch.manual_seed(0)
    model = gpt.GPT(cfg).to(DEVICE)
    idx, targets = (torch.randint(0, 64, (2, 21), device=DEVICE) for _ in range(2))
    explained = torch._dynamo.explain(model)(idx, targets)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    assert "nanotrain.flash_attention_fwd" in explained.graphs[0].code  # the kernel, not a fallback

    loss = torch.compile(model, backend="aot_eager", fullgraph=True)(idx, targets)[1]
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref_loss = model(idx, targets)[1]
    ref_grads = torch.autograd.grad(ref_loss, list(model.parameters()))
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-5)
