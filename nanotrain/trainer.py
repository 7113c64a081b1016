"""The training loop every gradient-based stage shares (pretrain, SFT, reward model, DPO, KTO).

A stage supplies only what is its own: how to draw a batch (``get_batch(step, micro)``, a pure function of the step so
a resumed run sees the same data), how to turn a batch into a loss (``loss_fn``), how to evaluate, and what goes into
its checkpoint. Everything else lives here once:

- AdamW with weight decay on matrices only (no decay on norms, biases and embeddings), linear warmup then cosine
  decay to ``min_lr_ratio * lr``;
- gradient accumulation (DDP syncs only on the last micro-batch) and clipping of the global gradient norm;
- a NaN guard: a non-finite loss or gradient norm stops the run *before* the optimizer step, so the last checkpoint
  stays good;
- ``metrics.jsonl`` (one JSON object per logging or evaluation step) and a tqdm bar with loss, tokens/s and MFU;
- atomic checkpoints every ``save_every`` steps and at the end, plus ``resume.pt`` (weights, optimizer, step, the
  precision ``--dtype auto`` chose, the flags, the run's clock and token count) for ``--resume``, which reproduces the
  uninterrupted run exactly on a CPU, whole-run metrics included; resuming with flags that change what the run
  computes is refused, except the knobs for recovering from a divergence (learning rate, warmup, clipping, steps,
  dtype), which are announced;
- one run per output folder (``OUT/.lock``): a second run on the same ``--out`` is refused;
- for models too big for DDP's whole replica per GPU: ``--fsdp`` (weights, gradients and optimizer state sharded
  over the processes, nanotrain/fsdp.py) and ``--grad-checkpoint`` (activations recomputed in the backward pass).
"""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nanotrain.checkpoint import atomic_save, claim_output, load_resume, unwrap
from nanotrain.cli import check_counts, check_next, config_dict, flag
from nanotrain.errors import CheckpointError, DataError, NonFiniteLoss
from nanotrain.gpt import enable_grad_checkpoint
from nanotrain.runtime import Runtime, dtype_name, measure_matmul_peak, refuse_fp16_training


@dataclass
class TrainConfig:
    """Flags shared by every training script; each script subclasses this and changes defaults or adds its own."""
    out: str = flag("out/stage", "output folder: ckpt.pt, resume.pt, metrics.jsonl")
    device: str = flag("auto", "auto | cpu | cuda | mps")
    dtype: str = flag("auto", "auto (bf16 autocast where fast) | float32 | bfloat16 (float16 is refused: no loss "
                              "scaling)")
    steps: int = flag(1000, "optimizer steps")
    batch_size: int = flag(16, "sequences per micro-batch per process")
    grad_accum: int = flag(1, "micro-batches per optimizer step")
    lr: float = flag(1e-3, "peak learning rate")
    min_lr_ratio: float = flag(0.1, "final learning rate as a fraction of --lr (cosine decay)")
    warmup: int = flag(50, "linear warmup steps")
    weight_decay: float = flag(0.1, "AdamW weight decay on weight matrices")
    grad_clip: float = flag(1.0, "clip the global gradient norm to this (0: off)")
    eval_every: int = flag(100, "evaluate every this many steps (and at the end)")
    log_every: int = flag(10, "append to metrics.jsonl every this many steps")
    save_every: int = flag(200, "write ckpt.pt and resume.pt every this many steps (and at the end)")
    seed: int = flag(0, "random seed (weights and data order)")
    compile: bool = flag(False, "torch.compile the model")
    resume: bool = flag(False, "continue from OUT/resume.pt if it exists")
    time_limit: float = flag(0.0, "stop after this many seconds of training, saving and evaluating as at the last "
                                  "step (0: no limit; the learning-rate schedule still spans --steps)")
    fsdp: bool = flag(False, "shard weights, gradients and optimizer state over the torchrun processes (PyTorch "
                             "FSDP2) instead of a whole replica on each (DDP): for models DDP cannot hold")
    grad_checkpoint: bool = flag(False, "activation checkpointing: keep only each block's input and recompute the "
                                        "rest in the backward pass (less memory, about one more forward of compute)")

    def __post_init__(self):
        check_counts(self, "steps", "batch_size", "grad_accum", "eval_every", "log_every", "save_every")
        check_next(self, TrainConfig)


def make_optimizer(model, lr: float, weight_decay: float, betas=(0.9, 0.95), device_type: str = "cpu",
                   lr_scales: dict[str, float] | None = None):
    """AdamW (Loshchilov & Hutter 2019). Decay shrinks weights toward zero; that regularises matrices but would only
    distort the scale of LayerNorm gains, biases, and embedding rows, so those are left out. ``lr_scales`` gives the
    parameters under a name prefix their own learning rate, as a multiple of the schedule's (PPO's value model)."""
    scales = lr_scales or {}
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefix = next((k for k in scales if name.startswith(k)), "")
        decay = p.dim() >= 2 and "wte" not in name and "wpe" not in name
        groups.setdefault((prefix, decay), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": weight_decay if decay else 0.0, "prefix": prefix,
                               "lr_scale": scales.get(prefix, 1.0)} for (prefix, decay), ps in groups.items()],
                             lr=lr, betas=betas, fused=device_type == "cuda")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay from lr to min_lr_ratio * lr at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``. On resume, lines past the resumed step (written after
    the last checkpoint by the run that was killed) are dropped, so the file reads like one uninterrupted run; so is
    a half-written last line (the kill came during a write)."""

    def __init__(self, path, resume_step: int | None = None, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            lines = self.path.read_text(encoding="utf-8", errors="replace").split("\n")
            for i, ln in enumerate(lines, 1):
                if not ln.strip():
                    continue
                try:
                    rec = json.loads(ln)
                except json.JSONDecodeError as e:
                    if i == len(lines):  # no newline after it: torn by the kill
                        break
                    raise DataError(f"{self.path}:{i}: malformed JSON ({e.msg}); delete that line and resume "
                                    f"again") from None
                if rec.get("step", 0) <= resume_step:
                    kept.append(ln)
        self.path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


# Flags that may differ on --resume: they do not change what the run computes (evaluation flags, eval_*, neither;
# nor --batch-size and --grad-accum as long as the global batch, times the processes, stays the same) ...
RESUME_FREE = ("out", "resume", "device", "compile", "time_limit", "log_every", "eval_every", "save_every",
               "grad_checkpoint", "fsdp")
# ... and the knobs for recovering from a divergence, which do: allowed, and announced.
RESUME_ANNOUNCED = ("lr", "min_lr_ratio", "warmup", "weight_decay", "grad_clip", "steps", "dtype", "value_lr")


def start_run(cfg, rt: Runtime, map_location=None) -> dict | None:
    """What every training loop does first: claim the output folder (one run per --out) and, with --resume, load
    OUT/resume.pt and check that this run's flags are the resumed run's. Returns the resume state, or None."""
    out = Path(cfg.out)
    if rt.master:
        claim_output(out)
    path = out / "resume.pt"
    if not cfg.resume:
        return None
    if not path.exists():
        if rt.master:
            print(f"--resume: no {path} yet, starting from the beginning")
        return None
    state = load_resume(path, map_location or rt.device)
    check_resume_flags(state, cfg, rt, path)
    if rt.master:
        print(f"resuming from {path} at step {state['step']}")
    return state


def check_resume_flags(state: dict, cfg, rt: Runtime, path) -> None:
    """Refuse to resume with flags that change the run (--seed, --batch-size, the data, ...): the result would be
    neither run. The recovery knobs (RESUME_ANNOUNCED) may change, and the change is printed."""
    if state.get("fsdp", False) != getattr(cfg, "fsdp", False):  # the optimizer state is stored in another form
        written = "with" if state.get("fsdp", False) else "without"
        raise CheckpointError(f"{path} was written {written} --fsdp: resume it {written} --fsdp")
    old = dict(state.get("config") or {})
    if not old:
        return  # written before the flags were stored
    new = config_dict(cfg)
    old["dtype"], new["dtype"] = state.get("dtype", old.get("dtype")), dtype_name(rt.dtype)  # as resolved
    if all(k in old for k in ("batch_size", "grad_accum")) and (old["batch_size"] * old["grad_accum"] *
                                                                 state.get("world", 1) ==
                                                                 new["batch_size"] * new["grad_accum"] * rt.world):
        # the same global batch split otherwise over processes or micro-batches reads the same data stream
        old["batch_size"], old["grad_accum"] = new["batch_size"], new["grad_accum"]
    changed = {k: (old[k], new[k]) for k in sorted(set(old) & set(new))
               if old[k] != new[k] and k not in RESUME_FREE and not k.startswith("eval_")}
    fmt = lambda items: ", ".join(f"--{k.replace('_', '-')} {a!r} -> {b!r}" for k, (a, b) in items)
    refused = [(k, v) for k, v in changed.items() if k not in RESUME_ANNOUNCED]
    if refused:
        raise CheckpointError(f"{path} was written by a run with other flags ({fmt(refused)}): resume with the same "
                              f"flags, or start afresh with another --out")
    if changed and rt.master:
        print(f"resuming with changed flags: {fmt(changed.items())}; the run no longer repeats an uninterrupted one")


def run_record(cfg, rt: Runtime, time_s: float, tokens: int) -> dict:
    """What resume.pt holds besides weights and optimizer state: the flags and the precision the run trained with
    (checked and reused on --resume), and its clock and token count, so whole-run metrics survive a resume."""
    return {"config": config_dict(cfg), "dtype": dtype_name(rt.dtype), "world": rt.world, "time_s": time_s,
            "tokens": tokens}


def clip_gradients(params, max_norm: float, where: str) -> float:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping) and return it. A NaN or infinite norm stops
    the run before the optimizer step: a finite loss can still have an overflowing gradient, and one such step
    writes NaN into every weight, which the next checkpoint would save."""
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm or float("inf")))
    if not math.isfinite(norm):
        raise NonFiniteLoss(f"the gradient norm became {norm} {where}; stopped without updating the weights")
    return norm


def diverged_hint(out: Path) -> str:
    ckpt = out / "ckpt.pt"
    last = f"the last good checkpoint is {ckpt}" if ckpt.exists() else "no checkpoint was written yet"
    return f"{last} (use --resume with a lower --lr, or --dtype float32)"


def train_loop(rt: Runtime, cfg: TrainConfig, model, *, get_batch, loss_fn, checkpoint_fn, eval_fn=None,
               tokens_per_micro: int | None = None, flops_per_token: float | None = None) -> dict:
    """Run ``cfg.steps`` optimizer steps of ``loss_fn(model, get_batch(step, micro))``; returns the final metrics.

    get_batch(step, micro) -> batch          the micro-th micro-batch of this process at optimizer step ``step``
    loss_fn(model, batch) -> (loss, dict)     a scalar to minimise and floats to log
    eval_fn(model) -> dict                    held-out figures (model is the plain module, in eval mode)
    checkpoint_fn(model, step, metrics) -> dict   the stage's checkpoint (see checkpoint.make_checkpoint)
    """
    refuse_fp16_training(rt)
    out = Path(cfg.out)
    raw = model
    if cfg.grad_checkpoint:
        enable_grad_checkpoint(raw)
    start, resume_path = 0, out / "resume.pt"
    state = start_run(cfg, rt, "cpu" if cfg.fsdp else rt.device)
    if state:
        raw.load_state_dict(state["model"])
        start = state["step"]
    if cfg.fsdp:
        from nanotrain import fsdp  # torch.distributed's FSDP machinery, only when asked for

        trained = model = fsdp.shard(raw, rt)  # raw waits on the CPU; gather_into refreshes it
        opt = make_optimizer(trained, cfg.lr, cfg.weight_decay, device_type=rt.device.type)
        if state:
            fsdp.load_optimizer_state(trained, opt, state["optimizer"])
    else:
        trained = raw
        opt = make_optimizer(raw, cfg.lr, cfg.weight_decay, device_type=rt.device.type)
        if state:
            opt.load_state_dict(state["optimizer"])
        if rt.ddp:
            model = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)

    log = MetricsLog(out / "metrics.jsonl", resume_step=start if start else None, enabled=rt.master)
    peak = measure_matmul_peak(rt.device, rt.dtype) if (flops_per_token and rt.master) else None
    metrics: dict = {}
    # the whole run's clock and tokens: a resumed run continues the counts its resume.pt stopped at
    time_before, tokens_seen = (state.get("time_s", 0.0), state.get("tokens", 0)) if state else (0.0, 0)
    t_start, t_last, tok_last = time.perf_counter(), time.perf_counter(), tokens_seen
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not rt.master, dynamic_ncols=True,
               desc=out.name)
    model.train()
    for step in bar:
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        loss_sum, info_sum = 0.0, {}
        for micro in range(cfg.grad_accum):
            batch = get_batch(step, micro)
            sync = model.no_sync() if rt.ddp and not cfg.fsdp and micro < cfg.grad_accum - 1 else nullcontext()
            with sync:
                with rt.autocast():
                    loss, info = loss_fn(model, batch)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach().float()
            for k, v in info.items():
                info_sum[k] = info_sum.get(k, 0.0) + float(v) / cfg.grad_accum
        train_loss = float(rt.all_reduce_mean(loss_sum / cfg.grad_accum))
        if not math.isfinite(train_loss):
            # Stop before the optimizer step: the weights on disk are the last good ones.
            raise NonFiniteLoss(f"loss became {train_loss} at step {step + 1}; stopped without updating the weights;"
                                f" {diverged_hint(out)}")
        try:
            grad_norm = clip_gradients(trained.parameters(), cfg.grad_clip, f"at step {step + 1}")
        except NonFiniteLoss as e:
            raise NonFiniteLoss(f"{e}; {diverged_hint(out)}") from None
        opt.step()
        opt.zero_grad(set_to_none=True)

        done = step + 1
        out_of_time = cfg.time_limit > 0 and bool(rt.all_reduce_mean(  # every rank stops at the same step
            torch.tensor(float(time.perf_counter() - t_start > cfg.time_limit), device=rt.device)) > 0)
        last = done == cfg.steps or out_of_time
        evaluate = eval_fn is not None and (done % cfg.eval_every == 0 or last)
        save = done % cfg.save_every == 0 or last
        if cfg.fsdp and (evaluate or save):
            fsdp.gather_into(raw, trained)  # collective: every rank takes part, every rank's raw gets the weights
            if rt.master or last:
                raw.to(rt.device)  # for eval_fn and checkpoint_fn, which see the plain module
        if tokens_per_micro:
            tokens_seen += tokens_per_micro * cfg.grad_accum * rt.world
        if done % cfg.log_every == 0 or last:
            now = time.perf_counter()
            rec = {"step": done, "loss": train_loss, "lr": lr, "grad_norm": grad_norm, **info_sum}
            if tokens_per_micro:
                rec["tok_per_s"] = (tokens_seen - tok_last) / (now - t_last)
                if peak:
                    rec["mfu"] = flops_per_token * rec["tok_per_s"] / (peak * rt.world)
            t_last, tok_last = now, tokens_seen
            log.write(rec)
            bar.set_postfix({k: f"{rec[k]:.3g}" for k in ("loss", "tok_per_s", "mfu") if k in rec})
            metrics.update(train_loss=train_loss, **{k: rec[k] for k in ("tok_per_s", "mfu") if k in rec})
        if evaluate and rt.master:
            raw.eval()
            with torch.no_grad(), rt.autocast():
                ev = eval_fn(raw)
            raw.train()
            log.write({"step": done, **ev})
            metrics.update(ev)
            bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4g}" for k, v in ev.items()))
        opt_state = (fsdp.optimizer_state(trained, opt) if cfg.fsdp else opt.state_dict()) if save else None
        if rt.master and save:
            elapsed = time_before + time.perf_counter() - t_start
            metrics.update(step=done, time_s=elapsed, tokens=tokens_seen)
            if tokens_seen:
                metrics["tokens_per_s_avg"] = tokens_seen / elapsed
            if peak and last:
                # The peak is measured again at the end: on a shared machine the first measurement may have been
                # taken while other work was running; the larger one is the fairer denominator.
                peak = max(peak, measure_matmul_peak(rt.device, rt.dtype))
                metrics.update(mfu=flops_per_token * metrics["tokens_per_s_avg"] / (peak * rt.world),
                               matmul_peak_flops=peak)
            atomic_save({"step": done, "model": unwrap(raw).state_dict(), "optimizer": opt_state,
                         **run_record(cfg, rt, elapsed, tokens_seen), **({"fsdp": True} if cfg.fsdp else {})},
                        resume_path)
            atomic_save(checkpoint_fn(unwrap(raw), done, dict(metrics)), out / "ckpt.pt")
        if cfg.fsdp and (evaluate or save) and not last:
            raw.to("cpu")  # until the next evaluation or checkpoint, the GPU memory is the sharded copy's
        if out_of_time:
            if rt.master:
                bar.write(f"--time-limit {cfg.time_limit:g}s reached after step {done}")
            break
    bar.close()
    if cfg.fsdp:
        raw.to(rt.device)  # the caller's module, where it was, with the trained weights
    return metrics
