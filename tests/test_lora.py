"""LoRA (Hu et al. 2021) against invariants: at initialisation the wrapped model computes exactly what the base does;
merge then unmerge restores the weights; the merged state dict is a plain GPT with the same outputs; only the LoRA
factors receive gradients and their count is r * (in + out) per layer; the adapter round-trips on its own; and on a
tiny task LoRA fine-tuning reaches the loss full fine-tuning reaches, within a stated margin."""
import copy
import math

import pytest
import torch

from nanotrain.errors import CheckpointError
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.lora import (LoRALinear, count_parameters, inject_lora, load_adapter, merge_lora, merged_state_dict,
                            save_adapter, unmerge_lora)

pytestmark = pytest.mark.usefixtures("one_thread")


CFG = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32, attn="explicit")


def base_model(seed=0):
    torch.manual_seed(seed)
    return GPT(CFG).eval()


ROWS = [3, 30, 31]  # stand-ins for the chat markers: tokens whose embedding rows train too


def randomize_lora(model, seed=1):
    """Non-zero B and token-row offsets (both start at zero), so the adapter changes the function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("lora_B", "token_adapter.delta")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_at_init_the_wrapped_model_equals_the_base_exactly():
    base = base_model()
    x = torch.randint(0, 32, (3, 16))
    ref = base(x)[0]
    lora = copy.deepcopy(base)
    n = inject_lora(lora, r=4, alpha=8, token_rows=ROWS)
    assert n == 4 * CFG.n_layer  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj in every block
    assert torch.equal(lora(x)[0], ref)  # B = 0 and row offsets 0: not approximately, exactly
    layer = lora.transformer.h[0].attn.c_attn
    assert isinstance(layer, LoRALinear) and not torch.all(layer.lora_A == 0) and torch.all(layer.lora_B == 0)
    # Kaiming-uniform with a = sqrt(5): bound = 1 / sqrt(fan_in)
    assert layer.lora_A.abs().max() <= 1 / math.sqrt(CFG.n_embd)


def test_merge_unmerge_and_the_merged_state_dict():
    model = base_model()
    wte0 = model.transformer.wte.weight.detach().clone()
    inject_lora(model, r=4, alpha=8, token_rows=ROWS)
    randomize_lora(model)
    x = torch.randint(0, 32, (2, 16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(x)[0]
    # the update, computed here by hand for one layer: W0 + (alpha / r) B A
    layer = model.transformer.h[1].mlp.c_fc
    w_expected = layer.base.weight + 2.0 * layer.lora_B @ layer.lora_A
    merge_lora(model)
    assert torch.allclose(layer.base.weight, w_expected, atol=1e-7)
    assert torch.allclose(model(x)[0], out, atol=1e-5)  # merged: same function, no extra matmuls
    unmerge_lora(model)
    for k, v in model.state_dict().items():
        assert (v - before[k]).abs().max() <= 1e-6, k
    # The merged state dict loads strictly into a plain GPT and computes the adapted function.
    plain = GPT(CFG).eval()
    plain.load_state_dict(merged_state_dict(model))
    assert torch.allclose(plain(x)[0], out, atol=1e-5)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    # the token offsets land in exactly their rows of the (still tied) embedding / output matrix
    delta = model.transformer.wte.token_adapter.delta
    moved = (plain.transformer.wte.weight - wte0).abs().sum(1).nonzero().flatten().tolist()
    assert moved == ROWS and torch.allclose(plain.transformer.wte.weight[ROWS], wte0[ROWS] + delta)
    assert plain.lm_head.weight is plain.transformer.wte.weight


def test_only_lora_factors_get_gradients_and_the_count_is_r_times_in_plus_out():
    model = base_model()
    r = 4
    inject_lora(model, r=r, alpha=8, token_rows=ROWS)
    x = torch.randint(0, 32, (2, 16))
    loss = model(x, x)[1]
    loss.backward()
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B", "token_adapter.delta")):
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    C = CFG.n_embd
    per_block = r * (C + 3 * C) + r * (C + C) + r * (C + 4 * C) + r * (4 * C + C)  # c_attn, c_proj, c_fc, c_proj
    trainable, total = count_parameters(model)
    assert trainable == CFG.n_layer * per_block + len(ROWS) * C
    assert total == sum(p.numel() for p in GPT(CFG).parameters()) + trainable  # the tied embedding counted once


def test_the_token_matrix_update_is_a_lora_on_the_tied_head():
    """embedding=True: W_tok = W0 + scatter(rows, delta) + (alpha / r) B A, shared by embedding and head; exact
    identity at init, merge/unmerge within 1e-6, gradients on B and A, and V r + r C more trainable numbers."""
    base = base_model()
    x = torch.randint(0, 32, (2, 16))
    model = copy.deepcopy(base)
    r = 4
    inject_lora(model, r=r, alpha=8, token_rows=ROWS, embedding=True)
    assert torch.equal(model(x)[0], base(x)[0])  # B = 0: exactly the base at the start
    tokens = model.transformer.wte.token_adapter
    assert model.lm_head.token_adapter is tokens  # one update for both ends of the tie
    trainable, _ = count_parameters(model)
    C, V = CFG.n_embd, CFG.vocab_size
    per_block = r * (C + 3 * C) + r * (C + C) + r * (C + 4 * C) + r * (4 * C + C)
    assert trainable == CFG.n_layer * per_block + len(ROWS) * C + V * r + r * C
    model(x, x)[1].backward()
    assert tokens.lora_A.grad is not None and tokens.lora_B.grad is not None  # B gets a gradient from step 1
    randomize_lora(model)
    out = model(x)[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    w0 = model.transformer.wte.base.weight.detach().clone()
    expected = w0.index_add(0, tokens.rows, tokens.delta) + 2.0 * tokens.lora_B @ tokens.lora_A  # alpha / r = 2
    plain = GPT(CFG).eval()
    plain.load_state_dict(merged_state_dict(model))
    assert torch.allclose(plain.transformer.wte.weight, expected, atol=1e-6)
    assert torch.allclose(plain(x)[0], out, atol=1e-5) and plain.lm_head.weight is plain.transformer.wte.weight
    merge_lora(model)
    assert torch.allclose(model(x)[0], out, atol=1e-5)
    unmerge_lora(model)
    for k, v in model.state_dict().items():
        assert (v - before[k]).abs().max() <= 1e-6, k


def test_target_pattern_rank_scaling_and_rslora():
    model = base_model()
    n = inject_lora(model, r=16, alpha=8, targets=r"attn\.c_attn$", rslora=True)
    assert n == CFG.n_layer
    layer = model.transformer.h[0].attn.c_attn
    assert layer.scale == pytest.approx(8 / math.sqrt(16))  # rsLoRA: alpha / sqrt(r)
    assert not isinstance(model.transformer.h[0].mlp.c_fc, LoRALinear)
    with pytest.raises(ValueError, match="no nn.Linear"):
        inject_lora(base_model(), targets="nothing_matches")


@pytest.mark.parametrize("embedding", [False, True])
def test_adapter_alone_round_trips(tmp_path, embedding):
    model = base_model()
    inject_lora(model, r=4, alpha=8, token_rows=ROWS, embedding=embedding)
    randomize_lora(model)
    x = torch.randint(0, 32, (2, 16))
    out = model(x)[0]
    save_adapter(model, tmp_path / "adapter.pt")
    saved = torch.load(tmp_path / "adapter.pt", weights_only=True)
    # no base weights in the file: only the factors and the three row offsets (and the token matrix's B and A)
    assert all(k.endswith(("lora_A", "lora_B", "token_adapter.delta")) for k in saved["adapter"])
    head = len(ROWS) * CFG.n_embd + embedding * 4 * (CFG.vocab_size + CFG.n_embd)
    assert sum(v.numel() for k, v in saved["adapter"].items() if k.startswith("lm_head")) == head
    fresh = base_model()  # the same base, no LoRA yet
    load_adapter(fresh, tmp_path / "adapter.pt")
    assert torch.allclose(fresh(x)[0], out, atol=1e-6)
    other = GPT(GPTConfig(**{**CFG.to_dict(), "n_layer": 1}))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_adapter(other, tmp_path / "adapter.pt")


def rule_batch(seed, k, n=16, T=16):
    """Sequences that count up by k modulo the vocabulary: a rule a tiny model learns in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, CFG.vocab_size, (n, 1), generator=g) + k * torch.arange(T + 1)) % CFG.vocab_size
    return x[:, :-1].contiguous(), x[:, 1:].contiguous()


def fit(model, lr, steps, k):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    for s in range(steps):
        x, y = rule_batch(s, k)
        loss = model(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return model.eval()(*rule_batch(10 ** 6, k, n=64))[1].item()


def test_lora_reaches_the_loss_of_full_fine_tuning_on_a_tiny_task():
    # "Pretrain" on counting by 1, then fine-tune to count by 3: the same setting as SFT, a new behaviour on top of a
    # trained base (a random base would not do: its frozen output layer is too small to express confident logits).
    base = base_model()
    fit(base, 3e-3, 120, k=1)
    with torch.no_grad():
        start = base.eval()(*rule_batch(10 ** 6, 3, n=64))[1].item()
    full = fit(copy.deepcopy(base), 3e-3, 80, k=3)
    lora_model = copy.deepcopy(base)
    inject_lora(lora_model, r=8, alpha=16)
    lora = fit(lora_model, 1e-2, 80, k=3)  # LoRA wants a larger learning rate (few, freshly initialised weights)
    assert start > 2.0  # the new rule is not known at the start
    assert full < 0.15 and abs(lora - full) < 0.1, (start, full, lora)  # stated margin: 0.1 nats
