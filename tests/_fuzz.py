"""A seeded spec mutator over every preset, and a batch runner that puts mutated spec files
through ``archspace build --format json`` in one process, for the fuzz test and
``benchmarks/hostile_inputs.py``.

Imported as ``_fuzz`` (pytest puts ``tests/`` on ``sys.path``). Run as a script
(``python tests/_fuzz.py [--compile-every N] FILE...``) it builds each file and prints one JSON line per file:
``{"file", "code", "seconds", "traceback", "lines"}``, then ``{"max_rss": bytes}``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HOSTILE_VALUES: list[Any] = [
    0, -1, 1, 2, 3, 7, 64, 10**9, 10**30, 2**63, 1e308, float("inf"), float("-inf"), float("nan"), -0.5, 0.5,
    1e-9, True, False, None, "", "x" * 300, "C-T-T-T", "Q-T-T-T", "\x1b[31m\x07", [], {}, [1, 2], {"a": 1},
    [[[[[1]]]]], "extends", "../../../../etc/passwd",
]


class RunsCode:
    """Pickled, it runs ``touch PWNED`` when loaded: what a crafted data file would do."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def cifar_folder(root: Path, batch) -> Path:
    """A CIFAR-10 folder whose every batch file is ``batch`` pickled."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def mutated_specs(n: int, seed: int = 0) -> list[str]:
    """``n`` mutated presets as YAML text (every preset in turn, depths cut to 1 so that the
    legal ones compile fast): hostile values at random paths, dropped keys, unknown keys,
    repeated list items, and text damage (cut, doubled or deeply nested lines)."""
    from archspace.spec import load_raw, preset_index

    rng = random.Random(seed)
    bases = []
    for path in preset_index().values():
        data = load_raw(path)
        for stage in data.get("stages") or []:
            stage["depth"] = 1
        bases.append(data)
    out = []
    for i in range(n):
        data = json.loads(json.dumps(bases[i % len(bases)]))
        nearby = rng.random() < 0.35  # only small numeric changes: many stay legal and must build
        for _ in range(rng.randint(1, 3)):
            _mutate(data, rng, nearby)
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=False)
        roll = rng.random()
        if roll < 0.08:
            text = text[: rng.randrange(len(text))]
        elif roll < 0.12:
            lines = text.splitlines(keepends=True)
            j = rng.randrange(len(lines))
            text = "".join(lines[:j] + lines[j:j + 1] * rng.randint(2, 50) + lines[j:])
        elif roll < 0.16:
            text += "junk: " + "[" * rng.choice([70, 1000, 20000]) + "\n"
        out.append(text)
    return out


STAGE_FIELDS = ("depth", "width", "stride", "mlp_ratio", "expansion", "kernel", "heads", "head_size",
                "layer_scale", "se_ratio", "groups", "class_token")
"""Stage fields, most of them left at their defaults by the presets: set, not only changed."""


def _mutate(data: dict, rng: random.Random, nearby: bool = False) -> None:
    """Change one place of ``data``: walk down a random path, then act on the last container;
    or set a stage field the preset leaves at its default."""
    stages = data.get("stages")
    if not nearby and isinstance(stages, list) and stages and isinstance(stages[0], dict) and rng.random() < 0.3:
        rng.choice([s for s in stages if isinstance(s, dict)] or [{}])[rng.choice(STAGE_FIELDS)] = \
            rng.choice(HOSTILE_VALUES)
        return
    node: Any = data
    key: Any = rng.choice(list(data)) if data else None
    for _ in range(rng.randint(1, 4)):
        child = node[key] if key is not None else None
        if not (isinstance(child, (dict, list)) and child):
            break
        node, key = child, rng.choice(list(child) if isinstance(child, dict) else range(len(child)))
    if key is None:
        return
    value = node[key]
    if nearby:
        if isinstance(value, int) and not isinstance(value, bool):
            node[key] = rng.choice([value * 2, max(1, value // 2), value + 1, value + 32])
        return
    roll = rng.random()
    if roll < 0.1 and isinstance(node, dict):
        node.pop(key, None)
    elif roll < 0.2 and isinstance(node, dict):
        node[f"unknown_{rng.randrange(99)}"] = rng.choice(HOSTILE_VALUES)
    elif roll < 0.3 and isinstance(node, list) and node:
        node.extend(node[: rng.randint(1, 3)] * rng.randint(1, 40))
    elif roll < 0.7 and isinstance(value, (int, float)) and not isinstance(value, bool):
        node[key] = rng.choice([value * 2, value // 2 if isinstance(value, int) else value / 2, value + 1,
                                value * 10**3, value * 10**6, -value, 0])
    else:
        node[key] = rng.choice(HOSTILE_VALUES)


def build_files(files: list[str], compile_every: int = 1) -> list[dict[str, Any]]:
    """``archspace build FILE --format json`` on each file, in this process (the Typer app);
    every ``compile_every``-th file also compiles its module, the others pass ``--no-compile``
    (checks and analytic cost only: compiling a legal network is the slow part)."""
    from typer.testing import CliRunner

    from archspace.cli.app import app

    runner = CliRunner()
    rows = []
    for i, name in enumerate(files):
        start = time.perf_counter()
        args = ["build", name, "--format", "json"] + ([] if i % compile_every == 0 else ["--no-compile"])
        result = runner.invoke(app, args, catch_exceptions=True)
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        stderr = result.stderr
        rows.append({"file": name, "code": "crash" if crashed else result.exit_code,
                     "seconds": round(time.perf_counter() - start, 3),
                     "traceback": crashed or "Traceback" in stderr or "internal error" in stderr,
                     "lines": len([line for line in stderr.splitlines() if line.strip()]),
                     "first": stderr.strip().splitlines()[0][:200] if stderr.strip() else ""})
    return rows


def main(argv: list[str]) -> None:
    import resource

    every = 1
    if argv[:1] == ["--compile-every"]:
        every, argv = int(argv[1]), argv[2:]
    for row in build_files(argv, every):
        print(json.dumps(row), flush=True)
    print(json.dumps({"max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1:])
