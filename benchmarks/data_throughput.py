"""Data-path throughput and memory: images per second delivered to the training loop, and what a
trainer over a baked set holds in memory.

Throughput counts what a training step gets, augmentation included, done as the Trainer does it:

  memory     a ``synthetic`` set held in memory at 32 px: ``Batches`` gather (uint8) → normalize
             (float) → ``Augment`` random resized crop + flip at 32 px, on the batch
  baked      the same over a baked set (``bake()`` of generated small JPEGs, stored at 32 + margin
             px, memory-mapped, warm page cache)
  stream     a generated folder of 100–500 px JPEGs, ``loader="stream"``: ``--workers`` DataLoader
             worker processes decode each image with Pillow and crop + flip it there (random
             resized crop of the original, draft mode where the crop allows); only normalize on
             the batch
  baseline   the peer loader on the same folder with the same workers and batch: a plain
             ``torch.utils.data.DataLoader`` over a minimal Pillow image-folder Dataset doing
             torchvision's RandomResizedCrop algorithm (written here: torchvision is not used) +
             flip + PILToTensor, default collate; then normalize

The stream path is also profiled per sample in one process (header read, decode with and
without Pillow's draft, resize, copy), and run end to end with draft switched off.

Memory: the real ``archspace.train.train`` (tiny ConvNeXt, 32 px, batch 256, random resized crop
+ flip) in a fresh subprocess over a baked set of ``--small`` and of ``--large`` train images, one
full epoch, then two such trainers at once on the large set. Each child stops after its last
training batch while this script reads ``/proc/<pid>/smaps_rollup`` (USS = Private_Clean +
Private_Dirty, PSS, RSS) and ``/proc/<pid>/smaps`` (split into the mapped ``*_images.npy`` arrays,
anonymous memory and other files); peaks come from polling ``smaps_rollup``. Linux counts a
file page mapped by one process only as Private_Clean, so the raw USS of a lone trainer includes
every baked page it has touched: both the raw figures and the breakdown are printed.

Generated data lives under ``--cache`` (default /tmp/archspace-bench-data) and is reused by later
runs (folders are marked complete; bakes are resumable and recognised).

    python benchmarks/data_throughput.py                 # full measurement (~15-20 min first time)
    python benchmarks/data_throughput.py --quick         # small sizes, a smoke run (~1-2 min)
    python benchmarks/data_throughput.py --skip-memory --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

TINY_CONVNEXT = {
    "name": "tiny", "input": {"size": 32},
    "stem": {"kind": "patchify", "patch": 4, "norm": "layernorm"},
    "stages": [{"block": "convnext", "depth": 1, "width": 32, "stride": 1},
               {"block": "convnext", "depth": 1, "width": 64}],
}
TARGET_BAKED = 20_000  # img/s at 32 px, batch 256
TARGET_STREAM = 0.90  # stream / baseline
TARGET_USS_GROWTH = 100e6  # bytes, small -> large baked set
TARGET_PAIR_PSS = 1.3  # combined PSS of two trainers / one trainer's PSS
MB = 1e6


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def load() -> str:
    return "load avg " + " ".join(f"{v:.2f}" for v in os.getloadavg())


# -- generated data ------------------------------------------------------------------------------

def _draw(path: str, w: int, h: int, rng: np.random.Generator, quality: int) -> None:
    """A smooth random colour field (a 4x4 grid upsampled) plus grey noise, as a JPEG."""
    from PIL import Image

    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)
    noisy = field + rng.normal(0.0, 10.0, (h, w, 1)).astype(np.int16)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=quality)


def _draw_chunk(task: tuple) -> int:
    root, split, start, count, classes, lo, hi, seed = task
    rng = np.random.default_rng([seed, start, 0 if split == "train" else 1])
    for i in range(start, start + count):
        w, h = (int(v) for v in rng.integers(lo, hi + 1, 2))
        _draw(os.path.join(root, split, f"c{i % classes:03d}", f"{i:07d}.jpg"), w, h, rng, 90)
    return count


def make_folder(root: Path, n_train: int, n_val: int, classes: int, lo: int, hi: int,
                workers: int) -> tuple[float, bool]:
    """``root/{train,val}/cNNN/*.jpg`` of random sides in [lo, hi]; reused when complete. (seconds, cached)"""
    marker = root / ".complete"
    want = {"n_train": n_train, "n_val": n_val, "classes": classes, "lo": lo, "hi": hi, "version": 1}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return 0.0, True
    t0 = time.perf_counter()
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"c{c:03d}").mkdir(parents=True, exist_ok=True)
    per = 512
    tasks = [(str(root), split, s, min(per, n - s), classes, lo, hi, 1234)
             for split, n in (("train", n_train), ("val", n_val)) for s in range(0, n, per)]
    with get_context("fork").Pool(workers) as pool:
        for _ in pool.imap_unordered(_draw_chunk, tasks):
            pass
    marker.write_text(json.dumps(want))
    return time.perf_counter() - t0, False


def make_baked(src: Path, out: Path, size: int, margin: int, workers: int) -> tuple[float, bool, int]:
    """``bake()`` of ``src`` into ``out`` (recognised when already done). (seconds, cached, images)"""
    from archspace.data.baked import bake

    t0 = time.perf_counter()
    result = bake(src, out, size=size, margin=margin, workers=workers)
    n = sum(s.count for s in result.manifest.splits.values())
    return time.perf_counter() - t0, result.already, n


# -- in-process paths: memory and baked ----------------------------------------------------------

def pipeline_rates(bundle, batch: int, repeat: int, max_batches: int, scale: tuple[float, float],
                   per_sample: bool = False, batches=None, warmup: int = 3, epoch: int = 1) -> dict:
    """Time Batches.train → normalize → Augment as Trainer.train_epoch does, ``repeat`` times over up to
    ``max_batches`` batches of an epoch; per-stage ms per batch of the median repeat."""
    from archspace.data import Augment, normalize
    from archspace.data.loader import Batches
    from archspace.train.loop import _to_device

    if batches is None:
        batches = Batches(bundle, batch_size=batch, eval_batch_size=batch, seed=0)
    augment = Augment(random_resized_crop=not per_sample, scale=scale, flip=not per_sample,
                      num_classes=bundle.num_classes, size=bundle.input_size)
    generator = torch.Generator().manual_seed(0)
    device = torch.device("cpu")
    limit = min(batches.steps_per_epoch, max_batches)

    def once(epoch: int, steps: int) -> dict:
        fetch = norm = aug = 0.0
        seen = 0
        it = batches.train(epoch)
        start = time.perf_counter()
        for _ in range(steps):
            ta = time.perf_counter()
            x, y = next(it)
            tb = time.perf_counter()
            x = normalize(_to_device(x, device), bundle)
            y = y.to(device)
            tc = time.perf_counter()
            x, target = augment(x, y, generator)
            td = time.perf_counter()
            fetch, norm, aug = fetch + tb - ta, norm + tc - tb, aug + td - tc
            seen += len(y)
        total = time.perf_counter() - start
        it.close()
        return {"rate": seen / total, "fetch_ms": 1e3 * fetch / steps, "normalize_ms": 1e3 * norm / steps,
                "augment_ms": 1e3 * aug / steps, "out": tuple(x.shape)}

    if warmup:
        once(0, min(warmup, limit))  # warm-up (allocator, page cache of the first rows, loader workers)
    runs = sorted((once(epoch + r, limit) for r in range(repeat)), key=lambda r: r["rate"])
    mid = runs[len(runs) // 2]
    return {**mid, "median": mid["rate"], "best": runs[-1]["rate"], "rates": [r["rate"] for r in runs],
            "images": limit * batch}


def print_rate(label: str, r: dict, target: float | None = None) -> None:
    stages = f"per batch: fetch {r['fetch_ms']:.2f} ms, normalize {r['normalize_ms']:.2f} ms, " \
             f"augment {r['augment_ms']:.2f} ms"
    tail = f"   target >= {target:,.0f}: {verdict(r['median'] >= target)}" if target else ""
    print(f"  {label:44s} {r['median']:9,.0f} img/s (best {r['best']:,.0f})  [{stages}]{tail}", flush=True)


# -- streamed folder and the peer baseline -------------------------------------------------------

class PlainFolder(torch.utils.data.Dataset):
    """What torchvision's ImageFolder + RandomResizedCrop + RandomHorizontalFlip + PILToTensor do,
    written out (torchvision is not a dependency): a list of (path, label), Pillow's full decode,
    torchvision's crop-parameter algorithm with torch's RNG, crop then bilinear (antialiased) resize."""

    def __init__(self, root: Path, size: int, scale: tuple[float, float], ratio=(3.0 / 4.0, 4.0 / 3.0)):
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.samples = [(os.path.join(root, c, f), k) for k, c in enumerate(classes)
                        for f in sorted(os.listdir(root / c))]
        self.size, self.scale, self.ratio = size, scale, ratio

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def get_params(width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
        """torchvision.transforms.RandomResizedCrop.get_params: (top, left, height, width)."""
        area = height * width
        log_ratio = torch.log(torch.tensor(ratio))
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
            aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                i = torch.randint(0, height - h + 1, size=(1,)).item()
                j = torch.randint(0, width - w + 1, size=(1,)).item()
                return i, j, h, w
        in_ratio = float(width) / float(height)
        if in_ratio < min(ratio):
            w = width
            h = int(round(w / min(ratio)))
        elif in_ratio > max(ratio):
            h = height
            w = int(round(h * max(ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.samples[index]
        with open(path, "rb") as f:  # torchvision's pil_loader
            img = Image.open(f).convert("RGB")
        top, left, h, w = self.get_params(img.size[0], img.size[1], self.scale, self.ratio)
        img = img.crop((left, top, left + w, top + h)).resize((self.size, self.size), Image.Resampling.BILINEAR)
        if torch.rand(1) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = torch.as_tensor(np.array(img, copy=True))  # PILToTensor
        return arr.view(self.size, self.size, 3).permute((2, 0, 1)), label


class _PlainBatches:
    """The baseline DataLoader behind the interface ``pipeline_rates`` uses."""

    def __init__(self, dataset: PlainFolder, batch: int, workers: int):
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                                  num_workers=workers, persistent_workers=workers > 0)
        self.steps_per_epoch = len(dataset) // batch

    def train(self, epoch: int):
        yield from self.loader

    def close(self) -> None:
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


def _no_draft():
    """Patch archspace's decoder so that it never asks Pillow for a reduced-scale decode; returns the undo."""
    from archspace.data import _decode

    original = _decode._decoded

    def decoded(img, mode, want=None):
        return original(img, mode, None)

    _decode._decoded = decoded
    return lambda: setattr(_decode, "_decoded", original)


def source_size(path: str) -> tuple[int, int]:
    """The image's size from its header (what the decoder reads before deciding the crop)."""
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def stream_profile(bundle, size: int, scale: tuple[float, float], count: int) -> dict:
    """Per-sample ms in this process (no DataLoader) over ``count`` train images: stages of the stream
    path's training view and the baseline's ``__getitem__``."""
    from PIL import Image

    from archspace.data import _decode as D
    from archspace.data.loader import _StreamView, sample_seed

    split = bundle.train
    picks = random.Random(0).sample(range(len(split)), min(count, len(split)))
    paths = [split.path(i) for i in picks]
    view = _StreamView(split, size, 3, True, scale, True)

    def per_image(fn) -> float:
        fn(0)  # warm
        best = math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            for k in range(len(picks)):
                fn(k)
            best = min(best, (time.perf_counter() - t0) / len(picks) * 1e3)
        return best

    plans = []  # what random_crop decides for each sample
    for k, i in enumerate(picks):
        rng = random.Random(sample_seed(0, 1, i))
        w, h = source_size(paths[k])
        box = D.crop_box(w, h, scale, rng)
        shrink = min(box[2] - box[0], box[3] - box[1]) / size
        plans.append((w, h, box, (w / shrink, h / shrink) if shrink > 1 else None))
    drafted = [D.open_image(p, "RGB", plan[3]) for p, plan in zip(paths, plans)]
    scales = [round(plan[0] / img.size[0]) for plan, img in zip(plans, drafted)]

    def resize(k):
        img, (w, h, (x0, y0, x1, y1), _) = drafted[k], plans[k]
        fx, fy = img.size[0] / w, img.size[1] / h
        return img.resize((size, size), Image.Resampling.BILINEAR, box=(x0 * fx, y0 * fy, x1 * fx, y1 * fy))

    small = [resize(k) for k in range(len(picks))]
    plain = PlainFolder.__new__(PlainFolder)
    plain.samples = [(p, 0) for p in paths]
    plain.size, plain.scale, plain.ratio = size, scale, (3.0 / 4.0, 4.0 / 3.0)
    out = {
        "header": per_image(lambda k: source_size(paths[k])),
        "decode_draft": per_image(lambda k: D.open_image(paths[k], "RGB", plans[k][3])),
        "decode_full": per_image(lambda k: D.open_image(paths[k], "RGB", None)),
        "resize": per_image(resize),
        "flip_to_chw": per_image(lambda k: D.to_chw(small[k].transpose(Image.Transpose.FLIP_LEFT_RIGHT))),
        "stream_total": per_image(lambda k: view[(picks[k], sample_seed(0, 1, picks[k]))]),
        "baseline_total": per_image(lambda k: plain[k]),
        "n": len(picks),
        "scales": {s: scales.count(s) / len(scales) for s in sorted(set(scales))},
        "mean_side": statistics.mean(max(p[0], p[1]) for p in plans),
    }
    undo = _no_draft()
    try:
        out["stream_total_no_draft"] = per_image(lambda k: view[(picks[k], sample_seed(0, 1, picks[k]))])
    finally:
        undo()
    return out


def stream_vs_baseline(folder: Path, size: int, batch: int, workers: int, repeat: int, scale) -> dict:
    """Interleaved epochs of the stream path, the same with draft off, and the baseline."""
    from archspace.data import load_data
    from archspace.data.loader import Batches

    bundle = load_data("imagefolder", size=size, data_dir=folder, loader="stream")
    make = lambda: Batches(bundle, batch_size=batch, eval_batch_size=batch, seed=0, crop=True,  # noqa: E731
                           scale=scale, flip=True, workers=workers)
    contenders = {"stream": make()}
    undo = _no_draft()  # the draft-off loader's workers fork while the patch is on
    try:
        contenders["stream_no_draft"] = make()
        next(contenders["stream_no_draft"].train(0))
    finally:
        undo()
    contenders["baseline"] = _PlainBatches(PlainFolder(folder / "train", size, scale), batch, workers)
    results: dict[str, list[dict]] = {k: [] for k in contenders}
    try:
        for name, b in contenders.items():  # warm-up: workers started, files in the page cache
            pipeline_rates(bundle, batch, 1, 2 * max(workers, 1), scale, per_sample=True, batches=b, warmup=0)
        for r in range(repeat):
            for name, b in contenders.items():
                results[name].append(pipeline_rates(bundle, batch, 1, b.steps_per_epoch, scale, per_sample=True,
                                                    batches=b, warmup=0, epoch=r + 1))
    finally:
        for b in contenders.values():
            b.close()
    out = {}
    for name, runs in results.items():
        runs = sorted(runs, key=lambda r: r["rate"])
        mid = runs[len(runs) // 2]
        out[name] = {**mid, "median": mid["rate"], "best": runs[-1]["rate"], "rates": [r["rate"] for r in runs]}
    out["bundle"] = bundle
    return out


# -- memory of trainers over a baked set ---------------------------------------------------------

FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty", "Anonymous")


def rollup(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        next(f)  # the [rollup] address line
        for line in f:
            key, _, rest = line.partition(":")
            if rest.strip():
                out[key] = int(rest.split()[0]) * 1024
    out["USS"] = out["Private_Clean"] + out["Private_Dirty"]
    return out


def breakdown(pid: int, suffix: str = "_images.npy") -> dict[str, dict]:
    """/proc/<pid>/smaps summed per kind of mapping: the baked arrays, anonymous (heap, stacks, anonymous
    maps: no file), other files (libraries, ...). Bytes, with USS = Private_Clean + Private_Dirty."""
    cats = {k: dict.fromkeys(FIELDS, 0) for k in ("baked", "anon", "files")}
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0] if line.strip() else ""
            if first.endswith(":"):
                key = first[:-1]
                if cur is not None and key in FIELDS:
                    cur[key] += int(line.split()[1]) * 1024
                continue
            parts = line.split(None, 5)
            path = parts[5].strip() if len(parts) > 5 else ""
            if path.endswith(suffix):
                cur = cats["baked"]
            elif not path or path.startswith("["):
                cur = cats["anon"]
            else:
                cur = cats["files"]
    for c in cats.values():
        c["USS"] = c["Private_Clean"] + c["Private_Dirty"]
    return cats


class Poller(threading.Thread):
    """Peak RSS / PSS / USS / anonymous of some processes, from smaps_rollup every ``every`` s."""

    def __init__(self, pids: list[int], every: float = 0.25):
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.peak = {p: dict.fromkeys(("Rss", "Pss", "USS", "Anonymous"), 0) for p in pids}
        self.peak_sum_pss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            total = 0
            for p in self.pids:
                try:
                    r = rollup(p)
                except (OSError, KeyError):
                    continue
                for k in self.peak[p]:
                    self.peak[p][k] = max(self.peak[p][k], r[k])
                total += r["Pss"]
            self.peak_sum_pss = max(self.peak_sum_pss, total)


def child_trainer(baked: str, batch: int, threads: int) -> None:
    """(subprocess) One epoch of the real trainer; stops after the last training batch until a line on stdin."""
    torch.set_num_threads(threads)
    from archspace import load_spec
    from archspace.train import TrainConfig, train

    spec = load_spec(TINY_CONVNEXT)
    config = TrainConfig(data="baked", data_dir=baked, batch_size=batch, epochs=1, random_resized_crop=True,
                         flip=True)
    marks = {}

    def on_batch(done: int, total: int) -> None:
        if done == 1:
            marks["first"] = time.perf_counter()
        if done == total:
            marks["last"] = time.perf_counter()
            rate = (total - 1) * batch / (marks["last"] - marks["first"]) if total > 1 else 0.0
            print(json.dumps({"event": "epoch_end", "steps": total, "images_per_s": rate}), flush=True)
            sys.stdin.readline()  # the parent reads our memory now

    t0 = time.perf_counter()
    result = train(spec, config, None, on_batch=on_batch)
    print(json.dumps({"event": "done", "status": result.status, "seconds": time.perf_counter() - t0,
                      "train_images": result.data.get("train_images")}), flush=True)


def run_trainers(baked: Path, count: int, batch: int, threads: int) -> list[dict]:
    """``count`` trainer subprocesses at once on ``baked``; memory read when all are at the end of their epoch."""
    procs, logs = [], []
    for _ in range(count):
        logs.append(tempfile.TemporaryFile(mode="w+"))
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--child-trainer", str(baked), "--batch", str(batch),
             "--child-threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs[-1], text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)}))
    poller = Poller([p.pid for p in procs])
    poller.start()
    t0 = time.perf_counter()

    def wait_for(p, event: str) -> dict:
        while True:
            line = p.stdout.readline()
            if not line:
                p.wait()
                log = logs[procs.index(p)]
                log.seek(0)
                raise RuntimeError(f"trainer {p.pid} exited {p.returncode}: {log.read()[-3000:]}")
            if line.startswith("{"):
                msg = json.loads(line)
                if msg.get("event") == event:
                    return msg

    try:
        ends = [wait_for(p, "epoch_end") for p in procs]
        poller.stop.set()
        poller.join()
        out = [{"pid": p.pid, "end": e, "rollup": rollup(p.pid), "parts": breakdown(p.pid),
                "peak": poller.peak[p.pid], "peak_sum_pss": poller.peak_sum_pss}
               for p, e in zip(procs, ends)]
        for p in procs:
            p.stdin.write("\n")
            p.stdin.flush()
        for p, o in zip(procs, out):
            o["done"] = wait_for(p, "done")
            p.wait()
        for o in out:
            o["wall"] = time.perf_counter() - t0
        return out
    finally:
        poller.stop.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def print_memory(label: str, m: dict) -> None:
    r, parts, peak = m["rollup"], m["parts"], m["peak"]
    print(f"  {label}: {m['done']['train_images']:,} train images, {m['end']['steps']} steps, "
          f"{m['end']['images_per_s']:,.0f} img/s in the epoch; at the end of the epoch:")
    print(f"    total (smaps_rollup)       USS {r['USS'] / MB:8.1f} MB  PSS {r['Pss'] / MB:8.1f} MB  "
          f"RSS {r['Rss'] / MB:8.1f} MB  (Pss_Anon {r.get('Pss_Anon', 0) / MB:.1f}, Pss_File "
          f"{r.get('Pss_File', 0) / MB:.1f} MB)")
    names = {"baked": "baked arrays (*_images.npy)", "anon": "anonymous (heap, stacks)",
             "files": "other files (libraries)"}
    for k in ("baked", "anon", "files"):
        c = parts[k]
        print(f"    {names[k]:26s} USS {c['USS'] / MB:8.1f} MB  PSS {c['Pss'] / MB:8.1f} MB  "
              f"RSS {c['Rss'] / MB:8.1f} MB  (Private_Clean {c['Private_Clean'] / MB:.1f}, Private_Dirty "
              f"{c['Private_Dirty'] / MB:.1f}, Shared {(c['Shared_Clean'] + c['Shared_Dirty']) / MB:.1f} MB)")
    print(f"    peak while running (polled) USS {peak['USS'] / MB:8.1f} MB  PSS {peak['Pss'] / MB:8.1f} MB  "
          f"RSS {peak['Rss'] / MB:8.1f} MB  anonymous {peak['Anonymous'] / MB:.1f} MB", flush=True)


def mapped_here(suffix: str = "_images.npy") -> bool:
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(suffix) for line in f)


# -- main ----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a minute or two")
    ap.add_argument("--cache", default="/tmp/archspace-bench-data", help="generated folders and bakes (reused)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="loader workers of the stream path and the baseline")
    ap.add_argument("--gen-workers", type=int, default=2, help="processes generating images and baking")
    ap.add_argument("--size", type=int, default=32, help="input size of the memory and baked paths")
    ap.add_argument("--margin", type=int, default=4, help="bake margin (stored at size + margin)")
    ap.add_argument("--stream-size", type=int, default=64, help="input size of the stream path and baseline")
    ap.add_argument("--small", type=int, default=None, help="train images of the small baked set (20,000)")
    ap.add_argument("--large", type=int, default=None, help="train images of the large baked set (200,000)")
    ap.add_argument("--stream-images", type=int, default=None, help="train images of the JPEG folder (6,144)")
    ap.add_argument("--repeat", type=int, default=None, help="timed repeats per figure (3; the median is shown)")
    ap.add_argument("--max-batches", type=int, default=200, help="batches per timed repeat of the in-process paths")
    ap.add_argument("--crop-scale", type=float, nargs=2, default=(0.35, 1.0),
                    help="random resized crop area range, every path (TrainConfig's default)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads here (default: torch's)")
    ap.add_argument("--trainer-threads", type=int, default=1,
                    help="torch threads of each trainer subprocess (the memory part)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--json", action="store_true", help="also print every figure as one JSON line at the end")
    ap.add_argument("--child-trainer", help=argparse.SUPPRESS)
    ap.add_argument("--child-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_trainer:
        child_trainer(args.child_trainer, args.batch, args.child_threads)
        return
    small = args.small or (2_000 if args.quick else 20_000)
    large = args.large or (10_000 if args.quick else 200_000)
    n_stream = args.stream_images or (1_024 if args.quick else 6_144)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = tuple(args.crop_scale)
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    import PIL
    from PIL import features

    print(f"# torch {torch.__version__}, Pillow {PIL.__version__} (libjpeg-turbo "
          f"{features.version('jpg') if features.check_feature('libjpeg_turbo') else 'no'}), "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads here; batch {args.batch}, "
          f"crop scale {scale}; {load()}", flush=True)
    figures: dict = {"batch": args.batch, "crop_scale": scale}

    # data
    print(f"\n== data under {cache}")
    sets = {}
    for name, n in (("small", small), ("large", large)):
        folder = cache / f"folder-{n}-40to64"
        secs, cached = make_folder(folder, n, max(n // 20, 200), 100, 40, 64, args.gen_workers)
        print(f"  folder {folder.name}: {n:,} + {max(n // 20, 200):,} JPEGs of 40-64 px: "
              f"{'cached' if cached else f'generated in {secs:.1f} s'}", flush=True)
        baked = cache / f"baked-{n}-s{args.size}-m{args.margin}"
        secs, cached, count = make_baked(folder, baked, args.size, args.margin, args.gen_workers)
        print(f"  baked {baked.name}: {count:,} images at {args.size}+{args.margin} px: "
              + ("cached (bake() found it done)" if cached else
                 f"bake() took {secs:.1f} s with {args.gen_workers} workers ({count / secs:,.0f} img/s)"), flush=True)
        sets[name] = baked
        figures[f"bake_{name}_s"] = None if cached else secs
    stream_folder = cache / f"stream-{n_stream}-100to500"
    secs, cached = make_folder(stream_folder, n_stream, max(n_stream // 20, 200), 20, 100, 500, args.gen_workers)
    print(f"  folder {stream_folder.name}: {n_stream:,} + {max(n_stream // 20, 200):,} JPEGs of 100-500 px: "
          f"{'cached' if cached else f'generated in {secs:.1f} s'}; {load()}", flush=True)

    if not args.skip_throughput:
        from archspace.data import load_data

        print(f"\n== throughput delivered to the training loop, batch {args.batch} (median of {repeat}; "
              f"in-process paths: {args.max_batches} batches per repeat at most)")
        threads = [torch.get_num_threads()] + ([1] if torch.get_num_threads() != 1 else [])
        default_threads = torch.get_num_threads()
        for th in threads:
            torch.set_num_threads(th)
            bundle = load_data("synthetic", size=args.size, n_train=small, n_val=128)
            r = pipeline_rates(bundle, args.batch, repeat, args.max_batches, scale)
            print_rate(f"(a) memory {args.size} px, {small:,} imgs, {th} thr", r)
            figures[f"memory_{th}thr"] = r["median"]
            del bundle
            for name in ("small", "large"):
                bundle = load_data("baked", size=args.size, data_dir=sets[name])
                r = pipeline_rates(bundle, args.batch, repeat, args.max_batches, scale)
                print_rate(f"(b) baked {args.size} px ({args.size + args.margin} stored), {len(bundle.train):,} "
                           f"imgs, {th} thr", r, TARGET_BAKED)
                figures[f"baked_{name}_{th}thr"] = r["median"]
                del bundle, r
                gc.collect()
        torch.set_num_threads(default_threads)
        print(f"  ({load()})", flush=True)

        print(f"\n== stream vs peer baseline: {stream_folder.name}, {args.stream_size} px, {args.workers} workers, "
              f"batch {args.batch}, whole epochs interleaved (median of {repeat})")
        res = stream_vs_baseline(stream_folder, args.stream_size, args.batch, args.workers, repeat, scale)
        labels = {"stream": "(c) stream (archspace Batches)", "stream_no_draft": "    stream, Pillow draft off",
                  "baseline": "(d) baseline (plain DataLoader + Pillow)"}
        for k in ("stream", "stream_no_draft", "baseline"):
            print_rate(labels[k], res[k])
            figures[k] = res[k]["median"]
        ratio = res["stream"]["median"] / res["baseline"]["median"]
        figures["stream_over_baseline"] = ratio
        print(f"  (c)/(d) = {ratio:.2f}  (draft off / baseline = "
              f"{res['stream_no_draft']['median'] / res['baseline']['median']:.2f})   target >= {TARGET_STREAM:.2f} "
              f"(within 10% or faster): {verdict(ratio >= TARGET_STREAM)}   ({load()})", flush=True)
        prof = stream_profile(res["bundle"], args.stream_size, scale, 64 if args.quick else 256)
        del res
        print(f"  per sample in one process (ms, {prof['n']} images, mean longer side {prof['mean_side']:.0f} px):")
        print(f"    header read {prof['header']:.3f} | decode with draft {prof['decode_draft']:.3f} vs full "
              f"{prof['decode_full']:.3f} | resize to {args.stream_size} {prof['resize']:.3f} | flip + to CHW "
              f"{prof['flip_to_chw']:.3f}")
        print(f"    stream view total {prof['stream_total']:.3f} (draft off {prof['stream_total_no_draft']:.3f}) | "
              f"baseline getitem {prof['baseline_total']:.3f}")
        print("    draft decode scale used: " + ", ".join(f"1/{s} {f:.0%}" for s, f in prof["scales"].items()))
        ideal = args.workers * 1e3 / prof["stream_total"]
        print(f"    ideal {args.workers}-worker rate from the per-sample time: stream {ideal:,.0f} img/s, baseline "
              f"{args.workers * 1e3 / prof['baseline_total']:,.0f} img/s (the {os.cpu_count()} CPUs also run "
              f"the main process)", flush=True)
        figures["stream_profile_ms"] = {k: v for k, v in prof.items() if isinstance(v, float)}

    if not args.skip_memory:
        gc.collect()
        if mapped_here():
            print("  warning: this process still maps a baked array; PSS of the trainers is shared with it")
        print(f"\n== memory: archspace.train.train (tiny ConvNeXt, {args.size} px, batch {args.batch}, crop + flip), "
              f"one epoch in a fresh subprocess, {args.trainer_threads} torch thread(s) each")
        solo = {}
        for name in ("small", "large"):
            m = run_trainers(sets[name], 1, args.batch, args.trainer_threads)[0]
            solo[name] = m
            print_memory(f"one trainer, {name} set", m)
        pair = run_trainers(sets["large"], 2, args.batch, args.trainer_threads)
        for k, m in enumerate(pair):
            print_memory(f"concurrent trainer {k + 1} of 2, large set", m)
        s, l = solo["small"], solo["large"]
        growth = l["rollup"]["USS"] - s["rollup"]["USS"]
        anon_growth = l["parts"]["anon"]["USS"] - s["parts"]["anon"]["USS"]
        baked_growth = l["parts"]["baked"]["USS"] - s["parts"]["baked"]["USS"]
        print(f"  USS growth {s['done']['train_images']:,} -> {l['done']['train_images']:,} images: raw "
              f"{growth / MB:+.1f} MB  target <= {TARGET_USS_GROWTH / MB:.0f} MB: "
              f"{verdict(growth <= TARGET_USS_GROWTH)}")
        print(f"    of which baked array pages {baked_growth / MB:+.1f} MB, other files "
              f"{(l['parts']['files']['USS'] - s['parts']['files']['USS']) / MB:+.1f} MB; anonymous part "
              f"{anon_growth / MB:+.1f} MB  target <= {TARGET_USS_GROWTH / MB:.0f} MB: "
              f"{verdict(anon_growth <= TARGET_USS_GROWTH)}")
        combined = sum(m["rollup"]["Pss"] for m in pair)
        ratio = combined / l["rollup"]["Pss"]
        print(f"  two concurrent trainers, large set: combined PSS {combined / MB:.1f} MB vs one trainer's PSS "
              f"{l['rollup']['Pss'] / MB:.1f} MB = {ratio:.2f}x  target < {TARGET_PAIR_PSS}: "
              f"{verdict(ratio < TARGET_PAIR_PSS)}")
        print("    each one's USS: " + ", ".join(f"{m['rollup']['USS'] / MB:.1f} MB" for m in pair)
              + f"; peak combined PSS (polled) {pair[0]['peak_sum_pss'] / MB:.1f} MB; " + load(), flush=True)
        figures["memory"] = {"small": s["rollup"], "large": l["rollup"], "pair": [m["rollup"] for m in pair],
                             "uss_growth": growth, "anon_uss_growth": anon_growth, "pair_pss_ratio": ratio}

    print("\n== targets")
    for key, label in (("baked_small", "baked, small set"), ("baked_large", "baked, large set")):
        for k, v in figures.items():
            if k.startswith(key + "_"):
                print(f"  {label}, {k.rsplit('_', 1)[1].replace('thr', ' torch thread(s)'):18s} {v:9,.0f} img/s  "
                      f">= {TARGET_BAKED:,}: {verdict(v >= TARGET_BAKED)}")
    if "stream_over_baseline" in figures:
        v = figures["stream_over_baseline"]
        print(f"  stream / baseline                            {v:9.2f}       >= {TARGET_STREAM}: "
              f"{verdict(v >= TARGET_STREAM)}")
    if "memory" in figures:
        m = figures["memory"]
        for k, label in (("uss_growth", "raw USS"), ("anon_uss_growth", "anonymous USS")):
            print(f"  {label + ' growth small -> large':44s} {m[k] / MB:+9.1f} MB    "
                  f"<= {TARGET_USS_GROWTH / MB:.0f} MB: {verdict(m[k] <= TARGET_USS_GROWTH)}")
        print(f"  {'pair combined PSS / one trainer PSS':44s} {m['pair_pss_ratio']:9.2f}       < {TARGET_PAIR_PSS}: "
              f"{verdict(m['pair_pss_ratio'] < TARGET_PAIR_PSS)}")
    total = time.perf_counter() - t_start
    print(f"\n# total {total:.0f} s ({total / 60:.1f} min); {load()}")
    if args.json:
        print(json.dumps(figures, default=str))


if __name__ == "__main__":
    main()
