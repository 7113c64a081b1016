"""Past one GPU's memory: --fsdp (PyTorch FSDP2, nanotrain/fsdp.py) and --grad-checkpoint (activation checkpointing).

FSDP is checked the way DDP is (tests/test_pretrain.py): two gloo processes on the CPU, each with half the batch,
must train the same weights as one plain process with the whole batch, step by step, and a run resumed from its
sharded state must carry on exactly. Activation checkpointing must change nothing but memory: the same loss and
gradients, with fewer activations kept for the backward pass.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, script
from nanotrain.checkpoint import load_model
from nanotrain.errors import CheckpointError, NanotrainError
from nanotrain.gpt import GPT, GPTConfig, enable_grad_checkpoint

TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--dtype", "float32",
        "--eval-batches", "2", "--log-every", "1", "--eval-every", "1000",
        "--warmup", "50"]  # past --steps: the learning rate at a step does not depend on --steps, so a 3-step run
#                            resumed to 6 steps must equal a 6-step run


def pretrain(argv):
    return script("train_pretrain.py")["main"](argv)


def losses(out):
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]


def test_fsdp_on_two_gloo_processes_matches_one_process_and_resumes_exactly(tiny_corpus, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    pretrain(["--data", str(tiny_corpus), "--out", str(one), "--steps", "6", "--batch-size", "4", *TINY])
    # Sharded, with activation checkpointing on top (the combination a big model uses): 3 steps, then resumed to 6.
    fsdp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_pretrain.py",
            "--data", str(tiny_corpus), "--out", str(two), "--batch-size", "2", *TINY, "--fsdp", "--grad-checkpoint"]
    for extra in (["--steps", "3"], ["--steps", "6", "--resume"]):
        r = subprocess.run(fsdp + extra, cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stdout and "at step 3" in r.stdout

    assert len(losses(two)) == 6  # the resumed run's log reads like one run
    torch.testing.assert_close(losses(two), losses(one), atol=1e-5, rtol=1e-6)
    ckpt = torch.load(two / "ckpt.pt", weights_only=True)  # the gathered, plain state dict
    assert ckpt["step"] == 6 and all(type(v) is torch.Tensor for v in ckpt["model"].values())
    a = torch.load(one / "ckpt.pt", weights_only=True)["model"]
    assert a.keys() == ckpt["model"].keys()
    for k in a:
        torch.testing.assert_close(ckpt["model"][k], a[k], atol=2e-5, rtol=1e-4, msg=k)
    load_model(two / "ckpt.pt")  # builds a GPT from it, strictly

    # The sharded run's resume.pt keeps the optimizer by parameter name: a plain run must not misread it.
    with pytest.raises(CheckpointError, match="was written with --fsdp: resume it with --fsdp"):
        pretrain(["--data", str(tiny_corpus), "--out", str(two), "--steps", "8", "--batch-size", "4", *TINY,
                  "--resume"])


def test_a_torchrun_process_leaves_without_pythons_shutdown_and_loses_no_output(tmp_path):
    """run_script ends a process that has a RANK with os._exit, so that gloo's worker threads cannot abort Python's
    shutdown (nanotrain/errors.py says why; the two-process run above is where the abort was seen). What the script
    printed must still arrive through a pipe, and a user's error must still be one sentence and exit status 1."""
    prog = tmp_path / "prog.py"
    prog.write_text("import atexit, sys\n"
                    "from nanotrain.errors import ConfigError, run_script\n"
                    "atexit.register(lambda: print('python shut down'))\n"
                    "def main(argv):\n"
                    "    print('the last line')\n"  # a pipe's stdout is block-buffered: this waits in Python's buffer
                    "    sys.stderr.write('no newline, ')\n"
                    "    if argv:\n"
                    "        raise ConfigError('--bad is refused')\n"
                    "run_script(main, sys.argv[1:])\n")

    def run(*argv, rank=True):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "PYTHONUNBUFFERED")}  # buffered, as a shell
        env |= {"PYTHONPATH": str(ROOT)}  # runs it (torchrun itself starts python -u)
        return subprocess.run([sys.executable, str(prog), *argv], capture_output=True, text=True,
                              env=env | ({"RANK": "0"} if rank else {}))

    ok, bad, plain = run(), run("--bad"), run(rank=False)
    assert ok.returncode == 0 and ok.stdout == "the last line\n" and ok.stderr == "no newline, "
    assert bad.returncode == 1 and bad.stderr == "no newline, error: --bad is refused\n"
    assert plain.returncode == 0 and plain.stdout.endswith("python shut down\n")  # without a RANK: Python's shutdown


def test_fsdp_without_torchrun_says_how_to_launch(tiny_corpus, tmp_path):
    with pytest.raises(NanotrainError, match="torchrun --nproc_per_node"):
        pretrain(["--data", str(tiny_corpus), "--out", str(tmp_path), "--steps", "1", *TINY, "--fsdp"])


def test_ppo_refuses_fsdp_in_one_sentence():
    from nanotrain import ppo
    from nanotrain.runtime import setup_runtime
    cfg = script("train_rlhf.py")["RLHFConfig"](algo="ppo", fsdp=True)
    with pytest.raises(NanotrainError, match="not available for PPO"):
        ppo.train(setup_runtime("cpu", "float32"), cfg, None, None, None, None, None, [], None, None, None)


def saved_activation_bytes(model, idx, targets):
    """Bytes autograd keeps from the forward pass for the backward pass, outside checkpointed regions (inside one,
    torch.utils.checkpoint's own hooks take the tensors and keep none)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(idx, targets)[1]
    return loss, total


def test_grad_checkpoint_gives_the_same_loss_and_gradients_and_keeps_fewer_activations():
    # dropout > 0: the recomputation must replay the same dropout masks, or the gradients would differ
    cfg = GPTConfig(vocab_size=64, block_size=32, n_layer=3, n_head=2, n_embd=32, dropout=0.1, attn="sdpa")
    torch.manual_seed(0)
    plain = GPT(cfg)
    ckpt = GPT(cfg)
    ckpt.load_state_dict(plain.state_dict())
    assert enable_grad_checkpoint(ckpt) == 1
    idx, targets = torch.randint(0, 64, (4, 32)), torch.randint(0, 64, (4, 32))

    results = []
    for model in (plain, ckpt):
        torch.manual_seed(1)
        loss, kept = saved_activation_bytes(model, idx, targets)
        loss.backward()
        results.append((loss, kept, {n: p.grad for n, p in model.named_parameters()}))
    (loss_a, kept_a, grads_a), (loss_b, kept_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, atol=0, rtol=0)
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, atol=1e-6, rtol=1e-5, msg=name)
    # Without checkpointing every block keeps a dozen (B, T, C)-sized tensors and its (B, H, T, T) attention; with
    # it, only the embeddings, the final LayerNorm and the output layer keep theirs.
    assert kept_b < 0.5 * kept_a, (kept_b, kept_a)
    # and it is a training-time switch only: decoding (no gradients) is unchanged
    plain.eval()
    ckpt.eval()
    assert torch.equal(plain.generate(idx[:1, :4], 8, temperature=0), ckpt.generate(idx[:1, :4], 8, temperature=0))
