"""One training run of one spec with one recipe: the trial the search layer calls.

The run directory holds ``spec.yaml`` (resolved spec), ``config.json``, ``metrics.jsonl``
(one line per epoch), ``checkpoint.pt`` (after every epoch, atomic) and ``summary.json``.
A non-finite loss stops the run at once with status ``diverged``; a callback returning
``True`` stops it with status ``pruned``.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..compile import compile_network
from ..complexity import complexity
from ..data import Augment, DataBundle, batches, load_data, normalize
from ..errors import Problem, SpecError
from ..graph import lower
from ..spec import NetworkSpec, dump_spec
from .checkpoint import append_jsonl, load_checkpoint, save_checkpoint, write_json, write_jsonl
from .config import TrainConfig
from .optim import lr_at, make_optimizer

STATUSES = ("complete", "diverged", "pruned")


@dataclass
class TrainResult:
    """What a run produced: its status, the per-epoch history and the final metrics."""

    status: str
    epochs: int
    history: list[dict] = field(default_factory=list)
    diverged_epoch: int | None = None
    params: int = 0
    flops: int = 0
    run_dir: str | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    @property
    def best_eval_error(self) -> float | None:
        errs = [h["eval_error"] for h in self.history if h.get("eval_error") is not None]
        return min(errs) if errs else None

    def as_dict(self) -> dict:
        return {**asdict(self), "final": self.final, "best_eval_error": self.best_eval_error}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError.single("train.device", "cuda was asked for but no CUDA device is available")
    return torch.device(name)


def check_config(config: TrainConfig, bundle: DataBundle) -> None:
    if config.batch_size > len(bundle.train):
        raise SpecError.single("train.batch_size", f"{config.batch_size} is larger than the {len(bundle.train)} "
                                                   f"training images of {bundle.name}")


def _evaluate(model: nn.Module, bundle: DataBundle, split, batch_size: int, device, autocast) -> tuple[float, float]:
    model.eval()
    loss_sum, wrong, n = 0.0, 0, 0
    with torch.no_grad(), autocast():
        for x, y in batches(split, batch_size, shuffle=False, generator=None):
            x, y = _to_device(normalize(x, bundle), device), y.to(device)
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            wrong += (logits.argmax(1) != y).sum().item()
            n += len(y)
    return loss_sum / n, wrong / n


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


class Trainer:
    """Trains one compiled spec. Build with :func:`train` unless you need the pieces."""

    def __init__(self, spec: NetworkSpec, config: TrainConfig, bundle: DataBundle, out_dir: Path | None):
        self.config = config
        self.bundle = bundle
        if spec.num_classes != bundle.num_classes or spec.input.channels != bundle.channels:
            spec = spec.model_copy(update={"num_classes": bundle.num_classes,
                                           "input": spec.input.model_copy(update={"channels": bundle.channels})})
        self.spec = spec
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        lowered = lower(spec)
        cost = complexity(lowered)
        self.params, self.flops = cost["params"], cost["flops"]
        self.model = compile_network(lowered).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.optimizer = make_optimizer(self.model, config)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
                    if config.ema else None)
        self.augment = Augment(random_resized_crop=config.random_resized_crop, flip=config.flip,
                               mixup=config.mixup, cutmix=config.cutmix, num_classes=bundle.num_classes,
                               label_smoothing=config.label_smoothing)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.steps_per_epoch = len(bundle.train) // config.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)
        self.history: list[dict] = []
        self.epoch = 0

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])

    # -- one epoch --------------------------------------------------------------------------
    def train_epoch(self, on_batch: Callable[[int, int], None] | None = None) -> dict:
        cfg, model = self.config, self.model
        model.train()
        start = time.perf_counter()
        loss_sum, wrong, seen = 0.0, 0, 0
        step0 = self.epoch * self.steps_per_epoch
        for i, (x, y) in enumerate(batches(self.bundle.train, cfg.batch_size, shuffle=True,
                                           generator=self.generator, drop_last=True)):
            lr = lr_at(step0 + i, self.total_steps, self.warmup_steps, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x = normalize(x, self.bundle)
            x, target = self.augment(x, y, self.generator)
            x, target, y = _to_device(x, self.device), target.to(self.device), y.to(self.device)
            with self.autocast():
                logits = self.forward(x).float()
            loss = torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
            if not torch.isfinite(loss):
                return {"diverged": True, "batch": i, "lr": lr}
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(model)
            loss_sum += loss.item() * len(y)
            wrong += (logits.argmax(1) != y).sum().item()
            seen += len(y)
            if on_batch is not None:
                on_batch(i + 1, self.steps_per_epoch)
        elapsed = time.perf_counter() - start
        return {"train_loss": loss_sum / seen, "train_error": wrong / seen, "lr": lr,
                "train_time": elapsed, "images_per_s": seen / elapsed}

    def evaluate(self) -> dict:
        bs = self.config.eval_batch_size
        loss, err = _evaluate(self.model, self.bundle, self.bundle.val, bs, self.device, self.autocast)
        out = {"eval_loss": loss, "eval_error": err}
        if self.ema is not None:
            out["ema_eval_loss"], out["ema_eval_error"] = _evaluate(self.ema.module, self.bundle, self.bundle.val, bs,
                                                                    self.device, self.autocast)
        return out

    # -- the run ----------------------------------------------------------------------------
    def run(self, callback: Callable[[dict], bool | None] | None = None,
            on_batch: Callable[[int, int], None] | None = None,
            on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
        status, diverged_epoch = "complete", None
        while self.epoch < self.config.epochs:
            t0 = time.perf_counter()
            metrics = self.train_epoch(on_batch)
            if metrics.get("diverged"):
                status, diverged_epoch = "diverged", self.epoch + 1
                break
            metrics.update(self.evaluate())
            if not all(math.isfinite(v) for k, v in metrics.items() if k.endswith("loss")):
                status, diverged_epoch = "diverged", self.epoch + 1
                break
            self.epoch += 1
            row = {"epoch": self.epoch, **metrics, "time": time.perf_counter() - t0}
            self.history.append(row)
            self._persist_epoch(row)
            if on_epoch is not None:
                on_epoch(row)
            if callback is not None and callback(row):
                status = "pruned"
                break
        result = TrainResult(status, self.epoch, list(self.history), diverged_epoch, self.params, self.flops,
                             str(self.out_dir) if self.out_dir else None)
        if self.out_dir is not None:
            write_json(self.out_dir / "summary.json", result.as_dict())
        return result

    def _persist_epoch(self, row: dict) -> None:
        if self.out_dir is None:
            return
        if self.config.checkpoint:
            save_checkpoint(self.out_dir / "checkpoint.pt", self.state())
        append_jsonl(self.out_dir / "metrics.jsonl", row)

    def start_files(self, resumed: bool) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "spec.yaml").write_text(dump_spec(self.spec))
        write_json(self.out_dir / "config.json", self.config.model_dump(mode="json"))
        # metrics.jsonl always mirrors the checkpoint's history (a kill may have cut it short)
        write_jsonl(self.out_dir / "metrics.jsonl", self.history)
        if not resumed:
            (self.out_dir / "summary.json").unlink(missing_ok=True)


def train(
    spec: NetworkSpec,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    callback: Callable[[dict], bool | None] | None = None,
    data: DataBundle | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``spec`` with ``config``; the API the search layer calls for each trial.

    Args:
        out_dir: run directory (files listed in the module docstring); ``None`` keeps nothing.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists.
        callback: called with each epoch's metrics; return ``True`` to stop (status ``pruned``).
        data: an already loaded dataset (else ``config.data`` is loaded at the spec's size).
        on_batch / on_epoch: progress hooks.

    Raises:
        SpecError: bad spec, recipe or data (a diverging run is a result, not an error).
    """
    if data is None:
        data = load_data(config.data, size=spec.input.size, channels=spec.input.channels,
                         data_dir=config.data_dir, seed=0)
    check_config(config, data)
    trainer = Trainer(spec, config, data, out_dir)
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    resumed = bool(resume and ckpt is not None and ckpt.exists())
    if resumed:
        try:
            trainer.load_state(load_checkpoint(ckpt))
        except Exception as exc:  # a checkpoint from another spec or a damaged file
            raise SpecError([Problem("--resume", f"cannot resume from {ckpt}: {type(exc).__name__}: {exc}")]) from None
    trainer.start_files(resumed)
    return trainer.run(callback, on_batch, on_epoch)
