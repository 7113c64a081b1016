"""The SFT stage end to end at a tiny size: full and LoRA fine-tuning write a loadable "sft" checkpoint with the
held-out figures in its metrics; the LoRA checkpoint equals base + adapter merged; with --embeddings new only the
rows of tokens absent from the pretraining data move; replay adds the pretraining text's loss; --reinit keeps the
architecture but not the weights; two DDP processes equal one; the real-data path (GPT-2 tokenizer, LIMA and OASST
files) runs; the chat CLI answers without ever showing a control token, drops the oldest turns when the context is
full, and picks best-of-N with a reward model."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, script
from nanotrain.checkpoint import atomic_save, load_checkpoint, load_model, make_checkpoint
from nanotrain.errors import CheckpointError
from nanotrain.evaluate import evaluate_checkpoint, load_eval
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.lora import load_adapter, merge_lora
from nanotrain.tinyworld.gold import Gold
from nanotrain.tokenizer import Tokenizer

FIGURES = ("val_loss", "wellformed_init", "wellformed", "helpful", "acc_b", "chance_b", "acc_zh", "chance_zh",
           "params_trainable", "params_total")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from nanotrain.tinyworld.generate import write_world
    from nanotrain.tinyworld.world import WorldConfig

    out = tmp_path_factory.mktemp("world")
    write_world(WorldConfig(out=str(out), seed=5, people=20, animals=6, towns=4, scale=0.03))
    return out


@pytest.fixture(scope="module")
def pretrained(world, tmp_path_factory):
    """A tiny randomly initialised 'pretrain' checkpoint with a BPE trained on the world's corpus."""
    texts = [json.loads(ln)["text"] for ln in (world / "pretrain.jsonl").read_text().splitlines()]
    tok = Tokenizer.train(texts, vocab_size=400)
    torch.manual_seed(0)
    # vocab_size = the tokenizer's exactly: an untrained model with padded rows could emit ids no tokenizer can decode
    model = GPT(GPTConfig(vocab_size=tok.n_vocab, block_size=128, n_layer=2, n_head=2, n_embd=32))
    path = tmp_path_factory.mktemp("pre") / "ckpt.pt"
    atomic_save(make_checkpoint("pretrain", model, tok, {}, 0, {}), path)
    return path


def sft_args(world, pretrained, out, *extra):
    return ["--init", str(pretrained), "--data", str(world / "sft_train.jsonl"), "--val-data",
            str(world / "sft_val.jsonl"), "--out", str(out), "--dtype", "float32", "--batch-size", "4",
            "--eval-limit", "4", "--max-new-tokens", "8", "--warmup", "2", *extra]


def train_sft(argv):
    return script("train_sft.py")["main"](argv)


@pytest.fixture(scope="module")
def full_run(world, pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    metrics = train_sft(sft_args(world, pretrained, out, "--steps", "60", "--lr", "1e-2", "--eval-every", "10",
                                 "--embeddings", "all"))
    return out, metrics


def test_full_fine_tuning_writes_an_sft_checkpoint_with_its_figures(full_run, world):
    out, metrics = full_run
    ckpt = load_checkpoint(out / "ckpt.pt", stages=("sft",))
    for k in FIGURES:
        assert k in ckpt["metrics"], k
    for k in ("wellformed", "wellformed_init", "helpful", "acc_b", "acc_zh", "chance_b", "chance_zh"):
        assert 0.0 <= ckpt["metrics"][k] <= 1.0, k
    assert ckpt["metrics"]["params_trainable"] == ckpt["metrics"]["params_total"]  # every weight trains
    # it learns: the held-out loss on assistant tokens falls steadily below the first evaluation's (8 held-out chats
    # of a 20-person world, a 32-wide model from random init: it falls by 0.1-0.5 in these 50 steps, by seed)
    evals = [json.loads(ln)["val_loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in ln]
    assert len(evals) == 6 and evals[-1] < evals[0] - 0.1 and min(evals[3:]) < min(evals[:3]), evals
    model, tok, _ = load_model(out / "ckpt.pt", stages=("sft",))  # strict load: a plain GPT
    # the stored figures against an independent count: each held-out prompt answered alone (no batching, no left
    # padding) by the GPT's own greedy decoder, judged by the gold scorer, ended turns counted by hand
    gold = Gold.load(world)

    def alone(prompt):
        ids = tok.render_prompt([{"role": "user", "content": prompt}])
        new = model.eval().generate(torch.tensor([ids]), 8, temperature=0.0, stop_token=tok.end, pad_id=tok.pad)
        row = new[0].tolist()
        return (row[:row.index(tok.end) + 1] if tok.end in row else row), tok.end in row

    b = [r["prompt"] for r in load_eval(world / "eval_b.jsonl", 4)]
    assert ckpt["metrics"]["acc_b"] == sum(gold.is_correct(p, tok.decode_message(alone(p)[0])) for p in b) / 4
    asked = [r["prompt"] for r in load_eval(world / "eval_prompts.jsonl", 4)]
    assert ckpt["metrics"]["wellformed"] == sum(alone(p)[1] for p in asked) / 4
    assert evaluate_checkpoint(out / "ckpt.pt", world, limit=4, device="cpu", figures=("acc_b",), max_new_tokens=8,
                               dtype="float32")["acc_b"] == ckpt["metrics"]["acc_b"]  # the loader later stages use


def test_sharegpt_file_trains_step_for_step_as_the_messages_file(world, pretrained, tmp_path):
    """The world's SFT conversations rewritten as ShareGPT ({"conversations": [{"from": "human"|"gpt", "value"}]})
    train exactly as the originals."""
    speaker = {"system": "system", "user": "human", "assistant": "gpt"}
    share = tmp_path / "sharegpt.jsonl"
    share.write_text("".join(json.dumps({"conversations": [{"from": speaker[m["role"]], "value": m["content"]}
                                                           for m in json.loads(ln)["messages"]]}) + "\n"
                             for ln in (world / "sft_train.jsonl").read_text().splitlines()))
    losses = []
    for name, data in (("messages", world / "sft_train.jsonl"), ("sharegpt", share)):
        train_sft(sft_args(world, pretrained, tmp_path / name, "--data", str(data), "--steps", "4", "--log-every",
                           "2", "--eval-limit", "0", "--embeddings", "all"))
        recs = [json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses.append([r["loss"] for r in recs if "loss" in r])
    assert losses[0] == losses[1] and len(losses[0]) == 2


@pytest.mark.parametrize("embedding", ["--lora-embedding", "--no-lora-embedding"])
def test_lora_checkpoint_is_base_plus_merged_adapter(world, pretrained, tmp_path, embedding):
    out = tmp_path / "lora"
    metrics = train_sft(sft_args(world, pretrained, out, "--steps", "6", "--lr", "1e-2", "--lora-rank", "4",
                                 "--eval-limit", "0", embedding))
    assert (out / "adapter.pt").exists()
    assert metrics["params_trainable"] < 0.25 * metrics["params_total"]
    sft, _, _ = load_model(out / "ckpt.pt", stages=("sft",))
    base, _, _ = load_model(pretrained, stages=("pretrain",))
    load_adapter(base, out / "adapter.pt")
    merge_lora(base)
    merged = {k.replace(".base.", "."): v for k, v in base.state_dict().items()
              if "lora_" not in k and "token_adapter" not in k}
    trained = sft.state_dict()
    assert merged.keys() == trained.keys()
    init = load_checkpoint(pretrained)["model"]
    changed = []
    for k in trained:
        torch.testing.assert_close(merged[k], trained[k], atol=1e-6, rtol=0, msg=k)
        if not torch.equal(trained[k], init[k]):
            changed.append(k)
    # exactly the adapted matrices moved (4 per block, 2 blocks) and the tied token matrix: all of its rows with the
    # rank-r update of the token matrix, else only the special rows
    assert len(changed) == 4 * 2 + 2 and "transformer.wte.weight" in changed and "lm_head.weight" in changed
    moved = (trained["transformer.wte.weight"] - init["transformer.wte.weight"]).abs().sum(1).nonzero().flatten()
    specials = set(load_checkpoint(pretrained)["tokenizer"]["special_tokens"].values())
    if embedding == "--lora-embedding":
        assert len(moved) == len(init["transformer.wte.weight"])
    else:
        assert set(moved.tolist()) <= specials


@pytest.fixture(scope="module")
def pretrained_on_tokens(world, pretrained, tmp_path_factory):
    """The tiny 'pretrain' checkpoint, now naming the token folder it was 'pretrained' on: the world's corpus
    encoded with its tokenizer, as data/prepare_pretrain.py writes it (train.bin + meta.json)."""
    ckpt = load_checkpoint(pretrained)
    tok = Tokenizer.from_dict(ckpt["tokenizer"])
    folder = tmp_path_factory.mktemp("tokens")
    texts = [json.loads(ln)["text"] for ln in (world / "pretrain.jsonl").read_text().splitlines()]
    ids = [i for t in texts for i in tok.encode(t) + [tok.eot]]
    np.array(ids, dtype=np.uint16).tofile(folder / "train.bin")
    (folder / "meta.json").write_text(json.dumps({"tokenizer": tok.to_dict()}))
    path = folder / "ckpt.pt"
    atomic_save({**ckpt, "data": str(folder)}, path)
    return path, set(ids)


def test_embeddings_new_moves_only_rows_pretraining_never_trained(world, pretrained_on_tokens, tmp_path):
    pretrained, seen = pretrained_on_tokens
    out = tmp_path / "new"
    m = train_sft(sft_args(world, pretrained, out, "--steps", "3", "--eval-limit", "0", "--embeddings", "new"))
    ckpt = load_checkpoint(out / "ckpt.pt", stages=("sft",))
    trained, init = ckpt["model"], load_checkpoint(pretrained)
    specials = set(init["tokenizer"]["special_tokens"].values())
    V, C = ckpt["model_config"]["vocab_size"], ckpt["model_config"]["n_embd"]
    new = {i for i in range(V) if i not in seen} | specials  # the model's V has no padding rows here
    assert len(new) > len(specials)  # BPE's intermediate merges: tokens the encoded text never contains
    plain = sum(v.numel() for k, v in trained.items() if k != "lm_head.weight")  # tied: counted once
    assert m["params_trainable"] == plain - V * C + len(new) * C and m["params_total"] == plain + len(new) * C
    moved = (trained["transformer.wte.weight"] - init["model"]["transformer.wte.weight"]).abs().sum(1).nonzero()
    moved = set(moved.flatten().tolist())
    assert moved <= new  # the row of a token the pretraining text contains never moves
    assert specials & moved  # the chat markers' rows did move
    assert not torch.equal(trained["transformer.h.1.mlp.c_fc.weight"], init["model"]["transformer.h.1.mlp.c_fc.weight"])
    with pytest.raises(ValueError, match="--embeddings new is for full fine-tuning"):  # (it used to crash)
        train_sft(sft_args(world, pretrained, tmp_path / "lora", "--steps", "1", "--embeddings", "new",
                           "--lora-rank", "2"))


def test_embeddings_seen_also_moves_the_rows_of_tokens_the_sft_data_contains(world, pretrained_on_tokens, tmp_path):
    pretrained, in_pretraining = pretrained_on_tokens
    out = tmp_path / "seen"
    train_sft(sft_args(world, pretrained, out, "--steps", "3", "--eval-limit", "0", "--embeddings", "seen"))
    trained, init = load_checkpoint(out / "ckpt.pt", stages=("sft",))["model"], load_checkpoint(pretrained)
    tok = Tokenizer.from_dict(init["tokenizer"])
    in_sft = {i for ln in (world / "sft_train.jsonl").read_text().splitlines()
              for m in json.loads(ln)["messages"] for i in tok.encode(" " + m["content"])}
    moved = (trained["transformer.wte.weight"] - init["model"]["transformer.wte.weight"]).abs().sum(1).nonzero()
    moved = set(moved.flatten().tolist())
    frozen = in_pretraining - in_sft - set(tok.special_ids.values())  # at full size: the split-B names, among others
    assert frozen and not moved & frozen
    assert moved & in_sft & in_pretraining  # a pretrained token the SFT data uses did move


def test_replay_adds_the_pretraining_loss_and_needs_a_token_folder(world, pretrained, pretrained_on_tokens, tmp_path):
    path, _ = pretrained_on_tokens
    train_sft(sft_args(world, path, tmp_path / "r", "--steps", "2", "--eval-limit", "0", "--replay-rows", "1",
                       "--log-every", "1"))
    logged = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    rec = next(r for r in logged if "replay_loss" in r)
    # the step's loss is the SFT loss plus the replayed text's (weight 1), and an untrained model's next-token loss
    # on real text is near ln V
    assert rec["loss"] == pytest.approx(rec["sft_loss"] + rec["replay_loss"], rel=1e-4)
    V = load_checkpoint(path)["model_config"]["vocab_size"]
    assert abs(rec["replay_loss"] - np.log(V)) < 1.0
    with pytest.raises(CheckpointError, match="--replay-rows needs the token folder"):
        train_sft(sft_args(world, pretrained, tmp_path / "r2", "--steps", "1", "--replay-rows", "1"))


def test_reinit_keeps_the_architecture_but_not_the_weights(world, pretrained, tmp_path):
    ns = script("train_sft.py")
    cfg = ns["parse_config"](ns["SFTConfig"], ["--init", str(pretrained), "--reinit"])
    tok, block_size, _ = ns["init_info"](cfg)
    torch.manual_seed(1)
    model = ns["build_model"](cfg, tok)
    ref = load_checkpoint(pretrained)
    assert model.config.to_dict() == ref["model_config"] and tok.to_dict() == ref["tokenizer"]
    assert block_size == ref["model_config"]["block_size"]
    assert not torch.equal(model.state_dict()["transformer.h.0.attn.c_attn.weight"],
                           ref["model"]["transformer.h.0.attn.c_attn.weight"])
    # and it trains, here without packing (one conversation per row, right-padded)
    m = train_sft(sft_args(world, pretrained, tmp_path / "r", "--reinit", "--no-pack", "--steps", "2",
                           "--eval-limit", "0"))
    assert m["step"] == 2


# DDP with full fine-tuning; FSDP with LoRA (frozen and trained parameters in the same sharded block)
@pytest.mark.parametrize("extra,sharding", [([], []), (["--lora-rank", "4"], ["--fsdp"])], ids=["ddp", "fsdp-lora"])
def test_two_gloo_processes_match_one_process(world, pretrained_on_tokens, tmp_path, extra, sharding):
    common = sft_args(world, pretrained_on_tokens[0], "X", "--steps", "3", "--eval-limit", "0", "--eval-every",
                      "100", "--lr", "3e-3", "--replay-rows", "2", *extra)
    one, two = tmp_path / "one", tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [a if a != "X" else str(one) for a in common]
    r = subprocess.run([sys.executable, "train_sft.py", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    args = [a if a != "X" else str(two) for a in common] + sharding
    args[args.index("--batch-size") + 1] = "2"  # per process: the same global batch of SFT rows
    args[args.index("--replay-rows") + 1] = "1"  # and of replayed pretraining windows (TokenBin slices by rank)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train_sft.py", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (one, two))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)


def test_real_data_path_with_the_gpt2_tokenizer(shared_data, gpt2, tmp_path):
    tok = gpt2
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.n_vocab, block_size=256, n_layer=1, n_head=2, n_embd=16))
    init = tmp_path / "gpt2_tiny.pt"
    atomic_save(make_checkpoint("pretrain", model, tok, {}, 0, {}), init)
    m = train_sft(["--init", str(init), "--data", str(shared_data / "lima" / "lima.json"), "--val-data",
                   str(shared_data / "oasst_trees" / "en_100_tree.jsonl"), "--out", str(tmp_path / "o"),
                   "--steps", "2", "--batch-size", "2", "--dtype", "float32", "--eval-limit", "2",
                   "--max-new-tokens", "4", "--warmup", "1", "--embeddings", "all"])  # (init records no data)
    assert m["step"] == 2 and 0.0 <= m["wellformed"] <= 1.0 and m["val_loss"] > 0
    assert "acc_b" not in m  # no world beside real data: no gold figures


# ----- chat.py

class ScriptedModel(torch.nn.Module):
    """Stands in for a GPT: 'generates' a fixed token sequence, control tokens included."""

    def __init__(self, tokens):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tokens = tokens

    def generate_stream(self, idx, n, **kw):
        for t in self.tokens[:n]:
            yield torch.tensor([t])


def test_streamed_reply_never_shows_control_tokens(gpt2):
    tok = gpt2
    chat = script("chat.py")
    text = "Lena's bicycle is red. Ünïcödé ☃ too."
    body = tok.encode(" " + text)  # the template's space before a reply, never shown
    scripted = [tok.ai, *body[:3], tok.user, *body[3:], tok.end, *tok.encode(" never shown")]
    pieces = list(chat["stream_reply"](ScriptedModel(scripted), tok, [tok.eot], 100, 0.0))
    assert "".join(pieces) == text  # markers hidden, stops at <|end|>, multi-byte characters intact
    assert all("\ufffd" not in p for p in pieces)


def test_context_drops_the_oldest_exchanges_but_keeps_the_system_message(gpt2):
    tok = gpt2
    fit_context = script("chat.py")["fit_context"]
    msgs = [{"role": "system", "content": "Be brief."}]
    for i in range(5):
        msgs += [{"role": "user", "content": f"question number {i} " * 5},
                 {"role": "assistant", "content": f"answer number {i} " * 5}]
    msgs.append({"role": "user", "content": "last question"})
    full = tok.render_prompt(msgs)
    kept, ids, dropped = fit_context(tok, msgs, len(full))
    assert (kept, ids, dropped) == (msgs, full, 0)
    kept, ids, dropped = fit_context(tok, msgs, len(full) - 1)
    assert dropped == 1 and kept == msgs[:1] + msgs[3:] and ids == tok.render_prompt(kept)
    kept, ids, dropped = fit_context(tok, msgs, 12)
    assert dropped == 5 and kept == [msgs[0], msgs[-1]] and len(ids) <= 12 and ids[-1] == tok.ai


def test_chat_cli_one_shot_answer(full_run):
    out, _ = full_run
    r = subprocess.run([sys.executable, "chat.py", "--init", str(out / "ckpt.pt"), "--prompt",
                        "Who is <|end|> Lena?<|ai|>", "--max-new-tokens", "12", "--dtype", "float32"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "<|" not in r.stdout


def test_chat_cli_best_of_n_with_a_reward_model(full_run, tmp_path):
    from nanotrain.reward import RewardModel

    out, _ = full_run
    model, tok, _ = load_model(out / "ckpt.pt", stages=("sft",))
    torch.manual_seed(0)
    rm = RewardModel(model.config, tok)
    atomic_save(make_checkpoint("rm", rm, tok, {}, 1, {}), tmp_path / "rm.pt")
    replies = script("chat.py")["main"](["--init", str(out / "ckpt.pt"), "--prompt", "Where does Lena live?",
                                         "--best-of", "3", "--reward", str(tmp_path / "rm.pt"), "--temperature",
                                         "1.0", "--max-new-tokens", "8", "--dtype", "float32"])
    assert len(replies) == 1 and "<|" not in replies[0]
