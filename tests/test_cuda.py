"""The CUDA path on a real GPU: the Triton kernel compiled in bf16 at training sizes, the model's attention paths,
KV-cache decoding, torch.compile and FSDP over NCCL. Every test here skips without a CUDA device (marker ``cuda``):

    pytest -q -m cuda            # on a GPU machine; bench/gpu_check.sh runs it first

On a CPU the kernel is tested under Triton's interpreter (tests/test_flash_attention.py), in fp32 and fp16, on small
shapes; bf16, long sequences, the autotuned launch configurations and Triton's code generation exist only here.
References are independent of the kernel: attention written out in fp64, and PyTorch's SDPA.
"""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from conftest import ROOT
from nanotrain.gpt import GPT, GPTConfig, KVCache

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture
def exact_fp32():
    """fp32 matmuls without TF32 (setup_runtime turns TF32 on for training), restored afterwards."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def causal_sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def output_and_grads(fn, inputs, do):
    o = fn(*inputs)
    return (o, *torch.autograd.grad(o, inputs, do.to(o.dtype)))


# T = 1000 and 4095 end in a partial block (the kernel's padding rows and masked key columns); 4096 is the longest
# shape asked for, with head dims 64 (GPT-2) and 128.
@pytest.mark.parametrize("T,D", [(1024, 64), (1000, 64), (4096, 64), (1024, 128), (4095, 128), (4096, 128)])
def test_kernel_bf16_forward_and_backward_against_sdpa(T, D):
    """Output, dQ, dK and dV of the kernel in bf16 against attention in fp64: the error must stay within 3x that of
    SDPA's own FlashAttention backend on the same bf16 inputs (the convention of the FlashAttention-2 tests, which
    allow 2x the error of plain PyTorch attention in bf16: both kernels round P to bf16 before the PV product)."""
    from nanotrain.flash_attention import flash_attention

    B, H = 2, 4
    g = torch.Generator(device="cuda").manual_seed(T * D)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
               for _ in range(3))
    do = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g)
    ref = output_and_grads(causal_sdpa, [t.detach().double().requires_grad_() for t in (q, k, v)], do)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        sdpa = output_and_grads(causal_sdpa, [q, k, v], do)
    ours = output_and_grads(flash_attention, [q, k, v], do)
    for name, o, s, r in zip(("o", "dq", "dk", "dv"), ours, sdpa, ref):
        assert o.dtype == torch.bfloat16 and o.shape == r.shape
        err, err_sdpa = ((x.double() - r).abs().max().item() for x in (o, s))
        assert err <= 3 * err_sdpa, f"{name}: max error {err:.3g}, SDPA's {err_sdpa:.3g} (T={T}, D={D})"


def test_padded_rows_equal_the_same_rows_unpadded(exact_fp32):
    """A left-padded batch (a padding mask: the model takes SDPA with a mask) gives each row the logits it gets alone
    (no mask: the Triton kernel), in fp32."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=512, vocab_size=256, n_layer=2, n_head=4, n_embd=256)).cuda().eval()  # D = 64
    long, short = torch.randint(0, 256, (1, 400), device="cuda"), torch.randint(0, 256, (1, 237), device="cuda")
    batch = torch.cat([long, F.pad(short, (400 - 237, 0))])
    pad_mask = torch.ones_like(batch, dtype=torch.bool)
    pad_mask[1, :400 - 237] = False
    with torch.no_grad():
        padded = model(batch, pad_mask=pad_mask)[0]
        alone = [model(x)[0][0] for x in (long, short)]
    torch.testing.assert_close(padded[0], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(padded[1, 400 - 237:], alone[1], atol=1e-4, rtol=1e-4)


def test_gpt_bf16_training_step_through_the_kernel_is_as_accurate_as_sdpa(exact_fp32, monkeypatch):
    """Loss and gradients of a GPT under bf16 autocast, through the kernel and through SDPA, against the same model
    in fp32 (SDPA): the kernel's path must be about as close to fp32 as SDPA's."""
    import nanotrain.flash_attention as fa

    calls = []
    monkeypatch.setattr(fa, "flash_attention", lambda *a, **kw: calls.append(1) or fa.flash_attention_with_lse(
        *a, **kw)[0])
    cfg = dict(block_size=1024, vocab_size=512, n_layer=2, n_head=4, n_embd=256)
    torch.manual_seed(0)
    models = {attn: GPT(GPTConfig(**cfg, attn=attn)).cuda() for attn in ("sdpa", "triton")}
    models["triton"].load_state_dict(models["sdpa"].state_dict())
    idx, targets = torch.randint(0, 512, (4, 1024), device="cuda"), torch.randint(0, 512, (4, 1024), device="cuda")

    def loss_and_grads(model, bf16):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(idx, targets)[1]
        return loss.double(), torch.cat([g.flatten().double() for g in torch.autograd.grad(loss, model.parameters())])

    ref_loss, ref = loss_and_grads(models["sdpa"], bf16=False)
    (sdpa_loss, sdpa), (ours_loss, ours) = (loss_and_grads(models[a], bf16=True) for a in ("sdpa", "triton"))
    assert len(calls) == cfg["n_layer"]  # the triton model really went through the kernel
    rel = {name: ((g - ref).norm() / ref.norm()).item() for name, g in (("sdpa", sdpa), ("triton", ours))}
    assert rel["triton"] <= 1.5 * rel["sdpa"] + 1e-3, rel
    assert abs(ours_loss - ref_loss) <= 1.5 * abs(sdpa_loss - ref_loss) + 1e-3, (ours_loss, sdpa_loss, ref_loss)


def test_kv_cache_logits_equal_the_full_forward_pass(exact_fp32):
    """Teacher-forced decoding through the KV cache (prefill, then one token at a time: SDPA over the cache) gives
    the logits of one forward pass over the whole sequence (the Triton kernel), in fp32."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=256, vocab_size=256, n_layer=2, n_head=4, n_embd=256)).cuda().eval()
    seq = torch.randint(0, 256, (3, 80), device="cuda")
    with torch.no_grad():
        full = model(seq)[0]
        cache = KVCache(model.config.n_layer, 3, 80)
        steps = [model(seq[:, :16], cache=cache)[0]] + [model(seq[:, t:t + 1], cache=cache)[0] for t in range(16, 80)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


def test_torch_compile_keeps_the_kernel_and_trains_like_eager():
    """torch.compile with the default backend (Inductor generating Triton code around our kernel) in bf16: one
    graph, the same loss and gradients as eager within bf16 rounding."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=512, vocab_size=512, n_layer=2, n_head=4, n_embd=256, attn="triton")).cuda()
    idx, targets = torch.randint(0, 512, (4, 512), device="cuda"), torch.randint(0, 512, (4, 512), device="cuda")
    compiled = torch.compile(model, fullgraph=True)

    def loss_and_grads(m):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(idx, targets)[1]
        return loss, torch.cat([g.flatten() for g in torch.autograd.grad(loss, model.parameters())])

    (loss, grads), (ref_loss, ref) = loss_and_grads(compiled), loss_and_grads(model)
    torch.testing.assert_close(loss, ref_loss, atol=1e-2, rtol=1e-2)
    assert ((grads - ref).norm() / ref.norm()).item() < 2e-2


def test_fsdp_and_grad_checkpoint_over_nccl_match_a_plain_run(tiny_corpus, tmp_path):
    """train_pretrain.py under torchrun with one GPU process, FSDP (NCCL) and activation checkpointing, against the
    same run without either: the same losses and weights (fp32; the sharding over one process is the identity, so
    this checks the CUDA side of the machinery: device moves, the NCCL group, gathering, checkpoints)."""
    args = ["train_pretrain.py", "--data", str(tiny_corpus), "--device", "cuda", "--dtype", "float32", "--steps", "6",
            "--n-layer", "2", "--n-head", "2", "--n-embd", "64", "--block-size", "64", "--batch-size", "4",
            "--log-every", "1", "--eval-every", "3", "--eval-batches", "2"]
    plain, sharded = tmp_path / "plain", tmp_path / "fsdp"
    for cmd in ([sys.executable, *args, "--out", str(plain)],
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *args, "--out",
                 str(sharded), "--fsdp", "--grad-checkpoint"]):
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]

    def log(out):
        return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    a, b = log(plain), log(sharded)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        for key in ("loss", "val_loss"):
            if key in x:
                assert abs(x[key] - y[key]) < 1e-3, (key, x, y)
    wa, wb = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (plain, sharded))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-3, rtol=1e-3, msg=k)
