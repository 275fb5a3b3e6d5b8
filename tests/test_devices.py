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


ACCELERATOR = accelerator()
needs_accelerator = pytest.mark.skipif(ACCELERATOR is None, reason="needs an accelerator (scripts/gpu-check.sh)")


def test_defaults_follow_the_device():
    auto = device_settings("auto")
    assert auto.device == (ACCELERATOR or torch.device("cpu"))
    assert auto.precision == ("fp32" if ACCELERATOR is None else "bf16")
    cpu = device_settings("cpu")
    assert (str(cpu.device), cpu.precision, cpu.channels_last, cpu.compile) == ("cpu", "fp32", False, False)
    assert not cpu.scaler().is_enabled()
    bf16 = device_settings("cpu", "bf16", True)
    assert bf16.precision == "bf16" and bf16.channels_last
    with bf16.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    with cpu.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32


def test_networks_with_convolutional_stages_train_channels_last_on_the_cpu_unless_set():
    from archspace import compile_network
    from archspace.train.device import for_network

    cpu = device_settings("cpu")
    convnext = compile_network(SPEC)
    deit = compile_network(load_spec("deit-s", size=32))
    assert for_network(cpu, convnext, None).channels_last
    assert for_network(cpu, compile_network(load_spec("resnet-50", size=32)), None).channels_last
    assert not for_network(cpu, deit, None).channels_last  # transformer stages: no faster
    assert not for_network(cpu, compile_network(load_spec("vit_c-1gf", size=32)), None).channels_last  # conv stem only
    assert not for_network(device_settings("cpu", channels_last=False), convnext, False).channels_last
    assert for_network(device_settings("cpu", channels_last=True), deit, True).channels_last


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fp32_and_bf16_training_on_the_cpu_both_learn(tmp_path, data, precision):
    config = load_config(data="synthetic", epochs=4, batch_size=32, lr=3e-3, precision=precision, seed=0)
    result = train(SPEC, config, tmp_path / precision, data=data)
    assert result.status == "complete"
    # a ConvNeXt has depthwise convolutions: channels-last on the cpu too (device.for_network)
    assert result.device == {"device": "cpu", "precision": precision, "channels_last": True, "compile": False,
                             "processes": 1, "threads": torch.get_num_threads()}
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
        resolve_device("cuda" if ACCELERATOR is None else f"{ACCELERATOR.type}:99")
    assert excinfo.value.problems[0].path == "train.device"
    with pytest.raises(SpecError):
        resolve_device("no_such_device")
    with pytest.raises(SpecError) as excinfo:
        device_settings("cpu", "fp16")
    assert excinfo.value.problems[0].path == "train.precision"
    assert str(resolve_device("cpu")) == "cpu"


@pytest.mark.parametrize("extra,path,fragment", [
    (["--device", "cpu", "--precision", "fp16"], "train.precision", "fp16 needs an accelerator"),
    (["--precision", "fp8"], "train.precision", "fp8"),
    (["--device", "cuda:99"], "train.device", "cuda"),
    (["--device", "xla"], "train.device", "no xla device"),
])
def test_bad_device_settings_are_one_line_exit_2_and_nothing_written(tmp_path, extra, path, fragment):
    out = tmp_path / "run"
    r = cli("train", _write(tmp_path, TINY_CONVNEXT), "--data", "synthetic", "--epochs", "1", "--out", str(out), *extra)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ") and fragment in lines[0], lines
    assert "Traceback" not in r.stderr
    assert not Path(out).exists()


# -- on an accelerator (scripts/gpu-check.sh runs these; they cannot run on a CPU) ----------------

@pytest.mark.accelerator
@needs_accelerator
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_training_on_the_accelerator_learns(tmp_path, data, precision):
    config = load_config(data="synthetic", epochs=4, batch_size=32, lr=3e-3, precision=precision, device="auto")
    result = train(SPEC, config, tmp_path / precision, data=data)
    assert result.device["device"].startswith(ACCELERATOR.type) and result.device["channels_last"]
    assert result.status == "complete" and result.final["eval_error"] < 0.4


@pytest.mark.accelerator
@needs_accelerator
def test_compile_on_the_accelerator_gives_the_eager_loss(data):
    trainer = Trainer(SPEC, load_config(data="synthetic", compile=True, precision="fp32", batch_size=32), data, None)
    x, y = _fixed_batch(trainer, data)
    x, y = trainer.settings.prepare(x.to(trainer.device)), y.to(trainer.device)
    eager = F.cross_entropy(trainer.model(x), y).item()
    compiled = F.cross_entropy(trainer.forward(x), y).item()
    assert compiled == pytest.approx(eager, rel=1e-3)


@pytest.mark.accelerator
@needs_accelerator
def test_a_resumed_fp16_run_keeps_its_grad_scaler(tmp_path, data):
    config = load_config(data="synthetic", epochs=2, batch_size=32, precision="fp16")
    first = train(SPEC, config, tmp_path / "a", data=data)
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert state["scaler"] and state["scaler"]["scale"] > 0
    longer = train(SPEC, config.model_copy(update={"epochs": 3}), tmp_path / "a", data=data, resume=True)
    assert first.status == longer.status == "complete" and longer.epochs == 3
