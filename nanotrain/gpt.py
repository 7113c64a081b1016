"""GPT-2, written out: the model every stage of nanotrain trains.

Architecture (Radford et al. 2019): token + learned position embeddings, ``n_layer`` pre-LayerNorm blocks of causal
self-attention and a GELU MLP, a final LayerNorm, and an output layer tied to the token embedding. Initialisation as
GPT-2: N(0, 0.02), with the residual projections scaled by 1/sqrt(2 * n_layer) so the residual stream's variance does
not grow with depth.

Three attention paths compute the same function (``GPTConfig.attn``):
  - ``explicit``: softmax(QK^T / sqrt(d) + mask) V written out, the one to read and learn from;
  - ``sdpa``: PyTorch's fused ``scaled_dot_product_attention``;
  - ``triton``: our FlashAttention-2 kernel (nanotrain/flash_attention.py), the default on CUDA. It handles the
    square causal case of training; anything with a padding mask or a KV cache falls back to SDPA.

``generate`` decodes with a KV cache: the prompt is run once ("prefill"), then each new token attends to the cached
keys and values instead of recomputing the whole prefix. Batches of different-length prompts are *left*-padded so
every row's next token sits in the last column; a padding mask keeps pads out of attention and out of the position
count.

    from nanotrain.gpt import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=4096))
    logits, loss = model(idx, targets)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass
class GPTConfig:
    block_size: int = 256  # longest sequence the model sees (number of learned positions)
    vocab_size: int = 4096  # rows of the embedding and output layer; the tokenizer's size rounded up to 64
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block; n_embd must divide by it
    n_embd: int = 256  # width of the residual stream
    dropout: float = 0.0  # dropout on attention weights and residual branches (0 for pretraining small models)
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    attn: str = "auto"  # "auto" (triton on CUDA, else sdpa) | "explicit" | "sdpa" | "triton"

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}")
        return cls(**d)


# Named sizes. "tiny" is the CPU default (trains on the built-in world in minutes); "bench" is the throughput bench's
# model; the GPT-2 sizes match the released checkpoints.
PRESETS = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=256, block_size=256),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024),
}


def padded_vocab(n: int, multiple: int = 64) -> int:
    """Round the tokenizer's size up: matrix shapes that are multiples of 64 run faster."""
    return (n + multiple - 1) // multiple * multiple


class KVCache:
    """Keys and values of every layer for the tokens decoded so far, plus which of them are real (not padding)."""

    def __init__(self, n_layer: int, batch: int, max_len: int):
        self.n_layer, self.batch, self.max_len = n_layer, batch, max_len
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self.length = 0  # columns filled
        self.valid: torch.Tensor | None = None  # (B, max_len) bool: key is a real token
        self.next_pos: torch.Tensor | None = None  # (B,) position id of each row's next token

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this step's (B, H, T, D) keys/values after the cached ones and return all of them."""
        if self.k[layer] is None:
            B, H, _, D = k.shape
            self.k[layer] = k.new_zeros(B, H, self.max_len, D)
            self.v[layer] = v.new_zeros(B, H, self.max_len, D)
        T = k.shape[2]
        self.k[layer][:, :, self.length:self.length + T] = k
        self.v[layer][:, :, self.length:self.length + T] = v
        return self.k[layer][:, :, :self.length + T], self.v[layer][:, :, :self.length + T]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.attn_path, self.dropout = cfg.n_head, cfg.attn, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # Q, K, V in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask=None, cache: KVCache | None = None, layer: int = 0):
        """x: (B, T, C). mask: None for plain causal attention, else (B, 1, T, T_keys) bool, True = may attend."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        y = attention(q, k, v, mask, self.attn_path, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.c_proj(y))


def attention(q, k, v, mask, path: str, dropout: float = 0.0):
    """Scaled dot-product attention, causal when ``mask`` is None, through the chosen path."""
    if path == "auto":
        path = "triton" if q.is_cuda and q.shape[-1] <= 128 and _triton_ok() else "sdpa"
    if path == "triton" and mask is None and dropout == 0.0:
        from nanotrain.flash_attention import flash_attention  # imported lazily: triton is optional
        return flash_attention(q, k, v)
    if path == "explicit":
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, T_keys)
        if mask is None:
            T = q.shape[2]
            mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        att = F.dropout(att, p=dropout, training=dropout > 0)
        return att @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=dropout)


@functools.cache
def _triton_ok() -> bool:
    """Whether the Triton kernel can run here (checked once; "auto" falls back to SDPA where it cannot)."""
    from nanotrain.flash_attention import triton_available
    return triton_available()[0]


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))  # GPT-2 used the tanh GELU


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, mask=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), mask, cache, layer)  # pre-LayerNorm: normalise the input of each branch
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.attn not in ("auto", "explicit", "sdpa", "triton"):
            raise ValueError(f"attn must be auto, explicit, sdpa or triton, not {cfg.attn!r}")
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying (Press & Wolf 2017), as GPT-2
        self.grad_checkpoint = False  # recompute each block in the backward pass (enable_grad_checkpoint)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections: GPT-2's 1/sqrt(2 * n_layer) scaling
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    # ----- forward
    def hidden_states(self, idx, pad_mask=None, cache: KVCache | None = None):
        """Final-LayerNorm hidden states (B, T, C): the trunk that the LM head, reward head and value head read.

        pad_mask (B, T) bool marks real tokens; pads get no attention and do not advance the position count, so a
        left-padded row computes exactly what the same row unpadded would. With a cache, ``idx`` holds only the new
        tokens and attends to everything cached before them.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        mask = None
        if pad_mask is None and cache is None:
            pos = torch.arange(T, device=idx.device).expand(B, T)
        else:
            if pad_mask is None:
                pad_mask = torch.ones(B, T, dtype=torch.bool, device=idx.device)
            if cache is not None:
                if cache.valid is None:
                    cache.valid = torch.zeros(B, cache.max_len, dtype=torch.bool, device=idx.device)
                    cache.next_pos = torch.zeros(B, dtype=torch.long, device=idx.device)
                cache.valid[:, start:start + T] = pad_mask
                valid, first_pos = cache.valid[:, :start + T], cache.next_pos
            else:
                valid, first_pos = pad_mask, torch.zeros(B, dtype=torch.long, device=idx.device)
            pos = (first_pos[:, None] + pad_mask.long().cumsum(1) - 1).clamp(min=0)
            # query i (absolute column start+i) may see key column j if j <= start+i and key j is real; every query
            # also sees itself, so a pad query's softmax row is never empty (its output is ignored anyway).
            qcol = torch.arange(start, start + T, device=idx.device)[:, None]
            kcol = torch.arange(start + T, device=idx.device)[None, :]
            mask = ((kcol <= qcol)[None] & valid[:, None, :]) | (kcol == qcol)[None]
            mask = mask[:, None]  # (B, 1, T, T_keys), broadcast over heads
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            if self.grad_checkpoint and torch.is_grad_enabled():
                # Activation checkpointing (Chen et al. 2016): keep only the block's input; the backward pass runs
                # the block again to get what it needs. Non-reentrant, with the RNG state replayed: same dropout.
                x = checkpoint(block, x, mask, cache, i, use_reentrant=False)
            else:
                x = block(x, mask, cache, i)
        if cache is not None:
            cache.next_pos = pos[:, -1] + 1
            cache.length = start + T
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, pad_mask=None, cache: KVCache | None = None):
        """Returns (logits, loss). targets (B, T) with -1 where no loss is taken (e.g. prompt tokens in SFT)."""
        logits = self.lm_head(self.hidden_states(idx, pad_mask, cache))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ----- decoding
    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                        top_p: float | None = None, stop_token: int | None = None, pad_mask=None, pad_id: int = 0,
                        generator: torch.Generator | None = None):
        """Yield the next token of every row, (B,), one step at a time (for streaming). Rows that have produced
        ``stop_token`` yield ``pad_id`` afterwards; decoding ends when every row has stopped."""
        B, T = idx.shape
        if T + max_new_tokens > self.config.block_size:
            raise ValueError(f"prompt of {T} tokens + {max_new_tokens} new ones exceeds block_size "
                             f"{self.config.block_size}")
        cache = KVCache(self.config.n_layer, B, T + max_new_tokens)
        logits = self(idx, pad_mask=pad_mask, cache=cache)[0][:, -1]
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            nxt = sample_next(logits.float(), temperature, top_k, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            yield nxt
            if stop_token is not None:
                done |= nxt == stop_token
            if done.all():
                return
            logits = self(nxt[:, None], cache=cache)[0][:, -1]

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, **kw):
        """Decode up to ``max_new_tokens`` after ``idx`` (B, T); returns the new tokens (B, N), padded after stop."""
        steps = list(self.generate_stream(idx, max_new_tokens, **kw))
        return torch.stack(steps, dim=1) if steps else idx.new_zeros(idx.shape[0], 0)

    # ----- accounting
    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings excluded by default (they cost no matmul FLOPs)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6N for the weight matmuls (forward 2N, backward 4N) plus attention's
        12 * n_layer * n_embd * T (Kaplan et al. 2020, appendix; PaLM appendix B) - the numerator of MFU."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * seq_len

    # ----- GPT-2 weights in Hugging Face's layout (import: GPT-2's released weights; export: export.py)
    @classmethod
    def from_hf_gpt2(cls, state_dict: dict, n_head: int | None = None, vocab_size: int | None = None,
                     attn: str = "auto") -> "GPT":
        """Build a GPT from a Hugging Face GPT-2 state dict (``GPT2LMHeadModel`` or ``GPT2Model`` keys).

        HF's GPT-2 stores its Linear layers as ``Conv1D`` with weights shaped (in, out); ours are (out, in), so those
        are transposed (``HF_CONV1D``). The architecture is read off the shapes (heads default to n_embd / 64, as in
        every GPT-2 size). ``vocab_size`` may exceed the checkpoint's rows to make room for our special tokens; the
        extra rows start at the mean embedding. Every key must be understood and every parameter filled, else a
        ValueError names it. ``to_hf_gpt2`` is the inverse.
        """
        sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
        for need in ("wte.weight", "wpe.weight"):
            if need not in sd:
                raise ValueError(f"not a GPT-2 state dict: no key {need!r}")
        n_vocab_hf, n_embd = sd["wte.weight"].shape
        n_layer = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("h.")), default=-1)
        cfg = GPTConfig(block_size=sd["wpe.weight"].shape[0], vocab_size=vocab_size or n_vocab_hf, n_layer=n_layer,
                        n_head=n_head or n_embd // 64, n_embd=n_embd, bias=True, attn=attn)
        if cfg.vocab_size < n_vocab_hf:
            raise ValueError(f"vocab_size {cfg.vocab_size} is smaller than the checkpoint's {n_vocab_hf}")
        model = cls(cfg)
        ours = model.state_dict()
        filled = set()
        with torch.no_grad():
            for k, v in sd.items():
                if k.endswith(("attn.bias", "attn.masked_bias")) and k.count(".") == 3:
                    continue  # HF's constant causal-mask buffers, not parameters
                name = "lm_head.weight" if k == "lm_head.weight" else f"transformer.{k}"
                if name not in ours:
                    raise ValueError(f"unexpected key {k!r} in GPT-2 state dict (no such parameter in {cfg})")
                if k.endswith(HF_CONV1D):
                    v = v.t()
                if name.endswith("wte.weight") or name == "lm_head.weight":
                    if v.shape[1] != n_embd:
                        raise ValueError(f"{k}: shape {tuple(v.shape)} does not match width {n_embd}")
                    ours[name][:n_vocab_hf] = v
                    ours[name][n_vocab_hf:] = v.mean(0)
                elif v.shape != ours[name].shape:
                    raise ValueError(f"{k}: shape {tuple(v.shape)} does not match expected {tuple(ours[name].shape)}")
                else:
                    ours[name].copy_(v)
                filled.add(name)
        missing = set(ours) - filled - {"lm_head.weight"}  # lm_head is tied to wte
        if missing:
            raise ValueError(f"GPT-2 state dict lacks {sorted(missing)[:5]}{' ...' if len(missing) > 5 else ''}")
        return model

    def to_hf_gpt2(self) -> dict:
        """This model's weights as a Hugging Face ``GPT2LMHeadModel`` state dict (the inverse of ``from_hf_gpt2``).

        Our parameter names are HF's; the Conv1D weights are transposed to (in, out); the LM head is left out because
        HF ties it to ``transformer.wte.weight`` as we do; every row of the token matrix is kept, the special tokens'
        and the padding rows included (config.json's vocab_size counts them). HF's GPT-2 always has biases: a model
        built with ``bias=False`` gets zero ones, which compute the same function.
        """
        out = {}
        for name, v in self.state_dict().items():
            if name == "lm_head.weight":
                continue
            out[name] = (v.t() if name.endswith(HF_CONV1D) else v).detach().contiguous()
            if not self.config.bias and not name.endswith(("wte.weight", "wpe.weight")):  # a Linear or a LayerNorm
                out[name.removesuffix("weight") + "bias"] = v.new_zeros(v.shape[0])
        return out


# Hugging Face's GPT-2 (like OpenAI's original TensorFlow code) computes these layers as x @ W + b with W of shape
# (in, out), where nn.Linear holds (out, in): the one difference between its parameters and ours.
HF_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def enable_grad_checkpoint(model: nn.Module) -> int:
    """Turn on activation checkpointing in every GPT inside ``model`` (a GPT, a reward model, a LoRA-wrapped
    policy...): activation memory then grows with the number of layers by one (B, T, C) tensor each instead of
    every intermediate of the block, for about one more forward pass of compute. Returns how many GPTs it found."""
    gpts = [m for m in model.modules() if isinstance(m, GPT)]
    for m in gpts:
        m.grad_checkpoint = True
    return len(gpts)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token from (B, V) logits: greedy at temperature 0, else sample from the tempered softmax,
    optionally restricted to the k most likely tokens and/or the smallest set with probability >= top_p."""
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits / temperature
    if not torch.isfinite(scaled).all():  # so small a temperature that the logits overflow: shift the largest to 0
        scaled = (logits - logits.amax(-1, keepdim=True)) / temperature  # first (the others go to -inf, not NaN)
    logits = scaled
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep tokens until the mass before them reaches top_p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
