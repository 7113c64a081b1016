"""Hugging Face's model folder for a GPT-2: written by export.py, read back by ``--init hf:PATH``.

nanotrain's model is GPT-2, so a trained checkpoint becomes a folder that ``transformers`` (and what builds on it:
vLLM, lm-evaluation-harness, llama.cpp's converter) loads as a ``GPT2LMHeadModel``:

    config.json              the architecture (GPT2Config's fields)
    model.safetensors        the weights in HF's layout (GPT.to_hf_gpt2: Conv1D transposes, head tied to wte)
    tokenizer.json           the tokenizer for HF's ``tokenizers``: byte-level BPE with our regex, merges and
                             special tokens (tiktoken keeps only ranks; the merges are recovered from them)
    tokenizer_config.json    the special-token roles and the chat template, in Jinja, rendering what
                             Tokenizer.render_chat renders
    generation_config.json   decoding stops at the end-of-turn token (end-of-text for a pretrained model)
    vocab.json, merges.txt   GPT-2's own tokenizer files too, for runs on GPT-2's vocabulary

    write_folder(model, tok, "sft", "out/hf/sft")               # what export.py does
    model, tok = load_hf_gpt2("out/hf/sft")                     # what --init hf:out/hf/sft does

The reading side also takes GPT-2's released weights (a folder from the Hub, its model.safetensors or its
pytorch_model.bin); their tokenizer has no chat markers, so the model gets GPT-2's tokenizer with our special
tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nanotrain.errors import CheckpointError
from nanotrain.gpt import GPT, padded_vocab
from nanotrain.safetensors import load_file, save_file
from nanotrain.tokenizer import AI, END, EOT, PAD, ROLE_MARKER, SPECIALS, Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----- the tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (Radford et al. 2019, encoder.py): every byte as a printable character, so a
    token's bytes can be written as a JSON string. Printable Latin-1 bytes stand for themselves; the other 68 (space,
    control bytes, ...) are moved to U+0100 onwards, which is why a leading space shows as 'Ġ'."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(moved)}}


BYTE_CHAR = bytes_to_unicode()


def byte_string(token: bytes) -> str:
    """A token's bytes in the byte-level alphabet: how vocab.json, merges.txt and tokenizer.json spell tokens."""
    return "".join(BYTE_CHAR[b] for b in token)


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list of a BPE vocabulary that stores only ranks (tiktoken's form), in rank order.

    A token was created by merging two smaller tokens; which two is found by replaying BPE on the token's bytes
    with only the merges ranked below it: that stops at exactly the two halves the token's own merge joins. (The
    same recovery as transformers' TikTokenConverter; HF's BPE then merges by list position as tiktoken does by
    rank, so both encode alike.)"""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pair_ranks = [ranks.get(a + b, rank) for a, b in zip(parts, parts[1:])]
            i = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)  # lowest rank, leftmost on ties
            if pair_ranks[i] >= rank:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2 or ranks.get(parts[0], rank) >= rank or ranks.get(parts[1], rank) >= rank:
            raise ValueError(f"token {token!r} (rank {rank}) is not the merge of two earlier tokens: not a BPE "
                             f"vocabulary")
        merges.append((parts[0], parts[1]))
    return merges


def tokenizer_json(tok: Tokenizer) -> dict:
    """``tokenizer.json`` for HF's ``tokenizers`` library: the text is split by the tokenizer's own regex
    (a Split pre-tokenizer), then byte-level BPE runs on each piece, as tiktoken does. ``ignore_merges`` keeps a
    piece that is itself a token whole, tiktoken's shortcut. Special tokens are "added tokens": matched in the text
    before anything else, never split."""
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t, i in tok.special_ids.items()],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {byte_string(b): i for b, i in tok.ranks.items()},
                  "merges": [[byte_string(a), byte_string(b)] for a, b in merges_from_ranks(tok.ranks)]},
    }


def chat_template() -> str:
    """Tokenizer.render_chat in Jinja, the language of HF's ``chat_template``: end-of-text, then per message its role
    marker, a space, the text and the end-of-turn token; ``add_generation_prompt`` opens the assistant's turn
    (Tokenizer.render_prompt)."""
    def say(text: str) -> str:
        return "{{ " + text + " }}"

    marker = "".join(("{% if" if i == 0 else "{% elif") + f" message['role'] == '{role}' %}}" + say(f"'{m}'")
                     for i, (role, m) in enumerate(ROLE_MARKER.items()))
    marker += "{% else %}" + say(f"raise_exception('a message role must be one of {', '.join(ROLE_MARKER)}')")
    return (say(f"'{EOT}'") + "{% for message in messages %}" + marker + "{% endif %}"
            + say(f"' ' + message['content'] + '{END}'") + "{% endfor %}"
            + "{% if add_generation_prompt %}" + say(f"'{AI}'") + "{% endif %}")


def tokenizer_config(tok: Tokenizer, eos: str, max_len: int) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len,
        "bos_token": EOT, "eos_token": eos, "pad_token": PAD, "unk_token": None,
        "nanotrain_tokenizer": tok.name,  # transformers keeps it unread; read_tokenizer needs it (a small corpus
        # can run out of pairs to merge before "bpe4096" has 4096 tokens, so the name is not the size)
        "add_prefix_space": False, "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for t, i in tok.special_ids.items()},
        "chat_template": chat_template(),
    }


def read_tokenizer(folder) -> Tokenizer | None:
    """The nanotrain Tokenizer a folder's ``tokenizer.json`` describes, or None if it has none with our chat markers
    (GPT-2 from the Hub). The inverse of ``tokenizer_json``: ranks are the vocabulary's ids, the regex is the Split
    pre-tokenizer's, the name is tokenizer_config.json's ``nanotrain_tokenizer``."""
    path = Path(folder) / "tokenizer.json"
    if not path.exists():
        return None
    spec = json.loads(path.read_text(encoding="utf-8"))
    added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    if not set(SPECIALS) <= set(added):
        return None
    byte_of = {c: b for b, c in BYTE_CHAR.items()}
    ranks = {bytes(byte_of[c] for c in s): i for s, i in spec["model"]["vocab"].items()}
    steps = spec["pre_tokenizer"].get("pretokenizers", [spec["pre_tokenizer"]])
    pattern = next((p["pattern"]["Regex"] for p in steps if p["type"] == "Split"), None)
    config = Path(folder) / "tokenizer_config.json"
    name = json.loads(config.read_text(encoding="utf-8")).get("nanotrain_tokenizer") if config.exists() else None
    name = name or ("gpt2" if len(ranks) == 50256 else f"bpe{len(ranks) + len(SPECIALS)}")
    tok = Tokenizer.gpt2() if name == "gpt2" else Tokenizer(name, ranks, pattern or "")
    if tok.ranks != ranks or tok.pattern != pattern or {t: added[t] for t in SPECIALS} != tok.special_ids:
        raise CheckpointError(f"{path} is not a tokenizer export.py wrote for '{name}' (its vocabulary, regex or "
                              f"special token ids differ)")
    return tok


def gpt2_vocab_files(tok: Tokenizer) -> tuple[dict, str]:
    """GPT-2's original tokenizer files, vocab.json and merges.txt (what GPT2Tokenizer reads)."""
    vocab = {byte_string(b): i for b, i in tok.ranks.items()} | tok.special_ids
    merges = "".join(f"{byte_string(a)} {byte_string(b)}\n" for a, b in merges_from_ranks(tok.ranks))
    return vocab, "#version: 0.2\n" + merges


# ----- the model


def model_config(model: GPT, tok: Tokenizer, eos_id: int, dtype: str) -> dict:
    """config.json: GPT2Config's fields for this architecture (GELU with the tanh approximation is "gelu_new")."""
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
        "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
        "n_head": c.n_head, "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "use_cache": True, "tie_word_embeddings": True, "bos_token_id": tok.eot, "eos_token_id": eos_id,
        "pad_token_id": tok.pad, "torch_dtype": dtype,
    }


def write_folder(model: GPT, tok: Tokenizer, stage: str, out, dtype: str = "float32") -> Path:
    """Write ``model`` and ``tok`` as a Hugging Face model folder (module docstring). A chat model (any stage after
    pretraining) stops generating at its end-of-turn token; a pretrained one at end-of-text."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, not {dtype!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    eos = EOT if stage == "pretrain" else END
    eos_id = tok.special_ids[eos]
    weights = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in model.to_hf_gpt2().items()}
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    files = {
        "config.json": model_config(model, tok, eos_id, dtype),
        "generation_config.json": {"bos_token_id": tok.eot, "eos_token_id": eos_id, "pad_token_id": tok.pad},
        "tokenizer.json": tokenizer_json(tok),
        "tokenizer_config.json": tokenizer_config(tok, eos, model.config.block_size),
    }
    if tok.name == "gpt2":
        files["vocab.json"], merges = gpt2_vocab_files(tok)
        (out / "merges.txt").write_text(merges, encoding="utf-8")
    for name, obj in files.items():
        (out / name).write_text(json.dumps(obj, ensure_ascii=False, indent=1 if name != "tokenizer.json" else None)
                                + "\n", encoding="utf-8")
    return out


def read_weights(path) -> tuple[dict, dict]:
    """(state dict, config.json or {}) of a HF GPT-2: a folder (model.safetensors or pytorch_model.bin), or one such
    file. A .bin is a pickle, read with ``weights_only=True`` so it cannot run code. Anything else (a missing file,
    a file of another kind, a nanotrain checkpoint given as hf:) is one CheckpointError."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        found = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).exists()]
        if not found:
            raise CheckpointError(f"hf:{path} holds neither model.safetensors nor pytorch_model.bin")
        path = found[0]
    elif not path.exists():
        raise CheckpointError(f"hf:{path}: no such file (download GPT-2's pytorch_model.bin, or export a folder)")
    if path.suffix == ".safetensors":
        sd = load_file(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"hf:{path} is not a readable PyTorch weights file ({type(e).__name__}; a "
                                  f"pytorch_model.bin of Hugging Face's GPT-2 is)") from None
    if not isinstance(sd, dict) or not any(k in sd for k in ("wpe.weight", "transformer.wpe.weight")):
        raise CheckpointError(f"hf:{path} is not a Hugging Face GPT-2 state dict (no wpe.weight)" +
                              (" but a nanotrain checkpoint: pass it without hf:" if isinstance(sd, dict) and
                               "format" in sd else ""))
    config = folder / "config.json"
    return sd, json.loads(config.read_text()) if config.exists() else {}


def hf_info(path) -> tuple[Tokenizer, int]:
    """The tokenizer and the context length of a HF GPT-2 folder or weights file, without building the model (what
    the data needs to know first): config.json's n_positions when there is one, else the position table's size."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    tok = read_tokenizer(folder) or Tokenizer.gpt2()
    config = folder / "config.json"
    if config.exists() and "n_positions" in json.loads(config.read_text()):
        return tok, json.loads(config.read_text())["n_positions"]
    sd, _ = read_weights(path)
    return tok, sd.get("transformer.wpe.weight", sd.get("wpe.weight")).shape[0]


def load_hf_gpt2(path, attn: str = "auto") -> tuple[GPT, Tokenizer]:
    """The GPT and its tokenizer from a HF GPT-2 folder or weights file (``--init hf:PATH``): an exported folder
    gives back exactly the model and tokenizer it was written from; GPT-2's released weights get GPT-2's tokenizer
    with our special tokens, whose rows start at the mean embedding (GPT.from_hf_gpt2)."""
    sd, config = read_weights(path)
    ours = read_tokenizer(Path(path) if Path(path).is_dir() else Path(path).parent)
    tok = ours or Tokenizer.gpt2()
    vocab_size = None if ours else padded_vocab(tok.n_vocab)  # an export has its rows already; GPT-2 needs ours added
    try:
        model = GPT.from_hf_gpt2(sd, n_head=config.get("n_head"), vocab_size=vocab_size, attn=attn)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model, tok
