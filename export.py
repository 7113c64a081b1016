"""Export a checkpoint as a Hugging Face model folder: transformers, vLLM, lm-evaluation-harness and llama.cpp's
converter read it as a GPT-2.

    python export.py --init out/sft/ckpt.pt                    # -> out/hf/sft
    python export.py --init out/rlhf_dpo/ckpt.pt --out my-model --dtype bfloat16
    python -c "from transformers import pipeline; print(pipeline('text-generation', 'out/hf/sft')(
        [{'role': 'user', 'content': 'Where does Lena live?'}])[0]['generated_text'][-1]['content'])"
    python train_sft.py --init hf:out/hf/sft ...               # and back: the same weights and tokenizer

The folder holds config.json, model.safetensors, the tokenizer (tokenizer.json; GPT-2's vocab.json and merges.txt
too for runs on GPT-2's vocabulary), tokenizer_config.json with the chat template, and generation_config.json;
nanotrain/hf.py says what each is. Language models only (pretrain, sft, rlhf): a reward model's head and its
likelihood term have no GPT-2 counterpart in transformers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nanotrain.checkpoint import load_model
from nanotrain.cli import flag, parse_config
from nanotrain.errors import run_script
from nanotrain.hf import DTYPES, write_folder


@dataclass
class ExportConfig:
    init: str = flag("out/sft/ckpt.pt", "checkpoint to export (pretrain, sft or rlhf)")
    out: str = flag("", "output folder (empty: out/hf/NAME, NAME the checkpoint's folder, e.g. out/hf/sft)")
    dtype: str = flag("float32", f"store the weights as {' | '.join(DTYPES)}")


def main(argv=None) -> Path:
    cfg = parse_config(ExportConfig, argv, description=__doc__.split("\n\n")[0])
    model, tok, ckpt = load_model(cfg.init, stages=("pretrain", "sft", "rlhf"))
    init = Path(cfg.init)
    out = Path(cfg.out) if cfg.out else Path("out/hf") / (init if init.is_dir() else init.parent).resolve().name
    write_folder(model, tok, ckpt["stage"], out, cfg.dtype)
    print(f"{ckpt['stage']} checkpoint {cfg.init} ({model.num_params(non_embedding=False) / 1e6:.2f}M parameters, "
          f"tokenizer {tok.name}) -> {out}: a Hugging Face GPT2LMHeadModel folder (AutoModelForCausalLM."
          f"from_pretrained('{out}'))")
    return out


if __name__ == "__main__":
    run_script(main)
