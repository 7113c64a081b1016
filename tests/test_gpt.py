"""The GPT model: causality, the attention paths, KV-cache decoding, and GPT-2 weight import.

References are independent of the code under test: a prefix-invariance property, full recomputation for the KV
cache, and a GPT-2 forward pass written here directly from Hugging Face's Conv1D weight layout.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from nanotrain.gpt import GPT, GPTConfig, sample_next

V, T = 97, 24


def tiny(attn="explicit", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=32, attn=attn)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


@pytest.mark.parametrize("attn", ["explicit", "sdpa"])
def test_changing_token_t_changes_no_earlier_logit(attn):
    m = tiny(attn)
    x = torch.randint(0, V, (2, 16))
    y = x.clone()
    t = 9
    y[:, t] = (y[:, t] + 1) % V
    with torch.no_grad():
        a, b = m(x)[0], m(y)[0]
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t:], b[:, t:])


def test_explicit_and_sdpa_paths_agree_with_and_without_padding():
    e, s = tiny("explicit"), tiny("sdpa")
    x = torch.randint(0, V, (3, 20))
    pad = torch.ones(3, 20, dtype=torch.bool)
    pad[1, :5] = False
    pad[2, :11] = False
    with torch.no_grad():
        torch.testing.assert_close(e(x)[0], s(x)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(e(x, pad_mask=pad)[0], s(x, pad_mask=pad)[0], atol=1e-5, rtol=1e-5)


def test_left_padding_computes_what_the_unpadded_row_computes():
    m = tiny("sdpa")
    row = torch.randint(0, V, (1, 7))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), row], 1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.bool), torch.ones(1, 7, dtype=torch.bool)], 1)
    with torch.no_grad():
        torch.testing.assert_close(m(padded, pad_mask=mask)[0][:, 5:], m(row)[0], atol=1e-5, rtol=1e-5)


def greedy_by_recomputation(m, prompt, n):
    seq = prompt
    for _ in range(n):
        nxt = m(seq)[0][:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    return seq[:, prompt.shape[1]:]


@pytest.mark.parametrize("attn", ["explicit", "sdpa"])
def test_kv_cache_greedy_equals_full_recomputation(attn):
    m = tiny(attn, seed=1)
    prompt = torch.randint(0, V, (1, 6))
    with torch.no_grad():
        assert torch.equal(m.generate(prompt, 12, temperature=0), greedy_by_recomputation(m, prompt, 12))


def test_kv_cache_with_left_padded_batch_equals_each_row_alone():
    m = tiny("sdpa", seed=2)
    rows = [torch.randint(1, V, (1, n)) for n in (3, 8, 5)]
    L = 8
    batch = torch.cat([F.pad(r, (L - r.shape[1], 0), value=0) for r in rows])
    mask = torch.stack([torch.arange(L) >= L - r.shape[1] for r in rows])
    with torch.no_grad():
        out = m.generate(batch, 10, temperature=0, pad_mask=mask)
        for i, r in enumerate(rows):
            assert torch.equal(out[i], greedy_by_recomputation(m, r, 10)[0]), f"row {i}"


def test_generation_stops_at_stop_token_and_pads_after():
    m = tiny("sdpa", seed=3)
    prompt = torch.randint(0, V, (2, 4))
    with torch.no_grad():
        free = m.generate(prompt, 10, temperature=0)
        stop = int(free[0, 2])
        pad = (stop + 1) % V
        out = m.generate(prompt, 10, temperature=0, stop_token=stop, pad_id=pad)
    first = (out[0] == stop).nonzero()[0].item()
    assert first <= 2 and (out[0, first + 1:] == pad).all()
    assert torch.equal(out[0, :first + 1], free[0, :first + 1])


def test_block_size_is_enforced():
    m = tiny()
    with pytest.raises(ValueError, match="exceeds block_size"):
        m.generate(torch.zeros(1, T - 2, dtype=torch.long), 5)


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, top_k=2, generator=g).tolist()) <= {0, 1}
    p = logits[0].softmax(-1)  # p0=.64, p1=.24 -> nucleus 0.7 keeps tokens 0 and 1
    assert p[0] < 0.7 < p[0] + p[1]
    assert set(sample_next(logits, 1.0, top_p=0.7, generator=g).tolist()) == {0, 1}
    assert sample_next(logits[:1], 0).item() == 0


def test_a_vanishing_temperature_samples_the_argmax():
    """logits / 1e-40 overflow float32; the limit of the tempered softmax as T -> 0 is the argmax, not an error."""
    logits = torch.tensor([[1.0, 3.0, 2.0], [-5.0, -6.0, -4.0]])
    assert not torch.isfinite(logits / 1e-40).all()
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, 1e-40, generator=g).tolist() == [1, 2]


def test_gpt2_init_scales_residual_projections():
    m = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=8, n_head=2, n_embd=256))
    std = m.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 0.001
    assert abs(m.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.001
    assert m.lm_head.weight is m.transformer.wte.weight


def test_flops_per_token_counts_6n_plus_attention():
    m = tiny()
    n = sum(p.numel() for p in m.parameters()) - m.transformer.wpe.weight.numel()
    assert m.flops_per_token(T) == 6 * n + 12 * 2 * 32 * T


# ----- GPT-2 import, checked against a forward pass written from the HF layout itself

def hf_gpt2_state_dict(n_layer=2, C=32, vocab=V, n_pos=T, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    sd = {"transformer.wte.weight": r(vocab, C), "transformer.wpe.weight": r(n_pos, C),
          "transformer.ln_f.weight": 1 + r(C), "transformer.ln_f.bias": r(C), "lm_head.weight": None}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        sd.update({p + "ln_1.weight": 1 + r(C), p + "ln_1.bias": r(C), p + "ln_2.weight": 1 + r(C),
                   p + "ln_2.bias": r(C), p + "attn.c_attn.weight": r(C, 3 * C), p + "attn.c_attn.bias": r(3 * C),
                   p + "attn.c_proj.weight": r(C, C), p + "attn.c_proj.bias": r(C),
                   p + "mlp.c_fc.weight": r(C, 4 * C), p + "mlp.c_fc.bias": r(4 * C),
                   p + "mlp.c_proj.weight": r(4 * C, C), p + "mlp.c_proj.bias": r(C),
                   p + "attn.bias": torch.ones(1, 1, n_pos, n_pos).tril(), p + "attn.masked_bias": torch.tensor(-1e4)})
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def hf_forward(sd, idx, n_head):
    """GPT-2 as Hugging Face computes it with Conv1D (y = x @ W + b, W shaped (in, out))."""
    g = lambda k: sd["transformer." + k]  # noqa: E731
    ln = lambda x, k: F.layer_norm(x, x.shape[-1:], g(k + ".weight"), g(k + ".bias"))  # noqa: E731
    B, L = idx.shape
    x = g("wte.weight")[idx] + g("wpe.weight")[:L]
    C = x.shape[-1]
    i = 0
    while f"transformer.h.{i}.ln_1.weight" in sd:
        p = f"h.{i}."
        qkv = ln(x, p + "ln_1") @ g(p + "attn.c_attn.weight") + g(p + "attn.c_attn.bias")
        q, k, v = (t.view(B, L, n_head, -1).transpose(1, 2) for t in qkv.split(C, -1))
        att = (q @ k.transpose(-1, -2) / math.sqrt(C // n_head)).masked_fill(
            torch.ones(L, L).tril() == 0, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, L, C)
        x = x + y @ g(p + "attn.c_proj.weight") + g(p + "attn.c_proj.bias")
        h = F.gelu(ln(x, p + "ln_2") @ g(p + "mlp.c_fc.weight") + g(p + "mlp.c_fc.bias"), approximate="tanh")
        x = x + h @ g(p + "mlp.c_proj.weight") + g(p + "mlp.c_proj.bias")
        i += 1
    return ln(x, "ln_f") @ sd["lm_head.weight"].t()


def test_from_hf_gpt2_maps_every_key_and_matches_hf_forward():
    sd = hf_gpt2_state_dict()
    m = GPT.from_hf_gpt2(sd, n_head=2, attn="explicit").eval()
    assert (m.config.n_layer, m.config.n_embd, m.config.vocab_size, m.config.block_size) == (2, 32, V, T)
    idx = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(m(idx)[0], hf_forward(sd, idx, n_head=2), atol=1e-4, rtol=1e-4)


def test_from_hf_gpt2_grows_the_vocabulary_for_special_tokens():
    sd = hf_gpt2_state_dict()
    m = GPT.from_hf_gpt2(sd, n_head=2, vocab_size=V + 11)
    wte = m.transformer.wte.weight
    torch.testing.assert_close(wte[:V], sd["transformer.wte.weight"])
    torch.testing.assert_close(wte[V:], sd["transformer.wte.weight"].mean(0).expand(11, -1))


def test_from_hf_gpt2_rejects_mismatched_dicts():
    sd = hf_gpt2_state_dict()
    bad = dict(sd)
    bad["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(32, 100)
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.weight: shape"):
        GPT.from_hf_gpt2(bad, n_head=2)
    extra = dict(sd, **{"transformer.h.0.attn.rotary.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="unexpected key"):
        GPT.from_hf_gpt2(extra, n_head=2)
    missing = {k: v for k, v in sd.items() if k != "transformer.h.0.ln_2.bias"}
    with pytest.raises(ValueError, match="lacks"):
        GPT.from_hf_gpt2(missing, n_head=2)
