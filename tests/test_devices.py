"""Device settings on the CPU: bf16 autocast, channels-last and torch.compile run here, so the
paths an accelerator run takes are exercised without one; settings this machine cannot run
are refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archspace import load_spec
from archspace.data import load_data, normalize
from archspace.errors import SpecError
from archspace.train import load_config, train
from archspace.train.device import accelerator, device_settings, resolve_device
from archspace.train.loop import Trainer
from test_train import TINY_CONVNEXT, _write, cli

SPEC = load_spec(TINY_CONVNEXT)


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic", size=32, channels=3, num_classes=4, n_train=256, n_val=128)


def test_defaults_follow_the_device():
    assert accelerator() is None  # this machine: the CPU alone
    cpu = device_settings("auto")
    assert (str(cpu.device), cpu.precision, cpu.channels_last, cpu.compile) == ("cpu", "fp32", False, False)
    assert not cpu.scaler().is_enabled()
    bf16 = device_settings("cpu", "bf16", True)
    assert bf16.precision == "bf16" and bf16.channels_last
    with bf16.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    with cpu.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fp32_and_bf16_training_on_the_cpu_both_learn(tmp_path, data, precision):
    config = load_config(data="synthetic", epochs=4, batch_size=32, lr=3e-3, precision=precision, seed=0)
    result = train(SPEC, config, tmp_path / precision, data=data)
    assert result.status == "complete"
    assert result.device == {"device": "cpu", "precision": precision, "channels_last": False, "compile": False}
    assert result.final["eval_error"] < 0.4  # 4 classes: chance is 0.75
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    summary = json.loads((tmp_path / precision / "summary.json").read_text())
    assert summary["device"]["precision"] == precision


def _fixed_batch(trainer: Trainer, data):
    x, y = next(trainer.batches.train(0))
    return normalize(x, data), y


def test_bf16_autocast_changes_the_numbers_but_not_by_much(data):
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(SPEC, load_config(data="synthetic", precision=precision, batch_size=64), data, None)
        x, y = _fixed_batch(trainer, data)
        with trainer.autocast():
            logits = trainer.forward(x)
        assert logits.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        losses[precision] = F.cross_entropy(logits.float(), y).item()
    assert losses["fp32"] != losses["bf16"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_channels_last_gives_the_same_loss_and_gradients(data):
    results = []
    for channels_last in (False, True):
        trainer = Trainer(SPEC, load_config(data="synthetic", channels_last=channels_last, batch_size=64), data, None)
        x, y = _fixed_batch(trainer, data)
        x = trainer.settings.prepare(x)
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
        loss = F.cross_entropy(trainer.forward(x), y)
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in trainer.model.parameters()])))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


def test_compile_on_the_cpu_gives_the_eager_loss(data):
    """Inductor compiles the network on the CPU; its loss and gradients equal eager's on a fixed batch."""
    tiny = load_spec({**TINY_CONVNEXT, "stages": TINY_CONVNEXT["stages"][:1]})
    trainer = Trainer(tiny, load_config(data="synthetic", compile=True, batch_size=32), data, None)
    assert trainer.forward is not trainer.model
    x, y = _fixed_batch(trainer, data)
    eager = F.cross_entropy(trainer.model(x), y)
    eager.backward()
    eager_grads = [p.grad.clone() for p in trainer.model.parameters()]
    trainer.optimizer.zero_grad(set_to_none=True)
    compiled = F.cross_entropy(trainer.forward(x), y)
    compiled.backward()
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-5, abs=1e-6)
    for a, b in zip(eager_grads, (p.grad for p in trainer.model.parameters())):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_devices_this_machine_lacks_are_refused():
    with pytest.raises(SpecError) as excinfo:
        resolve_device("cuda")
    assert excinfo.value.problems[0].path == "train.device"
    with pytest.raises(SpecError) as excinfo:
        device_settings("cpu", "fp16")
    assert excinfo.value.problems[0].path == "train.precision"
    assert str(resolve_device("cpu")) == "cpu"


@pytest.mark.parametrize("extra,path,fragment", [
    (["--precision", "fp16"], "train.precision", "fp16 needs an accelerator"),
    (["--precision", "fp8"], "train.precision", "fp8"),
    (["--device", "cuda"], "train.device", "no cuda device"),
    (["--device", "cuda:1", "--precision", "bf16"], "train.device", "no cuda device"),
])
def test_bad_device_settings_are_one_line_exit_2_and_nothing_written(tmp_path, extra, path, fragment):
    out = tmp_path / "run"
    r = cli("train", _write(tmp_path, TINY_CONVNEXT), "--data", "synthetic", "--epochs", "1", "--out", str(out), *extra)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ") and fragment in lines[0], lines
    assert "Traceback" not in r.stderr
    assert not Path(out).exists()
