"""Fully sharded data parallelism: training a model whose weights, gradients and AdamW moments do not fit one GPU.

DDP keeps a whole replica on every process: about 16 bytes per parameter (fp32 weight, gradient and AdamW's two
moments) before any activation. FSDP (ZeRO stage 3, Rajbhandari et al. 2020; PyTorch FSDP, Zhao et al. 2023) keeps
1/N of each on each of N processes: before a block runs forward or backward, its weights are all-gathered, used and
freed again; its gradients are reduce-scattered, so each process updates only its own slice. This file wraps the
model in PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``, torch >= 2.6): each transformer block is one
all-gather unit, and the root (embeddings, final LayerNorm, the tied output layer) is the last one. The tied
embedding/output matrix is one parameter of the root, so it is gathered once and its two gradients add up as usual.

The stage scripts keep working with their plain module (``raw``): ``trainer.train_loop`` trains a sharded copy
(``shard``), keeps ``raw`` on the CPU meanwhile, and copies the gathered weights back into it (``gather_into``)
whenever it evaluates, writes a checkpoint, or finishes. Checkpoints are therefore the ordinary full state dict that
``torch.load(weights_only=True)`` reads; ``resume.pt`` also holds the optimizer state, gathered the same way (keyed
by parameter name) and resharded on ``--resume --fsdp``.

    torchrun --nproc_per_node=8 train_pretrain.py --preset gpt2-medium --fsdp --grad-checkpoint
"""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from nanotrain.errors import NanotrainError
from nanotrain.gpt import Block
from nanotrain.runtime import Runtime


def shard(raw: nn.Module, rt: Runtime) -> nn.Module:
    """A copy of ``raw`` sharded over the processes: every GPT block, then the root, is ``fully_shard``-ed.

    ``raw`` itself moves to the CPU first (the sharded copy is what trains; ``gather_into`` refreshes ``raw``), and
    the copy is built there, so the GPU never holds more than one block of full weights at a time: fully_shard moves
    each unit's parameters to the device as it shards them.
    """
    if not dist.is_initialized():
        raise NanotrainError("--fsdp shards the model over the processes that torchrun starts: launch the script "
                             "with torchrun --nproc_per_node=N (N >= 1)")
    mesh = init_device_mesh(rt.device.type, (rt.world,))
    raw.to("cpu")
    sharded = copy.deepcopy(raw)
    for module in sharded.modules():  # fully_shard splits dimension 0, so a scalar (the reward model's likelihood
        for name, p in list(module.named_parameters(recurse=False)):  # weight) trains as a 1-element vector here,
            if p.dim() == 0:  # which broadcasts the same; gather_into gives it its shape back
                setattr(module, name, nn.Parameter(p.detach().reshape(1), requires_grad=p.requires_grad))
    blocks = [m for m in sharded.modules() if isinstance(m, Block)]
    if not blocks:
        raise NanotrainError(f"--fsdp found no transformer block to shard in {type(raw).__name__}")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    return sharded


@torch.no_grad()
def gather_into(raw: nn.Module, sharded: nn.Module) -> None:
    """Copy the sharded model's current weights into ``raw`` on every process, one tensor at a time (all-gathered on
    the device, then copied into raw's CPU memory), so no process ever holds a second full copy on its GPU.
    Collective: every rank calls it."""
    target = raw.state_dict()  # tensors sharing raw's storage
    source = sharded.state_dict()  # the same names (it is a copy of raw), as DTensors sharded over the processes
    assert source.keys() == target.keys(), sorted(source.keys() ^ target.keys())
    for name, value in source.items():
        full = value.full_tensor() if isinstance(value, DTensor) else value
        target[name].copy_(full.reshape(target[name].shape))  # a scalar trained as a 1-element vector (shard)


def optimizer_state(sharded: nn.Module, opt) -> dict:
    """The optimizer's full state, keyed by parameter name, on rank 0 (in CPU memory); {} elsewhere. Collective."""
    return get_optimizer_state_dict(sharded, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(sharded: nn.Module, opt, state: dict) -> None:
    """Load a state written by ``optimizer_state`` (every rank passes the whole of it; each keeps its slice)."""
    set_optimizer_state_dict(sharded, opt, state, options=StateDictOptions(full_state_dict=True))
