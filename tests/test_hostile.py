"""Hostile input: every bad input is refused with exit 2 and one line per problem, in bounded
time and memory, without running code from data and without touching files archspace did
not write. Cases that could crash the interpreter run in a child process under a memory
limit."""

from __future__ import annotations

import collections
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _fuzz import RunsCode, cifar_folder
from archspace.data import load_data
from archspace.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
CHILD_MEMORY = 3 * 2**30
TINY = ("name: tiny\ninput: {size: 32}\nnum_classes: 10\nstem: {kind: conv, channels: [8]}\n"
        "stages: [{block: mbconv, depth: 1, width: 16}]\n")


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``archspace ARGS`` in a child process under a 3 GiB address-space limit."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "archspace.cli.app", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=_limits)


def refused(result, *needles: str, lines: int = 1) -> str:
    """Assert exit 2, ``lines`` stderr lines, no traceback, each needle in the message."""
    code = getattr(result, "exit_code", None)
    code = result.returncode if code is None else code
    stderr = result.stderr
    shown = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stderr[-2000:])
    assert "Traceback" not in stderr
    assert len(shown) == lines, shown
    for needle in needles:
        assert needle in stderr, (needle, stderr)
    return stderr


# ---------------------------------------------------------------------------- no code from data


def test_cifar_batch_that_would_run_code_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = cifar_folder(tmp_path, {b"data": RunsCode(), b"labels": [0]})
    with pytest.raises(SpecError) as excinfo:
        load_data("cifar10", size=32, data_dir=folder)
    assert not (tmp_path / "PWNED").exists()
    [problem] = excinfo.value.problems
    assert problem.path == "--data-dir" and "refused global posix.system" in problem.message


def test_cifar_batch_of_numpy_arrays_still_loads(tmp_path: Path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
    folder = cifar_folder(tmp_path, {b"batch_label": b"x", b"data": data, b"labels": [1, 2, 3, 4],
                                      b"filenames": [b"a.png"] * 4})
    bundle = load_data("cifar10", size=32, data_dir=folder)
    assert bundle.train.images.shape == (20, 3, 32, 32)
    assert bundle.train.labels[:4].tolist() == [1, 2, 3, 4]


def test_cifar_code_through_the_cli_exits_2(tmp_path: Path):
    cifar_folder(tmp_path, {b"data": RunsCode(), b"labels": [0]})
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = run_cli("train", "tiny.yaml", "--data", "cifar10", "--data-dir", ".", "--epochs", "1", "--out", "r",
                     cwd=tmp_path)
    refused(result, "--data-dir", "refused global")
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- spec files: bounds


def _bomb(levels: int = 9) -> str:
    """YAML whose last anchor expands to 10**levels strings."""
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, needle", [
    ("stages: " + "[" * 50_000, "deeper than 64 levels"),  # the C loader's stack overflowed (exit 139)
    ("stages: " + "[" * 1000 + "]" * 1000, "deeper than 64 levels"),  # RecursionError (exit 1)
    ("x: " + "{a: " * 1000 + "1" + "}" * 1000, "deeper than 64 levels"),
    (_bomb() + "extends: *a8\n", "more than 200,000 values"),
    (TINY + "junk: [" + "1," * 300_000 + "1]\n", "more than 200,000 values"),
    (TINY + "junk: [" + "1," * 2_500_000 + "1]\n", "larger than 4 MiB"),
])
def test_oversized_or_deep_yaml_is_refused_before_it_is_built(cli, tmp_path: Path, text: str, needle: str):
    (tmp_path / "spec.yaml").write_text(text)
    if text.count("[") >= 50_000:  # crashed the interpreter before: in a child process, under a limit
        result = run_cli("build", "spec.yaml", "-f", "json", cwd=tmp_path, timeout=60)
    else:
        result = cli("build", tmp_path / "spec.yaml", "-f", "json")
    refused(result, "spec.yaml", needle)


@pytest.mark.parametrize("data, needle", [
    (b"name: caf\xe9\n" + TINY.encode(), "not UTF-8 text (byte 0xe9 at offset 9)"),
    (TINY.encode("utf-16"), "not UTF-8 text (byte 0xff at offset 0)"),
    (bytes(range(128, 256)) * 8, "not UTF-8 text"),
])
def test_spec_that_is_not_utf8_text(cli, tmp_path: Path, data: bytes, needle: str):
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    refused(cli("build", path), needle)


def test_utf8_with_byte_order_mark_is_read(cli, tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + TINY.encode())
    assert cli("build", path, "--no-compile", "-f", "json").exit_code == 0


def test_extends_chains_and_names_are_bounded(cli, tmp_path: Path):
    for i in range(40):
        (tmp_path / f"s{i}.yaml").write_text(f"extends: s{i + 1}.yaml\n")
    (tmp_path / "s40.yaml").write_text(TINY)
    refused(cli("build", tmp_path / "s0.yaml"), "extends: a chain of more than 32 extends (from s0.yaml)")
    assert cli("build", tmp_path / "s20.yaml", "--no-compile").exit_code == 0  # 20 links are fine
    (tmp_path / "long.yaml").write_text("extends: " + "a" * 5000 + "\n")
    stderr = refused(cli("build", tmp_path / "long.yaml"), "at most 1024 characters", "(5,000 characters)")
    assert len(stderr) < 400


@pytest.mark.parametrize("old, new, line", [
    ("depth: 1,", "depth: 300000000,", "stages[0].depth: input should be less than or equal to 4096 (got 300000000)"),
    ("width: 16", "width: 1000000000000", "stages[0].width: input should be less than or equal to 65536"),
    ("width: 16", "width: true", "stages[0].width: must be a number, not true"),
    ("num_classes: 10", "num_classes: 1000000000000", "num_classes: input should be less than or equal to 1000000"),
    ("size: 32", "size: 10000000", "input.size: input should be less than or equal to 8192 (got 10000000)"),
    ("width: 16", "width: 16, expansion: .inf", "stages[0].expansion: input should be a finite number"),
    ("width: 16", "width: 16, expansion: 1.0e+308", "stages[0].expansion: input should be less than or equal to 64"),
    ("width: 16", "width: 16, se_ratio: .nan", "stages[0].se_ratio: input should be a finite number"),
])
def test_absurd_sizes_are_refused_by_bound(cli, tmp_path: Path, old: str, new: str, line: str):
    path = tmp_path / "spec.yaml"
    path.write_text(TINY.replace(old, new))
    refused(cli("build", path, "-f", "json"), line)


def test_stage_count_and_stem_convs_are_bounded(cli, tmp_path: Path):
    stage = "  - {block: mbconv, depth: 1, width: 16, stride: 1}\n"
    path = tmp_path / "spec.yaml"
    path.write_text(TINY.split("stages:")[0] + "stages:\n" + stage * 65)
    refused(cli("build", path), "stages: list should have at most 64 items")
    path.write_text(TINY.replace("channels: [8]", "channels: [" + "8, " * 40 + "8]"))
    refused(cli("build", path), "stem.channels: list should have at most 32 items")


@pytest.mark.parametrize("override, line", [
    ("stages[2].mlp_ratio=inf", "stages[2].mlp_ratio: input should be a finite number"),
    ("stages[2].mlp_ratio=1e308", "stages[2].mlp_ratio: input should be less than or equal to 64"),
    ("stages[0].expansion=.inf", "stages[0].expansion: input should be a finite number"),
    ("stages[0].depth=1e30", "stages[0].depth: input should be a valid integer"),
    ("stages[0].depth=1000000000", "stages[0].depth: input should be less than or equal to 4096"),
    ("stages[0].depth=" + "[" * 100, "--set: the value of stages[0].depth nests collections deeper than 64"),
])
def test_set_values_are_bounded_too(cli, override: str, line: str):
    refused(cli("build", "coatnet-0", "--set", override, "-f", "json"), line)


def test_size_option_is_bounded(cli):
    refused(cli("build", "coatnet-0", "--size", "100000"), "input.size: input should be less than or equal to 8192")


def test_control_characters_are_escaped_and_long_values_cut(cli, tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_text(TINY + '"bad\\x1b[31mkey\\x07": 1\nname2: "' + "z" * 5000 + '"\n')
    stderr = refused(cli("build", path), "bad\\x1b[31mkey\\x07: unknown key", lines=2)
    assert "\x1b" not in stderr and "\x07" not in stderr
    path.write_text(TINY.replace("name: tiny", "name: [1]").replace("mbconv,", "mbconv, act: '" + "q" * 5000 + "',"))
    stderr = refused(cli("build", path), "stages[0].act", lines=2)
    assert len(stderr) < 600, stderr


def test_memory_check_counts_the_build_peak_and_a_forward(tmp_path: Path):
    from archspace.graph import BUILD_PEAK, check_memory, lower, memory_needed
    from archspace.spec import load_spec

    lowered = lower(load_spec("coatnet-0"))
    weights, peak = memory_needed(lowered)
    assert peak == round(weights * BUILD_PEAK) + lowered.cost().acts * 4
    check_memory(lowered, memory=peak)  # exactly enough
    with pytest.raises(SpecError, match=r"weights alone need 0\.1 GiB .* peaks at about 0\.3 GiB, more than the 0\.1 GiB"):
        check_memory(lowered, memory=weights + 1)  # the weights fit, building does not


def test_memory_check_sees_the_address_space_limit(tmp_path: Path):
    # coatnet-4's weights (1.9 GiB) fit in this machine's memory, but not under an address-space
    # limit 1 GiB above what the process (torch loaded) already maps
    script = ("import resource, torch; "
              "size = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize')); "
              "resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), size + (1 << 30))); "
              "import sys; from archspace.cli.app import main; sys.argv = ['archspace', 'build', 'coatnet-4']; main()")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    refused(result, "coatnet-4: weights alone need", "of memory available here")


# ---------------------------------------------------------------------------- studies

STUDY = """\
name: s
space:
  base: coatnet-0
  set:
    input.size: 32
    stages[*].depth: 1
    stem.channels: [8, 8]
  choices:
    {choice}
train: {{data: synthetic, epochs: 1, batch_size: 8}}
sampler: {{kind: {sampler}, seed: {seed}}}
{trials}
"""


def study_file(tmp_path: Path, choice: str = "train.lr: [0.001, 0.002]", seed: str = "0", sampler: str = "random",
               trials: str = "trials: 2", **replace: str) -> Path:
    text = STUDY.format(choice=choice, seed=seed, sampler=sampler, trials=trials)
    for old, new in replace.items():
        text = text.replace(old.replace("_", " "), new)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("kwargs, line", [
    ({"seed": "-1"}, "sampler.seed: input should be greater than or equal to 0 (got -1)"),
    ({"seed": str(2**70)}, "sampler.seed: input should be less than or equal to 4294967295"),
    ({"choice": "train.lr: {uniform: [0.1, .nan]}"}, "space.choices.train.lr.uniform[1]: input should be a finite"),
    ({"choice": "train.lr: {loguniform: [1.0e-3, .inf]}"}, "space.choices.train.lr.loguniform[1]: input should be a "
                                                           "finite number (got inf)"),
    ({"choice": "stages[0].depth: {int: [-5, 5], log: true}"}, "space.choices.stages[0].depth.int: a log range needs "
                                                               "low >= 1, got [-5, 5]"),
    ({"choice": "layout: [Q-T-T-T, C-C-T-T]"}, "space.choices.layout: unknown layout letter(s) 'Q' in 'Q-T-T-T'"),
    ({"choice": "stages[0].depth: {int: [1, 1.0e+9]}", "sampler": "grid", "trials": ""},
     "space.choices.stages[0].depth: an int range of 1,000,000,000 values is more than a grid may hold (100,000)"),
    ({"  choices:": "  match: {params: .nan, tolerance: 0.05}\n  choices:"},
     "space.match.params: input should be a finite number (got nan)"),
])
def test_bad_study_values_exit_2(cli, tmp_path: Path, kwargs: dict, line: str):
    path = study_file(tmp_path, **{k: v for k, v in kwargs.items() if k in ("seed", "choice", "sampler", "trials")})
    for old, new in kwargs.items():
        if old not in ("seed", "choice", "sampler", "trials"):
            path.write_text(path.read_text().replace(old, new))
    refused(cli("search", path, "--dry-run"), line)
    assert not (tmp_path / "runs").exists()


def test_alias_bomb_under_scales_is_refused(cli, tmp_path: Path):
    path = study_file(tmp_path)
    path.write_text(path.read_text() + _bomb() + "scales: {tiny: {x: *a8}}\n")
    refused(cli("search", path, "--scale", "tiny", "--dry-run"), "more than 200,000 values")


@pytest.mark.parametrize("old, new, line", [
    ("data: synthetic", "data: nosuch", "train.data: unknown dataset 'nosuch'"),
    ("data: synthetic", "data: cifar10", "train.data_dir: cifar10 needs --data-dir"),
])
@pytest.mark.parametrize("dry", [True, False])
def test_a_recipe_that_cannot_run_writes_nothing(cli, tmp_path: Path, old: str, new: str, line: str, dry: bool):
    path = study_file(tmp_path)
    path.write_text(path.read_text().replace(old, new))
    out = tmp_path / "out"
    refused(cli("search", path, "--out", out, *(["--dry-run"] if dry else [])), line)
    assert not out.exists()


def test_batch_larger_than_the_dataset_writes_nothing(cli, tmp_path: Path):
    path = study_file(tmp_path)
    path.write_text(path.read_text().replace("batch_size: 8", "batch_size: 100000000"))
    refused(cli("search", path, "--out", tmp_path / "out"), "train.batch_size: 100000000 is larger than")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("storage, line", [
    ("sqlite://", "--storage: sqlite:// is an in-memory database: the study would be lost"),
    ("sqlite:///:memory:", "is an in-memory database"),
    ("sqlite:///{tmp}/nowhere/s.db", "folder {tmp}/nowhere does not exist"),
    ("sqlite:///{tmp}", "names the folder"),
    ("sqlite:///{tmp}/notes.txt", "notes.txt is not an SQLite database, so not a study store"),
    ("sqlite:///{tmp}/mine.db", "mine.db is an SQLite database without Optuna's tables"),
])
def test_unusable_storage_leaves_nothing_behind(cli, tmp_path: Path, storage: str, line: str):
    import sqlite3

    (tmp_path / "notes.txt").write_text("my notes\n")
    con = sqlite3.connect(tmp_path / "mine.db")
    con.execute("create table notes (x text)")
    con.commit()
    con.close()
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    path = study_file(tmp_path)
    before[path] = path.stat().st_mtime_ns
    refused(cli("search", path, "--storage", storage.format(tmp=tmp_path), "--out", tmp_path / "out"),
            line.format(tmp=tmp_path))
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert after == before  # no store, no run directory, the user's files untouched


# ---------------------------------------------------------------------------- report


def _report_store(folder: Path) -> Path:
    from test_report import store, trial

    return store(folder, [trial("complete", "C-C-C-C", 0.20), trial("complete", "C-C-T-T", 0.30),
                          trial("complete", "C-T-T-T", 0.25)])


def test_report_removes_only_the_plots_it_wrote(cli, tmp_path: Path):
    run = _report_store(tmp_path / "run")
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"\x89PNG mine")
    first = cli("report", run, "--out", out, "-f", "json")
    assert first.exit_code == 0, first.stderr
    plots = {Path(p).name for p in first.json()["plots"]}
    assert plots and (out / "holiday.png").read_bytes() == b"\x89PNG mine"
    (out / "edf.png").unlink()  # a plot of the earlier report, gone; another kept by the user
    (out / "ranking.png").rename(out / "kept.png")
    second = cli("report", run, "--out", out, "-f", "json")
    assert second.exit_code == 0, second.stderr
    assert (out / "holiday.png").read_bytes() == b"\x89PNG mine" and (out / "kept.png").is_file()
    assert {p.name for p in out.glob("*.png")} == plots | {"holiday.png", "kept.png"}


@pytest.mark.parametrize("make", ["foreign", "empty", "text"])
def test_report_never_writes_into_a_file_that_is_not_a_store(cli, tmp_path: Path, make: str):
    import sqlite3

    db = tmp_path / "mine.db"
    if make == "foreign":
        con = sqlite3.connect(db)
        con.execute("create table notes (x text)")
        con.commit()
        con.close()
    else:
        db.write_bytes(b"" if make == "empty" else b"hello\n")
    before = db.read_bytes()
    result = cli("report", tmp_path, "--storage", f"sqlite:///{db}")
    refused(result, "--storage", {"foreign": "without Optuna's tables", "empty": "is an empty file, not a study store",
                                  "text": "is not an SQLite database"}[make])
    assert db.read_bytes() == before and not (tmp_path / "report").exists()
    if make == "empty":  # the run directory's own study.db, empty: the same
        db.rename(tmp_path / "study.db")
        refused(cli("report", tmp_path), "is an empty file")


def test_report_attributes_of_the_wrong_type_exit_2(cli, tmp_path: Path):
    from test_report import store, trial

    bad = [trial("complete", "C-C-C-C", 0.2, cost="abc"), trial("complete", "C-C-C-C", 0.3, history="x"),
           trial("complete", "C-T-T-T", 0.3, eval_error="x", train_loss=[1])]
    run = store(tmp_path / "run", bad)
    result = cli("report", run, "-f", "json")
    assert result.exit_code in (0, 2), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


# ---------------------------------------------------------------------------- training


def _train(cli, folder: Path, *extra: str):
    (folder / "tiny.yaml").write_text(TINY)
    return cli("train", folder / "tiny.yaml", "--data", "synthetic", "--batch-size", "64", "--out", folder / "run",
               "-f", "json", *extra)


@pytest.fixture
def tiny_run(cli, tmp_path: Path) -> Path:
    """A one-epoch run of the tiny spec in ``tmp_path/run``."""
    result = _train(cli, tmp_path, "--epochs", "1")
    assert result.exit_code == 0, result.stderr
    return tmp_path / "run"


@pytest.mark.parametrize("option, value, line", [
    ("--mixup", "inf", "train.mixup: input should be a finite number"),
    ("--cutmix", "inf", "train.cutmix: input should be a finite number"),
    ("--mixup", "1e6", "train.mixup: input should be less than or equal to 100"),
    ("--seed", str(2**70), "train.seed: input should be less than or equal to 4294967295"),
    ("--seed", "-1", "train.seed: input should be greater than or equal to 0"),
    ("--size", "100000", "input.size: input should be less than or equal to 8192"),
])
def test_bad_training_options_exit_2_quickly(cli, tmp_path: Path, option: str, value: str, line: str):
    refused(_train(cli, tmp_path, "--epochs", "1", option, value), line)
    assert not (tmp_path / "run").exists()


def test_a_damaged_checkpoint_is_refused_not_trained_on(cli, tmp_path: Path, tiny_run: Path):
    import random

    ckpt = tiny_run / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    rng = random.Random(0)
    for _ in range(64):  # bytes inside the tensor data; the zip directory stays readable
        data[rng.randrange(len(data) // 4, len(data) // 2)] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    metrics = (tiny_run / "metrics.jsonl").read_text()
    refused(_train(cli, tmp_path, "--epochs", "2", "--resume"), "--resume: cannot resume from", "checkpoint.pt")
    assert (tiny_run / "metrics.jsonl").read_text() == metrics and ckpt.read_bytes() == bytes(data)


def test_checkpoint_checksum_round_trip(tmp_path: Path):
    import torch

    from archspace.train.checkpoint import CHECKSUM, CheckpointError, load_checkpoint, save_checkpoint

    state = {"epoch": 1, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "history": [{"loss": 0.5}]}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert CHECKSUM not in loaded and torch.equal(loaded["model"]["w"], state["model"]["w"])
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    raw["model"]["w"][0, 0] = 42.0  # the same layout, another value: only the checksum tells
    torch.save(raw, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="do not match its checksum"):
        load_checkpoint(tmp_path / "c.pt")


def test_a_checkpoint_with_a_negative_epoch_is_refused(cli, tmp_path: Path, tiny_run: Path):
    from archspace.train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(tiny_run / "checkpoint.pt")
    save_checkpoint(tiny_run / "checkpoint.pt", {**state, "epoch": -3})  # a valid checksum, a bad value
    refused(_train(cli, tmp_path, "--epochs", "2", "--resume"), "its epoch is -3, not a count of epochs done")


def test_resume_with_another_optimizer_is_one_line(cli, tmp_path: Path, tiny_run: Path):
    refused(_train(cli, tmp_path, "--epochs", "2", "--resume", "--optimizer", "sgd"), "--resume")
    (tiny_run / "config.json").unlink()  # no recipe to compare: the checkpoint's optimizer state does not fit
    refused(_train(cli, tmp_path, "--epochs", "2", "--resume", "--optimizer", "sgd"),
            "does not fit this network and recipe")


def test_resume_on_a_folder_that_is_not_a_run(cli, tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "holiday.jpg").write_bytes(b"mine")
    refused(_train(cli, tmp_path, "--epochs", "1", "--resume"), "holds no run to continue")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["holiday.jpg"]


def test_leftover_temp_files_are_removed_on_the_next_start(cli, tmp_path: Path, tiny_run: Path):
    leftover = tiny_run / ".checkpoint.pt.x1y2z3.tmp"
    leftover.write_bytes(b"half a checkpoint")
    mine = tiny_run / ".checkpoint.pt.notes"  # not a temp file name archspace writes
    mine.write_text("mine")
    result = _train(cli, tmp_path, "--epochs", "2", "--resume")
    assert result.exit_code == 0, result.stderr
    assert not leftover.exists() and mine.read_text() == "mine"


# ---------------------------------------------------------------------------- fuzz

FUZZ_SPECS = 300
FUZZ_MEMORY = 2 * 2**30  # the child's address space: torch maps ~0.7 GiB of it at import
FUZZ_SECONDS_PER_SPEC = 30  # generous: the machine may be shared; a hang or a runaway plan is far beyond it


def test_fuzzed_presets_exit_0_or_2_in_bounded_time_and_memory(tmp_path: Path):
    """Seeded mutations of every preset through ``archspace build --format json`` in one child
    process under a 2 GiB address-space limit; every 5th file also compiles its module."""
    from _fuzz import mutated_specs

    files = []
    for i, text in enumerate(mutated_specs(FUZZ_SPECS, seed=13)):
        path = tmp_path / f"f{i:03}.yaml"
        path.write_text(text)
        files.append(str(path))

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (FUZZ_MEMORY, FUZZ_MEMORY))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_fuzz.py"), "--compile-every", "5", *files],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=900, preexec_fn=limits)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    max_rss = rows.pop()["max_rss"]
    assert len(rows) == FUZZ_SPECS
    bad = [r for r in rows if r["code"] not in (0, 2) or r["traceback"] or (r["code"] == 2 and not r["lines"])
           or (r["code"] == 0 and r["lines"] and not r["first"].startswith("warning: "))]
    assert not bad, bad[:5]
    codes = collections.Counter(r["code"] for r in rows)
    assert codes[0] >= 30 and codes[2] >= 100, codes  # the mutator reaches legal and refused specs alike
    assert max(r["seconds"] for r in rows) < FUZZ_SECONDS_PER_SPEC
    assert max_rss < FUZZ_MEMORY


# ---------------------------------------------------------------------------- quiet stderr


def test_a_search_and_an_export_print_no_library_warnings(tmp_path: Path):
    path = study_file(tmp_path, sampler="tpe", trials="trials: 1\npruner: {kind: median}")
    path.write_text(path.read_text().replace("batch_size: 8", "batch_size: 64").replace(
        "    stem.channels: [8, 8]\n", "    stem.channels: [8, 8]\n    stages[*].width: 32\n"))
    search = run_cli("search", path, "--out", tmp_path / "out", "-f", "json", cwd=tmp_path, timeout=600)
    assert search.returncode == 0, search.stderr[-2000:]
    assert "Warning" not in search.stderr and "warn" not in search.stderr.lower(), search.stderr
    (tmp_path / "tiny.yaml").write_text(TINY.replace("block: mbconv", "block: transformer").replace("16", "32"))
    export = run_cli("build", "tiny.yaml", "--export", "onnx", "net.onnx", "-f", "json", cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-2000:]
    assert export.stderr.strip() == "", export.stderr


def test_a_run_directory_spec_yaml_is_read_with_the_same_bounds(tmp_path: Path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "spec.yaml").write_text("stages: " + "[" * 50_000)  # segfaulted the C loader
    result = run_cli("train", "tiny.yaml", "--data", "synthetic", "--epochs", "1", "--out", "run", "--resume",
                     cwd=tmp_path)
    refused(result, "--resume: cannot read", "nests collections deeper than 64 levels")
