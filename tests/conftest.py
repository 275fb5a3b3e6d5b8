"""Shared fixtures: a CLI runner on the Typer app, and a helper writing spec files."""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

import _postgres
from archspace.cli.app import app


@dataclass
class CliResult:
    """What one CLI invocation left behind."""

    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    @property
    def err_lines(self) -> list[str]:
        """Non-empty lines written to stderr."""
        return [line for line in self.stderr.splitlines() if line.strip()]

    def json(self):
        return json.loads(self.stdout)


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    """Write dedented YAML ``text`` to ``tmp_path / name`` and return the path."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def cli():
    """Call ``cli("build", "coatnet-0", ...)`` -> :class:`CliResult` (stdout and stderr separate)."""
    runner = CliRunner()

    def invoke(*args: str | Path) -> CliResult:
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
        exc = result.exception if not isinstance(result.exception, SystemExit) else None
        return CliResult(result.exit_code, result.stdout, result.stderr, exc)

    return invoke


@pytest.fixture
def spec_file(tmp_path):
    """``spec_file(text, name="spec.yaml")`` writes a spec under ``tmp_path``."""

    def make(text: str, name: str = "spec.yaml") -> Path:
        return write_spec(tmp_path, text, name)

    return make


def pytest_configure(config):
    # One intra-op thread per test process: the suite runs on two xdist workers (2 cores). The
    # searches and ranks the tests start (in process or not) take archspace's thread budget,
    # OMP_NUM_THREADS, unless a test sets another.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server's URL (see tests/_postgres.py)."""
    yield from _postgres.server()
