"""One trial over several processes (data parallel): ranks, the process group, collectives.

``archspace train --nproc N`` starts N processes with ``torch.distributed.run`` (torchrun);
each finds its rank in the environment torchrun sets. The backend is torch's default for the
device (gloo on the CPU, nccl on CUDA), so the same code runs here and on GPUs. Outside
torchrun there is one rank and every helper is a no-op.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .ranks import Ranks, ranks_from_env


def start(ranks: Ranks, device: torch.device) -> None:
    """Join the process group (once per process)."""
    if ranks.parallel and not dist.is_initialized():
        dist.init_process_group(dist.get_default_backend_for_device(device), rank=ranks.rank, world_size=ranks.world)


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over every rank (as is with one rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["Ranks", "barrier", "from_main", "gather", "ranks_from_env", "start", "stop", "sum_over_ranks"]
