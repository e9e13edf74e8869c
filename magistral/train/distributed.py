"""Data parallelism for the trainers: `torchrun --nproc-per-node N magistral train ...` starts N
ranks; each draws its own batches and the gradients are averaged before every optimizer step.

By hand rather than DistributedDataParallel because the trainers call the model through
`embed` and the engine as well as `forward`, and DDP only synchronises what `forward` saw."""

from __future__ import annotations

import os

import torch
from torch import nn


def distributed() -> tuple[int, int]:
    """(this process's rank, the number of ranks); joins the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank() if world > 1 else 0), world


def average_gradients(model: nn.Module, world: int) -> None:
    if world == 1:
        return
    for param in model.parameters():
        if param.grad is None:  # an expert no token of this rank reached: others may have
            param.grad = torch.zeros_like(param)
        torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
        param.grad /= world
