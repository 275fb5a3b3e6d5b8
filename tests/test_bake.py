"""Baked datasets: ``archspace data bake`` / ``data info`` on a real generated image folder.

One module-scoped image folder (3 classes told apart by colour plus noise; JPEG and PNG files
of random non-square sizes from 40 to 500 px, some grayscale, some CMYK JPEGs) and a copy of
it with broken files in it. Covers clean bakes, unreadable files (nothing written), a bake
killed with SIGKILL and resumed, bad source and output folders, damaged arrays, a spec of
another size, and real training on the baked set, the streamed folder and the in-memory one.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from archspace.cli.app import app
from archspace.data import load_data
from archspace.data.baked import MANIFEST, STATE, read_manifest
from test_train import TINY_CONVNEXT

COLOURS = {"blue": (30, 30, 220), "green": (30, 220, 30), "red": (220, 30, 30)}  # sorted: label order
N_TRAIN, N_VAL = 24, 8
SIZE, MARGIN = 32, 4
ARRAYS = ("train_images.npy", "train_labels.npy", "val_images.npy", "val_labels.npy")


# -- helpers ------------------------------------------------------------------------------------

@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def cli(*args) -> Result:
    """The real CLI app, in this process (a subprocess costs seconds of torch import)."""
    r = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    exc = r.exception if not isinstance(r.exception, SystemExit) else None
    return Result(r.exit_code, r.stdout, r.stderr, exc)


def cli_subprocess(*args) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("archspace")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


@dataclass
class Folder:
    root: Path
    files: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # split -> [(path, kind)], sorted


def make_folder(root: Path, n_train: int = N_TRAIN, n_val: int = N_VAL, seed: int = 0,
                sizes: tuple[int, int] = (40, 500)) -> Folder:
    """``root/{train,val}/<class>/`` with noisy images of the class colour; kinds rotate through
    grayscale (PNG or JPEG), CMYK JPEG, RGB PNG and RGB JPEG; random non-square sizes."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    folder = Folder(root)
    k = 0
    for split, n in (("train", n_train), ("val", n_val)):
        rows = []
        for name, rgb in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                w = rng.randint(*sizes)
                h = rng.randint(*sizes)
                while h == w:
                    h = rng.randint(*sizes)
                pixels = np.clip(np.array(rgb, float) + noise.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(pixels)
                kind = ("gray", "cmyk", "png", "jpeg", "png", "jpeg")[k % 6]
                k += 1
                if kind == "gray":
                    path = d / f"{i:03d}.{'png' if i % 2 else 'jpg'}"
                    img.convert("L").save(path)
                elif kind == "cmyk":
                    path = d / f"{i:03d}.jpg"
                    img.convert("CMYK").save(path, quality=90)
                elif kind == "png":
                    path = d / f"{i:03d}.png"
                    img.save(path)
                else:
                    path = d / f"{i:03d}.jpeg"
                    img.save(path, quality=90)
                rows.append((str(path), kind))
        folder.files[split] = rows
    return folder


@dataclass
class Folders:
    clean: Folder
    broken: Path
    truncated: Path
    not_image: Path
    text: Path
    baked: Path
    bake_result: Result


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Folders:
    base = tmp_path_factory.mktemp("bake")
    clean = make_folder(base / "clean")
    # the same folder with two unreadable images and a file that is not an image by its extension
    broken = base / "broken"
    shutil.copytree(clean.root, broken)
    jpeg = next(p for p, kind in clean.files["train"] if kind == "jpeg" and "/red/" in p)
    data = Path(jpeg).read_bytes()
    truncated = broken / "train" / "red" / "zz-truncated.jpg"
    truncated.write_bytes(data[:len(data) // 2])
    not_image = broken / "val" / "green" / "notes.jpg"
    not_image.write_text("these are notes, not a picture\n" * 20)
    text = broken / "train" / "blue" / "readme.txt"
    text.write_text("not an image: ignored\n")
    baked = base / "baked"
    result = cli("data", "bake", clean.root, "--size", SIZE, "--margin", MARGIN, "--out", baked, "--workers", 2)
    assert result.exit_code == 0, result.stdout + result.stderr
    return Folders(clean, broken, truncated, not_image, text, baked, result)


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-convnext.yaml"
    path.write_text(json.dumps(TINY_CONVNEXT))
    return path


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


# -- a clean bake -------------------------------------------------------------------------------

def test_clean_bake_makes_arrays_manifest_and_is_idempotent(folders):
    out, r = folders.baked, folders.bake_result
    assert r.exception is None
    assert "3 classes, 72 train and 24 val images" in r.stdout
    assert f"stored at {SIZE + MARGIN} px, margin {MARGIN}" in r.stdout

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == "archspace-baked" and manifest["version"] == 1
    assert manifest["classes"] == list(COLOURS)
    assert (manifest["size"], manifest["margin"], manifest["stored"]) == (SIZE, MARGIN, SIZE + MARGIN)
    assert manifest["source"] == {"kind": "imagefolder", "path": str(folders.clean.root.resolve())}
    assert manifest["splits"]["train"]["count"] == 3 * N_TRAIN
    assert manifest["splits"]["val"]["count"] == 3 * N_VAL
    assert manifest["unreadable"] == [] and manifest["ignored"] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *ARRAYS])  # no state or temp files left

    side = SIZE + MARGIN
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        images = np.load(out / f"{split}_images.npy", mmap_mode="r")
        labels = np.load(out / f"{split}_labels.npy")
        assert images.dtype == np.uint8 and images.shape == (3 * n, 3, side, side)
        assert labels.dtype == np.int64 and labels.tolist() == [c for c in range(3) for _ in range(n)]
        # rows follow the sorted files: grayscale files give equal channels, every other file (CMYK
        # included: not inverted) its class colour as the brightest channel
        for row, (path, kind) in enumerate(folders.clean.files[split]):
            means = images[row].reshape(3, -1).mean(1)
            if kind == "gray":
                assert np.array_equal(images[row][0], images[row][1]) and np.array_equal(images[row][0],
                                                                                         images[row][2]), path
            else:
                colour = np.array(COLOURS[list(COLOURS)[labels[row]]])
                assert int(np.argmax(means)) == int(np.argmax(colour)), (path, kind, means)
                assert np.abs(means - colour).max() < 30, (path, kind, means)
    # statistics of the stored train images
    x = np.load(out / "train_images.npy").astype(np.float64) / 255
    assert manifest["mean"] == pytest.approx(x.mean(axis=(0, 2, 3)).tolist(), abs=1e-9)
    assert manifest["std"] == pytest.approx(x.std(axis=(0, 2, 3)).tolist(), abs=1e-6)

    info = cli("data", "info", out, "--verify")
    assert info.exit_code == 0, info.stderr
    assert "every array matches" in info.stdout

    before = mtimes(out)
    again = cli("data", "bake", folders.clean.root, "--size", SIZE, "--margin", MARGIN, "--out", out)
    assert again.exit_code == 0, again.stderr
    assert "already holds this bake: nothing to do" in again.stdout
    as_json = cli("data", "bake", folders.clean.root, "--size", SIZE, "--margin", MARGIN, "--out", out, "-f", "json")
    assert as_json.exit_code == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["already"] is True and data["resumed_chunks"] == 0
    assert data["splits"] == manifest["splits"] and data["classes"] == manifest["classes"]
    assert mtimes(out) == before

    described = cli("data", "info", out, "-f", "json")
    assert described.exit_code == 0 and json.loads(described.stdout) == manifest


# -- unreadable images ---------------------------------------------------------------------------

def test_unreadable_images_stop_the_bake_and_nothing_is_written(folders, tmp_path):
    out = tmp_path / "out"
    r = cli_subprocess("data", "bake", folders.broken, "--size", SIZE, "--out", out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 3, lines  # the count, then one line per unreadable file
    assert "2 unreadable images" in lines[0] and "nothing was written" in lines[0]
    assert sum(str(folders.truncated) in line for line in lines) == 1
    assert sum(str(folders.not_image) in line for line in lines) == 1
    truncated_line = next(line for line in lines if str(folders.truncated) in line)
    assert "truncated" in truncated_line
    assert str(folders.text) not in r.stderr  # not an image by its extension: ignored, not unreadable
    assert not out.exists()


def test_skip_unreadable_bakes_without_them_and_lists_them(folders, tmp_path):
    out = tmp_path / "out"
    r = cli("data", "bake", folders.broken, "--size", SIZE, "--out", out, "--skip-unreadable", "-f", "json")
    assert r.exit_code == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["already"] is False and data["resumed_chunks"] == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert {k: v for k, v in data.items() if k not in ("out", "already", "resumed_chunks")} == manifest
    assert sorted(u["path"] for u in manifest["unreadable"]) == sorted([str(folders.truncated),
                                                                        str(folders.not_image)])
    assert all(u["error"] and "\n" not in u["error"] for u in manifest["unreadable"])
    assert manifest["ignored"] == 1
    assert manifest["splits"]["train"]["count"] == 3 * N_TRAIN
    assert manifest["splits"]["val"]["count"] == 3 * N_VAL
    assert np.load(out / "train_images.npy", mmap_mode="r").shape == (3 * N_TRAIN, 3, SIZE, SIZE)
    assert np.load(out / "val_labels.npy").tolist() == [c for c in range(3) for _ in range(N_VAL)]
    assert cli("data", "info", out, "--verify").exit_code == 0


# -- a killed bake -------------------------------------------------------------------------------

_KILLED_BAKE = textwrap.dedent("""
    import sys, time
    from archspace.data.baked import bake

    def slow(phase, done, total):  # called after each chunk is journaled: keeps the bake running
        if phase == "bake" and done:
            time.sleep(0.5)

    bake(sys.argv[1], sys.argv[2], size=int(sys.argv[3]), margin=int(sys.argv[4]), workers=1, chunk=8,
         progress=slow)
""")


def test_killed_bake_resumes_to_the_same_arrays(folders, tmp_path):
    out = tmp_path / "killed"
    journal = out / STATE / "chunks-train.jsonl"
    log = open(tmp_path / "bake.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BAKE, str(folders.clean.root), str(out), str(SIZE),
                             str(MARGIN)], stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if journal.is_file() and journal.read_text().count("\n") >= 1:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the bake ended before it could be killed: {(tmp_path / 'bake.log').read_text()}"
        os.killpg(proc.pid, signal.SIGKILL)  # the bake and its decoding workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    chunks = math.ceil(3 * N_TRAIN / 8) + math.ceil(3 * N_VAL / 8)
    done = [json.loads(line) for line in journal.read_text().splitlines()]
    assert 1 <= len(done) < math.ceil(3 * N_TRAIN / 8) < chunks  # really killed in the middle
    assert not (out / MANIFEST).exists()

    unfinished = cli("data", "info", out)
    assert unfinished.exit_code == 2 and "did not finish" in unfinished.stderr

    r = cli("data", "bake", folders.clean.root, "--size", SIZE, "--margin", MARGIN, "--out", out)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert f"resumed: {len(done)} chunks were baked before" in r.stdout
    assert not (out / STATE).exists()

    # byte for byte the arrays of the uninterrupted bake (other chunk size, same source and parameters)
    for name in ARRAYS:
        assert (out / name).read_bytes() == (folders.baked / name).read_bytes(), name
    resumed, clean = read_manifest(out), read_manifest(folders.baked)
    assert resumed.splits == clean.splits  # counts, bytes and checksums
    assert resumed.source == clean.source and resumed.classes == clean.classes
    assert resumed.mean == pytest.approx(clean.mean, rel=1e-12)
    assert resumed.std == pytest.approx(clean.std, rel=1e-12)
    assert cli("data", "info", out, "--verify").exit_code == 0


class _Stop(Exception):
    pass


def test_a_journal_line_cut_short_is_redone_and_the_manifest_is_right(folders, tmp_path):
    """A torn last journal line (a write cut short) must not swallow the next chunk's line:
    the resumed bake's channel statistics and checksums equal the clean bake's."""
    from archspace.data.baked import bake

    out = tmp_path / "torn"

    def stop(phase, done, total):  # interrupt the bake once two chunks are journaled
        if phase == "bake" and done >= 16:
            raise _Stop

    with pytest.raises(_Stop):
        bake(folders.clean.root, out, size=SIZE, margin=MARGIN, workers=1, chunk=8, progress=stop)
    journal = out / STATE / "chunks-train.jsonl"
    lines = journal.read_text().splitlines()
    assert len(lines) == 2
    journal.write_text(lines[0] + "\n" + lines[1][:len(lines[1]) // 2])  # the second line cut in the middle
    result = bake(folders.clean.root, out, size=SIZE, margin=MARGIN, workers=1)
    assert result.resumed_chunks == 1
    clean = read_manifest(folders.baked)
    assert result.manifest.splits == clean.splits
    assert result.manifest.mean == pytest.approx(clean.mean, rel=1e-12)
    assert result.manifest.std == pytest.approx(clean.std, rel=1e-12)


def test_a_bake_killed_before_its_plan_was_written_starts_again(folders, tmp_path):
    """What a kill right after the state folder was made leaves (no plan.json yet) is archspace's
    own: the next bake starts afresh instead of calling the folder foreign."""
    out = tmp_path / "early"
    (out / STATE).mkdir(parents=True)
    (out / STATE / "train_images.npy").write_bytes(b"\x93NUMPY half-made")
    r = cli("data", "bake", folders.clean.root, "--size", SIZE, "--margin", MARGIN, "--out", out)
    assert r.exit_code == 0, r.stdout + r.stderr
    for name in ARRAYS:
        assert (out / name).read_bytes() == (folders.baked / name).read_bytes(), name
    assert not (out / STATE).exists()


def test_a_source_that_changed_since_its_bake_is_not_called_baked(tmp_path):
    """The same command after images were added must not answer "nothing to do"."""
    src = tmp_path / "src"
    for split, n in (("train", 3), ("val", 1)):
        for cls, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
            for i in range(n):
                _tiny_image(src / split / cls / f"{i}.png", colour)
    out = tmp_path / "baked"
    assert cli("data", "bake", src, "--size", 8, "--out", out).exit_code == 0
    before = mtimes(out)
    _tiny_image(src / "train" / "a" / "new.png")
    r = cli("data", "bake", src, "--size", 8, "--out", out)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert "made when it had 8 images; it has 9 now" in r.stderr and r.err_lines[0].startswith("--out: ")
    assert mtimes(out) == before


# -- bad source and output folders ---------------------------------------------------------------

def _tiny_image(path: Path, colour=(200, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), colour).save(path)


def _bad_bake(src: Path, out: Path, *fragments: str) -> Result:
    r = cli("data", "bake", src, "--size", 16, "--out", out)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert r.exception is None and "Traceback" not in r.stderr
    assert r.err_lines and all(line.startswith("SRC: ") for line in r.err_lines), r.err_lines
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr
    assert not out.exists()
    return r


def test_missing_source_folder(tmp_path):
    missing = tmp_path / "no-such-folder"
    r = _bad_bake(missing, tmp_path / "out", str(missing))
    assert len(r.err_lines) == 1


def test_empty_class_folder(tmp_path):
    src = tmp_path / "src"
    for split in ("train", "val"):
        _tiny_image(src / split / "a" / "0.png")
    (src / "train" / "b").mkdir()
    (src / "val" / "b").mkdir()
    _tiny_image(src / "val" / "b" / "0.png")
    r = _bad_bake(src, tmp_path / "out", str(src / "train" / "b"), "no images")
    assert len(r.err_lines) == 1


def test_class_folders_differ_between_train_and_val(tmp_path):
    src = tmp_path / "src"
    for name in ("a", "b"):
        _tiny_image(src / "train" / name / "0.png")
    for name in ("a", "c"):
        _tiny_image(src / "val" / name / "0.png")
    r = _bad_bake(src, tmp_path / "out", str(src / "val"))
    assert any("train has not: c" in line for line in r.err_lines), r.err_lines
    assert any("lacks class folders that train has: b" in line for line in r.err_lines), r.err_lines


def test_output_folder_with_a_foreign_file_is_refused_and_left_alone(folders, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    foreign = out / "thesis.tex"
    foreign.write_text("my only copy\n")
    stamp = foreign.stat().st_mtime_ns
    r = cli("data", "bake", folders.clean.root, "--size", 16, "--out", out)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert r.err_lines and r.err_lines[0].startswith("--out: ") and str(out) in r.stderr
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert foreign.read_text() == "my only copy\n" and foreign.stat().st_mtime_ns == stamp


# -- training on a baked set: refused when damaged or of another size ------------------------------

def test_damaged_array_is_refused_by_train_and_verify(folders, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(folders.baked, damaged)
    load_data("baked", size=SIZE, data_dir=damaged)  # verified once: the folder's stamp records it
    assert (damaged / ".archspace-verified.json").is_file()
    target = damaged / "train_images.npy"
    size = target.stat().st_size
    with open(target, "r+b") as f:  # flip one pixel byte, same size
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert target.stat().st_size == size
    run = tmp_path / "run"
    r = cli("train", spec_file(tmp_path), "--data", "baked", "--data-dir", damaged, "--size", SIZE, "--epochs", 1,
            "--out", run)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert r.exception is None
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("--data-dir: "), r.err_lines
    assert str(target) in r.stderr and "checksum" in r.stderr
    assert not run.exists()

    v = cli("data", "info", damaged, "--verify")
    assert v.exit_code == 2 and str(target) in v.stderr
    assert cli("data", "info", damaged).exit_code == 0  # the manifest itself is fine


def test_baked_size_must_match_the_spec(folders, tmp_path):
    run = tmp_path / "run"
    r = cli("train", spec_file(tmp_path), "--data", "baked", "--data-dir", folders.baked, "--size", 48,
            "--epochs", 1, "--out", run)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert r.exception is None
    assert r.err_lines and all(line.startswith("input.size: ") for line in r.err_lines), r.err_lines
    assert "32" in r.stderr and "48" in r.stderr
    assert not run.exists()


# -- real training ---------------------------------------------------------------------------------

@pytest.mark.parametrize("data,path", [
    (["--data", "baked"], "baked"),
    (["--data", "imagefolder", "--loader", "stream", "--loader-workers", "2"], "stream"),
    (["--data", "imagefolder", "--loader", "memory"], "memory"),
], ids=["baked", "stream", "memory"])
def test_tiny_network_learns_the_colours(folders, tmp_path, data, path):
    run = tmp_path / "run"
    where = folders.baked if path == "baked" else folders.clean.root
    r = cli("train", spec_file(tmp_path), *data, "--data-dir", where, "--size", SIZE, "--epochs", 4,
            "--batch-size", 16, "--lr", "3e-3", "--crop", "--flip", "--seed", 0, "--out", run, "-f", "json")
    assert r.exit_code == 0, r.stdout + r.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs"] == 4
    assert summary["data"]["path"] == path
    assert summary["data"]["train_images"] == 3 * N_TRAIN and summary["data"]["val_images"] == 3 * N_VAL
    assert summary["data"]["size"] == SIZE
    assert summary["final"]["eval_error"] < 0.4, summary["final"]  # chance is 2/3
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
