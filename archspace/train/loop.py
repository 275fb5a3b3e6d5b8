"""One training run of one spec with one recipe: the trial the search layer calls.

The run directory holds ``spec.yaml`` (resolved spec), ``config.json``, ``metrics.jsonl``
(one line per epoch), ``checkpoint.pt`` (after every epoch, atomic) and ``summary.json``.
A non-finite loss stops the run at once with status ``diverged``; a callback returning
``True`` stops it with status ``pruned``.

A run is never changed silently: :func:`train` refuses a directory that already holds a run
unless asked to continue it (``resume``, with the same spec and recipe, ``epochs`` aside) or
to replace it (``overwrite``, which removes only the files listed in :data:`RUN_FILES` and
their temp files). :func:`plan_run` makes these decisions before anything is written.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable


import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..compile import compile_network
from ..complexity import complexity
from ..data import Augment, DataBundle, fit_spec, load_data, normalize
from ..data.loader import Batches
from ..errors import Problem, SpecError
from ..graph import lower
from ..spec import NetworkSpec, dump_spec
from .checkpoint import (CheckpointError, append_jsonl, load_checkpoint, remove_temp_files, save_checkpoint,
                         write_json, write_jsonl, write_text)
from .config import TrainConfig, check_batch
from .device import DeviceSettings, device_settings, for_network
from .distributed import barrier, from_main, gather, ranks_from_env, start as start_ranks, sum_over_ranks
from .optim import lr_at, make_optimizer
from .rundir import (RUN_FILES, check_free, check_same_run, clear_run, describe_run, json_lines, read_or_none,
                     run_files, show_value)

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
    data: dict = field(default_factory=dict)
    device: dict = field(default_factory=dict)

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    @property
    def best_eval_error(self) -> float | None:
        errs = [h["eval_error"] for h in self.history if h.get("eval_error") is not None]
        return min(errs) if errs else None

    def as_dict(self) -> dict:
        return {**asdict(self), "final": self.final, "best_eval_error": self.best_eval_error}


def settings_of(config: TrainConfig) -> DeviceSettings:
    """The run's resolved device, precision, memory format and compilation (SpecError if bad)."""
    return device_settings(config.device, config.precision, config.channels_last, config.compile)


def check_config(config: TrainConfig, bundle: DataBundle, world: int = 1) -> None:
    if config.batch_size % world:
        raise SpecError.single("train.batch_size", f"{config.batch_size} does not split into {world} equal parts "
                                                   f"(one per process of --nproc {world})")
    check_batch(config.batch_size, len(bundle.train), bundle.name)


def _evaluate(model: nn.Module, bundle: DataBundle, batches: Batches, settings: DeviceSettings) -> tuple[float, float]:
    model.eval()
    loss_sum, wrong, n = 0.0, 0, 0
    device = settings.device
    with torch.no_grad(), settings.autocast():
        for x, y in batches.val():
            x, y = settings.prepare(normalize(x.to(device, non_blocking=True), bundle)), y.to(device)
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            wrong += (logits.argmax(1) != y).sum().item()
            n += len(y)
    return loss_sum / n, wrong / n


def data_summary(bundle: DataBundle) -> dict:
    """What the run trained on and how its batches came (for summary.json)."""
    return {"name": bundle.name, "path": bundle.path, "note": bundle.note, "train_images": len(bundle.train),
            "val_images": len(bundle.val), "size": bundle.input_size}


def fit_to_data(spec: NetworkSpec, bundle: DataBundle) -> NetworkSpec:
    """``spec`` with the dataset's class count: the network trained (see :func:`archspace.data.fit_spec`)."""
    return fit_spec(spec, bundle.info)


def steps_per_epoch(config: TrainConfig, bundle: DataBundle) -> int:
    return len(bundle.train) // config.batch_size


class Trainer:
    """Trains one compiled spec. Build with :func:`train` unless you need the pieces."""

    def __init__(self, spec: NetworkSpec, config: TrainConfig, bundle: DataBundle, out_dir: Path | None,
                 init: str | Path | None = None, init_from: str = "timm"):
        self.config = config
        self.bundle = bundle
        spec = fit_to_data(spec, bundle)
        self.spec = spec
        self.ranks = ranks = ranks_from_env()
        settings = settings_of(config)
        if ranks.parallel and settings.device.type != "cpu" and settings.device.index is None:
            settings = replace(settings, device=torch.device(settings.device.type, ranks.local_rank))
        self.settings = settings
        self.device = settings.device
        start_ranks(ranks, self.device)
        self.main = ranks.main  # writes the run's files
        self.out_dir = Path(out_dir) if out_dir is not None else None
        torch.manual_seed(config.seed)
        lowered = lower(spec)
        cost = complexity(lowered)
        self.params, self.flops = cost["params"], cost["flops"]
        model = compile_network(lowered)
        self.init_notes: list[str] = []
        if init is not None:
            from ..weights import import_weights

            self.init_notes = import_weights(model, init, source=init_from).notes
        self.model = model.to(self.device)
        self.settings = for_network(settings, model, config.channels_last)
        if self.settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.wrapped = self.model
        if ranks.parallel:
            import warnings

            from torch.nn.parallel import DistributedDataParallel

            # a 1x1 convolution's gradient may come channels-last: a copy into its bucket, not an error
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.wrapped = DistributedDataParallel(self.model, device_ids=None if self.device.type == "cpu"
                                                   else [self.device.index])
        self.forward = torch.compile(self.wrapped) if self.settings.compile else self.wrapped
        self.scaler = self.settings.scaler()
        self.optimizer = make_optimizer(self.model, config)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
                    if config.ema else None)
        self.batches = Batches(bundle, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                               seed=config.seed, crop=config.random_resized_crop, scale=config.crop_scale,
                               flip=config.flip, workers=config.loader_workers,
                               pin_memory=self.device.type != "cpu", rank=ranks.rank, world=ranks.world)
        on_device = not self.batches.per_sample  # crops and flips of whole batches, on the device
        self.augment = Augment(random_resized_crop=config.random_resized_crop and on_device,
                               scale=config.crop_scale, flip=config.flip and on_device, mixup=config.mixup,
                               cutmix=config.cutmix, num_classes=bundle.num_classes,
                               label_smoothing=config.label_smoothing, size=bundle.input_size)
        self.generator = torch.Generator().manual_seed(config.seed + 1_000_003 * ranks.rank)
        self.steps_per_epoch = steps_per_epoch(config, bundle)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)
        self.history: list[dict] = []
        self.epoch = 0
        self.step = 0  # steps done in the current epoch (a checkpoint inside an epoch)
        self.partial: dict = {}  # that epoch's running sums

    def autocast(self):
        return self.settings.autocast()

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
            "step": self.step,
            "partial": dict(self.partial),
            "scaler": self.scaler.state_dict(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        saved = [set(g) for g in state["optimizer"]["param_groups"]]
        if saved != [set(g) for g in self.optimizer.state_dict()["param_groups"]]:
            raise ValueError(f"its optimizer state is not a {self.config.optimizer} optimizer's")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        generators = state.get("generators") or []
        mine = generators[self.ranks.rank] if len(generators) == self.ranks.world else state["generator"]
        self.generator.set_state(mine)
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        self.step = int(state.get("step") or 0)
        self.partial = dict(state.get("partial") or {})
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    # -- one epoch --------------------------------------------------------------------------
    def train_epoch(self, on_batch: Callable[[int, int], None] | None = None) -> dict:
        """Train the current epoch from ``self.step`` (non-zero after a checkpoint inside it)."""
        cfg, model = self.config, self.model
        model.train()
        start = time.perf_counter()
        sums = {"loss": 0.0, "wrong": 0, "seen": 0, "time": 0.0, "lr": None, **self.partial}
        step0 = self.epoch * self.steps_per_epoch
        lr = sums["lr"]
        for i, (x, y) in enumerate(self.batches.train(self.epoch, self.step), start=self.step):
            lr = lr_at(step0 + i, self.total_steps, self.warmup_steps, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x = normalize(x.to(self.device, non_blocking=True), self.bundle)
            y = y.to(self.device, non_blocking=True)
            x, target = self.augment(x, y, self.generator)
            x = self.settings.prepare(x)
            with self.autocast():
                logits = self.forward(x).float()
            loss = torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
            finite = bool(torch.isfinite(loss))
            if self.ranks.parallel:  # every rank stops together
                finite = sum_over_ranks([0.0 if finite else 1.0], self.device)[0] == 0
            if not finite:
                return {"diverged": True, "batch": i, "lr": lr}
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(model)
            sums["loss"] += loss.item() * len(y)
            sums["wrong"] += (logits.argmax(1) != y).sum().item()
            sums["seen"] += len(y)
            if on_batch is not None:
                on_batch(i + 1, self.steps_per_epoch)
            done = i + 1
            if cfg.checkpoint_steps and done % cfg.checkpoint_steps == 0 and done < self.steps_per_epoch:
                self.step = done
                self.partial = {**sums, "time": sums["time"] + time.perf_counter() - start, "lr": lr}
                self._persist_step()
        elapsed = sums["time"] + time.perf_counter() - start
        self.step, self.partial = 0, {}
        if self.ranks.parallel:  # the epoch's numbers over the global batches
            sums["loss"], sums["wrong"], sums["seen"] = sum_over_ranks([sums["loss"], sums["wrong"], sums["seen"]],
                                                                       self.device)
        seen = max(sums["seen"], 1)
        return {"train_loss": sums["loss"] / seen, "train_error": sums["wrong"] / seen, "lr": lr,
                "train_time": elapsed, "images_per_s": sums["seen"] / elapsed if elapsed > 0 else 0.0}

    def evaluate(self) -> dict:
        """Validation on rank 0 (the whole split, the unwrapped model); every rank gets its numbers."""
        out = self._evaluate() if self.main else None
        return from_main(out) if self.ranks.parallel else out

    def _evaluate(self) -> dict:
        loss, err = _evaluate(self.model, self.bundle, self.batches, self.settings)
        out = {"eval_loss": loss, "eval_error": err}
        if self.ema is not None:
            out["ema_eval_loss"], out["ema_eval_error"] = _evaluate(self.ema.module, self.bundle, self.batches,
                                                                    self.settings)
        return out

    # -- the run ----------------------------------------------------------------------------
    def run(self, callback: Callable[[dict], bool | None] | None = None,
            on_batch: Callable[[int, int], None] | None = None,
            on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
        try:
            return self._run(callback, on_batch, on_epoch)
        finally:
            self.batches.close()

    def _run(self, callback, on_batch, on_epoch) -> TrainResult:
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
            stop = bool(callback(row)) if callback is not None else False
            if self.ranks.parallel:
                stop = from_main(stop)  # rank 0 decides: every rank stops together
            if stop and self.epoch < self.config.epochs:
                status = "pruned"  # a stop after the last epoch changes nothing: the run is complete
                break
        device = {**self.settings.as_dict(), "processes": self.ranks.world, "threads": torch.get_num_threads()}
        result = TrainResult(status, self.epoch, list(self.history), diverged_epoch, self.params, self.flops,
                             str(self.out_dir) if self.out_dir else None, data_summary(self.bundle), device)
        if self.out_dir is not None and self.main:
            write_json(self.out_dir / "summary.json", result.as_dict())
        return result

    def _save(self) -> None:
        """The checkpoint, written by rank 0 alone (atomically) with every rank's generator."""
        generators = gather(self.generator.get_state()) if self.ranks.parallel else None
        if self.out_dir is None or not self.config.checkpoint or not self.main:
            return
        state = self.state()
        if generators is not None:
            state["generators"] = generators
        save_checkpoint(self.out_dir / "checkpoint.pt", state)

    def _persist_step(self) -> None:
        self._save()

    def _persist_epoch(self, row: dict) -> None:
        self._save()
        if self.out_dir is not None and self.main:
            append_jsonl(self.out_dir / "metrics.jsonl", row)

    def start_files(self, resumed: bool = False) -> None:
        """Write spec.yaml, config.json and metrics.jsonl (the history so far); summary.json is
        written when the run ends, so a run in progress (fresh or resumed) has none."""
        if self.out_dir is None or not self.main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.out_dir / "spec.yaml", dump_spec(self.spec))
        write_json(self.out_dir / "config.json", self.config.model_dump(mode="json"))
        # metrics.jsonl always mirrors the checkpoint's history (a kill may have cut it short)
        write_jsonl(self.out_dir / "metrics.jsonl", self.history)
        (self.out_dir / "summary.json").unlink(missing_ok=True)


@dataclass
class RunPlan:
    """What :func:`train` is about to do with a run directory (given to its ``on_start`` hook).

    Attributes:
        mode: ``fresh`` (a new run), ``resume`` (continue from the checkpoint) or
            ``complete`` (the run has done all its epochs with this recipe: nothing to train).
        out_dir: The run directory (``None``: nothing is kept).
        done: Epochs the run had done (its checkpoint's).
        epochs: Epochs it will have.
        previous_epochs: Epochs the run was set to (its ``config.json``), when resuming.
        remove: Run files removed before starting (``overwrite``, or a resumed run with no
            checkpoint yet, which starts again in place).
        lr_before / lr_after: The learning rate at the resume step under the run's schedule
            and under the new one (they differ when ``epochs`` changes).
        lr_last: The learning rate of the last step trained.
        messages: One line each, what happens, for the user.
    """

    mode: str
    out_dir: Path | None
    done: int = 0
    epochs: int = 0
    previous_epochs: int | None = None
    remove: list[str] = field(default_factory=list)
    lr_before: float | None = None
    lr_after: float | None = None
    lr_last: float | None = None
    messages: list[str] = field(default_factory=list)
    state: dict | None = field(default=None, repr=False)


def plan_run(spec: NetworkSpec, config: TrainConfig, out_dir: str | Path | None, bundle: DataBundle, *,
             resume: bool = False, overwrite: bool = False) -> RunPlan:
    """Decide what training ``spec`` (fitted to ``bundle``) with ``config`` in ``out_dir`` does,
    and refuse what would change a run silently. Reads the run directory; writes nothing.

    Raises:
        SpecError: one problem on ``--out`` (the directory holds a run and neither ``resume``
            nor ``overwrite`` is given), ``--overwrite`` (with ``resume``) or ``--resume`` (the
            spec or recipe differs from the run's, fewer epochs than done, an unreadable file).
    """
    if resume and overwrite:
        raise SpecError.single("--overwrite", "cannot be combined with --resume: one continues the run, "
                                              "the other replaces it")
    if out_dir is None:
        return RunPlan("fresh", None, epochs=config.epochs)
    out = Path(out_dir)
    held = run_files(out)
    if overwrite:
        plan = RunPlan("fresh", out, epochs=config.epochs, remove=held)
        if held:
            plan.messages.append(f"--overwrite: replacing the run in {out} ({describe_run(out)}): "
                                 f"removing {', '.join(held)}")
        return plan
    if not resume:
        check_free(out)
        return RunPlan("fresh", out, epochs=config.epochs)
    if not held:
        return RunPlan("fresh", out, epochs=config.epochs)

    check_same_run(out, spec, config)
    previous = read_or_none(out / "config.json", json.loads)
    previous_epochs = previous.get("epochs") if isinstance(previous, dict) else None
    ckpt = out / "checkpoint.pt"
    if not ckpt.exists():
        rows = read_or_none(out / "metrics.jsonl", json_lines) or []
        if rows:
            raise SpecError.single("--resume", f"the run in {out} has {len(rows)} epochs in metrics.jsonl but no "
                                               f"checkpoint.pt to continue from (it ran with checkpoint off?); use "
                                               f"--overwrite to replace it")
        plan = RunPlan("fresh", out, epochs=config.epochs, previous_epochs=previous_epochs, remove=held)
        plan.messages.append(f"--resume: the run in {out} has no checkpoint yet (it stopped in its first epoch): "
                             f"starting it again in place")
        return plan
    try:
        state = load_checkpoint(ckpt)
        done = _checked_progress(state)
    except CheckpointError as exc:  # a damaged file, or not a checkpoint
        raise SpecError.single("--resume", f"cannot resume from {ckpt}: {exc}; use --overwrite to start the run "
                                           f"again") from None
    if config.epochs < done:
        raise SpecError.single("--resume", f"the run in {out} has done {done} epochs; train.epochs is "
                                           f"{config.epochs} here, fewer than that (give {done} or more to continue "
                                           f"it, or --overwrite to replace it)")
    plan = RunPlan("resume", out, done=done, epochs=config.epochs, previous_epochs=previous_epochs, state=state)
    history = state.get("history") or []
    plan.lr_last = history[-1].get("lr") if history and isinstance(history[-1], dict) else None
    if done == config.epochs and previous_epochs in (None, config.epochs):
        plan.mode = "complete"
        plan.messages.append(f"--resume: the run in {out} is complete ({done}/{config.epochs} epochs): "
                             f"nothing to train")
        return plan
    step = int(state.get("step") or 0)
    at = f"epoch {done + 1}, step {step + 1}" if step else f"epoch {done + 1}"
    if previous_epochs in (None, config.epochs):
        plan.messages.append(f"--resume: continuing the run in {out} at {at} of {config.epochs} epochs "
                             f"(the same sample order)")
        return plan
    if done == config.epochs:
        plan.messages.append(f"--resume: the run in {out} ends at the {done} epochs it has done (it was set to "
                             f"{previous_epochs}): nothing to train")
        return plan
    spe = steps_per_epoch(config, bundle)
    warmup, step = round(config.warmup_epochs * spe), done * spe + step
    old_total, new_total = spe * previous_epochs, spe * config.epochs
    plan.lr_before = lr_at(step, old_total, warmup, config)
    plan.lr_after = lr_at(step, new_total, warmup, config)
    verb = "extended" if config.epochs > previous_epochs else "shortened"
    plan.messages.append(f"--resume: continuing the run in {out} at {at}, {verb} from {previous_epochs} "
                         f"to {config.epochs} epochs")
    plan.messages.append(_schedule_note(plan, step, warmup, old_total, new_total))
    return plan


def _checked_progress(state: dict) -> int:
    """The epochs a checkpoint has done, after checking its progress fields (epoch, step,
    history) are what a run writes.

    Raises:
        CheckpointError: naming the first malformed field.
    """
    epoch, step, history = state.get("epoch"), state.get("step") or 0, state.get("history")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"its epoch is {show_value(epoch)}, not a count of epochs done")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"its step is {show_value(step)}, not a count of steps done")
    if not isinstance(history, list) or len(history) != epoch or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"its history does not hold one row per epoch done ({epoch})")
    return epoch


def _schedule_note(plan: RunPlan, step: int, warmup: int, old_total: int, new_total: int) -> str:
    last = f"; the last step trained used {plan.lr_last:.3g}" if plan.lr_last is not None else ""
    if step < warmup:
        return (f"schedule: the resume step {step} is inside the warm-up (steps 0-{warmup - 1}), which is kept, so "
                f"the learning rate there is unchanged ({plan.lr_after:.3g}); the half-cosine after the warm-up now "
                f"ends at step {new_total} instead of {old_total}")
    kept = f"the warm-up (steps 0-{warmup - 1}) is kept and " if warmup else ""
    return (f"schedule: {kept}the half-cosine from step {warmup} is laid anew to end at step {new_total} instead "
            f"of {old_total}, so at the resume step {step} the learning rate jumps from {plan.lr_before:.3g} "
            f"(the old schedule{last}) to {plan.lr_after:.3g}; the {_epochs(plan.done)} done "
            f"{'keeps' if plan.done == 1 else 'keep'} the old schedule's rates")


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def train(
    spec: NetworkSpec,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict], bool | None] | None = None,
    data: DataBundle | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_start: Callable[[RunPlan], None] | None = None,
    init: str | Path | None = None,
    init_from: str = "timm",
    on_init: Callable[[list[str]], None] | None = None,
) -> TrainResult:
    """Train ``spec`` with ``config``; the API the search layer calls for each trial.

    A directory that holds a run (any of :data:`RUN_FILES`) is never changed silently: without
    ``resume`` or ``overwrite`` it is refused.

    Args:
        out_dir: run directory (files listed in the module docstring); ``None`` keeps nothing.
        resume: continue the run in ``out_dir`` from its ``checkpoint.pt``, provided its spec and
            recipe are the same (``epochs``, ``device``, ``compile``, ``eval_batch_size``,
            ``data_dir`` and ``checkpoint`` may differ; fewer epochs than done are refused). A
            directory that does not exist or holds no run, or whose run has no checkpoint yet
            (killed in its first epoch), starts a fresh run in place. A run that has done all
            its epochs trains nothing and gives its result.
        overwrite: remove the run in ``out_dir`` (only :data:`RUN_FILES` and their temp files)
            and start afresh.
        callback: called with each epoch's metrics; return ``True`` to stop (status ``pruned``).
        data: an already loaded dataset (else ``config.data`` is loaded at the spec's size).
        on_batch / on_epoch: progress hooks.
        on_start: called with the :class:`RunPlan` once every check has passed, before
            anything is written.
        init: a checkpoint file whose weights start a fresh run (:mod:`archspace.weights`;
            a classifier of another size is re-initialised); a resumed run starts from its
            own checkpoint instead.
        init_from: the naming ``init`` follows (``timm``).
        on_init: called with the import's notes (resampled tables, re-initialised classifier).

    Raises:
        SpecError: bad spec, recipe or data, or a run directory refused (one problem on
            ``--out``, ``--resume`` or ``--overwrite``; see :func:`plan_run`). A diverging run is
            a result, not an error.
    """
    settings_of(config)  # a device, precision or compile setting this machine cannot run: before anything
    if out_dir is not None and not resume and not overwrite:
        check_free(Path(out_dir))  # before loading any data
    if data is None:
        data = load_data(config.data, size=spec.input.size, channels=spec.input.channels,
                         data_dir=config.data_dir, seed=0, loader=config.loader)
    ranks = ranks_from_env()
    check_config(config, data, ranks.world)
    spec = fit_to_data(spec, data)
    plan = plan_run(spec, config, out_dir, data, resume=resume, overwrite=overwrite)
    if ranks.parallel and len(set(gather((plan.mode, plan.state is not None)))) > 1:
        raise SpecError([Problem("--out", f"the ranks see different runs in {out_dir} (is the run directory "
                                          "shared by every node of the trial?)")])
    if plan.mode == "complete":
        if on_start is not None:
            on_start(plan)
        return _completed(plan, spec)
    trainer = Trainer(spec, config, data, out_dir, init=init if plan.state is None else None, init_from=init_from)
    if on_init is not None and init is not None and plan.state is None:
        on_init(trainer.init_notes)
    if plan.state is not None:
        try:
            trainer.load_state(plan.state)
        except Exception as exc:  # a checkpoint from another spec or recipe (optimizer), or a damaged file
            text = str(exc).strip()
            first = text.splitlines()[0].strip()[:200] if text else ""
            raise SpecError([Problem("--resume", f"cannot resume from {plan.out_dir / 'checkpoint.pt'}: it does "
                                                 f"not fit this network and recipe ({type(exc).__name__}: {first}); "
                                                 f"use --overwrite to start the run again")]) from None
    if on_start is not None:
        on_start(plan)
    barrier()  # every rank has checked the run directory before rank 0 writes to it
    if plan.remove and trainer.main:
        clear_run(plan.out_dir)
    if plan.out_dir is not None and trainer.main:  # what a killed write left behind
        remove_temp_files(plan.out_dir, RUN_FILES)
    trainer.start_files(plan.mode == "resume")
    return trainer.run(callback, on_batch, on_epoch)


def _completed(plan: RunPlan, spec: NetworkSpec) -> TrainResult:
    """The result of a run that has done all its epochs, from its files; only a missing
    summary.json or a metrics.jsonl short of the checkpoint's history is written."""
    out, state = plan.out_dir, plan.state or {}
    history = list(state.get("history") or [])
    cost = complexity(lower(spec))
    summary = read_or_none(out / "summary.json", json.loads)
    status = "complete"
    if isinstance(summary, dict) and summary.get("epochs") == plan.done and summary.get("status") in STATUSES:
        status = summary["status"]
    result = TrainResult(status, plan.done, history, None, cost["params"], cost["flops"], str(out),
                         (summary or {}).get("data") or {} if isinstance(summary, dict) else {})
    if read_or_none(out / "metrics.jsonl", json_lines) != history:
        write_jsonl(out / "metrics.jsonl", history)
    if not isinstance(summary, dict) or summary.get("epochs") != plan.done:
        write_json(out / "summary.json", result.as_dict())
    return result
