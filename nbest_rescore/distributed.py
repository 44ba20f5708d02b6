"""torchrun helpers: process group set-up from environment variables and small collectives.

Every helper also works in a single plain process (no torchrun): rank 0 of a world of 1.
Backend: nccl for CUDA devices, gloo for CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from nbest_rescore.errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when torchrun (or an equivalent launcher) set the rendezvous environment."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: str = "cpu", *, timeout_s: float = 7200.0) -> DistInfo:
    """Join the process group described by torchrun's env vars; a world of 1 without them.

    Safe to call when a group already exists (returns its description).
    """
    if not launched_by_torchrun():
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.device(device).type == "cuda"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def resolve_device(device: str) -> str:
    """`auto` is CUDA when torch sees a GPU, else the CPU; other names are returned unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device!r}: expected auto, cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: this torch sees no CUDA device (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif dev.type != "cpu":
        raise InputError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    return device


def teardown() -> None:
    """Destroy the process group if one is active."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[DistInfo]:
    """`with process_group(device) as info:` joins the group and always tears it down."""
    owned = not (dist.is_available() and dist.is_initialized())
    info = init_from_env(device)
    try:
        yield info
    finally:
        if owned:
            teardown()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if active() else 0


def get_world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place (no-op in a single process); returns it."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sum_floats(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum a few Python numbers over ranks (float64, so counts stay exact)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    return [float(v) for v in all_reduce_sum(t).cpu().tolist()]


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank `src`'s `obj` on every rank (picklable objects)."""
    if not active():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[no-any-return]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's `obj`, indexed by rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
