"""Process group setup for data-parallel training under `torchrun` (one process a device).

Without torchrun's environment (WORLD_SIZE unset or 1) everything runs in one process and no
process group is created, so the same recipe is a plain single-GPU or CPU script.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from bitexport.errors import EnvironmentProblem

        raise EnvironmentProblem("--device cuda was asked for but PyTorch sees no CUDA GPU; pass --device cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def setup(requested_device: str) -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local)
    if world > 1 and not dist.is_initialized():
        # NCCL between GPUs; gloo lets the same code run (and be tested) on CPUs. Naming the
        # device binds NCCL's communicator to it instead of guessing it from the rank.
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return DistContext(rank, world, local, device)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def gather_strings(ctx: DistContext, value: str) -> list[str]:
    """`value` from every rank, in rank order (a one-element list when not distributed)."""
    if not ctx.distributed:
        return [value]
    out: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return [str(v) for v in out]


def tensors_sha256(tensors: list[torch.Tensor]) -> str:
    """Digest of the exact bytes of `tensors`: equal digests mean bit-identical values."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
