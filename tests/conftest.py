"""Shared pytest setup.

The Triton kernels run on the CPU through Triton's interpreter; the variable must be set before Triton is
imported anywhere, so it is set here, once, for the whole session (it changes nothing on a CUDA machine's
non-Triton paths).
"""
import os
from pathlib import Path

import pytest

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TIKTOKEN_CACHE = ROOT.parent / "shared" / "tiktoken"
if TIKTOKEN_CACHE.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_CACHE))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and far faster than on two when other jobs share the cores (idle
    OpenMP threads spin while they wait for each other). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data (small real datasets); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gpt2():
    """GPT-2's BPE (tiktoken's r50k_base). Where no tiktoken cache is named (TIKTOKEN_CACHE_DIR unset: no
    ../shared/tiktoken beside the clone) and tiktoken cannot download the vocabulary (offline), the tests that need
    it skip and say why. Where a cache is named, as CI names one, a vocabulary that does not load fails them."""
    from nanotrain.errors import TokenizerError
    from nanotrain.tokenizer import Tokenizer

    try:
        return Tokenizer.gpt2()
    except TokenizerError:
        if os.environ.get("TIKTOKEN_CACHE_DIR"):
            raise
        pytest.skip("GPT-2's vocabulary (tiktoken's r50k_base) is neither in a cache named by TIKTOKEN_CACHE_DIR nor "
                    "downloadable from here")


def script(name: str) -> dict:
    """The namespace of a top-level script (train_pretrain.py, data/prepare_pretrain.py, ...), without running it:
    tests call its ``main(argv)`` in-process. (Scripts are not a package, so they are loaded by path.)"""
    import runpy

    return runpy.run_path(str(ROOT / name), run_name="nanotrain_test")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A small tokenized corpus (own 300-token BPE) for fast end-to-end stage tests."""
    import random

    rng = random.Random(0)
    names, colours, towns = ["Lena", "Tom", "Mia", "Ravi", "Olga"], ["red", "blue", "green"], ["Oakville", "Fernhill"]
    docs = []
    for i in range(400):
        n = rng.choice(names)
        docs.append(f"{n} lives in {rng.choice(towns)}. {n}'s bicycle is {rng.choice(colours)}. "
                    f"{n} likes the number {i % 17}.")
    root = tmp_path_factory.mktemp("corpus")
    src = root / "docs.jsonl"
    import json

    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = root / "tokens"
    script("data/prepare_pretrain.py")["main"](["--input", str(src), "--out", str(out), "--vocab-size", "300",
                                                  "--val-fraction", "0.05"])
    return out


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory):
    """A small world, a tokenizer trained on it, and random tiny 'sft' and 'rm' checkpoints (root / sft.pt,
    rm_helpful.pt, rm_safe.pt): what the stage-3 scripts need to run in seconds. Returns (root, world folder)."""
    import torch

    from nanotrain.checkpoint import atomic_save, make_checkpoint
    from nanotrain.gpt import GPT, GPTConfig
    from nanotrain.reward import RewardModel
    from nanotrain.tinyworld.generate import write_world
    from nanotrain.tinyworld.world import WorldConfig
    from nanotrain.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("chat")
    world = root / "tw"
    files = write_world(WorldConfig(out=str(world), scale=0.02, people=30, animals=8, towns=4))
    texts = [m["content"] for rec in files["sft_train"] for m in rec["messages"]]
    tok = Tokenizer.train(texts + [r["prompt"] for r in files["rl_prompts"]], vocab_size=400)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.n_vocab, n_layer=2, n_head=2, n_embd=32, block_size=160))
    atomic_save(make_checkpoint("sft", gpt, tok, {}, 0, {}), root / "sft.pt")
    for name in ("helpful", "safe"):
        rm = RewardModel.from_gpt(gpt, tok)
        torch.nn.init.normal_(rm.head.weight, std=0.5)
        atomic_save(make_checkpoint("rm", rm, tok, {}, 0, {}), root / f"rm_{name}.pt")
    return root, world
