"""How many cores archspace's processes spread their work over (no torch here).

One rule for every place that picks a thread count or a number of processes: a limit the user
or a scheduler set (``OMP_NUM_THREADS``; SLURM and most launchers set it to the job's share),
else the CPUs this process may run on (its affinity: what ``taskset`` or a cgroup cpuset
leaves it, which ``os.cpu_count()`` ignores), else every core.
"""

from __future__ import annotations

import os

THREADS_ENV = "OMP_NUM_THREADS"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), else every core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def thread_budget() -> int:
    """The intra-op threads this process may use: ``OMP_NUM_THREADS`` when it is set to a
    positive count (its first level, for a nested ``4,2``), else :func:`usable_cpus`. What
    archspace gives each worker process it starts (``--workers``, ``--nproc``) is passed on
    this way, so a worker's own share is its budget."""
    first = os.environ.get(THREADS_ENV, "").split(",")[0].strip()
    if first.isdigit() and int(first) > 0:
        return int(first)
    return usable_cpus()


def share(parts: int) -> int:
    """Threads for each of ``parts`` processes that split this process's budget (at least 1)."""
    return max(1, thread_budget() // max(1, parts))
