"""The pretraining stage end to end at a tiny size: it learns, checkpoints round-trip, two DDP processes equal one, NaN
stops the run with the last good checkpoint, and bad input fails in one sentence. (Killed runs resume exactly:
tests/test_resume.py.)"""
import argparse
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, script
from nanotrain.checkpoint import load_checkpoint, load_model, make_checkpoint, atomic_save
from nanotrain.errors import CheckpointError, ConfigError, NonFiniteLoss
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.runtime import setup_runtime
from nanotrain.trainer import TrainConfig, train_loop

TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "4",
        "--dtype", "float32", "--warmup", "5", "--eval-batches", "2"]


def pretrain(argv):
    return script("train_pretrain.py")["main"](argv)


def test_loss_falls_below_unigram_entropy_and_checkpoint_roundtrips(tiny_corpus, tmp_path):
    out = tmp_path / "pre"
    m = pretrain(["--data", str(tiny_corpus), "--out", str(out), "--steps", "60", "--eval-every", "30",
                  "--lr", "3e-3", *TINY])
    meta = json.loads((tiny_corpus / "meta.json").read_text())
    assert m["val_loss"] < meta["unigram_entropy"]
    raw = torch.load(out / "ckpt.pt", weights_only=True)  # plain data only
    for key in ("format", "stage", "model_config", "tokenizer", "model", "train_config", "step", "metrics"):
        assert key in raw
    assert raw["stage"] == "pretrain" and raw["step"] == 60 and raw["metrics"]["val_loss"] == m["val_loss"]
    model, tok, _ = load_model(out / "ckpt.pt")
    assert tok.to_dict() == meta["tokenizer"]
    x = torch.randint(0, model.config.vocab_size, (1, 8))
    reference = GPT(GPTConfig.from_dict(raw["model_config"]))
    reference.load_state_dict(raw["model"])
    assert torch.equal(model(x)[0], reference(x)[0])


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_corpus, tmp_path):
    common = ["--data", str(tiny_corpus), "--steps", "6", "--eval-every", "1000", *TINY]
    common[common.index("--batch-size") + 1] = "4"
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "train_pretrain.py", *common, "--out", str(one)], cwd=ROOT, check=True,
                   capture_output=True)
    ddp = [*common, "--out", str(two)]
    ddp[ddp.index("--batch-size") + 1] = "2"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train_pretrain.py", *ddp], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (one, two))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(out=str(tmp_path), steps=10, save_every=1, log_every=1, warmup=1, dtype="float32")
    rt = setup_runtime("cpu", "float32")
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
    x = torch.randint(0, 16, (2, 8))

    def loss_fn(m, step):
        loss = m(x, x)[1]
        return (loss * float("nan") if step == 3 else loss), {}

    saved = lambda m, step, metrics: {"step": step, "model": m.state_dict()}  # noqa: E731
    with pytest.raises(NonFiniteLoss, match="step 4.*last good checkpoint"):
        train_loop(rt, cfg, model, get_batch=lambda step, micro: step, loss_fn=loss_fn, checkpoint_fn=saved)
    good = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert good["step"] == 3
    assert all(torch.isfinite(v).all() for v in good["model"].values())


def test_time_limit_stops_cleanly_with_a_checkpoint_of_the_last_step(tmp_path):
    # far more steps than any machine runs in the limit (a fast CI machine ran 1,000 in 0.9 s), so the clock stops it
    cfg = TrainConfig(out=str(tmp_path), steps=10**7, save_every=10**7, log_every=10**7, warmup=1, dtype="float32",
                      time_limit=0.5)
    rt = setup_runtime("cpu", "float32")
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
    x = torch.randint(0, 16, (2, 8))

    def loss_fn(m, batch):
        return m(x, x)[1], {}

    saved = lambda m, step, metrics: {"step": step, "model": m.state_dict()}  # noqa: E731
    metrics = train_loop(rt, cfg, model, get_batch=lambda step, micro: step, loss_fn=loss_fn, checkpoint_fn=saved,
                         eval_fn=lambda m: {"val": 1.0})
    assert metrics["step"] < 10**7 and metrics["time_s"] >= 0.5  # stopped by the clock
    assert metrics["val"] == 1.0  # and evaluated as at the last step
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == metrics["step"]
    assert torch.equal(ckpt["model"]["lm_head.weight"], model.lm_head.weight)


def test_float16_training_is_refused_in_one_sentence(tiny_corpus, tmp_path):
    """Without loss scaling fp16 gradients underflow (here: 1e-8 is exactly 0 in fp16), so every training loop refuses
    it (train_loop here; PPO's own loop in test_rlhf.py)."""
    assert torch.tensor(1e-8).half().item() == 0.0
    with pytest.raises(ConfigError, match="--dtype float16 cannot train.*bfloat16"):
        pretrain(["--data", str(tiny_corpus), "--out", str(tmp_path / "o"), *TINY, "--dtype", "float16"])
    assert not (tmp_path / "o" / "ckpt.pt").exists()


# ----- clear one-line errors

def run_cli(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)


def test_missing_or_empty_data_folder(tiny_corpus, tmp_path):
    r = run_cli("train_pretrain.py", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "prepare_pretrain.py" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "meta.json").write_text((tiny_corpus / "meta.json").read_text())  # a tokenizer, but no tokens
    with pytest.raises((FileNotFoundError, CheckpointError, ValueError)):
        pretrain(["--data", str(empty), "--out", str(tmp_path / "o2")])


def test_empty_token_file_is_reported(tiny_corpus, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.json").write_text((tiny_corpus / "meta.json").read_text())
    (data / "train.bin").write_bytes(b"")
    (data / "val.bin").write_bytes((tiny_corpus / "val.bin").read_bytes())
    with pytest.raises(FileNotFoundError, match="train.bin is missing or empty"):
        pretrain(["--data", str(data), "--out", str(tmp_path / "o"), *TINY])


def test_checkpoint_from_the_wrong_stage_and_truncated_file(tiny_corpus, tmp_path):
    out = tmp_path / "pre"
    pretrain(["--data", str(tiny_corpus), "--out", str(out), "--steps", "2", *TINY])
    model, tok, ck = load_model(out / "ckpt.pt")
    atomic_save(make_checkpoint("sft", model, tok, {}, 1, {}), tmp_path / "sft.pt")
    with pytest.raises(CheckpointError, match="is a 'sft' checkpoint, but this needs one from 'pretrain'"):
        pretrain(["--data", str(tiny_corpus), "--out", str(tmp_path / "o"), "--init", str(tmp_path / "sft.pt")])
    blob = (out / "ckpt.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    # the script that writes the checkpoint asked for, not a flag that may not be the one given (it said --init)
    with pytest.raises(CheckpointError, match="missing.pt: run train_rm.py first, or give the path of one$"):
        load_checkpoint(tmp_path / "missing.pt", stages=("rm",))
    # an object weights-only loading refuses: one sentence of ours, not torch's advice to load with weights_only=False
    torch.save({"format": 1, "stage": "sft", "odd": argparse.Namespace()}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"odd.pt holds objects other than tensors .*weights_only=True refuses"):
        load_checkpoint(tmp_path / "odd.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "cut.pt")
    assert ". " not in str(e.value)  # torch's cause, not the sentences of advice that follow it on the same line
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)))  # not a pickle at all: not "objects other than tensors"
    with pytest.raises(CheckpointError, match="noise.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "noise.pt")
    r = run_cli("sample.py", "--init", str(tmp_path / "cut.pt"), "--prompt", "hi")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_another_corpus_in_the_same_tokens_with_a_fixed_validation_set(tiny_corpus, tmp_path):
    """prepare_pretrain.py --tokenizer FOLDER reuses that folder's tokenizer; --val-input fixes the validation set
    (how bench/bench_cleaning.py compares corpora on one held-out text)."""
    import numpy as np

    from nanotrain.data import token_meta
    from nanotrain.tokenizer import Tokenizer

    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": f"Tom lives in Oakville {i}."}) + "\n"
                                                  for i in range(5)))
    (tmp_path / "val.jsonl").write_text(json.dumps({"text": "Mia's bicycle is red."}) + "\n")
    prepare = script("data/prepare_pretrain.py")["main"]
    meta = prepare(["--input", str(tmp_path / "train.jsonl"), "--val-input", str(tmp_path / "val.jsonl"),
                    "--tokenizer", str(tiny_corpus), "--out", str(tmp_path / "tok")])
    assert meta["tokenizer"] == token_meta(tiny_corpus)["tokenizer"] and (meta["train_docs"], meta["val_docs"]) == (5, 1)
    tok = Tokenizer.from_dict(meta["tokenizer"])
    val = np.fromfile(tmp_path / "tok" / "val.bin", dtype=np.uint16).tolist()
    assert val == tok.encode("Mia's bicycle is red.") + [tok.eot]
    r = run_cli("data/prepare_pretrain.py", "--input", str(tmp_path / "train.jsonl"), "--tokenizer", "nope",
                "--out", str(tmp_path / "x"))
    assert r.returncode == 1 and "a token folder" in r.stderr
