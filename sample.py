"""Generate text from any checkpoint (KV-cache decoding).

    python sample.py --prompt "Lena lives in"                      # continue text with the pretrained model
    echo "What colour is Lena's bicycle?" | python sample.py --init out/sft/ckpt.pt --prompt -
    python sample.py --init out/sft/ckpt.pt --prompt "..." --num-samples 4 --temperature 0.8
    python sample.py --init out/sft/ckpt.pt --prompt "..." --best-of 8 --reward out/rm_helpful/ckpt.pt

Pretrained checkpoints continue the prompt as plain text; chat checkpoints (sft, rlhf) receive it as a user turn
and answer as the assistant (``--chat``/``--no-chat`` overrides).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from nanotrain.checkpoint import load_model
from nanotrain.cli import check_counts, flag, parse_config
from nanotrain.errors import CheckpointError, ConfigError, run_script
from nanotrain.runtime import setup_runtime
from nanotrain.sampling import check_sampling


@dataclass
class SampleConfig:
    init: str = flag("out/pretrain/ckpt.pt", "checkpoint to sample from (pretrain, sft or rlhf)")
    prompt: str = flag("", "prompt text; '-' reads it from stdin")
    chat: bool | None = flag(None, "treat the prompt as a user turn (default: yes for sft/rlhf checkpoints)")
    num_samples: int = flag(1, "samples to draw")
    max_new_tokens: int = flag(100, "tokens to generate per sample")
    temperature: float = flag(0.8, "sampling temperature (0: greedy)")
    top_k: int | None = flag(None, "sample only among the k most likely tokens")
    top_p: float | None = flag(None, "nucleus sampling: the smallest set of tokens with this much probability")
    seed: int = flag(0, "random seed")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("auto", "auto | float32 | bfloat16")
    best_of: int = flag(0, "chat: sample this many answers and print the one --reward scores highest (0: off)")
    reward: str = flag("", "reward-model checkpoint (stage rm) for --best-of")


def main(argv=None) -> list[str]:
    cfg = parse_config(SampleConfig, argv, description=__doc__.split("\n\n")[0], show=False)
    check_sampling(cfg.temperature, cfg.top_k, cfg.top_p)
    check_counts(cfg, "num_samples", "max_new_tokens")
    if cfg.best_of < 0:
        raise ConfigError(f"--best-of must be 0 (off) or more, not {cfg.best_of}")
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.seed)
    model, tok, ckpt = load_model(cfg.init, stages=("pretrain", "sft", "rlhf"), device=rt.device)
    model.eval()
    prompt = sys.stdin.read() if cfg.prompt == "-" else cfg.prompt
    chat = cfg.chat if cfg.chat is not None else ckpt["stage"] != "pretrain"
    ids = tok.render_prompt([{"role": "user", "content": prompt}]) if chat else [tok.eot] + tok.encode(prompt)
    block = model.config.block_size
    if len(ids) >= block:  # as chat.py does: keep the prompt's end (the newest words, the open <|ai|> marker)
        keep = block - max(1, min(cfg.max_new_tokens, block // 2))
        print(f"[the prompt is {len(ids)} tokens, the model's context {block}: kept its last {keep - 1}]",
              file=sys.stderr)
        ids = [tok.eot] + ids[len(ids) - keep + 1:]
    n_new = min(cfg.max_new_tokens, block - len(ids))
    if cfg.best_of or cfg.reward:  # best-of-N: the reward model picks among N sampled answers
        if not (cfg.best_of and cfg.reward and chat):
            raise CheckpointError("--best-of N and --reward PATH go together, and need a chat checkpoint")
        from nanotrain.reward import best_of_n, load_reward_model
        rm, _, _ = load_reward_model(cfg.reward, rt.device)
        gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
        best, texts, scores = best_of_n(model, tok, rm, [{"role": "user", "content": prompt}], cfg.best_of, n_new,
                                        cfg.temperature, autocast=rt.autocast, generator=gen)
        print(f"[best of {len(texts)} by reward: {', '.join(f'{s:.2f}' for s in scores)}]", file=sys.stderr)
        print(best)
        return [best]
    x = torch.tensor([ids] * cfg.num_samples, device=rt.device)
    with rt.autocast():
        out = model.generate(x, n_new, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                             stop_token=tok.end if chat else tok.eot, pad_id=tok.pad)
    texts = [tok.decode_message(row) if chat else tok.decode(row) for row in out.tolist()]
    for i, t in enumerate(texts):
        print(t if chat else prompt + t)
        if i < len(texts) - 1:
            print("-" * 40)
    return texts


if __name__ == "__main__":
    run_script(main)
