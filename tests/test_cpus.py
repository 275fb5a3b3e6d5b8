"""The thread budget every training command splits: OMP_NUM_THREADS, else the CPU affinity."""

from __future__ import annotations

import os

import pytest

from archspace._cpus import share, thread_budget, usable_cpus


def test_usable_cpus_are_the_affinity_set_not_the_machine(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS")
    before = os.sched_getaffinity(0)
    assert usable_cpus() == thread_budget() == len(before)
    os.sched_setaffinity(0, {min(before)})  # pinned to one core (taskset, a cgroup): one thread, not the machine's
    try:
        assert usable_cpus() == thread_budget() == share(1) == 1
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.parametrize("value, budget", [("4", 4), (" 3 ", 3), ("4,2", 4), ("0", None), ("many", None), ("", None)])
def test_the_budget_is_omp_num_threads_when_it_is_a_positive_count(monkeypatch, value, budget):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert thread_budget() == (budget if budget is not None else usable_cpus())


def test_shares_split_the_budget_and_never_reach_zero(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert [share(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert share(1) == usable_cpus()
