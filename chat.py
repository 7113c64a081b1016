"""Talk to a chat checkpoint in the terminal: multi-turn, streamed token by token with the KV cache.

    python chat.py                                        # out/sft/ckpt.pt, interactive (/reset, /quit)
    python chat.py --init out/rlhf_ppo/ckpt.pt --prompt "What colour is Lena's bicycle?"      # one answer, then exit
    python chat.py --init out/pretrain/ckpt.pt --adapter out/sft_lora/adapter.pt          # base + LoRA adapter
    python chat.py --best-of 8 --reward out/rm_helpful/ckpt.pt --prompt "..."   # the reward model's pick of 8

Each turn renders the whole conversation with the chat template and decodes with ``model.generate_stream``; when
the conversation no longer fits in the context (block size minus room for the reply), the oldest exchanges are
dropped, keeping any system message. Control tokens are never printed: a reply stops at ``<|end|>`` and decoding
hides special tokens; text the user types that looks like a marker stays plain text (the tokenizer encodes it as
ordinary characters).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import check_counts, flag, parse_config
from nanotrain.errors import run_script
from nanotrain.runtime import precision, setup_runtime
from nanotrain.sampling import check_sampling


@dataclass
class ChatConfig:
    init: str = flag("out/sft/ckpt.pt", "chat checkpoint (sft or rlhf; a pretrain checkpoint with --adapter)")
    adapter: str = flag("", "a LoRA adapter.pt (train_sft.py --lora-rank) to apply on top of --init")
    prompt: str = flag("", "answer this one message and exit ('-': read it from stdin); empty: interactive")
    system: str = flag("", "an optional system message that opens the conversation")
    max_new_tokens: int = flag(200, "longest reply in tokens (capped at half the context)")
    temperature: float = flag(0.7, "sampling temperature (0: greedy)")
    top_k: int | None = flag(None, "sample only among the k most likely tokens")
    top_p: float | None = flag(0.9, "nucleus sampling: the smallest set of tokens with this much probability")
    best_of: int = flag(1, "sample this many replies and show the one the reward model scores highest")
    reward: str = flag("out/rm_helpful/ckpt.pt", "reward model checkpoint for --best-of")
    seed: int = flag(0, "random seed")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("auto", "auto | float32 | bfloat16")


def fit_context(tok, messages: list[dict], budget: int) -> tuple[list[dict], list[int], int]:
    """Fit ``messages`` into ``budget`` tokens by dropping the oldest user/assistant exchanges first (a system
    message stays). Returns (the messages kept, their rendered prompt ids, exchanges dropped). If even the last
    message alone is too long, the oldest tokens of the prompt are cut."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    dropped = 0
    ids = tok.render_prompt(system + turns)
    while len(ids) > budget and len(turns) > 1:
        turns = turns[2:]  # one user message and the assistant's reply to it
        dropped += 1
        ids = tok.render_prompt(system + turns)
    if len(ids) > budget:
        ids = [tok.eot] + ids[len(ids) - budget + 1:]  # keep the end: the newest words and the open <|ai|> marker
    return system + turns, ids, dropped


def stream_reply(model, tok, ids: list[int], max_new_tokens: int, temperature: float, top_k=None, top_p=None,
                 generator=None, autocast=None):
    """Yield the reply's text piece by piece as tokens are decoded; stops at <|end|> (never shown)."""
    device = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=device)
    out, shown = [], ""
    ctx = precision(autocast, device)
    with ctx:
        for nxt in model.generate_stream(x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                         stop_token=tok.end, pad_id=tok.pad, generator=generator):
            t = int(nxt[0])
            if t == tok.end:
                break
            out.append(t)
            text = tok.decode_message(out)
            # A character split across byte-level tokens decodes to U+FFFD until its last byte arrives: hold it back.
            if text.endswith("\ufffd"):
                continue
            yield text[len(shown):]
            shown = text
    rest = tok.decode_message(out)[len(shown):]
    if rest:
        yield rest


def main(argv=None) -> list[str]:
    cfg = parse_config(ChatConfig, argv, description=__doc__.split("\n\n")[0], show=False)
    check_sampling(cfg.temperature, cfg.top_k, cfg.top_p)
    check_counts(cfg, "max_new_tokens", "best_of")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    stages = ("pretrain", "sft", "rlhf") if cfg.adapter else ("sft", "rlhf")
    model, tok, _ = load_model(cfg.init, stages=stages, device=rt.device)
    if cfg.adapter:
        from nanotrain.lora import load_adapter, merge_lora
        load_adapter(model, cfg.adapter)
        model.to(rt.device)
        merge_lora(model)
    model.eval()
    block = model.config.block_size
    max_new = max(1, min(cfg.max_new_tokens, block // 2))
    gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    rm = None
    if cfg.best_of > 1:
        from nanotrain.reward import load_reward_model  # written by the reward-model stage; only needed here
        rm, _, _ = load_reward_model(cfg.reward, rt.device)

    def reply(messages) -> str:
        kept, ids, dropped = fit_context(tok, messages, block - max_new)
        if dropped:
            print(f"[context full: dropped the {dropped} oldest exchange(s)]", file=sys.stderr)
        if rm is not None:
            from nanotrain.reward import best_of_n
            best, texts, scores = best_of_n(model, tok, rm, kept, cfg.best_of, max_new, cfg.temperature,
                                            autocast=rt.autocast, generator=gen)
            print(f"[best of {len(texts)} by reward: {', '.join(f'{s:.2f}' for s in scores)}]", file=sys.stderr)
            print(best, flush=True)
            return best
        text = ""
        for piece in stream_reply(model, tok, ids, max_new, cfg.temperature, cfg.top_k, cfg.top_p, gen,
                                  rt.autocast):
            print(piece, end="", flush=True)
            text += piece
        print(flush=True)
        return text

    opening = [{"role": "system", "content": cfg.system}] if cfg.system else []
    if cfg.prompt:
        prompt = sys.stdin.read() if cfg.prompt == "-" else cfg.prompt
        return [reply(opening + [{"role": "user", "content": prompt}])]
    print(f"chatting with {cfg.init} ({tok.name}, context {block} tokens). /reset starts over, /quit or Ctrl-D ends.")
    messages, replies = list(opening), []
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return replies
        if not line:
            continue
        if line == "/quit":
            return replies
        if line == "/reset":
            messages = list(opening)
            continue
        messages.append({"role": "user", "content": line})
        print("ai> ", end="", flush=True)
        text = reply(messages)
        messages.append({"role": "assistant", "content": text})
        replies.append(text)


if __name__ == "__main__":
    run_script(main)
