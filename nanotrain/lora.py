"""LoRA: low-rank adaptation of a frozen model (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

A frozen weight W0 (out x in) is adapted by a trainable low-rank product (eq. 3 of the paper):

    h = W0 x + (alpha / r) * B A x,        A: (r x in), B: (out x r), r << min(in, out)

A starts Kaiming-uniform and B at zero, so at step 0 the wrapped layer computes exactly what the base layer does and
fine-tuning starts from the pretrained function. Only A and B are trained, a few percent of the weights, and the
optimizer state shrinks with them. The scale alpha / r keeps the update's size roughly independent of r when r is
changed (the paper tunes alpha once); rsLoRA (Kalajdzievski 2023) uses alpha / sqrt(r) instead, which keeps learning
stable at large ranks.

One thing a low-rank update of the blocks cannot do well is change the token matrix, which GPT-2 ties between the
embedding and the LM head. The chat markers and ``<|end|>`` exist only from SFT on, and the model must learn to *emit*
``<|end|>``, whose output row pretraining only ever pushed down; so the rows of those few tokens get their own
trainable offsets (6 x n_embd numbers, the same idea as PEFT's ``trainable_token_indices``). Without them a LoRA
model learns to stop far later than a fully fine-tuned one. Full fine-tuning also moves every other row, and a LoRA
of the blocks alone does not make up for it (it fits the SFT data far worse: RESULTS.md, stage 2).
``embedding=True`` gives the token matrix a rank-r update of its own, B A with B (V x r) zero and A (r x C)
Kaiming-uniform: exactly a LoRA on the LM head, kept tied, so the embedding moves with it (PEFT adapts embeddings the
same way), for V r + r C more numbers. Both live in one ``TokenAdapter``
shared by the embedding and the head:

    W_tok = W0 + scatter(rows, delta) + (alpha / r) * B A

After training, ``merge`` folds B A into W0 (W = W0 + scale * B A), so the adapted model costs nothing extra at
inference and is saved as an ordinary checkpoint; ``unmerge`` subtracts it again. The adapter alone (A and B of every
layer, a few hundred KB) can be saved and applied to the same base later.

    n = inject_lora(model, r=8, alpha=16, token_rows=sorted(tok.special_ids.values()), embedding=True)
    print(trainable_summary(model))                 # "trainable: 167,424 of 4,441,088 parameters (3.77%)"
    ... train ...
    save_adapter(model, "out/sft/adapter.pt")       # A and B only
    sd = merged_state_dict(model)                   # the plain GPT state dict with B A folded in
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanotrain.checkpoint import atomic_save
from nanotrain.errors import CheckpointError

TRAINABLE = ("lora_A", "lora_B", "token_adapter.delta")  # names of the only parameters that train

# Every linear layer inside the transformer blocks: attention's fused QKV (c_attn) and output (attn.c_proj), and the
# MLP's two layers (c_fc, mlp.c_proj). The paper adapts only W_q and W_v; adapting the MLP too recovers more of full
# fine-tuning's quality at a small model size. The LM head (tied to the embedding) is left alone.
DEFAULT_TARGETS = r"\.(c_attn|c_proj|c_fc)$"


class LoRALinear(nn.Module):
    """``base(x) + scale * B(A(dropout(x)))`` around a frozen ``nn.Linear``."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        self.base = base
        self.r, self.alpha, self.rslora = r, alpha, rslora
        self.scale = alpha / (math.sqrt(r) if rslora else r)
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=dev, dtype=dt))
        # As nn.Linear (and the paper's reference code) initialises its weight: uniform with a = sqrt(5).
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        for p in base.parameters():
            p.requires_grad_(False)

    def delta(self) -> torch.Tensor:
        """The weight update scale * B A, shaped like the base weight."""
        return self.scale * (self.lora_B @ self.lora_A)

    def forward(self, x):
        y = self.base(x)
        if self.merged:  # B A already lives inside the base weight
            return y
        # x A^T B^T: two thin matmuls (r wide) instead of forming the full out x in product every step.
        return y + self.scale * (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t())

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight += self.delta().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight -= self.delta().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scale={self.scale:.4g}{', merged' if self.merged else ''}"


class TokenAdapter(nn.Module):
    """A trainable update of the tied (V x C) token matrix: offsets on a few rows and/or a rank-r product,

        W_eff = W + scatter(rows, delta) + scale * B A,        B: (V x r) zero, A: (r x C) Kaiming-uniform

    B A is a LoRA on the LM head (its input is the C-wide hidden state); one instance is shared by the embedding and
    the head, so the tie holds. Both parts start at zero: at step 0 the matrix is exactly W."""

    def __init__(self, vocab: int, dim: int, rows=(), r: int = 0, scale: float = 1.0, device=None, dtype=None):
        super().__init__()
        self.register_buffer("rows", torch.tensor(sorted(set(rows)), dtype=torch.long, device=device))
        self.delta = nn.Parameter(torch.zeros(len(self.rows), dim, device=device, dtype=dtype))
        self.r, self.scale = r, scale
        if r > 0:
            self.lora_A = nn.Parameter(torch.empty(r, dim, device=device, dtype=dtype))
            self.lora_B = nn.Parameter(torch.zeros(vocab, r, device=device, dtype=dtype))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as LoRALinear's A, fan_in = C
        self.merged = False

    def update(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` plus the adapter's update (whether or not it is merged)."""
        out = weight.index_add(0, self.rows, self.delta.to(weight.dtype))
        if self.r > 0:
            out = out + (self.scale * (self.lora_B @ self.lora_A)).to(weight.dtype)
        return out

    def apply(self, weight: torch.Tensor) -> torch.Tensor:
        return weight if self.merged else self.update(weight)


class AdaptedEmbedding(nn.Module):
    def __init__(self, base: nn.Embedding, adapter: TokenAdapter):
        super().__init__()
        self.base, self.token_adapter = base, adapter
        base.weight.requires_grad_(False)

    def forward(self, idx):
        return F.embedding(idx, self.token_adapter.apply(self.base.weight))


class AdaptedHead(nn.Module):
    def __init__(self, base: nn.Linear, adapter: TokenAdapter):
        super().__init__()
        self.base, self.token_adapter = base, adapter

    def forward(self, x):
        return F.linear(x, self.token_adapter.apply(self.base.weight), self.base.bias)


def lora_layers(model) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapt_token_matrix(model, token_rows=(), r: int = 0, scale: float = 1.0) -> TokenAdapter:
    """Freeze the GPT's tied token matrix except for a TokenAdapter: offsets on the rows ``token_rows`` and, if
    ``r`` > 0, a rank-r update of the whole matrix.

    Used by LoRA, and (rows only) by full fine-tuning with ``train_sft.py --embeddings seen|new``: SFT data that names
    only some entities would otherwise raise their output rows (positive gradients as targets) while the rows of
    everyone it never mentions are only pushed down, teaching the model to answer with a seen name instead of the one
    asked about (see train_sft.py for what it costs)."""
    wte, head = model.transformer.wte, model.lm_head
    adapter = TokenAdapter(wte.num_embeddings, wte.embedding_dim, token_rows, r, scale, wte.weight.device,
                           wte.weight.dtype)
    model.transformer.wte = AdaptedEmbedding(wte, adapter)
    model.lm_head = AdaptedHead(head, adapter)
    wte.weight.requires_grad_(False)
    return adapter


def inject_lora(model, r: int = 8, alpha: float = 16.0, dropout: float = 0.0, rslora: bool = False,
                targets: str = DEFAULT_TARGETS, token_rows: list[int] | None = None, embedding: bool = False) -> int:
    """Replace every ``nn.Linear`` whose module name matches the regex ``targets`` by a LoRALinear around it, give
    the tokens ``token_rows`` (if any) trainable embedding offsets and, with ``embedding``, the tied token matrix a
    rank-r update of its own, then freeze everything except the LoRA factors and those offsets. Returns the number
    of linear layers wrapped."""
    pattern = re.compile(targets)
    chosen = [name for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear) and pattern.search(name)]
    if not chosen:
        raise ValueError(f"no nn.Linear module name matches the LoRA target pattern {targets!r}")
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout, rslora))
    if token_rows or embedding:
        adapt_token_matrix(model, token_rows or (), r if embedding else 0, alpha / (math.sqrt(r) if rslora else r))
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith(TRAINABLE))
    model.lora_config = dict(r=r, alpha=alpha, dropout=dropout, rslora=rslora, targets=targets,
                             token_rows=list(token_rows or []), embedding=embedding)
    return len(chosen)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    params = list(model.parameters())  # nn.Module.parameters() already yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def trainable_summary(model) -> str:
    n, total = count_parameters(model)
    return f"trainable: {n:,} of {total:,} parameters ({100 * n / total:.2f}%)"


def token_adapter_of(model) -> TokenAdapter | None:
    emb = model.transformer.wte
    return emb.token_adapter if isinstance(emb, AdaptedEmbedding) else None


def merge_lora(model) -> None:
    for m in lora_layers(model).values():
        m.merge()
    tokens = token_adapter_of(model)
    if tokens is not None and not tokens.merged:
        with torch.no_grad():  # the weight is shared by embedding and head: one update serves both
            w = model.transformer.wte.base.weight
            w.copy_(tokens.update(w))
        tokens.merged = True


def unmerge_lora(model) -> None:
    for m in lora_layers(model).values():
        m.unmerge()
    tokens = token_adapter_of(model)
    if tokens is not None and tokens.merged:
        with torch.no_grad():
            w = model.transformer.wte.base.weight
            w.sub_(tokens.update(torch.zeros_like(w)))  # the update alone: applied to a zero matrix
        tokens.merged = False


@torch.no_grad()
def merged_state_dict(model) -> dict:
    """The state dict of the model *without* LoRA, with every B A (and token-matrix update) folded into its base
    weight: it loads into a plain GPT (strictly). The model itself is left as it is (merged or not)."""
    layers = lora_layers(model)
    tokens = token_adapter_of(model)
    out = {}
    for key, v in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if leaf in ("lora_A", "lora_B") or ".token_adapter." in key:
            continue
        if owner.endswith(".base") and owner[:-5] in layers:
            layer = layers[owner[:-5]]
            key = f"{owner[:-5]}.{leaf}"
            if leaf == "weight" and not layer.merged:
                v = v + layer.delta().to(v.dtype)
        elif key in ("transformer.wte.base.weight", "lm_head.base.weight"):
            key = key.replace(".base.", ".")
            v = tokens.apply(v)  # a no-op once merged
        out[key] = v
    return out


def adapter_state(model) -> dict:
    """The adapter alone: LoRA factors and the settings needed to re-create the wrappers (plain types only)."""
    if not hasattr(model, "lora_config"):
        raise ValueError("this model has no LoRA layers (call inject_lora first)")
    return {"lora_config": dict(model.lora_config),
            "adapter": {k: v.detach().cpu() for k, v in model.state_dict().items() if k.endswith(TRAINABLE)}}


def save_adapter(model, path, **extra) -> None:
    atomic_save({**adapter_state(model), **extra}, path)


def load_adapter(model, path_or_state) -> None:
    """Wrap ``model`` as the adapter was trained and load its factors. Every factor must match a wrapped layer."""
    state = path_or_state
    if not isinstance(state, dict):
        try:
            state = torch.load(path_or_state, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path_or_state} is not a readable LoRA adapter: {type(e).__name__}") from None
        if not isinstance(state, dict) or "adapter" not in state or "lora_config" not in state:
            raise CheckpointError(f"{path_or_state} is not a LoRA adapter file (no 'adapter'/'lora_config')")
    if not lora_layers(model):
        inject_lora(model, **state["lora_config"])
    tokens = token_adapter_of(model)
    if any(m.merged for m in lora_layers(model).values()) or (tokens is not None and tokens.merged):
        raise ValueError("unmerge the LoRA layers before loading an adapter into them")
    own = {k for k in model.state_dict() if k.endswith(TRAINABLE)}
    given = set(state["adapter"])
    if own != given:
        raise CheckpointError(f"adapter does not fit this model: missing {sorted(own - given)[:3]}, "
                              f"unexpected {sorted(given - own)[:3]}")
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in state["adapter"].items():
            if sd[k].shape != v.shape:
                raise CheckpointError(f"adapter tensor {k} has shape {tuple(v.shape)}, the model needs "
                                      f"{tuple(sd[k].shape)}")
            sd[k].copy_(v)
