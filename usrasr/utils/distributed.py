"""Multi-process runs with torch.distributed, as started by ``torchrun``.

``torchrun --nproc_per_node N -m usrasr train ...`` starts N copies of the
command with WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set;
:func:`process_group` joins them into one process group (gloo on CPU, NCCL on
CUDA with one GPU per local rank). Without those variables, or with one
process, every helper here behaves as the single process it is.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# The other ranks wait in a collective while rank 0 runs the single-process
# stages (units, seq-CE, decoding, scoring), which take hours on a large
# corpus: far beyond the defaults (30 minutes for gloo, 10 for NCCL).
WAIT_TIMEOUT = timedelta(hours=12)


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if _initialized() else 1


def process_rank() -> int:
    return dist.get_rank() if _initialized() else 0


def is_main_process() -> bool:
    """Rank 0, the one process that writes files and logs progress."""
    return process_rank() == 0


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the processes torchrun started, if it started more than one, for the block.

    ``device`` is where the run computes: on CUDA, each process takes the GPU
    of its LOCAL_RANK (so ``cuda`` means that GPU from here on) and talks
    NCCL; on CPU, gloo.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=WAIT_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s share of one global batch: every ``world_size``-th item from
    position ``rank``. The shares are disjoint, cover the batch and differ in size by
    at most one."""
    return list(items[rank::world_size])


def barrier() -> None:
    """Wait until every process gets here."""
    if world_size() > 1:
        dist.barrier()


def share_from_main(obj: Any = None) -> Any:
    """Rank 0's ``obj`` on every process (a picklable object; itself with one process)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list:
    """``obj`` of every process, in rank order (``[obj]`` with one process)."""
    if world_size() == 1:
        return [obj]
    objects: list = [None] * world_size()
    dist.all_gather_object(objects, obj)
    return objects


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all processes (``value`` itself with one process)."""
    if world_size() == 1:
        return value
    total = value.clone()
    dist.all_reduce(total)  # gloo has no AVG: sum, then divide
    return total / world_size()
