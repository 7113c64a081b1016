"""A user's bad day, for the training loop every stage shares (nanotrain/trainer.py, and PPO's loop through the same
helpers): runs killed with SIGKILL at random moments and inside a checkpoint write resume bit for bit with whole-run
metrics; a NaN gradient never reaches the weights on disk; a second run on the same --out is refused; resuming with
other flags is refused or announced; a broken resume.pt, a torn metrics.jsonl line or a full disk is one sentence.

    pytest tests/test_resume.py
"""
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from nanotrain.checkpoint import atomic_save, load_model, make_checkpoint
from nanotrain.errors import CheckpointError, DataError, NonFiniteLoss
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.runtime import setup_runtime
from nanotrain.tokenizer import Tokenizer
from nanotrain.trainer import MetricsLog, TrainConfig, train_loop

TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "4",
        "--warmup", "5", "--eval-batches", "2"]

# Runs train_pretrain.py as `python train_pretrain.py ARGS` would, after fixing what --dtype auto measures (so the
# test does not depend on this CPU) and, with KILL_AT=file:step, killing itself with SIGKILL halfway through writing
# that file at that step: the temporary file is left half written, as a kill during torch.save leaves it.
DRIVER = r"""
import os, runpy, signal, sys
import torch
import nanotrain.runtime
nanotrain.runtime.cpu_bf16_is_faster = lambda: os.environ["BF16_FASTER"] == "1"
kill_file, _, kill_step = os.environ.get("KILL_AT", "").partition(":")
real_save = torch.save
def save(obj, f, *a, **k):
    real_save(obj, f, *a, **k)
    if kill_file and str(f).endswith(kill_file + ".tmp") and obj.get("step") == int(kill_step):
        with open(f, "rb") as fh:
            blob = fh.read()
        with open(f, "wb") as fh:
            fh.write(blob[: len(blob) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
sys.argv = ["train_pretrain.py"] + sys.argv[1:]
runpy.run_path("train_pretrain.py", run_name="__main__")
"""


def records(out):
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out):
    return {r["step"]: r["loss"] for r in records(out) if "loss" in r}


def test_sigkilled_runs_resume_bit_identical_with_whole_run_metrics(tiny_corpus, tmp_path):
    """Three kills under --dtype auto: at a random moment after step 25, inside the write of resume.pt at step 40,
    inside the write of ckpt.pt at step 50; each time the next run resumes with --resume. The last one ends with the
    uninterrupted run's weights bit for bit, every step's loss logged once and equal, and whole-run metrics. The
    resumed runs are made to measure fp32 as the faster precision: the precision the first run chose (bf16) must be
    reused, not chosen again."""
    args = ["--data", str(tiny_corpus), "--steps", "60", "--save-every", "10", "--log-every", "1",
            "--eval-every", "1000", "--dtype", "auto", *TINY]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
    cut, full = tmp_path / "cut", tmp_path / "full"

    def run(*extra, bf16_faster="0", kill_at="", wait=True):
        cmd = [sys.executable, "-c", DRIVER, *args, "--out", str(cut), *extra]
        e = dict(env, BF16_FASTER=bf16_faster, KILL_AT=kill_at)
        if not wait:
            return subprocess.Popen(cmd, cwd=ROOT, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True)

    proc = run(bf16_faster="1", wait=False)  # the first run measures bf16 as faster: --dtype auto picks it
    while proc.poll() is None:  # kill -9 once it is past step 25 (resume.pt was written at step 20)
        if (cut / "metrics.jsonl").exists() and max(losses(cut), default=0) >= 25:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert torch.load(cut / "resume.pt", weights_only=True)["dtype"] == "bfloat16"
    for file, step in (("resume.pt", 40), ("ckpt.pt", 50)):
        r = run("--resume", kill_at=f"{file}:{step}")
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        assert (cut / f"{file}.tmp").exists()  # the half-written file; the previous good one is in place
        assert "resuming from" in r.stdout and "(torch.bfloat16)" in r.stdout, r.stdout
    assert torch.load(cut / "resume.pt", weights_only=True)["step"] == 50
    assert torch.load(cut / "ckpt.pt", weights_only=True)["step"] == 40
    before = torch.load(cut / "resume.pt", weights_only=True)["time_s"]
    r = run("--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    ref = subprocess.run([sys.executable, "train_pretrain.py", *args, "--out", str(full), "--dtype", "bfloat16"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]

    a, b = (torch.load(d / "ckpt.pt", weights_only=True) for d in (cut, full))
    assert a["step"] == b["step"] == 60
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])  # bit for bit
    assert losses(cut) == losses(full)
    steps = [r["step"] for r in records(cut) if "loss" in r]
    assert steps == list(range(1, 61))  # each step logged once, in order
    m = a["metrics"]
    assert m["tokens"] == b["metrics"]["tokens"] == 60 * 4 * 32  # every step's tokens, not the last segment's
    assert m["time_s"] > before  # the clock continued from the resumed run's
    assert m["tokens_per_s_avg"] == pytest.approx(m["tokens"] / m["time_s"])
    assert not list(cut.glob("*.tmp"))  # the next saves replaced the half-written files


# ----- the training loop, in-process, on a one-layer model

def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))


X = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(0))


def run_loop(out, loss_fn=None, **cfg):
    cfg = TrainConfig(**{"out": str(out), "steps": 4, "save_every": 2, "log_every": 1, "warmup": 1,
                         "dtype": "float32", **cfg})
    rt = setup_runtime("cpu", cfg.dtype, cfg.seed)
    saved = lambda m, step, metrics: {"step": step, "model": m.state_dict(), "metrics": metrics}  # noqa: E731
    return train_loop(rt, cfg, tiny_model(), get_batch=lambda step, micro: step,
                      loss_fn=loss_fn or (lambda m, step: (m(X, X)[1], {})), checkpoint_fn=saved)


def test_a_nan_gradient_with_a_finite_loss_stops_before_the_step(tmp_path):
    """At step 4 the loss is finite but its gradient is NaN (d sqrt(x)/dx at 0, times 0): the step must not be
    applied, so the checkpoint of step 3 stays the last one, finite, and the message says so."""
    def loss_fn(m, step):
        loss = m(X, X)[1]
        if step == 3:
            loss = loss + (m.lm_head.weight[0, 0] * 0).abs().sqrt()  # adds 0; its gradient is 0 * inf = NaN
            assert torch.isfinite(loss)
        return loss, {}

    with pytest.raises(NonFiniteLoss, match="gradient norm became nan at step 4.*last good checkpoint"):
        run_loop(tmp_path, loss_fn, steps=10, save_every=1)
    good = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert good["step"] == 3 and all(torch.isfinite(v).all() for v in good["model"].values())


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    atomic_save(make_checkpoint("pretrain", model, Tokenizer.train(["ab"], vocab_size=270), {}, 2, {}),
                tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="non-finite weights.*mlp.c_fc.weight"):
        load_model(tmp_path / "ckpt.pt")


def test_a_second_run_on_the_same_out_is_refused_until_the_first_ends(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from nanotrain.checkpoint import claim_output; "
                               f"claim_output({str(tmp_path)!r}); print('held', flush=True); time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            run_loop(tmp_path)
        assert not (tmp_path / "metrics.jsonl").exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder releases the lock: nothing stale to clean up
        holder.wait()
    assert run_loop(tmp_path)["step"] == 4


def test_resuming_with_other_flags_is_refused_and_recovery_knobs_are_announced(tmp_path, capsys):
    run_loop(tmp_path, steps=4)
    with pytest.raises(CheckpointError, match="other flags \\(--seed 0 -> 1\\)"):
        run_loop(tmp_path, steps=6, resume=True, seed=1)
    with pytest.raises(CheckpointError, match="--batch-size 16 -> 8"):
        run_loop(tmp_path, steps=6, resume=True, batch_size=8)
    capsys.readouterr()
    # the same global batch in two micro-batches reads the same data: accepted silently, with the recovery knobs
    # (learning rate, steps) announced
    assert run_loop(tmp_path, steps=6, resume=True, lr=5e-4, log_every=3, batch_size=8, grad_accum=2)["step"] == 6
    out = capsys.readouterr().out
    assert "resuming from" in out and "changed flags: --lr 0.001 -> 0.0005, --steps 4 -> 6;" in out


def test_a_broken_or_foreign_resume_state_is_one_sentence(tmp_path):
    run_loop(tmp_path)
    blob = (tmp_path / "resume.pt").read_bytes()
    (tmp_path / "resume.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="resume.pt is not a readable resume state.*delete it to start over"):
        run_loop(tmp_path, resume=True, steps=6)
    torch.save({"step": 2, "model": {}}, tmp_path / "resume.pt")  # e.g. a checkpoint copied over it
    with pytest.raises(CheckpointError, match="not a nanotrain resume state"):
        run_loop(tmp_path, resume=True, steps=6)

    class Payload:  # a pickled object: weights_only refuses to run its code
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"step": 2, "model": Payload(), "optimizer": {}}, tmp_path / "resume.pt")
    with pytest.raises(CheckpointError, match="not a readable resume state"):
        run_loop(tmp_path, resume=True, steps=6)


def test_a_torn_last_metrics_line_is_dropped_and_a_bad_middle_line_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "loss": 1.2}\n{"step": 4, "lo')
    MetricsLog(path, resume_step=3)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [1, 2, 3]
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.2}\n')
    with pytest.raises(DataError, match="metrics.jsonl:2: malformed JSON"):
        MetricsLog(path, resume_step=3)


def test_a_full_disk_while_saving_is_one_sentence_and_leaves_no_temporary_file(tmp_path):
    """The write fails partway (a file-size limit stands in for a full disk: the same failing write(2)); the previous
    checkpoint must survive, the half-written temporary file must go, and the error must say what happened."""
    atomic_save({"w": torch.zeros(10)}, tmp_path / "ckpt.pt")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))
    try:
        with pytest.raises(CheckpointError, match="could not write .*ckpt.pt, with .* MiB free.*previous ckpt.pt is "
                                                  "unchanged"):
            atomic_save({"w": torch.zeros(100_000)}, tmp_path / "ckpt.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert not (tmp_path / "ckpt.pt.tmp").exists()
    assert torch.equal(torch.load(tmp_path / "ckpt.pt", weights_only=True)["w"], torch.zeros(10))
