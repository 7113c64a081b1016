"""Bad input a user can give, each answered with one sentence that says what and where (or handled, as chat.py does):
invalid UTF-8 at its own line, empty or unusable preference and feedback files, pairs that carry no preference,
weights given as hf: that are not GPT-2's, two tokenizers of the same kind, a prompt longer than the context,
sampling flags out of range.

    pytest tests/test_bad_input.py
"""
import json
import re

import pytest
import torch

from conftest import script
from nanotrain.chat_data import load_conversations
from nanotrain.checkpoint import atomic_save, check_tokenizer, make_checkpoint
from nanotrain.data import read_jsonl, read_texts
from nanotrain.errors import CheckpointError, ConfigError, DataError
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.pref_data import load_feedback, load_pairs
from nanotrain.tokenizer import Tokenizer


def test_invalid_utf8_is_reported_at_its_own_line(tmp_path):
    """A text-mode reader decodes in chunks and named the line its chunk began on (line 1 for a bad byte on line 4,
    452 for one on line 500)."""
    for bad_line, n in ((4, 10), (500, 600)):
        lines = [json.dumps({"text": f"document {i} " + "x" * 60}).encode() for i in range(1, n + 1)]
        lines[bad_line - 1] = lines[bad_line - 1].replace(b"document", b"docum\xffent")
        path = tmp_path / f"bad{bad_line}.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(DataError, match=f"bad{bad_line}.jsonl:{bad_line}: invalid UTF-8"):
            list(read_jsonl(path))
    text = tmp_path / "doc.txt"
    text.write_bytes(b"one\ntwo\nthr\xe9e\n")
    with pytest.raises(DataError, match="doc.txt:3: invalid UTF-8"):
        list(read_texts(text))
    array = tmp_path / "chats.json"  # a JSON-array file (Alpaca, LIMA) names the line too
    array.write_bytes(b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "\xff", "output": "c"}\n]\n')
    with pytest.raises(DataError, match="chats.json:3: invalid UTF-8"):
        load_conversations(array)


def test_pairs_without_a_preference_are_skipped_and_counted(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    recs = [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},
            {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Hello!"},  # no preference
            {"prompt": "Hi?", "chosen": "  ", "rejected": "Hello!"},  # would teach saying nothing
            {"prompt": "Hi?", "chosen": "Hello there.", "rejected": ""}]  # an empty reply may lose: kept
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert [(p.chosen, p.rejected) for p in load_pairs(path)] == [("Hello!", "Go away."), ("Hello there.", "")]
    assert capsys.readouterr().out.strip() == (f"{path}: skipped 1 pairs whose two replies are the same, 1 pairs "
                                               f"whose preferred reply is empty")
    fb = tmp_path / "fb.jsonl"
    fb.write_text(json.dumps({"prompt": "Hi?", "completion": "", "label": True}) + "\n" +
                  json.dumps({"prompt": "Hi?", "completion": "", "label": False}) + "\n")
    assert [f.label for f in load_feedback(fb)] == [False]
    assert "skipped 1 thumbs-up for an empty completion" in capsys.readouterr().out


@pytest.mark.parametrize("algo, content, message", [
    ("dpo", "", "no preference pairs"),
    ("dpo", json.dumps({"prompt": "Hi?", "chosen": "Same.", "rejected": "Same."}) + "\n", "no preference pairs"),
    ("dpo", json.dumps({"prompt": "Hi? " * 400, "chosen": "A.", "rejected": "B."}) + "\n",
     "no preference pair fits in 160 tokens"),
    ("kto", "", "no feedback records"),
    ("kto", json.dumps({"prompt": "Hi? " * 400, "completion": "A.", "label": True}) + "\n",
     "no feedback example fits in 160 tokens"),
])
def test_dpo_and_kto_without_usable_data_say_why(tiny_chat, tmp_path, algo, content, message):
    root, world = tiny_chat
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    with pytest.raises(DataError, match=f"{data}: {message}"):
        script("train_rlhf.py")["main"](["--algo", algo, "--init", str(root / "sft.pt"), "--world", str(world),
                                         "--data", str(data), "--out", str(tmp_path / "out"), "--steps", "2",
                                         "--dtype", "float32"])


def tiny_checkpoint(path, tok, block_size=16):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.n_vocab, n_layer=1, n_head=1, n_embd=8, block_size=block_size))
    atomic_save(make_checkpoint("sft", gpt, tok, {}, 1, {}), path)
    return path


def test_hf_weights_that_are_not_gpt2s_are_one_sentence(tiny_corpus, gpt2, tmp_path):  # hf: weights read GPT-2's BPE
    pretrain = script("train_pretrain.py")["main"]
    args = ["--data", str(tiny_corpus), "--out", str(tmp_path / "out"), "--steps", "1"]
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(CheckpointError, match="hf:.*notes.txt is not a readable PyTorch weights file"):
        pretrain([*args, "--init", f"hf:{tmp_path / 'notes.txt'}"])
    torch.save({"layer.weight": torch.zeros(2)}, tmp_path / "other.bin")
    with pytest.raises(CheckpointError, match="other.bin is not a Hugging Face GPT-2 state dict"):
        pretrain([*args, "--init", f"hf:{tmp_path / 'other.bin'}"])
    tok = Tokenizer.from_dict(json.loads((tiny_corpus / "meta.json").read_text())["tokenizer"])
    ours = tiny_checkpoint(tmp_path / "ckpt.pt", tok)
    with pytest.raises(CheckpointError, match="a nanotrain checkpoint: pass it without hf:"):
        pretrain([*args, "--init", f"hf:{ours}"])
    with pytest.raises(CheckpointError, match="hf:.*missing.bin: no such file"):
        pretrain([*args, "--init", f"hf:{tmp_path / 'missing.bin'}"])


def test_a_tokenizer_mismatch_of_the_same_kind_says_what_differs():
    a = Tokenizer.train(["the cat sat on the mat"] * 3, vocab_size=270).to_dict()
    b = Tokenizer.train(["a dog ran in the park"] * 3, vocab_size=270).to_dict()
    assert a["name"] == b["name"]
    with pytest.raises(CheckpointError, match="ckpt.pt and tokens both use a 'bpe270' tokenizer, but not the same "
                                              "one \\(they differ in tokens_hex\\)"):
        check_tokenizer(a, b, "ckpt.pt", "tokens")
    with pytest.raises(CheckpointError, match="ckpt.pt uses 'bpe270' but tokens was tokenized with 'gpt2'"):
        check_tokenizer(a, {"name": "gpt2", "special_tokens": {}}, "ckpt.pt", "tokens")


def test_a_prompt_longer_than_the_context_keeps_its_end(tmp_path, capsys):
    """As chat.py does: the newest tokens of the prompt are kept, room is left for the reply, and stderr says so."""
    tok = Tokenizer.train(["What colour is Lena's bicycle? It is red."] * 3, vocab_size=270)
    ckpt = tiny_checkpoint(tmp_path / "ckpt.pt", tok)
    long = "What colour is Lena's bicycle? " * 20
    for chat in ("--chat", "--no-chat"):
        texts = script("sample.py")["main"](["--init", str(ckpt), "--prompt", long, chat, "--max-new-tokens", "4",
                                             "--dtype", "float32", "--device", "cpu"])
        assert len(texts) == 1
        assert "the model's context 16: kept its last 11]" in capsys.readouterr().err


@pytest.mark.parametrize("script_name, flag, value, message", [
    ("sample.py", "--top-k", "0", "--top-k must be at least 1 (or none), not 0"),
    ("sample.py", "--temperature", "-1", "--temperature must be 0 (greedy) or more, not -1.0"),
    ("sample.py", "--num-samples", "0", "--num-samples must be at least 1, not 0"),
    ("sample.py", "--best-of", "-2", "--best-of must be 0 (off) or more, not -2"),
    ("chat.py", "--top-p", "1.5", "--top-p must be above 0 and at most 1 (or none), not 1.5"),
    ("chat.py", "--best-of", "0", "--best-of must be at least 1, not 0")])
def test_sampling_flags_out_of_range_are_refused_before_the_model_loads(script_name, flag, value, message):
    """--top-k 0 was a RuntimeError traceback about tensor sizes, a negative temperature sampled the least likely
    tokens, --num-samples 0 printed nothing: each is now one sentence, before the checkpoint is read (this one is
    missing)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        script(script_name)["main"](["--init", "no/such/ckpt.pt", "--prompt", "hi", flag, value])
