"""Training-step throughput: forward + backward + optimizer step, in images per second.

For a few presets at a small resolution and at 224, on the CPU or an accelerator, with the
trainer's device settings (``archspace.train.device``: precision, channels-last; by default
bf16 + channels-last on an accelerator, fp32 on the CPU), with and without torch.compile.
Where timm is importable, the same architecture in timm is timed too and the ratio printed.

On an accelerator it also prints the model FLOPs utilisation: training FLOPs per image (3 × the
forward pass, 2 FLOPs per multiply-add, from the analytic cost) × images/s against the device's
peak for the precision (a table of known devices, or --peak-tflops).

    python benchmarks/train_throughput.py                       # CPU, default presets
    python benchmarks/train_throughput.py --device cuda --compile --batch 128
    python benchmarks/train_throughput.py --device cuda --presets vit_c-4gf --sizes 224 --compile
    python benchmarks/train_throughput.py --presets coatnet-0 convnext-t --sizes 64 --json

``--vs-timm``: each family's preset against timm's identical network (same parameter count up
to timm's class-token position row, checked), interleaved in one process on the same batch and thread count. archspace runs as its
trainer does by default (``TrainConfig()``: its optimizer, parameter groups, precision and
memory format); timm runs as its training script does by default (``timm.create_model`` and
``timm.optim.create_optimizer_v2(model, "adamw")``, fp32, NCHW). Each round times ``--steps``
steps of one then of the other (which goes first alternates); the ratio is taken per round and
printed as its median with the min–max over rounds::

    python benchmarks/train_throughput.py --vs-timm                        # 64 px b32 and 224 px b8, 2 threads
    python benchmarks/train_throughput.py --vs-timm --sizes 64 --rounds 7 --json
    python benchmarks/train_throughput.py --vs-timm --device cuda --batch 128   # bf16 on an accelerator
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from archspace import compile_network, complexity, load_spec
from archspace.graph import lower
from archspace.train import TrainConfig
from archspace.train.device import DeviceSettings, accelerator, device_settings, for_network
from archspace.train.optim import make_optimizer

# Dense peak TFLOPS by device name fragment, for bf16 / fp16 tensor cores and fp32 (no sparsity).
PEAK_TFLOPS = {"H200": (989.0, 67.0), "H100 SXM": (989.0, 67.0), "H100 PCIe": (756.0, 51.0), "H100": (989.0, 67.0),
               "A100": (312.0, 19.5), "L40S": (362.0, 91.6), "L4": (121.0, 30.3), "A10": (125.0, 31.2)}


def peak_tflops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (low, fp32) in PEAK_TFLOPS.items():
        if fragment in name:
            return fp32 if precision == "fp32" else low
    return None


def synchronize(device: torch.device) -> None:
    if device.type != "cpu" and hasattr(torch, "accelerator"):
        torch.accelerator.synchronize()

# one preset of each family and the timm model that computes the same function (the weight
# import in tests/test_weights.py checks equal logits for each pair)
VS_TIMM = {"convnext-t": "convnext_tiny", "deit-s": "deit_small_patch16_224", "cait-xxs24": "cait_xxs24_224",
           "coatnet-0-timm": "coatnet_0_224", "resnet-50": "resnet50"}
TIMM_NAMES = {"coatnet-0": "coatnet_0_224", "convnext-t": "convnext_tiny", "resnet-50": "resnet50",
              "vit_p-4gf": None, "cait-xxs24": "cait_xxs24_224", "deit-s": "deit_small_patch16_224"}


def step_rate(model: torch.nn.Module, size: int, batch: int, settings: DeviceSettings, steps: int, warmup: int,
              compiled: bool = False, channels_last: bool | None = None) -> float:
    """Images/s of the trainer's step: autocast forward, scaled backward, optimizer step, in the
    memory format the trainer picks for this network (``channels_last``: the recipe's setting)."""
    settings = for_network(settings, model, channels_last)
    device = settings.device
    model.to(device).train()
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, TrainConfig(lr=1e-4))  # the trainer's own parameter groups
    forward = torch.compile(model) if compiled else model
    scaler = settings.scaler()
    x = settings.prepare(torch.randn(batch, 3, size, size, device=device))
    y = torch.randint(0, 1000, (batch,), device=device)

    def one() -> None:
        with settings.autocast():
            loss = F.cross_entropy(forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        one()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        one()
    synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def import_timm():
    """timm, beside a torch without torchvision (the tests' stand-in supplies the few names)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    try:
        from _torchvision_standin import import_timm as load
    except ImportError:
        import timm

        return timm
    return load()


def timm_model(name: str):
    try:
        timm = import_timm()
    except ImportError:
        return None
    arch = TIMM_NAMES.get(name)
    return timm.create_model(arch, pretrained=False) if arch else None


class Stepper:
    """One training step of a model, its optimizer and a fixed batch, timed in wall seconds."""

    def __init__(self, model, opt, settings: DeviceSettings, size: int, batch: int, forward=None):
        self.model, self.opt, self.settings = model, opt, settings
        self.forward = forward or model
        self.scaler = settings.scaler()
        self.x = settings.prepare(torch.randn(batch, 3, size, size, device=settings.device))
        self.y = torch.randint(0, 1000, (batch,), device=settings.device)

    def step(self) -> tuple[float, float, float]:
        """One step; its phases' wall seconds: forward with the loss, backward, optimizer (on an
        accelerator these are launch times, nothing is synchronized here; :meth:`timed` is)."""
        start = time.perf_counter()
        with self.settings.autocast():
            loss = F.cross_entropy(self.forward(self.x).float(), self.y)
        forward = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        backward = time.perf_counter()
        self.scaler.step(self.opt)
        self.scaler.update()
        return forward - start, backward - forward, time.perf_counter() - backward

    def timed(self, steps: int) -> float:
        synchronize(self.settings.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        synchronize(self.settings.device)
        return time.perf_counter() - start


def archspace_stepper(name: str, size: int, batch: int, device: str) -> tuple[Stepper, dict]:
    """The preset as the trainer trains it by default (``TrainConfig()`` on ``device``)."""
    from archspace.train.loop import settings_of

    config = TrainConfig(device=device)
    settings = settings_of(config)
    torch.manual_seed(0)
    spec = load_spec(name, size=size)
    model = compile_network(spec).to(settings.device).train()
    settings = for_network(settings, model, config.channels_last)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    compile_s = None
    stepper = Stepper(model, make_optimizer(model, config), settings, size, batch)
    if settings.compile:
        stepper.forward = torch.compile(model)
        compile_s = stepper.timed(1)  # the first step compiles
    return stepper, {"settings": settings.as_dict(), "compile_s": compile_s, "drop_path_rate": spec.drop_path.rate,
                     "optimizer": type(stepper.opt).__name__ + (" (fused)" if stepper.opt.defaults.get("fused") else "")}


def timm_stepper(arch: str, size: int, batch: int, settings: DeviceSettings, drop_path_rate: float = 0.0) -> Stepper:
    """timm's model and optimizer as its training script makes them by default (fp32 NCHW on the
    cpu), with the preset's stochastic depth (timm spreads ``drop_path_rate`` over the blocks as
    the preset does: linearly, or uniformly for CaiT)."""
    timm = import_timm()
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    try:
        model = timm.create_model(arch, pretrained=False, img_size=size, drop_path_rate=drop_path_rate)
    except TypeError:  # a convolutional network takes any size and has no img_size
        model = timm.create_model(arch, pretrained=False, drop_path_rate=drop_path_rate)
    model = model.to(settings.device).train()
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = create_optimizer_v2(model, "adamw", lr=1e-4, weight_decay=0.05)
    return Stepper(model, opt, settings, size, batch)


def vs_timm(args) -> list[dict]:
    """Interleaved rounds of archspace's and timm's step on each family's identical network."""
    rows = []
    for name in args.presets or list(VS_TIMM):
        arch = VS_TIMM[name]
        for size in args.sizes:
            batch = args.batch or (32 if size <= 64 else 8)
            ours, info = archspace_stepper(name, size, batch, args.device)
            # timm at the precision of the comparison; its memory format is its script's default (NCHW)
            theirs = timm_stepper(arch, size, batch, DeviceSettings(ours.settings.device, ours.settings.precision,
                                                                    False, False), info["drop_path_rate"])
            n_ours = sum(p.numel() for p in ours.model.parameters())
            n_theirs = sum(p.numel() for p in theirs.model.parameters())
            # timm's ViT and CaiT keep a position row for the class token (one width more): the
            # weight import folds it into the token, the function is the same
            if abs(n_ours - n_theirs) > 1e-4 * n_theirs:
                raise SystemExit(f"{name} and timm's {arch} differ: {n_ours:,} against {n_theirs:,} parameters")
            for _ in range(args.warmup):
                ours.step()
                theirs.step()
            a_rates, b_rates = [], []
            for r in range(args.rounds):
                pair = (ours, theirs) if r % 2 == 0 else (theirs, ours)
                times = {id(s): s.timed(args.steps) for s in pair}
                a_rates.append(args.steps * batch / times[id(ours)])
                b_rates.append(args.steps * batch / times[id(theirs)])
            ratios = [a / b for a, b in zip(a_rates, b_rates)]
            row = {"preset": name, "timm": arch, "size": size, "batch": batch, "threads": torch.get_num_threads(),
                   "params": n_ours, "archspace_images_per_s": statistics.median(a_rates),
                   "timm_images_per_s": statistics.median(b_rates), "ratio": statistics.median(ratios),
                   "ratio_min": min(ratios), "ratio_max": max(ratios), "rounds": args.rounds, **info}
            rows.append(row)
            if not args.json:
                print(f"| {name} / {arch} | {size} | {batch} | {row['archspace_images_per_s']:.1f} | "
                      f"{row['timm_images_per_s']:.1f} | {row['ratio']:.2f} ({row['ratio_min']:.2f}–"
                      f"{row['ratio_max']:.2f}) |" + (f" compile {info['compile_s']:.0f} s" if info["compile_s"] else ""),
                      flush=True)
            del ours, theirs
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=None,
                    help="default: coatnet-0 convnext-t vit_c-4gf resnet-50 cait-xxs24 (with --vs-timm: one per family)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    ap.add_argument("--batch", type=int, default=None, help="default: 32 at small size, 8 at 224 on CPU; 128 on CUDA")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto (the accelerator, else the cpu), cpu, cuda, ...")
    ap.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                    help="default: bf16 on an accelerator, fp32 on the cpu")
    ap.add_argument("--channels-last", default=None, action=argparse.BooleanOptionalAction)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for the precision (MFU)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--vs-timm", action="store_true", help="each family's preset against timm's identical network")
    ap.add_argument("--rounds", type=int, default=5, help="--vs-timm: interleaved rounds (the ratio's min-max)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.vs_timm:
        if not args.threads and torch.get_num_threads() > 2 and args.device in ("auto", "cpu") and accelerator() is None:
            torch.set_num_threads(2)  # the stated comparison: 2 threads on the cpu
        if not args.json:
            print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
                  f"median of {args.rounds} interleaved rounds of {args.steps} steps\n"
                  "| preset / timm | px | batch | archspace img/s | timm img/s | ratio (min–max) |\n|---|---:|---:|---:|---:|---|")
        rows = vs_timm(args)
        if args.json:
            print(json.dumps(rows))
        return
    settings = device_settings(args.device, args.precision, args.channels_last)
    device = settings.device
    peak = args.peak_tflops or peak_tflops(device, settings.precision)
    rows = []
    print(f"# torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
             f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
          + f", {settings.precision}" + (" + channels-last" if settings.channels_last else "")
          + (f"; peak {peak:g} TFLOPS" if peak else ""))
    for name in args.presets or ["coatnet-0", "convnext-t", "vit_c-4gf", "resnet-50", "cait-xxs24"]:
        for size in args.sizes:
            batch = args.batch or (128 if accelerator() is not None and device.type != "cpu" else
                                   (32 if size <= 64 else 8))
            spec = load_spec(name, size=size)
            train_flops = 6 * complexity(lower(spec))["flops"]  # 3 passes x 2 FLOPs per multiply-add
            torch.manual_seed(0)
            model = compile_network(spec)
            row = {"preset": name, "size": size, "batch": batch, "device": str(device), "precision": settings.precision,
                   "channels_last": for_network(settings, model, args.channels_last).channels_last}
            row["images_per_s"] = step_rate(model, size, batch, settings, args.steps, args.warmup,
                                            channels_last=args.channels_last)
            if args.compile:
                row["images_per_s_compiled"] = step_rate(model, size, batch, settings, args.steps, args.warmup + 2,
                                                         compiled=True, channels_last=args.channels_last)
            if peak:
                best = max(row["images_per_s"], row.get("images_per_s_compiled", 0.0))
                row["mfu"] = best * train_flops / (peak * 1e12)
            ref = timm_model(name) if size == 224 else None
            if ref is not None:
                row["timm_images_per_s"] = step_rate(ref, size, batch, settings, args.steps, args.warmup,
                                                     channels_last=settings.channels_last)  # timm: its script's format
                row["ratio_to_timm"] = row["images_per_s"] / row["timm_images_per_s"]
            rows.append(row)
            if not args.json:
                extra = "".join(f"  {k}={v:.3f}" if k == "mfu" else f"  {k}={v:.1f}" for k, v in row.items()
                                if k not in ("preset", "size", "batch", "device", "precision", "images_per_s",
                                             "channels_last"))
                print(f"{name:12s} {size:4d}px batch {batch:4d}{' channels-last' if row['channels_last'] else ''}: "
                      f"{row['images_per_s']:9.1f} img/s{extra}", flush=True)
            del model
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
