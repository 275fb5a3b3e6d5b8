"""Hostile inputs: run crafted bad inputs through the command line and count the exit codes.

Every case is a real ``archspace`` command run in its own process, in a fresh folder,
under a memory limit (``RLIMIT_AS``) and a timeout, so that no case can take the machine
down. A case passes when it exits 2 (bad input, refused) with one line per problem and
no traceback, or 0 where the input is legal. Categories:

* ``spec``      malformed, oversized and deeply nested spec files, absurd values
* ``options``   bad command-line options (``--seed``, ``--size``, ``--mixup``, ``--set``)
* ``study``     bad study files (sampler, distributions, choices, storage, recipe)
* ``training``  bad training inputs (crafted CIFAR-10 pickles, damaged checkpoints, resume)
* ``report``    report inputs that must not touch user files
* ``fuzz``      mutated presets through ``build --format json`` (``--fuzz N``, see ``tests/_fuzz.py``)

Besides the exit code, each case records whether its stderr holds a traceback, whether a
crafted file ran code (``pwned``), and which files that existed before the command it
changed or removed (``touched``: a bad input must leave the user's files alone).

Usage::

    python benchmarks/hostile_inputs.py                  # table of exit codes per category
    python benchmarks/hostile_inputs.py --json --fuzz 300
    python benchmarks/hostile_inputs.py --only spec -v   # each case and its exit code
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _fuzz import RunsCode, cifar_folder, mutated_specs  # noqa: E402 - the suite's hostile inputs, shared
MEMORY_LIMIT = 6 * 2**30
TIMEOUT_S = 120
TINY = "name: tiny\ninput: {size: 32}\nnum_classes: 10\nstem: {kind: conv, channels: [8]}\n" \
       "stages: [{block: mbconv, depth: 1, width: 16}]\n"
STUDY = ("name: s\nspace:\n  base: coatnet-0\n  set:\n    input.size: 32\n    stages[*].depth: 1\n"
         "    stem.channels: [8, 8]\n  choices:\n    %s\ntrain: {data: synthetic, epochs: 1, batch_size: 8}\n"
         "sampler: {kind: random, seed: %s}\ntrials: 2\n")


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def archspace(args: list[str], cwd: Path, timeout: float = TIMEOUT_S) -> dict:
    """Run ``archspace ARGS`` in ``cwd`` under the limits: exit code, stderr lines, seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "archspace.cli.app", *args], cwd=cwd, env=env,
                              capture_output=True, timeout=timeout, preexec_fn=_limit)
        code, stderr = proc.returncode, proc.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        code, stderr = "timeout", (exc.stderr or b"").decode(errors="replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    return {"code": code, "lines": len(lines), "traceback": "Traceback" in stderr,
            "seconds": round(time.monotonic() - start, 1), "first": lines[0][:160] if lines else ""}


def _tiny_run(d: Path, *extra: str) -> Path:
    (d / "tiny.yaml").write_text(TINY)
    archspace(["train", "tiny.yaml", "--data", "synthetic", "--epochs", "1", "--batch-size", "16",
               "--out", "run", *extra], d)
    return d / "run"


def _spec(text: str | bytes) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        path = d / "spec.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["build", "spec.yaml", "-f", "json"]
    return setup


def _study(choices: str, seed: str = "0", extra: str = "", *args: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "study.yaml").write_text(STUDY % (choices, seed) + extra)
        return ["search", "study.yaml", *args]
    return setup


def _study_edit(old: str, new: str, *args: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "study.yaml").write_text((STUDY % ("train.lr: [0.001]", "0")).replace(old, new))
        return ["search", "study.yaml", *args]
    return setup


def _extends_chain(d: Path) -> list[str]:
    for i in range(400):
        (d / f"s{i}.yaml").write_text(f"extends: s{i + 1}.yaml\n")
    (d / "s400.yaml").write_text(TINY)
    return ["build", "s0.yaml", "-f", "json"]


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},"
              f"*a{i - 1},*a{i - 1}]" for i in range(1, levels)]
    return "\n".join(lines)


def _resume_other_optimizer(d: Path) -> list[str]:
    _tiny_run(d)
    return ["train", "tiny.yaml", "--data", "synthetic", "--epochs", "2", "--batch-size", "16", "--out", "run",
            "--resume", "--optimizer", "sgd"]


def _checkpoint_edit(edit: Callable) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        import torch

        run = _tiny_run(d)
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        edit(state, run)
        return ["train", "tiny.yaml", "--data", "synthetic", "--epochs", "2", "--batch-size", "16", "--out", "run",
                "--resume"]
    return setup


def _negative_epoch(state, run):
    import torch

    state["epoch"] = -3
    torch.save(state, run / "checkpoint.pt")


def _corrupt_bytes(state, run):
    data = bytearray((run / "checkpoint.pt").read_bytes())
    rng = random.Random(0)
    for _ in range(64):  # damage the tensor data, keep the zip directory readable
        i = rng.randrange(len(data) // 4, len(data) // 2)
        data[i] = rng.randrange(256)
    (run / "checkpoint.pt").write_bytes(bytes(data))


def _resume_not_a_run(d: Path) -> list[str]:
    (d / "tiny.yaml").write_text(TINY)
    (d / "photos").mkdir()
    (d / "photos" / "holiday.jpg").write_bytes(b"\xff\xd8 not a run")
    return ["train", "tiny.yaml", "--data", "synthetic", "--epochs", "1", "--out", "photos", "--resume"]


def _report_foreign(d: Path) -> list[str]:
    con = sqlite3.connect(d / "mine.db")
    con.execute("create table notes (x text)")
    con.commit()
    con.close()
    return ["report", ".", "--storage", "sqlite:///mine.db"]


def _report_empty(d: Path) -> list[str]:
    (d / "empty.db").write_bytes(b"")
    return ["report", ".", "--storage", "sqlite:///empty.db"]


CASES: dict[str, dict[str, Callable[[Path], list[str]]]] = {
    "spec": {
        "nesting 50000 [": _spec("stages: " + "[" * 50000),
        "nesting 1000 [": _spec("stages: " + "[" * 1000 + "]" * 1000),
        "nesting 1000 {": _spec("x: " + "{a: " * 1000 + "1" + "}" * 1000),
        "latin-1 bytes": _spec(b"name: caf\xe9\n" + TINY.encode()),
        "utf-16": _spec(TINY.encode("utf-16")),
        "binary": _spec(bytes(random.Random(1).randrange(256) for _ in range(4096))),
        "extends chain 400": _extends_chain,
        "extends 5000 chars": _spec("extends: " + "a" * 5000 + "\n"),
        "extends alias bomb": _spec(_bomb() + "\nextends: *a8\n"),
        "unknown key 50 MB list": _spec(TINY + "junk: [" + "1," * 25_000_000 + "1]\n"),
        "depth 300000000": _spec(TINY.replace("depth: 1", "depth: 300000000")),
        "depth 1e9": _spec(TINY.replace("depth: 1", "depth: 1000000000")),
        "depth 1e30": _spec(TINY.replace("depth: 1", "depth: 1e30")),
        "width 1e12": _spec(TINY.replace("width: 16", "width: 1000000000000")),
        "width true": _spec(TINY.replace("width: 16", "width: true")),
        "num_classes 1e12": _spec(TINY.replace("num_classes: 10", "num_classes: 1000000000000")),
        "input size 1e7": _spec(TINY.replace("size: 32", "size: 10000000")),
        "mlp_ratio inf": _spec(TINY.replace("block: mbconv", "block: transformer").replace("width: 16", "width: 32")
                               + "set:\n  stages[0].mlp_ratio: .inf\n"),
        "expansion 1e308": _spec(TINY.replace("width: 16", "width: 16, expansion: 1.0e+308")),
        "100k stages": _spec(TINY.split("stages:")[0] + "stages:\n" +
                             "  - {block: mbconv, depth: 1, width: 16, stride: 1}\n" * 100_000),
        "control chars in key": _spec(TINY + "\"bad\\x1b[31mkey\\x07\": 1\n"),
        "stem channels 1e6 list": _spec(TINY.replace("channels: [8]", "channels: [" + "8," * 1_000_000 + "8]")),
    },
    "options": {
        "--seed 2**70": lambda d: (d.joinpath("tiny.yaml").write_text(TINY), [
            "train", "tiny.yaml", "--data", "synthetic", "--seed", str(2**70), "--epochs", "1", "--out", "r"])[1],
        "build --size 100000": lambda d: ["build", "coatnet-0", "--size", "100000", "-f", "json"],
        "train --size 100000": lambda d: ["train", "coatnet-0", "--size", "100000", "--data", "synthetic"],
        "--set mlp_ratio=inf": lambda d: ["build", "vit_c-1gf", "--set", "stages[0].mlp_ratio=inf", "-f", "json"],
        "--set expansion=1e308": lambda d: ["build", "coatnet-0", "--set", "stages[0].expansion=1e308", "-f", "json"],
        "--set depth=1e30": lambda d: ["build", "coatnet-0", "--set", "stages[0].depth=1e30", "-f", "json"],
        "--mixup inf": lambda d: (d.joinpath("tiny.yaml").write_text(TINY), [
            "train", "tiny.yaml", "--data", "synthetic", "--epochs", "1", "--mixup", "inf", "--out", "r"])[1],
        "--cutmix inf": lambda d: (d.joinpath("tiny.yaml").write_text(TINY), [
            "train", "tiny.yaml", "--data", "synthetic", "--epochs", "1", "--cutmix", "inf", "--out", "r"])[1],
    },
    "study": {
        "sampler.seed -1": _study("train.lr: [0.001]", "-1", "", "--dry-run"),
        "uniform nan": _study("train.lr: {uniform: [.nan, .nan]}", "0", "", "--dry-run"),
        "loguniform inf": _study("train.lr: {loguniform: [1.0e-3, .inf]}", "0", "", "--dry-run"),
        "int log negative": _study("stages[0].depth: {int: [-5, 5], log: true}", "0", "", "--dry-run"),
        "choices Q-T-T-T": _study("layout: [Q-T-T-T, C-C-T-T]", "0", "", "--dry-run"),
        "grid int 1e9": lambda d: (d.joinpath("study.yaml").write_text(
            (STUDY % ("stages[0].depth: {int: [1, 1000000000]}", "0")).replace("kind: random", "kind: grid")
            .replace("trials: 2\n", "")), ["search", "study.yaml", "--dry-run"])[1],
        "scales alias bomb": _study("train.lr: [0.001]", "0", _bomb() + "\nscales: {tiny: {x: *a8}}\n", "--dry-run"),
        "unknown data": _study_edit("data: synthetic", "data: nosuch", "--out", "out"),
        "cifar10 no data_dir": _study_edit("data: synthetic", "data: cifar10", "--out", "out"),
        "batch > dataset": _study_edit("batch_size: 8", "batch_size: 100000000", "--out", "out"),
        "--storage sqlite://": _study("train.lr: [0.001]", "0", "", "--storage", "sqlite://", "--out", "out"),
        "--storage unusable": _study("train.lr: [0.001]", "0", "", "--storage", "sqlite:////nonexistent/x/y.db",
                                     "--out", "out"),
        "NaN constraint": _study_edit("  choices:", "  match: {params: .nan, tolerance: 0.05}\n  choices:",
                                      "--dry-run"),
    },
    "training": {
        "cifar10 code in pickle": lambda d: (cifar_folder(d, {b"data": RunsCode(), b"labels": [0]}),
                                             d.joinpath("tiny.yaml").write_text(TINY),
                                             ["train", "tiny.yaml", "--data", "cifar10", "--data-dir", ".",
                                              "--epochs", "1", "--out", "r"])[2],
        "resume other optimizer": _resume_other_optimizer,
        "checkpoint negative epoch": _checkpoint_edit(_negative_epoch),
        "checkpoint random bytes": _checkpoint_edit(_corrupt_bytes),
        "resume not a run": _resume_not_a_run,
    },
    "report": {
        "foreign sqlite": _report_foreign,
        "empty file store": _report_empty,
    },
}


def run_fuzz(n: int, workdir: Path) -> list[dict]:
    """``n`` mutated presets (``tests/_fuzz.py``: every preset in turn, seeded) through
    ``archspace build --format json`` in one child process under the memory limit; every 5th
    file also compiles its module. A child that dies is restarted after the file it died on."""

    files = []
    for i, text in enumerate(mutated_specs(n, seed=13)):
        path = workdir / f"fuzz{i:04}.yaml"
        path.write_text(text)
        files.append(str(path))
    rows: list[dict] = []
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    while len(rows) < len(files):
        rest = files[len(rows):]
        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_fuzz.py"), "--compile-every", "5", *rest],
                              cwd=workdir, env=env, capture_output=True, text=True, preexec_fn=_limit,
                              timeout=TIMEOUT_S * len(rest))
        done = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"file"')]
        rows += [{"code": r["code"], "lines": r["lines"], "traceback": r["traceback"], "seconds": r["seconds"],
                  "first": r["first"]} for r in done]
        if len(done) < len(rest):  # the child died on the next file
            rows.append({"code": proc.returncode, "lines": 0, "traceback": "Traceback" in proc.stderr,
                         "seconds": 0.0, "first": proc.stderr.strip()[-160:]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="one category")
    parser.add_argument("--fuzz", type=int, default=0, help="also run N mutated presets")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="archspace-hostile-") as tmp:
        for category, cases in CASES.items():
            if args.only and category != args.only:
                continue
            for name, setup in cases.items():
                d = Path(tmp) / f"{category}-{len(rows)}"
                d.mkdir()
                argv = setup(d)
                before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
                result = archspace(argv, d)
                result["touched"] = sorted(str(p.relative_to(d)) for p, data in before.items()
                                           if not p.is_file() or p.read_bytes() != data)
                result["pwned"] = (d / "PWNED").exists()
                rows.append({"category": category, "case": name, **result})
                if args.verbose:
                    print(f"{category:9} {name:28} exit {result['code']!s:8} lines {result['lines']:3} "
                          f"{result['seconds']:6.1f}s {'TRACEBACK ' if result['traceback'] else ''}"
                          f"{'CODE RAN ' if result['pwned'] else ''}"
                          f"{'TOUCHED ' + ','.join(result['touched']) + ' ' if result['touched'] else ''}"
                          f"{result['first'][:90]}", flush=True)
        if args.fuzz and (not args.only or args.only == "fuzz"):
            for r in run_fuzz(args.fuzz, Path(tmp)):
                rows.append({"category": "fuzz", "case": "mutated preset", **r})
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
        table[r["category"]][f"exit {r['code']}"] += 1
        for flag in ("traceback", "pwned", "touched"):
            if r.get(flag):
                table[r["category"]][flag] += 1
        if r["code"] == 2 and r["lines"] != 1:
            table[r["category"]]["exit 2 not one line"] += 1
    if args.json:
        print(json.dumps({"rows": rows, "codes": {k: dict(v) for k, v in table.items()}}, indent=1))
        return
    for category, counts in table.items():
        total = sum(v for k, v in counts.items() if k.startswith("exit ") and "line" not in k)
        print(f"{category:9} {total:4} inputs: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
