"""Process-group setup and the few collectives training needs (PyTorch DDP under torchrun).

``torchrun --nproc_per_node N ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`init_distributed`
then joins the group with gloo (CPU) or NCCL (CUDA). Without those variables everything here is
a no-op for one process, so the trainer has a single code path.

Who does what under DDP (see ``methods/step.py``/``trainer.py``):
- encoder gradients: averaged by ``DistributedDataParallel`` during backward;
- MAG gradients (computed outside DDP by the meta step): :func:`all_reduce_mean_`;
- memory-bank updates: features and indices of all ranks, :func:`all_gather_cat`, then every
  rank applies the same update, so the banks stay identical;
- files: rank 0 only;
- at the end of a run, :func:`check_ranks_in_sync` compares a digest of every rank's state.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.distributed as dist

from metaug_features.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands. ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """``run.device`` (``auto | cpu | cuda | cuda:N``) -> a torch device: "auto" is CUDA (this
    process's local GPU) when present, else CPU; "cuda" under torchrun means ``cuda:<local_rank>``.
    A malformed spec or a GPU the machine does not have is a MetAugError
    (:func:`metaug_features.device.resolve_device`)."""
    device = resolve_device(pref)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def init_distributed(device_pref: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = pick_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, local_world, device)


def cleanup(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_gather_cat(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate equally shaped tensors of all ranks along dim 0, in rank order."""
    if not ctx.distributed:
        return t
    parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean_(tensors: Sequence[torch.Tensor], ctx: DistContext) -> None:
    """Average tensors over ranks in place, with one flat all-reduce (one message, not one per
    parameter)."""
    if not ctx.distributed or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat.div_(ctx.world_size)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def broadcast_(t: torch.Tensor, ctx: DistContext, src: int = 0) -> torch.Tensor:
    if ctx.distributed:
        dist.broadcast(t, src)
    return t


def any_rank(flag: bool | torch.Tensor, ctx: DistContext) -> bool:
    """True if ``flag`` is true on any rank. A tensor flag costs a host sync, and under DDP
    every call is a collective: call it at log / checkpoint steps, or with a Python bool."""
    if not ctx.distributed:
        return bool(flag)
    t = flag.detach().to(ctx.device, torch.int32).reshape(1) if isinstance(flag, torch.Tensor) \
        else torch.tensor([int(flag)], dtype=torch.int32, device=ctx.device)
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def default_num_threads(ctx: DistContext) -> int:
    """CPU threads per process: the cores this process may use, shared by the local ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(ctx.local_world_size, 1))


def tensors_digest(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 of the bytes of ``tensors`` (in order, copied to the CPU)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_ranks_in_sync(tensors: Iterable[torch.Tensor], ctx: DistContext) -> list[str]:
    """Digests (:func:`tensors_digest`) of ``tensors`` on all ranks, in rank order; raises if the
    ranks have drifted apart. A collective: every rank must call it (a no-op list of one digest
    without a process group)."""
    mine = tensors_digest(tensors)
    if not ctx.distributed:
        return [mine]
    digests: list[str] = [""] * ctx.world_size
    dist.all_gather_object(digests, mine)
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP ranks are out of sync (state digests {digests}); this is a bug, please report it")
    return digests
