"""Data order and resume: a run stopped inside an epoch and resumed from its step checkpoint
ends exactly like an uninterrupted one (memory and streamed paths); ``Batches`` gives an epoch
order fixed by (seed, epoch) from any step; ``MappedSet.gather`` keeps the order asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from archspace import load_spec
from archspace.data import MappedSet, load_data
from archspace.data.baked import bake
from archspace.data.loader import Batches, epoch_order
from archspace.train import TrainConfig, train
from test_bake import make_folder
from test_train import TINY_CONVNEXT

SPEC16 = {**TINY_CONVNEXT, "input": {"size": 16}}
TIMING = ("train_time", "time", "images_per_s")


class Interrupt(Exception):
    """Raised from the on_batch hook: the run stops in the middle of an epoch."""


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def metrics(run: Path) -> list[dict]:
    return strip([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()])


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    """3 colour classes, 12 train and 4 val images each, 40-120 px (JPEG, PNG, gray, CMYK)."""
    root = tmp_path_factory.mktemp("folder") / "images"
    make_folder(root, n_train=12, n_val=4, seed=1, sizes=(40, 120))
    return root


def stop_at(epoch: int, step: int, steps_per_epoch: int):
    """An on_batch hook raising Interrupt after step ``step`` (1-based) of epoch ``epoch`` (0-based)."""
    calls = {"n": 0}

    def on_batch(i: int, n: int) -> None:
        assert n == steps_per_epoch
        calls["n"] += 1
        if calls["n"] == epoch * steps_per_epoch + step:
            raise Interrupt

    return on_batch


def check_resume_matches(spec, config: TrainConfig, data, tmp_path: Path, *, epoch: int, step: int,
                         steps_per_epoch: int) -> None:
    """Train into A straight; into B stopped after ``step`` of ``epoch`` and resumed; compare."""
    a, b = tmp_path / "a", tmp_path / "b"
    straight = train(spec, config, a, data=data)
    assert straight.status == "complete" and straight.epochs == config.epochs

    with pytest.raises(Interrupt):
        train(spec, config, b, data=data, on_batch=stop_at(epoch, step, steps_per_epoch))
    state = torch.load(b / "checkpoint.pt", weights_only=True)
    at = step - step % config.checkpoint_steps  # the last step checkpoint before the stop
    assert 0 < at < step and (state["epoch"], state["step"]) == (epoch, at)
    assert len(state["history"]) == epoch
    assert not (b / "summary.json").exists()

    seen: list[int] = []
    plans = []
    resumed = train(spec, config, b, data=data, resume=True, on_batch=lambda i, n: seen.append(i),
                    on_start=plans.append)
    assert plans[0].mode == "resume" and f"epoch {epoch + 1}, step {at + 1}" in " ".join(plans[0].messages)
    # only the steps not checkpointed are trained again
    assert seen == list(range(at + 1, steps_per_epoch + 1)) + \
        list(range(1, steps_per_epoch + 1)) * (config.epochs - epoch - 1)
    assert resumed.status == "complete" and resumed.epochs == config.epochs

    assert strip(resumed.history) == strip(straight.history)
    assert metrics(b) == metrics(a) and len(metrics(a)) == config.epochs
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa["data"] == sb["data"]


# -- resume inside an epoch: same order, same result --------------------------------------------------

@pytest.mark.parametrize("epoch", [0, 1], ids=["first-epoch", "second-epoch"])
def test_resume_inside_an_epoch_matches_an_uninterrupted_run(tmp_path, epoch):
    data = load_data("synthetic", size=16, seed=0, num_classes=4, n_train=128, n_val=32)
    config = TrainConfig(data="synthetic", epochs=2, batch_size=16, lr=2e-3, seed=1, random_resized_crop=True,
                         flip=True, mixup=0.2, checkpoint_steps=2)
    check_resume_matches(load_spec(SPEC16), config, data, tmp_path, epoch=epoch, step=5, steps_per_epoch=8)


def test_resume_inside_an_epoch_of_a_streamed_folder(tmp_path, small_folder):
    config = TrainConfig(data="imagefolder", data_dir=str(small_folder), loader="stream", loader_workers=2,
                         epochs=2, batch_size=8, lr=2e-3, seed=2, random_resized_crop=True, flip=True,
                         checkpoint_steps=2)
    data = load_data("imagefolder", size=16, data_dir=small_folder, loader="stream")
    assert data.path == "stream" and len(data.train) == 36
    check_resume_matches(load_spec(SPEC16), config, data, tmp_path, epoch=1, step=3, steps_per_epoch=4)


# -- Batches: the epoch order ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundles(small_folder, tmp_path_factory):
    baked = tmp_path_factory.mktemp("baked") / "set"
    bake(small_folder, baked, size=16, margin=4, workers=1)
    return {
        "memory": load_data("synthetic", size=16, seed=0, num_classes=3, n_train=40, n_val=8),
        "baked": load_data("baked", size=16, data_dir=baked),
        "stream": load_data("imagefolder", size=16, data_dir=small_folder, loader="stream"),
    }


def _epoch(b: Batches, epoch: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in b.train(epoch, start)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


@pytest.mark.parametrize("path", ["memory", "baked", "stream"])
def test_batches_from_a_step_are_the_tail_of_the_epoch(bundles, path):
    bundle = bundles[path]
    assert bundle.path == path
    make = lambda seed, workers=2: Batches(bundle, batch_size=8, eval_batch_size=16, seed=seed,  # noqa: E731
                                           crop=True, flip=True, workers=workers)
    b, again, other = make(3), make(3), make(4)
    try:
        steps = len(bundle.train) // 8
        full = _epoch(b, 0)
        assert len(full) == steps and all(x.dtype == torch.uint8 and len(y) == 8 for x, y in full)
        for start in (1, steps - 1):
            assert _same(_epoch(b, 0, start), full[start:])
        assert _epoch(b, 0, steps) == []
        # every sample at most once, labels matching the split
        order = epoch_order(len(bundle.train), 3, 0)[:steps * 8]
        assert torch.equal(torch.cat([y for _, y in full]), bundle.train.labels[order])
        if path != "stream":  # stored images as they are (crops are done on the device)
            assert torch.equal(torch.cat([x for x, _ in full]), bundle.train.gather(order))

        second = _epoch(b, 1)
        assert not torch.equal(torch.cat([x for x, _ in full]), torch.cat([x for x, _ in second]))
        assert _same(_epoch(again, 1), second) and _same(_epoch(again, 0), full)  # equal (seed, epoch)
        assert not _same(_epoch(other, 0), full)
        assert _same(_epoch(b, 1, 2), second[2:])  # after other epochs were read
        if path == "stream":  # the crops do not depend on the number of loader workers
            inline = make(3, workers=0)
            try:
                assert _same(_epoch(inline, 1, 1), second[1:])
            finally:
                inline.close()
    finally:
        for x in (b, again, other):
            x.close()


# -- MappedSet -------------------------------------------------------------------------------------------

def test_mapped_set_gathers_in_the_order_asked(tmp_path):
    path = tmp_path / "images.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(12, 3, 4, 4))
    array[:] = np.arange(12, dtype=np.uint8)[:, None, None, None] * 10 + np.arange(3, dtype=np.uint8)[:, None, None]
    array.flush()
    del array
    mapped = MappedSet(np.load(path, mmap_mode="r"), torch.arange(12, dtype=torch.int64) % 3)
    reference = torch.from_numpy(np.load(path))
    for idx in ([7, 2, 11, 0], [5, 5, 1], [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [3]):
        got = mapped.gather(torch.tensor(idx, dtype=torch.int64))
        assert got.dtype == torch.uint8 and got.shape == (len(idx), 3, 4, 4)
        assert torch.equal(got, reference[idx]), idx
        assert got[:, 0, 0, 0].tolist() == [i * 10 for i in idx]
