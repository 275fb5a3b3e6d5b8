"""The data package: datasets, bad data folders, normalization, augmentation, batching."""

from __future__ import annotations

import pickle
from collections import Counter
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from archspace.data import DATASETS, Augment, DataBundle, ImageSet, batches, load_data, normalize
from archspace.errors import SpecError


def one_problem(excinfo, path: str, *fragments: str) -> str:
    """The single problem of a SpecError: on ``path``, one line, containing every fragment."""
    problems = excinfo.value.problems
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.path == path
    assert "\n" not in problem.message
    for fragment in fragments:
        assert fragment in problem.message, problem.message
    return problem.message


def check_bundle(bundle: DataBundle, *, size: int, channels: int, num_classes: int) -> None:
    assert bundle.channels == channels and bundle.num_classes == num_classes
    for split in (bundle.train, bundle.val):
        assert len(split) > 0
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape == (len(split), channels, size, size)
        assert split.labels.shape == (len(split),)
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) < num_classes
    x = bundle.train.images.double() / 255
    assert bundle.mean == pytest.approx(tuple(x.mean(dim=(0, 2, 3)).tolist()), abs=1e-9)
    assert bundle.std == pytest.approx(tuple(x.std(dim=(0, 2, 3), unbiased=False).tolist()), abs=1e-6)


def test_registry():
    assert set(DATASETS) == {"digits", "synthetic", "cifar10", "imagefolder", "baked"}


# ---------------------------------------------------------------------------- digits


def test_digits_shapes_and_values():
    bundle = load_data("digits", size=8, channels=1)
    check_bundle(bundle, size=8, channels=1, num_classes=10)
    assert len(bundle.train) + len(bundle.val) == 1797
    # At the native size the images are the scikit-learn pixels scaled from 0..16 to 0..255.
    from sklearn.datasets import load_digits

    raw = torch.as_tensor(load_digits().data).reshape(-1, 1, 8, 8)
    expected = (raw * 255 / 16).round().to(torch.uint8)
    ours = torch.cat([bundle.train.images, bundle.val.images])
    assert Counter(bytes(im.flatten().tolist()) for im in ours) == \
        Counter(bytes(im.flatten().tolist()) for im in expected)
    assert int(ours.max()) == 255 and int(ours.min()) == 0


def test_digits_are_read_from_scikit_learns_file_without_importing_it(monkeypatch):
    """scikit-learn's import takes ~2 s (each search process paid it before its first digits
    trial): its bundled file is read directly, to the same images and labels, in its order."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from archspace.data import digits

    code = ("import sys; from archspace.data.digits import _raw, _digits_file; _raw(); "
            "assert _digits_file() is not None; print(sorted(m for m in sys.modules if m.startswith('sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr[-2000:])
    reference = load_digits()
    table = digits._table()
    assert np.array_equal(table[:, :-1], reference.data) and np.array_equal(table[:, -1], reference.target)
    # a scikit-learn without the file at that place: its own loader, to the same table
    monkeypatch.setattr(digits, "DIGITS_FILE", ("datasets", "data", "no-such-file.csv.gz"))
    assert digits._digits_file() is None and np.array_equal(digits._table(), table)


def test_digits_resized_and_replicated():
    small = load_data("digits", size=8, channels=1)
    big = load_data("digits", size=20, channels=3)
    check_bundle(big, size=20, channels=3, num_classes=10)
    up = F.interpolate(small.train.images.float(), size=(20, 20), mode="bilinear", antialias=False,
                       align_corners=False).round().to(torch.uint8)
    assert torch.equal(big.train.images[:, :1], up)
    assert torch.equal(big.train.images[:, 0], big.train.images[:, 2])
    assert torch.equal(big.train.labels, small.train.labels)


def test_digits_split_fixed_and_stratified():
    a = load_data("digits", size=8, channels=1, seed=0)
    b = load_data("digits", size=8, channels=1, seed=123)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    train_counts = torch.bincount(a.train.labels, minlength=10)
    val_counts = torch.bincount(a.val.labels, minlength=10)
    for n_train, n_val in zip(train_counts.tolist(), val_counts.tolist()):
        assert abs(n_val - 0.2 * (n_train + n_val)) <= 0.5
    assert 0.19 < len(a.val) / 1797 < 0.21


def test_digits_described_without_loading():
    """describe_data counts the training split from the class counts it knows (no torch, no
    loading): they must be the data's."""
    from archspace.data import describe_data
    from archspace.data.digits import CLASS_COUNTS

    bundle = load_data("digits", size=8, channels=1)
    counts = torch.bincount(torch.cat([bundle.train.labels, bundle.val.labels]), minlength=10)
    assert tuple(counts.tolist()) == CLASS_COUNTS
    assert describe_data("digits").train_images == len(bundle.train)


# ---------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_determinism():
    a = load_data("synthetic", size=12, channels=3, seed=1, num_classes=4, n_train=40, n_val=12)
    check_bundle(a, size=12, channels=3, num_classes=4)
    assert len(a.train) == 40 and len(a.val) == 12
    assert torch.bincount(a.train.labels).tolist() == [10, 10, 10, 10]
    same = load_data("synthetic", size=12, channels=3, seed=1, num_classes=4, n_train=40, n_val=12)
    other = load_data("synthetic", size=12, channels=3, seed=2, num_classes=4, n_train=40, n_val=12)
    assert torch.equal(a.train.images, same.train.images) and torch.equal(a.val.labels, same.val.labels)
    assert not torch.equal(a.train.images, other.train.images)
    # Val does not depend on the train size.
    longer = load_data("synthetic", size=12, channels=3, seed=1, num_classes=4, n_train=80, n_val=12)
    assert torch.equal(longer.val.images, a.val.images)


def test_synthetic_defaults_and_classes_differ():
    bundle = load_data("synthetic", size=16, channels=1)
    check_bundle(bundle, size=16, channels=1, num_classes=10)
    assert (len(bundle.train), len(bundle.val)) == (512, 128)
    # Class means differ clearly: each class is its own pattern.
    x = bundle.train.images.float()
    means = torch.stack([x[bundle.train.labels == k].mean(0).flatten() for k in range(10)])
    distances = torch.cdist(means, means) + torch.eye(10) * 1e9
    assert float(distances.min()) > 20


def test_synthetic_bad_options():
    with pytest.raises(SpecError) as excinfo:
        load_data("synthetic", size=8, colours=3)
    one_problem(excinfo, "--data", "colours", "num_classes")
    with pytest.raises(SpecError) as excinfo:
        load_data("synthetic", size=8, num_classes=1)
    one_problem(excinfo, "--data", "num_classes", ">= 2")
    assert len(load_data("synthetic", size=8, n_train="20", n_val="5").train) == 20


# ---------------------------------------------------------------------------- cifar10


def write_batch(path: Path, n: int, start: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(start)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [(start + i) % 10 for i in range(n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"fake", b"data": data, b"labels": labels}, f)
    return data, labels


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", 3, 10 * i)
    write_batch(folder / "test_batch", 4, 99)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, f)
    return folder


def test_cifar10_from_folder_and_parent(cifar_dir: Path):
    bundle = load_data("cifar10", size=32, data_dir=cifar_dir)
    check_bundle(bundle, size=32, channels=3, num_classes=10)
    assert (len(bundle.train), len(bundle.val)) == (15, 4)
    with open(cifar_dir / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert torch.equal(bundle.train.images[3:6], torch.from_numpy(batch[b"data"]).reshape(3, 3, 32, 32))
    assert bundle.train.labels[3:6].tolist() == batch[b"labels"]
    parent = load_data("cifar10", size=32, data_dir=str(cifar_dir.parent))
    assert torch.equal(parent.val.images, bundle.val.images)


def test_cifar10_resized_and_gray(cifar_dir: Path):
    small = load_data("cifar10", size=16, data_dir=cifar_dir)
    check_bundle(small, size=16, channels=3, num_classes=10)
    gray = load_data("cifar10", size=32, channels=1, data_dir=cifar_dir)
    check_bundle(gray, size=32, channels=1, num_classes=10)
    rgb = load_data("cifar10", size=32, data_dir=cifar_dir).train.images.float()
    luma = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]).round()
    assert torch.equal(gray.train.images[:, 0].float(), luma)


def test_cifar10_bad_folders(tmp_path: Path, cifar_dir: Path):
    with pytest.raises(SpecError) as excinfo:
        load_data("cifar10", size=32)
    one_problem(excinfo, "--data-dir", "cifar10 needs --data-dir")
    with pytest.raises(SpecError) as excinfo:
        load_data("cifar10", size=32, data_dir=tmp_path / "nowhere")
    one_problem(excinfo, "--data-dir", "no such folder", "nowhere")
    (cifar_dir / "test_batch").unlink()
    with pytest.raises(SpecError) as excinfo:
        load_data("cifar10", size=32, data_dir=cifar_dir)
    one_problem(excinfo, "--data-dir", "missing test_batch", str(cifar_dir))


def test_cifar10_corrupt_batches(cifar_dir: Path):
    (cifar_dir / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(SpecError) as excinfo:
        load_data("cifar10", size=32, data_dir=cifar_dir)
    one_problem(excinfo, "--data-dir", "cannot read", "data_batch_3")
    with open(cifar_dir / "data_batch_3", "wb") as f:
        pickle.dump({b"pixels": []}, f)
    with pytest.raises(SpecError) as excinfo:
        load_data("cifar10", size=32, data_dir=cifar_dir)
    one_problem(excinfo, "--data-dir", "data_batch_3", "b'labels'")
    with open(cifar_dir / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(SpecError) as excinfo:
        load_data("cifar10", size=32, data_dir=cifar_dir)
    one_problem(excinfo, "--data-dir", "data_batch_3", "3072")


# ---------------------------------------------------------------------------- imagefolder

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "bird": (30, 30, 200)}


def write_image(path: Path, colour: tuple[int, int, int], size: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size + 4), colour).save(path)


def make_tree(root: Path, classes=("cat", "dog", "bird"), n_train: int = 5, n_val: int | None = 2) -> Path:
    for name in classes:
        for i in range(n_train):
            write_image(root / "train" / name / f"{i}.png", COLOURS[name])
        if n_val:
            for i in range(n_val):
                write_image(root / "val" / name / f"v{i}.png", COLOURS[name])
    return root


def test_imagefolder_with_val(tmp_path: Path):
    root = make_tree(tmp_path / "tree")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    Image.new("RGB", (7, 7), COLOURS["dog"]).save(root / "train" / "dog" / "extra.JPG", format="JPEG")
    bundle = load_data("imagefolder", size=6, data_dir=root)
    check_bundle(bundle, size=6, channels=3, num_classes=3)
    assert (len(bundle.train), len(bundle.val)) == (16, 6)
    # Class index = sorted folder names: bird 0, cat 1, dog 2.
    for split in (bundle.train, bundle.val):
        for image, label in zip(split.images, split.labels):
            colour = COLOURS[["bird", "cat", "dog"][int(label)]]
            assert (image[:, 0, 0].int() - torch.tensor(colour)).abs().max() <= 3
    gray = load_data("imagefolder", size=5, channels=1, data_dir=root)
    check_bundle(gray, size=5, channels=1, num_classes=3)


def test_imagefolder_without_val_split_is_fixed(tmp_path: Path):
    root = make_tree(tmp_path / "tree", n_train=10, n_val=None)
    a = load_data("imagefolder", size=4, data_dir=root, seed=0)
    b = load_data("imagefolder", size=4, data_dir=root, seed=7)
    check_bundle(a, size=4, channels=3, num_classes=3)
    assert torch.bincount(a.val.labels).tolist() == [2, 2, 2]
    assert torch.bincount(a.train.labels).tolist() == [8, 8, 8]
    assert torch.equal(a.train.labels, b.train.labels) and torch.equal(a.val.images, b.val.images)


def test_imagefolder_bad_trees(tmp_path: Path):
    def error(root: Path, *fragments: str) -> str:
        with pytest.raises(SpecError) as excinfo:
            load_data("imagefolder", size=4, data_dir=root)
        return one_problem(excinfo, "--data-dir", *fragments)

    with pytest.raises(SpecError) as excinfo:
        load_data("imagefolder", size=4)
    one_problem(excinfo, "--data-dir", "imagefolder needs --data-dir")
    error(tmp_path / "missing", "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    error(empty, "no train folder", str(empty))
    (empty / "train").mkdir()
    error(empty, "no class folders", "train")
    single = make_tree(tmp_path / "single", classes=("cat",))
    error(single, "single class", "cat")
    hollow = make_tree(tmp_path / "hollow")
    (hollow / "train" / "fish").mkdir()
    write_image(hollow / "val" / "fish" / "0.png", COLOURS["cat"])
    error(hollow, "has no images", "fish")
    stray = make_tree(tmp_path / "stray")
    write_image(stray / "val" / "fish" / "0.png", COLOURS["cat"])
    error(stray, "class folders that train has not", "fish")
    short = make_tree(tmp_path / "short")
    shutil.rmtree(short / "val" / "dog")
    error(short, "lacks class folders that train has", "dog")
    broken = make_tree(tmp_path / "broken")
    bad = broken / "train" / "dog" / "3.png"
    bad.write_bytes(b"\x89PNG garbage")
    error(broken, "cannot read image", str(bad))
    few = make_tree(tmp_path / "few", n_train=1, n_val=None)
    error(few, "too few images")


# ---------------------------------------------------------------------------- load_data


def test_load_data_bad_arguments():
    with pytest.raises(SpecError) as excinfo:
        load_data("imagenet", size=32)
    one_problem(excinfo, "--data", "imagenet", "digits, synthetic, cifar10, imagefolder")
    with pytest.raises(SpecError) as excinfo:
        load_data("digits", size=0)
    one_problem(excinfo, "input.size", "positive")
    with pytest.raises(SpecError) as excinfo:
        load_data("cifar10", size=32, channels=4, data_dir=".")
    one_problem(excinfo, "input.channels", "3 or 1")
    with pytest.raises(SpecError) as excinfo:
        load_data("digits", size=8, fraction=0.5)
    one_problem(excinfo, "--data", "fraction")


def test_normalize():
    bundle = load_data("synthetic", size=8, channels=3, n_train=64, n_val=8)
    x = normalize(bundle.train.images, bundle)
    assert x.dtype == torch.float32 and x.shape == bundle.train.images.shape
    expected = (bundle.train.images[:, 1].float() / 255 - bundle.mean[1]) / bundle.std[1]
    assert torch.allclose(x[:, 1], expected, atol=1e-5)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


# ---------------------------------------------------------------------------- Augment


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def labelled_batch(n: int = 10, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is constant, equal to its label i."""
    y = torch.arange(n)
    return y.float().view(n, 1, 1, 1).expand(n, 3, size, size).clone(), y


def test_augment_plain_targets_and_smoothing():
    x = torch.rand(6, 3, 8, 8, generator=gen(0))
    y = torch.tensor([0, 1, 2, 3, 4, 9])
    out, target = Augment(num_classes=10)(x, y, gen(0))
    assert torch.equal(out, x)
    assert torch.equal(target, F.one_hot(y, 10).float())
    out, target = Augment(num_classes=10, label_smoothing=0.1)(x, y, gen(0))
    assert target.shape == (6, 10) and target.dtype == torch.float32
    assert torch.allclose(target.sum(1), torch.ones(6))
    assert torch.allclose(target[torch.arange(6), y], torch.full((6,), 0.91))
    assert torch.allclose(target[0, 1:], torch.full((9,), 0.01))


def test_augment_mixup_mixes_two_samples():
    x, y = labelled_batch()
    out, target = Augment(num_classes=10, mixup=1.0)(x, y, gen(3))
    assert out.shape == x.shape and target.shape == (10, 10)
    assert torch.allclose(target.sum(1), torch.ones(10))
    assert ((target > 1e-6).sum(1) <= 2).all()
    # The pixel value of each mixed image is the target-weighted label.
    weighted = target @ torch.arange(10).float()
    assert torch.allclose(out, weighted.view(10, 1, 1, 1).expand_as(out), atol=1e-5)
    assert ((target > 1e-6).sum(1) == 2).any()
    assert (out != out.round()).any()


def test_augment_cutmix_pastes_a_box():
    x, y = labelled_batch(size=16)
    out, target = Augment(num_classes=10, cutmix=1.0)(x, y, gen(5))
    assert torch.allclose(target.sum(1), torch.ones(10))
    # Target weight of class k = share of the image's pixels taken from image k.
    for i in range(10):
        share = torch.stack([(out[i, 0] == k).float().mean() for k in range(10)])
        assert torch.allclose(target[i], share, atol=1e-6)
    assert ((target > 1e-6).sum(1) == 2).any()


def test_augment_mixup_or_cutmix_per_batch():
    x, y = labelled_batch(size=16)
    augment = Augment(num_classes=10, mixup=1.0, cutmix=1.0, label_smoothing=0.1)
    g = gen(0)
    kinds = set()
    for _ in range(20):
        out, target = augment(x, y, g)
        assert torch.allclose(target.sum(1), torch.ones(10))
        kinds.add("cutmix" if torch.equal(out, out.round()) else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_augment_flip_deterministic():
    x = torch.rand(32, 3, 8, 8, generator=gen(1))
    y = torch.zeros(32, dtype=torch.long)
    augment = Augment(num_classes=2, flip=True)
    a, _ = augment(x, y, gen(7))
    b, _ = augment(x, y, gen(7))
    c, _ = augment(x, y, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    flipped = torch.tensor([torch.equal(a[i], x[i].flip(-1)) for i in range(32)])
    kept = torch.tensor([torch.equal(a[i], x[i]) for i in range(32)])
    assert (flipped | kept).all() and flipped.any() and kept.any()


def test_augment_crop_deterministic():
    x = torch.rand(16, 3, 12, 12, generator=gen(1))
    y = torch.arange(16) % 4
    augment = Augment(num_classes=4, random_resized_crop=True, scale=(0.2, 0.6), flip=True)
    a, ta = augment(x, y, gen(7))
    b, tb = augment(x, y, gen(7))
    c, _ = augment(x, y, gen(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c)
    assert torch.equal(ta, F.one_hot(y, 4).float())
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    # A full-area crop of a constant image stays constant.
    const = torch.full((4, 3, 12, 12), 0.25)
    out, _ = Augment(num_classes=4, random_resized_crop=True, scale=(1.0, 1.0))(const, y[:4], gen(0))
    assert torch.allclose(out, const)


def test_augment_bad_settings():
    with pytest.raises(SpecError) as excinfo:
        Augment(num_classes=10, mixup=-1.0)
    one_problem(excinfo, "--mixup", ">= 0")
    with pytest.raises(SpecError) as excinfo:
        Augment(num_classes=10, label_smoothing=1.0)
    one_problem(excinfo, "--label-smoothing")
    with pytest.raises(SpecError) as excinfo:
        Augment(num_classes=10, random_resized_crop=True, scale=(0.8, 0.2))
    one_problem(excinfo, "--crop-scale")


# ---------------------------------------------------------------------------- batches


def id_split(n: int = 23) -> ImageSet:
    return ImageSet(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(),
                    torch.arange(n))


def test_batches_cover_each_sample_once():
    split = id_split()
    g = gen(0)
    first = list(batches(split, 5, shuffle=True, generator=g))
    assert [len(lbl) for _, lbl in first] == [5, 5, 5, 5, 3]
    labels = torch.cat([lbl for _, lbl in first])
    assert sorted(labels.tolist()) == list(range(23)) and labels.tolist() != list(range(23))
    for images, lbl in first:
        assert images.dtype == torch.uint8 and torch.equal(images[:, 0, 0, 0].long(), lbl)
    second = torch.cat([lbl for _, lbl in batches(split, 5, shuffle=True, generator=g)])
    assert not torch.equal(labels, second)
    again = torch.cat([lbl for _, lbl in batches(split, 5, shuffle=True, generator=gen(0))])
    assert torch.equal(labels, again)


def test_batches_in_order_and_drop_last():
    split = id_split()
    plain = [lbl.tolist() for _, lbl in batches(split, 10, shuffle=False, generator=None)]
    assert plain == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    dropped = list(batches(split, 10, shuffle=True, generator=gen(1), drop_last=True))
    assert [len(lbl) for _, lbl in dropped] == [10, 10]
    with pytest.raises(ValueError):
        list(batches(split, 0, shuffle=False, generator=None))


def test_crop_grid_is_the_affine_grid_of_a_scale_and_shift():
    from archspace.data.augment import crop_grid

    g = torch.Generator().manual_seed(3)
    n = 7
    sx, sy = torch.rand(n, generator=g) * 2 - 1, torch.rand(n, generator=g)
    cx, cy = torch.rand(n, generator=g) - 0.5, torch.rand(n, generator=g) - 0.5
    for out_h, out_w in ((32, 32), (5, 9), (1, 3)):
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
        reference = torch.nn.functional.affine_grid(theta, [n, 3, out_h, out_w], align_corners=False)
        assert torch.allclose(crop_grid(sx, cx, sy, cy, out_h, out_w), reference, atol=1e-6)
