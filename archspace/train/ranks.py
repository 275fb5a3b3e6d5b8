"""A process's place in a data-parallel run, read from the environment torchrun sets: no torch
needed (the CLI reads it before it checks its input, which never waits for torch)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def ranks_from_env() -> Ranks:
    """The ranks torchrun set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or a single process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return Ranks()
    return Ranks(rank, world, local) if world > 1 else Ranks()
