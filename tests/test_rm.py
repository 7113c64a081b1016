"""train_rm.py end to end at a tiny size, in seconds: it learns a preference that is visible in the text, writes an
"rm" checkpoint with its normalisation and held-out accuracy, measures agreement with the gold scorer of a small
generated world, resumes exactly, and fails in one sentence on a wrong init or bad data."""
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, script
from nanotrain.checkpoint import atomic_save, make_checkpoint
from nanotrain.errors import CheckpointError, ConfigError, DataError
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.reward import load_reward_model
from nanotrain.tinyworld.generate import write_world
from nanotrain.tinyworld.world import WorldConfig
from nanotrain.tokenizer import Tokenizer

TINY = ["--dtype", "float32", "--batch-size", "8", "--warmup", "5", "--lr", "3e-3", "--norm-pairs", "32",
        "--agree-prompts", "3", "--agree-samples", "3", "--agree-tokens", "8", "--center", "0"]


def train_rm(argv):
    return script("train_rm.py")["main"](argv)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small generated world, preference pairs whose preferred reply is the polite one (learnable in a few dozen
    steps from random weights), and a random-weight 'sft' checkpoint with a 300-token BPE."""
    root = tmp_path_factory.mktemp("rm")
    world = root / "world"
    write_world(WorldConfig(out=str(world), scale=0.02, people=40, animals=10, towns=4))
    rng = random.Random(0)
    names, colours = ["Lena", "Tom", "Mia", "Ravi", "Olga", "Sam"], ["red", "blue", "green", "pink"]

    def pair():
        n, c = rng.choice(names), rng.choice(colours)
        answer = f"{n}'s bicycle is {c}."
        rude = rng.choice(["Ugh, {a} Stop asking me such stupid questions.", "Whatever. {a} Don't bother me."])
        good, bad = answer, rude.format(a=answer)
        return {"prompt": f"What colour is {n}'s bicycle?", "chosen": good, "rejected": bad}
    for name, n in (("train", 160), ("val", 32)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(pair()) + "\n" for _ in range(n)))
    texts = [ln for f in ("train", "val") for ln in (root / f"{f}.jsonl").read_text().splitlines()]
    texts += (world / "eval_prompts.jsonl").read_text().splitlines()
    tok = Tokenizer.train(texts, vocab_size=300)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=300, block_size=96, n_layer=2, n_head=2, n_embd=32))
    atomic_save(make_checkpoint("sft", gpt, tok, {}, 0, {}), root / "sft.pt")
    return root


def args(root, out, *extra):
    return ["--init", str(root / "sft.pt"), "--data", str(root / "train.jsonl"), "--val-data",
            str(root / "val.jsonl"), "--world", str(root / "world"), "--out", str(out), *TINY, *extra]


def test_tiny_run_learns_and_writes_an_rm_checkpoint(setup, tmp_path):
    m = train_rm(args(setup, tmp_path / "rm", "--steps", "40", "--eval-every", "20"))
    assert m["val_acc"] >= 0.9
    for k in ("gold_spearman_eval_prompts", "gold_pairwise_eval_prompts", "gold_pairs_eval_harmful"):
        assert k in m  # measured against the small world's gold scorer (the values mean little at this size)
    rm, tok, ckpt = load_reward_model(tmp_path / "rm" / "ckpt.pt")
    assert ckpt["stage"] == "rm" and ckpt["reward_name"] == "helpful" and "gold_spearman" in ckpt["metrics"]
    # the stored accuracy against a recount: the loaded model scores each held-out reply, the test compares them
    val = [json.loads(ln) for ln in (setup / "val.jsonl").read_text().splitlines()]
    s_good = rm.score([v["prompt"] for v in val], [v["chosen"] for v in val])
    s_bad = rm.score([v["prompt"] for v in val], [v["rejected"] for v in val])
    recount = float((s_good > s_bad).float().mean())
    assert ckpt["metrics"]["val_acc"] == pytest.approx(recount) and recount >= 0.9
    # the stored normalisation makes its reference set (both replies of --norm-pairs 32 training pairs, drawn with
    # the seeded permutation train_rm.py documents) mean 0 and standard deviation 1 in the loaded model's scores
    train = [json.loads(ln) for ln in (setup / "train.jsonl").read_text().splitlines()]
    ref = [train[i] for i in np.random.default_rng([0, 10 ** 9]).permutation(len(train))[:32]]
    s_ref = rm.score([r["prompt"] for r in ref] * 2, [r["chosen"] for r in ref] + [r["rejected"] for r in ref])
    assert float(s_ref.mean()) == pytest.approx(0.0, abs=1e-5) and float(s_ref.std()) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(torch.cat([s_good, s_bad]).mean())) < 0.5  # and held-out replies sit near it
    # sample.py --best-of N --reward PATH prints the answer the reward model prefers
    best = script("sample.py")["main"](["--init", str(setup / "sft.pt"), "--prompt", "What colour is Tom's bicycle?",
                                        "--best-of", "3", "--reward", str(tmp_path / "rm" / "ckpt.pt"),
                                        "--max-new-tokens", "6", "--dtype", "float32"])
    assert len(best) == 1 and isinstance(best[0], str)


def test_resume_reproduces_the_uninterrupted_run(setup, tmp_path, monkeypatch):
    """Keep the resume state written at step 4 of an 8-step run, resume from it in a fresh folder: steps 5-8 must
    give the same losses, bit for bit (the batches are a pure function of the step)."""
    from nanotrain import trainer

    real_save = trainer.atomic_save

    def keep_step_4(obj, path):
        real_save(obj, path)
        if Path(path).name == "resume.pt" and obj["step"] == 4:
            shutil.copy(path, tmp_path / "resume_at_4.pt")
    monkeypatch.setattr(trainer, "atomic_save", keep_step_4)
    common = args(setup, tmp_path / "x", "--steps", "8", "--log-every", "1", "--eval-every", "100",
                  "--agree-prompts", "0", "--save-every", "4")
    full, cut = tmp_path / "full", tmp_path / "cut"
    train_rm([*common, "--out", str(full)])
    monkeypatch.undo()
    cut.mkdir()
    shutil.copy(tmp_path / "resume_at_4.pt", cut / "resume.pt")
    shutil.copy(full / "metrics.jsonl", cut / "metrics.jsonl")  # (lines past step 4 are dropped on resume)
    train_rm([*common, "--out", str(cut), "--resume"])

    def losses(out):
        return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]
    assert len(losses(full)) == 8 and losses(cut) == losses(full)


@pytest.mark.parametrize("sharding", [[], ["--fsdp"]], ids=["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(setup, tmp_path, sharding):
    """Under torchrun each rank takes its slice of the same global batch (mismatched negatives included), so two
    processes of 4 pairs train the same weights as one process of 8, replicated (DDP) or sharded (FSDP; the
    checkpoint's normalisation then runs on the gathered weights)."""
    one, two = tmp_path / "one", tmp_path / "two"
    train_rm(args(setup, one, "--steps", "3", "--eval-every", "100", "--agree-prompts", "0"))
    ddp = args(setup, two, "--steps", "3", "--eval-every", "100", "--agree-prompts", "0", *sharding)
    ddp[ddp.index("--batch-size") + 1] = "4"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train_rm.py", *ddp], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (one, two))
    # The pairwise loss only sees differences of rewards, so without centring the head's bias gets a gradient that
    # is zero up to rounding, which Adam turns into steps of random size: the bias may drift apart between the two
    # runs, but normalisation subtracts it again (bias - mean is what scores depend on).
    for k in a:
        if k not in ("head.bias", "reward_mean"):
            torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
    torch.testing.assert_close(a["head.bias"] - a["reward_mean"], b["head.bias"] - b["reward_mean"], atol=2e-5,
                               rtol=1e-4)


def test_bad_init_and_bad_data_fail_in_one_sentence(setup, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        train_rm(args(setup, tmp_path / "a", "--init", str(tmp_path / "missing.pt")))
    atomic_save(make_checkpoint("rm", GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=1, n_embd=8)),
                                Tokenizer.train(["a b"], 300), {}, 0, {}), tmp_path / "rm.pt")
    with pytest.raises(CheckpointError, match="'rm' checkpoint, but this needs one from 'sft' or 'pretrain'"):
        train_rm(args(setup, tmp_path / "b", "--init", str(tmp_path / "rm.pt")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": 3, "rejected": "b"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'chosen' must be a string"):
        train_rm(args(setup, tmp_path / "c", "--data", str(bad)))
    # an empty held-out file divided by zero after training; a world folder without world.json was read only after
    # training too; a --val-fraction outside (0, 1) raised a plain ValueError. None of them writes a checkpoint now.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no preference pairs held out"):
        train_rm(args(setup, tmp_path / "d", "--val-data", str(empty)))
    with pytest.raises(DataError, match=r"empty\.jsonl: no preference pairs to learn from"):
        train_rm(args(setup, tmp_path / "e", "--data", str(empty)))
    with pytest.raises(FileNotFoundError, match="world.json"):
        train_rm(args(setup, tmp_path / "f", "--world", str(tmp_path)))
    with pytest.raises(ConfigError, match="--val-fraction must be above 0 and below 1, not 1.5"):
        train_rm(args(setup, tmp_path / "g", "--val-data", "none", "--val-fraction", "1.5"))
    one = tmp_path / "one.jsonl"  # pairs that share one prompt: a held-out share of prompts takes them all
    one.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 8)
    with pytest.raises(DataError, match=r"one\.jsonl: --val-fraction 0\.1 held out every prompt's pairs"):
        train_rm(args(setup, tmp_path / "j", "--data", str(one), "--val-data", "none"))
    assert not any((tmp_path / d / "ckpt.pt").exists() for d in "defgj")
    # a name that picks no default data was a CheckpointError; a batch of 0 pairs a ZeroDivisionError in training
    with pytest.raises(ConfigError, match=r"--name must be one of \['helpful', 'safe'\], not 'kind'"):
        train_rm(args(setup, tmp_path / "h", "--name", "kind"))
    with pytest.raises(ConfigError, match="--batch-size must be at least 1, not 0"):
        train_rm(args(setup, tmp_path / "i", "--batch-size", "0"))


def test_gold_agreement_counts_only_the_pairs_gold_tells_apart(setup, tmp_path):
    """Labelled pairs carry gold scores: the accuracy against gold skips gold ties, and says over how many pairs
    (the report prints it), recounted here from the loaded model's own scores."""
    val = [json.loads(ln) for ln in (setup / "val.jsonl").read_text().splitlines()][:12]
    golds = [(1.0, 0.2)] * 6 + [(0.3, 0.9)] * 3 + [(0.5, 0.5)] * 3  # 3 noisy labels, 3 gold ties
    for v, (c, r) in zip(val, golds):
        v.update(gold_chosen=c, gold_rejected=r)
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(v) + "\n" for v in val))
    m = train_rm(args(setup, tmp_path / "rm", "--steps", "10", "--eval-every", "100", "--agree-prompts", "0",
                      "--val-data", str(tmp_path / "val.jsonl")))
    rm = load_reward_model(tmp_path / "rm" / "ckpt.pt")[0]
    first = rm.score([v["prompt"] for v in val], [v["chosen"] for v in val]) > \
        rm.score([v["prompt"] for v in val], [v["rejected"] for v in val])
    right = [bool(f) == (c > r) for f, (c, r) in zip(first.tolist(), golds) if c != r]
    assert m["val_pairs_gold"] == 9 and m["val_acc_gold"] == pytest.approx(sum(right) / 9)
    assert m["val_labels_gold"] == pytest.approx(6 / 9)
    # the interval resamples whole prompts: as many as the nine pairs have distinct prompts, and it holds the figure
    assert m["val_prompts_gold"] == len({json.dumps(v["prompt"]) for v, (c, r) in zip(val, golds) if c != r})
    assert m["val_acc_gold_lo"] <= m["val_acc_gold"] <= m["val_acc_gold_hi"]


def test_the_agreement_check_ranks_samples_of_the_policy_named(setup, tmp_path, monkeypatch):
    """A reward model on another trunk than the policy's (a longer-trained or larger judge) names the policy
    --policy: the check after training ranks that model's samples, the ones PPO will ask it to rank, and not the
    trunk's; without --policy it samples the init model."""
    import nanotrain.checkpoint

    loaded, real = [], nanotrain.checkpoint.load_model
    monkeypatch.setattr(nanotrain.checkpoint, "load_model", lambda path, **kw: loaded.append(str(path)) or
                        real(path, **kw))  # before train_rm.py imports it
    policy = tmp_path / "policy.pt"
    shutil.copy(setup / "sft.pt", policy)
    for extra, sampled in ((["--policy", str(policy)], policy), ([], setup / "sft.pt")):
        loaded.clear()
        m = train_rm(args(setup, tmp_path / f"rm{len(extra)}", "--steps", "2", "--eval-every", "100", *extra))
        assert loaded == [str(setup / "sft.pt"), str(sampled)] and "gold_pairwise_eval_prompts" in m
