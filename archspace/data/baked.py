"""Baked datasets: images decoded once into ``uint8`` arrays that every trial memory-maps.

``bake`` turns an image folder (or the CIFAR-10 python folder) into a folder of ``.npy``
arrays plus a manifest, ``archspace-baked.json``::

    train_images.npy  (N, 3, S, S) uint8    train_labels.npy  (N,) int64
    val_images.npy    (M, 3, S, S) uint8    val_labels.npy    (M,) int64

``S = size + margin``: each image's shorter side is resized to ``S`` and its centre kept.
Training crops ``size`` out of ``S`` (a random resized crop, or the centre); evaluation keeps
the centre ``size × size``. The manifest records the source, counts, class names, channel
statistics, SHA-256 checksums of every array (in 64 MiB blocks), unreadable images skipped
and the versions that baked it.

Baking is atomic and resumable: the arrays are filled in ``.archspace-bake/`` inside the
output folder, one chunk of images per worker task, each finished chunk recorded in a journal;
a killed bake picks up at the first unfinished chunk. The arrays move into place and the
manifest is written last, so a folder with a manifest is a complete baked set.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import Problem, SpecError
from ._base import CHANNELS, DATA_DIR, SIZE, DataBundle, DataInfo, MappedSet, as_path, one_line, problem, \
    take_options
from ._decode import centre_square, check_file

MANIFEST = "archspace-baked.json"
STATE = ".archspace-bake"
FORMAT = "archspace-baked"
VERSION = 1
CHUNK = 256  # images per worker task (one journal line each)
BLOCK = 64 << 20  # checksum block, bytes
MAX_SIZE = 1024  # largest baked side
MAX_MANIFEST = 256 << 20  # bytes; a bigger manifest is refused unread
MAX_LISTED = 5
SPLITS = ("train", "val")
SOURCES = ("imagefolder", "cifar10")
OUT = "--out"
SRC = "SRC"


# -- the manifest ------------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArrayFile(_Model):
    """One array file: its name in the folder, bytes and SHA-256 per block."""

    file: str = Field(pattern=r"^[a-z_]+\.npy$")
    bytes: int = Field(ge=0)
    block: int = Field(gt=0)
    sha256: list[str]


class SplitFiles(_Model):
    count: int = Field(ge=0)
    images: ArrayFile
    labels: ArrayFile


class Skipped(_Model):
    path: str
    error: str


class Manifest(_Model):
    """``archspace-baked.json``: what a baked folder holds and how it was made."""

    format: Literal["archspace-baked"]
    version: Literal[1]
    source: dict[str, Any]
    size: int = Field(gt=0, le=MAX_SIZE)
    margin: int = Field(ge=0)
    stored: int = Field(gt=0)
    channels: Literal[3]
    classes: list[str] = Field(min_length=2)
    splits: dict[Literal["train", "val"], SplitFiles]
    mean: list[float]
    std: list[float]
    unreadable: list[Skipped] = []
    ignored: int = 0
    versions: dict[str, str]
    created: str


# -- listing the source ------------------------------------------------------------------------

@dataclass
class _Plan:
    """What a bake makes: per split the items (file paths, or indices into CIFAR arrays) and labels."""

    source: dict[str, Any]
    classes: list[str]
    items: dict[str, list]
    labels: dict[str, list[int]]
    size: int
    margin: int
    ignored: list[str]
    chunk: int = CHUNK

    def key(self) -> dict[str, Any]:
        return {"source": self.source, "size": self.size, "margin": self.margin}


def _list_imagefolder(src: Path) -> tuple[list[str], dict[str, list], dict[str, list[int]], list[str]]:
    from .imagefolder import list_folder, _splits

    train, val = list_folder(src)
    (tf, tl), (vf, vl) = _splits(train, val, src / "train")
    return train.classes, {"train": tf, "val": vf}, {"train": tl, "val": vl}, train.ignored + (val.ignored if val else [])


def _cifar_arrays(src: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from .cifar10 import TRAIN_FILES, VAL_FILES, _read, find_folder

    folder = find_folder(src)
    out = {}
    for split, names in (("train", TRAIN_FILES), ("val", VAL_FILES)):
        images, labels = _read(folder, names)
        out[split] = (images.numpy(), labels.numpy())
    return out


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # set before the workers fork


def _make_plan(kind: str, src: Path, size: int, margin: int) -> _Plan:
    if kind == "imagefolder":
        classes, items, labels, ignored = _list_imagefolder(src)
    else:
        arrays = _cifar_arrays(src)
        _CIFAR.clear()
        _CIFAR.update(arrays)
        classes = list(CIFAR_CLASSES)
        items = {s: list(range(len(arrays[s][1]))) for s in SPLITS}
        labels = {s: arrays[s][1].astype(int).tolist() for s in SPLITS}
        ignored = []
    source = {"kind": kind, "path": str(src.resolve())}
    return _Plan(source, classes, items, labels, size, margin, ignored)


# -- worker tasks ------------------------------------------------------------------------------

def _check_one(path: str) -> str | None:
    return check_file(path)


def _decode_item(item, split: str, side: int) -> np.ndarray:
    if isinstance(item, str):
        return centre_square(item, side, "RGB")
    from PIL import Image

    images, _ = _CIFAR[split]
    img = Image.fromarray(np.ascontiguousarray(images[item].transpose(1, 2, 0)))
    w = img.size[0]
    if w != side:
        img = img.resize((side, side), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))


def _bake_chunk(array: str, split: str, start: int, chunk: int, items: list, side: int) -> dict:
    """Decode one chunk into rows ``start ...`` of the array file; its sums and failures."""
    out = np.load(array, mmap_mode="r+")
    total = np.zeros(3, dtype=np.float64)
    squares = np.zeros(3, dtype=np.float64)
    bad = []
    for k, item in enumerate(items):
        try:
            pixels = _decode_item(item, split, side)
        except Exception as exc:  # Pillow raises many kinds for broken files
            bad.append({"row": start + k, "path": str(item), "error": one_line(f"{type(exc).__name__}: {exc}")})
            continue
        out[start + k] = pixels
        scaled = pixels.reshape(3, -1).astype(np.float64) / 255.0
        total += scaled.sum(1)
        squares += np.square(scaled).sum(1)
    out.flush()
    del out
    return {"split": split, "chunk": chunk, "count": len(items), "bad": bad, "sum": total.tolist(),
            "sq": squares.tolist()}


# -- the bake ----------------------------------------------------------------------------------

@dataclass
class BakeResult:
    out: Path
    manifest: Manifest
    already: bool = False  # the folder held this bake already
    resumed_chunks: int = 0


def _check_args(kind: str, size: Any, margin: Any, workers: Any) -> None:
    problems = []
    if kind not in SOURCES:
        problems.append(Problem("--source", f"unknown source {kind!r} (known: {', '.join(SOURCES)})"))
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        problems.append(Problem("--size", f"must be an integer from 1 to {MAX_SIZE}, got {size!r}"))
    if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= MAX_SIZE:
        problems.append(Problem("--margin", f"must be an integer from 0 to {MAX_SIZE}, got {margin!r}"))
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        problems.append(Problem("--workers", f"must be an integer from 1 to 256, got {workers!r}"))
    if problems:
        raise SpecError(problems)


def _read_json(path: Path, what: str, where: str = OUT) -> Any:
    try:
        if path.stat().st_size > MAX_MANIFEST:
            raise problem(where, f"{path} is larger than {MAX_MANIFEST >> 20} MiB: not a {what}")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise problem(where, f"cannot read {path}: {type(exc).__name__}: {exc}") from None


def read_manifest(folder: Path, where: str = DATA_DIR) -> Manifest:
    """The manifest of a baked folder, checked.

    Raises:
        SpecError: on ``where``: no manifest, unreadable or malformed.
    """
    path = folder / MANIFEST
    if not path.is_file():
        hint = " (its bake did not finish: run archspace data bake again to complete it)" \
            if (folder / STATE).is_dir() else " (make one with: archspace data bake SRC --size N --out DIR)"
        raise problem(where, f"{folder} is not a baked dataset: no {MANIFEST}{hint}")
    data = _read_json(path, "baked-set manifest", where)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise problem(where, f"{path} is not a valid manifest: {loc}: {first['msg']}") from None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _check_out(out: Path, plan: _Plan) -> tuple[str, Manifest | None]:
    """``new``, ``resume`` or ``done`` for the output folder; refuses a folder archspace did not write."""
    if not out.exists():
        return "new", None
    if not out.is_dir():
        raise problem(OUT, f"{out} exists and is not a folder")
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out, OUT)
        had = {"source": manifest.source, "size": manifest.size, "margin": manifest.margin}
        if had != plan.key():
            raise problem(OUT, f"{out} holds another baked set ({manifest.source.get('kind')} "
                               f"{manifest.source.get('path')} at {manifest.size} px, margin {manifest.margin}); "
                               f"give another --out")
        now = sum(len(plan.items[s]) for s in SPLITS)
        then = sum(split.count for split in manifest.splits.values()) + len(manifest.unreadable)
        if now != then:
            raise problem(OUT, f"{out} holds a bake of {plan.source['path']} made when it had {then:,} images; it has "
                               f"{now:,} now: bake into another --out (or remove {out} first)")
        return "done", manifest
    state = out / STATE / "plan.json"
    if state.is_file():
        had = _read_json(state, "bake plan")
        if not isinstance(had, dict) or had.get("key") != plan.key():
            raise problem(OUT, f"{out} holds an unfinished bake of another source or size; finish it with its own "
                               f"command, or give another --out")
        return "resume", None
    entries = list(out.iterdir())
    if entries == [out / STATE] and (out / STATE).is_dir():
        return "new", None  # a bake killed before its plan was written: nothing was baked yet, start again
    if entries:
        raise problem(OUT, f"{out} is not empty and holds no bake of archspace's; give a new or empty folder")
    return "new", None


def _scan(files: list[str], workers: int, progress: Callable[[str, int, int], None] | None) -> list[dict]:
    """Header and end-marker checks of every file (no decoding): the unreadable ones."""
    bad = []
    done = 0
    with _pool(workers) as pool:
        for path, error in zip(files, pool.map(_check_one, files, chunksize=64)):
            done += 1
            if error is not None:
                bad.append({"path": path, "error": one_line(error)})
            if progress is not None and (done % 256 == 0 or done == len(files)):
                progress("check", done, len(files))
    return bad


def _pool(workers: int) -> ProcessPoolExecutor:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def _unreadable_problems(bad: list[dict], hint: str) -> SpecError:
    problems = [Problem(SRC, f"{len(bad)} unreadable image{'s' if len(bad) != 1 else ''}; {hint}")]
    problems += [Problem(SRC, one_line(f"cannot read image {b['path']}: {b['error']}")) for b in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        problems.append(Problem(SRC, f"... and {len(bad) - MAX_LISTED} more"))
    return SpecError(problems)


def _journal(state: Path, split: str) -> dict[int, dict]:
    """Finished chunks of a split (a line cut short by a kill is ignored: that chunk is redone)."""
    path = state / f"chunks-{split}.jsonl"
    done: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                done[int(row["chunk"])] = row
            except (ValueError, KeyError, TypeError):
                continue
    return done


def bake(src: str | Path, out: str | Path, *, size: int, source: str = "imagefolder", margin: int = 0,
         workers: int | None = None, skip_unreadable: bool = False,
         progress: Callable[[str, int, int], None] | None = None, chunk: int = CHUNK) -> BakeResult:
    """Bake ``src`` into ``out`` at ``size`` px (stored at ``size + margin``); see the module doc.

    Args:
        chunk: Images per worker task and journal line (a resumed bake keeps its own).
        progress: Called with ``(phase, done, total)``; phases ``check`` and ``bake``.

    Raises:
        SpecError: bad arguments, a missing or malformed source, an output folder that holds
            something else, unreadable images without ``skip_unreadable`` (exit 2; nothing is
            written when found by the checks before decoding).
    """
    workers = workers if workers is not None else max(1, min(16, os.cpu_count() or 1))
    _check_args(source, size, margin, workers)
    out = Path(out).expanduser()
    try:
        src = as_path(src, source, "the folder to bake")
        plan = _make_plan(source, src, size, margin)
    except SpecError as exc:
        raise SpecError([Problem(SRC if p.path == DATA_DIR else p.path, p.message) for p in exc.problems]) from None
    mode, manifest = _check_out(out, plan)
    if mode == "done":
        return BakeResult(out, manifest, already=True)
    state = out / STATE
    if mode == "new":
        bad: list[dict] = []
        if source == "imagefolder":
            bad = _scan(plan.items["train"] + plan.items["val"], workers, progress)
        if bad and not skip_unreadable:
            raise _unreadable_problems(bad, "nothing was written; fix or remove them, or give --skip-unreadable "
                                            "to bake without them (the manifest lists them)")
        skipped = {b["path"] for b in bad}
        for split in SPLITS:
            keep = [k for k, item in enumerate(plan.items[split]) if item not in skipped]
            plan.items[split] = [plan.items[split][k] for k in keep]
            plan.labels[split] = [plan.labels[split][k] for k in keep]
        if not plan.items["train"] or not plan.items["val"]:
            raise problem(SRC, f"{src}: no readable images left in the {'train' if not plan.items['train'] else 'val'} "
                               f"split")
        state.mkdir(parents=True, exist_ok=True)
        side = size + margin
        for split in SPLITS:
            np.lib.format.open_memmap(state / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                      shape=(len(plan.items[split]), 3, side, side)).flush()
        _write_json(state / "plan.json", {"key": plan.key(), "chunk": chunk, "classes": plan.classes,
                                          "items": plan.items,
                                          "labels": plan.labels, "checked_bad": bad, "ignored": plan.ignored})
    saved = _read_json(state / "plan.json", "bake plan")
    try:
        plan.items, plan.labels = saved["items"], saved["labels"]
        checked_bad, plan.ignored = list(saved["checked_bad"]), list(saved["ignored"])
        plan.chunk = int(saved["chunk"])
        if plan.chunk < 1:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise problem(OUT, f"{state / 'plan.json'} is damaged; remove {state} and bake again") from None
    if checked_bad and not skip_unreadable:
        raise _unreadable_problems(checked_bad, "give --skip-unreadable to finish the bake without them")
    resumed = _fill(state, plan, workers, progress)
    return _finish(out, state, plan, checked_bad, skip_unreadable, resumed)


def _fill(state: Path, plan: _Plan, workers: int, progress) -> int:
    """Decode every unfinished chunk; returns how many chunks a previous run had finished."""
    side = plan.size + plan.margin
    todo = []
    resumed = 0
    total = sum(len(plan.items[s]) for s in SPLITS)
    finished = 0
    for split in SPLITS:
        journal = _journal(state, split)
        resumed += len(journal)
        n, per = len(plan.items[split]), plan.chunk
        for chunk in range((n + per - 1) // per):
            items = plan.items[split][chunk * per:(chunk + 1) * per]
            if chunk in journal:
                finished += len(items)
            else:
                todo.append((split, chunk, items))
    if progress is not None:
        progress("bake", finished, total)
    if not todo:
        return resumed
    for split in SPLITS:  # end a line cut short by a kill, so that the next row is not glued onto it
        path = state / f"chunks-{split}.jsonl"
        if path.is_file() and path.stat().st_size:
            with open(path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
    logs = {s: open(state / f"chunks-{s}.jsonl", "a", encoding="utf-8") for s in SPLITS}
    try:
        with _pool(workers) as pool:
            futures = [pool.submit(_bake_chunk, str(state / f"{split}_images.npy"), split, chunk * plan.chunk,
                                   chunk, items, side) for split, chunk, items in todo]
            for future in futures:
                row = future.result()
                log = logs[row["split"]]
                log.write(json.dumps(row) + "\n")
                log.flush()
                os.fsync(log.fileno())
                finished += row["count"]
                if progress is not None:
                    progress("bake", finished, total)
    finally:
        for log in logs.values():
            log.close()
    return resumed


def _hash(path: Path) -> ArrayFile:
    size = path.stat().st_size
    blocks = list(range(0, max(size, 1), BLOCK))

    def one(offset: int) -> str:
        with open(path, "rb") as f:
            f.seek(offset)
            return hashlib.sha256(f.read(BLOCK)).hexdigest()

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(one, blocks))
    return ArrayFile(file=path.name, bytes=size, block=BLOCK, sha256=digests)


def _finish(out: Path, state: Path, plan: _Plan, checked_bad: list[dict], skip: bool, resumed: int) -> BakeResult:
    rows = {s: _journal(state, s) for s in SPLITS}
    failed = {s: [b for r in rows[s].values() for b in r["bad"]] for s in SPLITS}
    decode_bad = failed["train"] + failed["val"]
    if decode_bad and not skip:
        raise _unreadable_problems(decode_bad, f"the bake is kept in {state}: give --skip-unreadable to finish it "
                                               f"without them (no image is decoded again)")
    total = np.zeros(3)
    squares = np.zeros(3)
    for r in rows["train"].values():
        total += np.array(r["sum"])
        squares += np.array(r["sq"])
    side = plan.size + plan.margin
    pixels = max((len(plan.items["train"]) - len(failed["train"])) * side * side, 1)
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean ** 2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    splits = {}
    for split in SPLITS:
        drop = sorted(b["row"] for b in failed[split])
        keep = np.setdiff1d(np.arange(len(plan.items[split])), np.array(drop, dtype=np.int64))
        images = out / f"{split}_images.npy"
        staged = state / f"{split}_images.npy"
        if staged.exists():
            if drop:
                _compact(staged, images, keep)
                staged.unlink()
            else:
                os.replace(staged, images)
        labels = np.asarray(plan.labels[split], dtype=np.int64)[keep]
        tmp = out / f".{split}_labels.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, labels)
        os.replace(tmp, out / f"{split}_labels.npy")
        splits[split] = SplitFiles(count=int(len(keep)), images=_hash(images), labels=_hash(out / f"{split}_labels.npy"))
    import PIL

    skipped = [Skipped(path=b["path"], error=b["error"]) for b in checked_bad + decode_bad]
    manifest = Manifest(
        format=FORMAT, version=VERSION, source=plan.source, size=plan.size, margin=plan.margin, stored=side,
        channels=3, classes=plan.classes, splits=splits, mean=[float(m) for m in mean],
        std=[float(s) for s in std], unreadable=skipped, ignored=len(plan.ignored),
        versions={"archspace": _version(), "numpy": np.__version__, "pillow": PIL.__version__,
                  "python": platform.python_version()},
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _write_json(out / MANIFEST, manifest.model_dump(mode="json"))
    shutil.rmtree(state)
    return BakeResult(out, manifest, resumed_chunks=resumed)


def _compact(staged: Path, final: Path, keep: np.ndarray) -> None:
    src = np.load(staged, mmap_mode="r")
    tmp = final.with_name(f".{final.name}.tmp")
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keep), *src.shape[1:]))
    for start in range(0, len(keep), 4096):
        dst[start:start + 4096] = src[keep[start:start + 4096]]
    dst.flush()
    del dst, src
    os.replace(tmp, final)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("archspace")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


# -- reading a baked set -----------------------------------------------------------------------

VERIFIED = ".archspace-verified.json"
"""Written into a baked folder (when writable) after its arrays matched their checksums: the
size, modification time and inode of each, so that the next trial skips hashing unchanged files."""
_VERIFIED: dict[tuple, bool] = {}  # (path, bytes, mtime_ns, inode) of arrays that matched, in this process


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _stamped(folder: Path) -> dict[str, list[int]]:
    path = folder / VERIFIED
    try:
        if path.stat().st_size > 1 << 20:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest_id = _identity((folder / MANIFEST).stat())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("manifest") != manifest_id or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def verify(folder: Path, manifest: Manifest, where: str = DATA_DIR, *, full: bool = False) -> None:
    """Check every array of ``folder`` against the manifest's checksums. Raises SpecError on
    ``where`` naming the file (and block) that differs.

    A file is hashed unless it is unchanged (size, modification time, inode) since it last
    matched, in this process or as recorded in the folder's stamp; ``full`` hashes every file.
    """
    stamped = {} if full else _stamped(folder)
    matched: dict[str, list[int]] = {}
    for split in manifest.splits.values():
        for entry in (split.images, split.labels):
            path = folder / entry.file
            try:
                stat = path.stat()
            except OSError:
                raise problem(where, f"{path} is missing (the manifest lists it)") from None
            key = (str(path.resolve()), *_identity(stat))
            matched[entry.file] = _identity(stat)
            if not full and (_VERIFIED.get(key) or stamped.get(entry.file) == _identity(stat)):
                continue
            if stat.st_size != entry.bytes:
                raise problem(where, f"{path} has {stat.st_size} bytes, the manifest says {entry.bytes}: the baked "
                                     f"set is damaged; bake it again")
            got = _hash(path)
            for k, (a, b) in enumerate(zip(got.sha256, entry.sha256)):
                if a != b:
                    raise problem(where, f"{path} does not match its checksum in {MANIFEST} (block {k}, bytes "
                                         f"{k * entry.block}-{min((k + 1) * entry.block, entry.bytes) - 1}): the "
                                         f"baked set is damaged; bake it again")
            if len(got.sha256) != len(entry.sha256):
                raise problem(where, f"{path} does not match its checksum in {MANIFEST}; bake it again")
            _VERIFIED[key] = True
    if matched != stamped:
        try:
            _write_json(folder / VERIFIED, {"manifest": _identity((folder / MANIFEST).stat()), "files": matched})
        except OSError:  # a read-only folder: hashed again by the next process
            pass


def _open_split(folder: Path, files: SplitFiles, manifest: Manifest) -> MappedSet:
    import torch

    shape = (files.count, 3, manifest.stored, manifest.stored)
    try:
        images = np.load(folder / files.images.file, mmap_mode="r", allow_pickle=False)
        labels = np.load(folder / files.labels.file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise problem(DATA_DIR, f"cannot open the baked arrays in {folder}: {type(exc).__name__}: {exc}") from None
    if images.dtype != np.uint8 or tuple(images.shape) != shape:
        raise problem(DATA_DIR, f"{folder / files.images.file} holds {images.dtype} {tuple(images.shape)}, the "
                                f"manifest says uint8 {shape}")
    if labels.dtype != np.int64 or labels.shape != (files.count,):
        raise problem(DATA_DIR, f"{folder / files.labels.file} holds {labels.dtype} {labels.shape}, the manifest "
                                f"says int64 ({files.count},)")
    if labels.size and (labels.min() < 0 or labels.max() >= len(manifest.classes)):
        raise problem(DATA_DIR, f"{folder / files.labels.file} has labels outside 0..{len(manifest.classes) - 1}")
    return MappedSet(images, torch.from_numpy(labels.copy()))


def describe_baked(*, data_dir: str | Path | None = None, **options: Any) -> DataInfo:
    """Class count, 3 channels and the one input size the set was baked for (its manifest only)."""
    take_options("baked", options, {}, {})
    folder = as_path(data_dir, "baked", "a folder made by archspace data bake")
    manifest = read_manifest(folder)
    return DataInfo("baked", len(manifest.classes), (3,), manifest.size)


def load_baked(*, size: int, channels: int = 3, data_dir: str | Path | None = None, seed: int = 0,
               loader: str = "auto", **options: Any) -> DataBundle:
    """The baked set in ``data_dir``, memory-mapped, its checksums verified.

    Raises:
        SpecError: no or a bad manifest, damaged arrays (on ``--data-dir``), a spec whose
            ``input.size`` or ``input.channels`` the set was not baked for.
    """
    take_options("baked", options, {}, {})
    if loader == "stream":
        raise problem("train.loader", "a baked set is read memory-mapped; stream is for imagefolder")
    folder = as_path(data_dir, "baked", "a folder made by archspace data bake")
    manifest = read_manifest(folder)
    problems = []
    if size != manifest.size:
        problems.append(Problem(SIZE, f"the baked set in {folder} is baked for {manifest.size} px, not {size} "
                                      f"(bake it again with --size {size}, or set input.size: {manifest.size})"))
    if channels != 3:
        problems.append(Problem(CHANNELS, f"a baked set gives 3 channels, not {channels}"))
    if problems:
        raise SpecError(problems)
    verify(folder, manifest)
    train = _open_split(folder, manifest.splits["train"], manifest)
    val = _open_split(folder, manifest.splits["val"], manifest)
    note = (f"memory-mapped from {folder} (baked at {manifest.stored} px, crops of {manifest.size}; "
            f"{len(train):,} train and {len(val):,} val images)")
    return DataBundle("baked", train, val, len(manifest.classes), 3, tuple(manifest.mean), tuple(manifest.std),
                      size=manifest.size, path="baked", note=note)


__all__ = ["BakeResult", "MANIFEST", "Manifest", "bake", "describe_baked", "load_baked", "read_manifest", "verify"]
