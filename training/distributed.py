"""torch.distributed glue for `torchrun`: a no-op single process unless WORLD_SIZE > 1.

Features are gathered across ranks so that every rank computes the loss of the whole global
batch, and the (small) LoRA gradients are summed with one all-reduce per optimiser step, which
makes a W-rank run compute the same update as one process with the same global batch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world, local)


def device_for(info: DistInfo, device: str) -> str:
    """Pin each rank to its own GPU when the device is CUDA."""
    if info.enabled and device.startswith("cuda"):
        if info.local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {info.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                             "start at most one process per GPU")
        torch.cuda.set_device(info.local_rank)
        return f"cuda:{info.local_rank}"
    return device


def barrier(info: DistInfo) -> None:
    """Wait for every rank."""
    if info.enabled:
        dist.barrier()


def gather_padded(x: torch.Tensor, rows: int, info: DistInfo) -> tuple[torch.Tensor, list[int]]:
    """All ranks' rows (each padded to `rows`) concatenated in rank order, this rank's rows with grad."""
    if not info.enabled:
        return x, [x.shape[0]]
    counts = gather_objects(x.shape[0], info)
    padded = torch.zeros((rows, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    parts = [p[:c] for p, c in zip(parts, counts)]
    parts[info.rank] = x  # autograd flows through this rank's own features only
    return torch.cat(parts), counts


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's picklable object, in rank order."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def sum_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Sum gradients over ranks with one flat all-reduce (missing grads count as zero)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when the flag is set on any rank (a stop request must stop all of them together)."""
    if not info.enabled:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_counts(values: dict[str, int], info: DistInfo) -> dict[str, int]:
    """Sum integer counters over ranks."""
    if not info.enabled:
        return dict(values)
    totals: dict[str, int] = {}
    for part in gather_objects(values, info):
        for key, value in part.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
