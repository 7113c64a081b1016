"""Batched chat replies: render prompts, left-pad them, decode with the KV cache, cut at the end-of-turn token.

Every stage that has to hear the model speak uses this one function: SFT evaluation, reward-model checks on fresh
samples, best-of-N, PPO rollouts and online DPO.

    replies = generate_replies(model, tok, ["What colour is Lena's bicycle?"], max_new_tokens=48)
    replies[0].text, replies[0].ended
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nanotrain.errors import ConfigError
from nanotrain.runtime import precision


@dataclass
class Reply:
    prompt_ids: list[int]  # the rendered prompt, ending with the assistant marker
    ids: list[int]  # the reply's tokens, including the end-of-turn token when it ended
    ended: bool  # produced <|end|> within the length limit: the well-formedness test
    text: str  # the reply as the user sees it (no markers)


def check_sampling(temperature: float, top_k: int | None = None, top_p: float | None = None) -> None:
    """The sampling flags of sample.py, chat.py and data/label.py, refused in one sentence before a model loads:
    torch's own errors for them name no flag (--top-k 0), and a negative temperature would silently favour the least
    likely tokens."""
    if not temperature >= 0:
        raise ConfigError(f"--temperature must be 0 (greedy) or more, not {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1 (or none), not {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be above 0 and at most 1 (or none), not {top_p}")


def left_pad(seqs: list[list[int]], pad_id: int, device="cpu"):
    """(B, T) ids with shorter rows padded on the left, and the (B, T) bool mask of real tokens."""
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        idx[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, T - len(s):] = True
    return idx.to(device), mask.to(device)


def as_messages(prompt) -> list[dict]:
    """A prompt is a user string or a list of chat messages."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


@torch.no_grad()
def generate_replies(model, tok, prompts, max_new_tokens: int = 64, temperature: float = 0.0, top_k=None, top_p=None,
                     batch_size: int = 64, generator: torch.Generator | None = None, autocast=None) -> list[Reply]:
    """Answer each prompt (greedy at temperature 0). ``autocast`` is a context-manager factory (Runtime.autocast)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rendered = [tok.render_prompt(as_messages(p)) for p in prompts]
    limit = model.config.block_size - max_new_tokens
    rendered = [r[-limit:] for r in rendered]  # keep the most recent context if a prompt is too long
    replies = []
    for i in range(0, len(rendered), batch_size):
        chunk = rendered[i:i + batch_size]
        idx, mask = left_pad(chunk, tok.pad, device)
        ctx = precision(autocast, device)
        with ctx:
            out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                 stop_token=tok.end, pad_mask=mask, pad_id=tok.pad, generator=generator)
        for p, row in zip(chunk, out.tolist()):
            ended = tok.end in row
            ids = row[:row.index(tok.end) + 1] if ended else row
            replies.append(Reply(p, ids, ended, tok.decode_message(ids)))
    model.train(was_training)
    return replies
