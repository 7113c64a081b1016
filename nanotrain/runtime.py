"""Where a stage runs: device, precision, seeding, and PyTorch DDP when launched by torchrun.

    rt = setup_runtime(device="auto", dtype="auto", seed=0)
    with rt.autocast():
        loss = model(x, y)[1]

``device="auto"`` picks cuda, then mps, then cpu. ``dtype="auto"`` picks bf16 autocast on CUDA GPUs, and on CPUs where a
quick measurement shows bf16 matmuls clearly faster than fp32 (native AVX512-BF16 / AMX alone does not guarantee it),
else fp32. Under torchrun
(the RANK variable is set) the process group is NCCL on GPUs and gloo on CPUs; nothing home-made in between.
"""
from __future__ import annotations

import functools
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from nanotrain.errors import ConfigError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = plain fp32
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def ddp(self) -> bool:
        return self.world > 1

    @property
    def master(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def all_reduce_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Average a tensor over ranks (identity on one process)."""
        if self.ddp:
            x = x.clone()
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
            x /= self.world
        return x


def precision(autocast, device):
    """The context to run a forward pass in: ``autocast()`` (a Runtime's autocast, passed down as a callable), or with
    None plain fp32, which also switches off any autocast region the caller is inside."""
    return autocast() if autocast is not None else torch.autocast(torch.device(device).type, enabled=False)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (AVX512-BF16 or AMX); without them bf16 autocast is emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


@functools.cache
def cpu_bf16_is_faster() -> bool:
    """Whether bf16 autocast pays on this CPU. Native bf16 instructions (AVX512-BF16, AMX) are necessary but not
    sufficient: on some such CPUs PyTorch's bf16 matmul still runs at half the fp32 rate, and autocast adds casts on
    top. So it is measured, once per process (~0.2 s)."""
    if not cpu_has_bf16():
        return False
    cpu = torch.device("cpu")
    return measure_matmul_peak(cpu, torch.bfloat16, 512, 0.1) > 1.2 * measure_matmul_peak(cpu, torch.float32, 512, 0.1)


def dtype_name(amp: torch.dtype | None) -> str:
    """The --dtype value that gives a Runtime's autocast dtype (None: plain fp32)."""
    return {None: "float32", torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[amp]


def resumed_dtype(resume_dir) -> str | None:
    """The precision a run being resumed was trained in (trainer stores it in resume.pt), or None if unknown. A
    memory-mapped peek; a broken file is left to the loop's own one-sentence error."""
    path = Path(resume_dir) / "resume.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("dtype")
    except Exception:
        return None


def setup_runtime(device: str = "auto", dtype: str = "auto", seed: int = 0, resume_dir=None) -> Runtime:
    """``resume_dir``: the output folder of a run being resumed (--resume). With ``dtype="auto"`` its stored precision
    is reused instead of being chosen again: the choice is a timing, and a resumed run that switched between bf16
    and fp32 would no longer repeat the uninterrupted one."""
    if dtype == "auto" and resume_dir is not None:
        dtype = resumed_dtype(resume_dir) or "auto"
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ConfigError(f"--device must be auto, cpu, cuda (or cuda:N) or mps, not {device!r}")
    visible = torch.cuda.is_available() if device.startswith("cuda") else torch.backends.mps.is_available()
    if device != "cpu" and not visible:
        raise ConfigError(f"--device {device}: no such device is visible here (auto picks what there is)")
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if "RANK" in os.environ and not dist.is_initialized():  # torchrun, even with one process (--fsdp needs a group)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cpu":  # share the cores between the processes instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    if dtype == "auto":
        dtype = auto_dtype(dev)
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be auto or one of {sorted(DTYPES)}, not {dtype!r}")
    amp = None if DTYPES[dtype] == torch.float32 else DTYPES[dtype]
    torch.manual_seed(seed)  # the same on every rank: DDP starts every replica from identical weights
    return Runtime(dev, amp, rank, world, local_rank)


def auto_dtype(device) -> str:
    """What ``--dtype auto`` means on ``device``: bfloat16 on a CUDA GPU that has it, and on a CPU where bf16 matmuls
    measure clearly faster than fp32 (cpu_bf16_is_faster), else float32. A timing: pipeline.py takes it once and
    passes the answer to every stage, so all of a run's stages compute in the same precision."""
    dev = torch.device(device)
    bf16 = (dev.type == "cuda" and torch.cuda.is_bf16_supported()) or (dev.type == "cpu" and cpu_bf16_is_faster())
    return "bfloat16" if bf16 else "float32"


def refuse_fp16_training(rt: Runtime) -> None:
    """Training loops call this first. fp16 keeps 5 exponent bits: gradients below ~6e-8 round to zero unless the loss
    is scaled up first (Micikevicius et al. 2018, "Mixed Precision Training"). nanotrain does not scale the loss;
    bf16 has fp32's exponent range and needs no scaling, so fp16 is refused rather than left to train badly."""
    if rt.dtype == torch.float16:
        raise ConfigError("--dtype float16 cannot train here: without loss scaling, which nanotrain does not do, fp16 "
                          "gradients underflow to zero; use --dtype bfloat16 (fp32's range) or float32")


def teardown(rt: Runtime) -> None:
    """Leave the process group together: rank 0 still evaluates and writes after the others finish, and no rank leaves
    while another may still be in a collective. The process then ends in ``errors.run_script``, without Python's
    shutdown, which gloo's worker threads can abort (its docstring says how)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def measure_matmul_peak(device: torch.device, dtype: torch.dtype | None, n: int | None = None,
                        seconds: float = 0.5):
    """FLOP/s of a square n x n matmul in ``dtype`` on this device, measured now: the denominator of MFU.

    On a CPU, published peaks say little (turbo, cores shared with other work), so the peak is what this machine
    does at this moment on the operation that dominates training. n defaults to 1024 on a CPU and 8192 on a GPU,
    where a 1024 matmul is too small to keep every multiprocessor's tensor cores busy and would understate the peak
    (and so overstate MFU).
    """
    dtype = dtype or torch.float32
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    iters, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        iters += 1
    sync()
    return 2 * n ** 3 * iters / (time.perf_counter() - t0)
