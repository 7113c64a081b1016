"""One way to set defaults (nanotrain/cli.py): a preset or an algorithm fills only the flags the user did not pass.

For every stage script, each preset and each algorithm, a run with an explicit --warmup 15 must store 15 in its
checkpoint's training config, while the flags left out take the preset's or the algorithm's values (read from the
script's own tables, and here also typed by hand for one case each, so a table that stops applying fails)."""
from dataclasses import dataclass

import pytest
import torch

from conftest import script
from nanotrain.cli import flag, parse_config

TINY_ARCH = ["--n-layer", "1", "--n-embd", "32", "--block-size", "32"]


@dataclass
class Toy:
    preset: str = flag("a", "a | b")
    steps: int = flag(10, "steps")
    warmup: int = flag(2, "warmup")


def toy_defaults(cfg, given):
    return {"b": dict(steps=99, warmup=9)}.get(cfg.preset, {})


def test_a_preset_never_overrides_a_given_flag_even_one_equal_to_the_default():
    assert parse_config(Toy, ["--preset", "b"], defaults=toy_defaults) == Toy("b", 99, 9)
    # --warmup 2 equals the field's default: still the user's choice (the old "replace what equals the default" bug)
    assert parse_config(Toy, ["--preset", "b", "--warmup", "2"], defaults=toy_defaults) == Toy("b", 99, 2)
    assert parse_config(Toy, ["--warmup", "15"], defaults=toy_defaults) == Toy("a", 10, 15)


def train_config(path):
    return torch.load(path, weights_only=True, map_location="cpu")["train_config"]


@pytest.mark.parametrize("preset", ["tiny", "small", "gpt2", "gpt2-medium"])
def test_pretrain_presets_keep_an_explicit_warmup(tiny_corpus, tmp_path, preset):
    mod = script("train_pretrain.py")
    mod["main"](["--data", str(tiny_corpus), "--out", str(tmp_path), "--preset", preset, *TINY_ARCH, "--n-head", "1",
                 "--steps", "1", "--batch-size", "2", "--grad-accum", "1", "--warmup", "15", "--dtype", "float32"])
    tc = train_config(tmp_path / "ckpt.pt")
    assert tc["warmup"] == 15 and tc["n_layer"] == 1 and tc["steps"] == 1
    assert tc["lr"] == {"tiny": 2e-3, "small": 2e-3, "gpt2": 6e-4, "gpt2-medium": 6e-4}[preset]  # not given: preset's
    assert tc["eval_every"] == mod["PRESETS"][preset].get("eval_every", 100)


@pytest.mark.parametrize("preset,lora", [("tiny", 0), ("tiny", 2), ("gpt2", 0), ("gpt2", 2)])
def test_sft_presets_keep_an_explicit_warmup(tiny_chat, tmp_path, preset, lora):
    root, world = tiny_chat
    mod = script("train_sft.py")
    mod["main"](["--init", str(root / "sft.pt"), "--data", str(world / "sft_train.jsonl"), "--val-data",
                 str(world / "sft_val.jsonl"), "--world", "none", "--out", str(tmp_path), "--preset", preset,
                 "--lora-rank", str(lora), "--steps", "1", "--batch-size", "2", "--grad-accum", "1", "--warmup", "15",
                 "--eval-limit", "0", "--embeddings", "all", "--dtype", "float32"])
    tc = train_config(tmp_path / "ckpt.pt")
    assert tc["warmup"] == 15 and tc["steps"] == 1
    want_lr = {("tiny", 0): 1e-3, ("tiny", 2): 1e-2, ("gpt2", 0): 2e-5, ("gpt2", 2): 2e-4}[preset, lora]
    assert tc["lr"] == want_lr


@pytest.mark.parametrize("preset,name", [("tiny", "helpful"), ("tiny", "safe"), ("gpt2", "safe")])
def test_reward_model_presets_keep_an_explicit_warmup(tiny_chat, tmp_path, preset, name):
    root, world = tiny_chat
    script("train_rm.py")["main"](["--init", str(root / "sft.pt"), "--world", str(world), "--labels", str(world), "--name", name,
                                   "--out", str(tmp_path), "--preset", preset, "--steps", "1", "--batch-size", "2",
                                   "--warmup", "15", "--agree-prompts", "0", "--dtype", "float32"])
    tc = train_config(tmp_path / "ckpt.pt")
    assert tc["warmup"] == 15 and tc["steps"] == 1
    assert tc["data"] == f"{world}/prefs_{name}_train.jsonl"  # derived from --name and --world
    assert tc["lr"] == (1e-5 if preset == "gpt2" else 2e-4)


@pytest.mark.parametrize("name", ["helpful", "safe"])
def test_reward_models_read_the_labels_and_the_worlds_own_pairs_of_their_kind(tiny_chat, tmp_path, name):
    """On the labelling stage's pairs (--labels not the --world folder) each reward model also reads the world's
    hand-built pairs of its kind; reading the world's own pairs, nothing is added twice."""
    import shutil

    root, world = tiny_chat
    labels = tmp_path / "labels"
    labels.mkdir()
    for split in ("train", "val"):
        shutil.copy(world / f"prefs_{name}_{split}.jsonl", labels / f"prefs_{name}_{split}.jsonl")
    for lab, want in ((labels, f"{labels}/prefs_{name}_train.jsonl,{world}/prefs_{name}_train.jsonl"),
                      (world, f"{world}/prefs_{name}_train.jsonl")):
        out = tmp_path / f"rm_{lab.name}"
        script("train_rm.py")["main"](["--init", str(root / "sft.pt"), "--world", str(world), "--labels", str(lab),
                                       "--name", name, "--out", str(out), "--steps", "1", "--batch-size", "2",
                                       "--agree-prompts", "0", "--dtype", "float32"])
        assert train_config(out / "ckpt.pt")["data"] == want


@pytest.mark.parametrize("preset", ["tiny", "gpt2"])
@pytest.mark.parametrize("algo", ["ppo", "dpo", "kto"])
def test_rlhf_algorithms_and_presets_keep_an_explicit_warmup(tiny_chat, tmp_path, algo, preset):
    root, world = tiny_chat
    mod = script("train_rlhf.py")
    mod["main"](["--algo", algo, "--preset", preset, "--init", str(root / "sft.pt"), "--reward",
                 str(root / "rm_helpful.pt"), "--world", str(world), "--labels", str(world), "--out", str(tmp_path),
                 "--steps", "1",
                 "--batch-size", "2", "--rollout-batch", "2", "--minibatch", "2", "--max-new-tokens", "4",
                 "--warmup", "15", "--eval-limit", "0", "--dtype", "float32"])
    tc = train_config(tmp_path / "ckpt.pt")
    assert tc["warmup"] == 15 and tc["steps"] == 1 and tc["algo"] == algo
    want = {**mod["ALGO_DEFAULTS"][algo], **mod["PRESETS"][preset].get(algo, {})}
    for k in ("lr", "beta"):
        assert tc[k] == want.get(k, getattr(mod["RLHFConfig"], k))
    assert tc["beta"] == {("ppo", "tiny"): 0.15, ("dpo", "tiny"): 0.3, ("kto", "tiny"): 1.0}.get((algo, preset), 0.1
                                                                                                 if algo != "ppo"
                                                                                                 else 0.05)
