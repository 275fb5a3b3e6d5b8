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
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from archspace import compile_network, complexity, load_spec
from archspace.graph import lower
from archspace.train import TrainConfig
from archspace.train.device import DeviceSettings, accelerator, device_settings
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

TIMM_NAMES = {"coatnet-0": "coatnet_0_224", "convnext-t": "convnext_tiny", "resnet-50": "resnet50",
              "vit_p-4gf": None, "cait-xxs24": "cait_xxs24_224", "deit-s": "deit_small_patch16_224"}


def step_rate(model: torch.nn.Module, size: int, batch: int, settings: DeviceSettings, steps: int, warmup: int,
              compiled: bool = False) -> float:
    """Images/s of the trainer's step: autocast forward, scaled backward, optimizer step."""
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


def timm_model(name: str):
    try:
        import timm
    except ImportError:
        return None
    arch = TIMM_NAMES.get(name)
    return timm.create_model(arch, pretrained=False) if arch else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["coatnet-0", "convnext-t", "vit_c-4gf", "resnet-50", "cait-xxs24"])
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
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = device_settings(args.device, args.precision, args.channels_last)
    device = settings.device
    peak = args.peak_tflops or peak_tflops(device, settings.precision)
    rows = []
    print(f"# torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
             f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
          + f", {settings.precision}" + (" + channels-last" if settings.channels_last else "")
          + (f"; peak {peak:g} TFLOPS" if peak else ""))
    for name in args.presets:
        for size in args.sizes:
            batch = args.batch or (128 if accelerator() is not None and device.type != "cpu" else
                                   (32 if size <= 64 else 8))
            spec = load_spec(name, size=size)
            train_flops = 6 * complexity(lower(spec))["flops"]  # 3 passes x 2 FLOPs per multiply-add
            torch.manual_seed(0)
            model = compile_network(spec)
            row = {"preset": name, "size": size, "batch": batch, "device": str(device), "precision": settings.precision}
            row["images_per_s"] = step_rate(model, size, batch, settings, args.steps, args.warmup)
            if args.compile:
                row["images_per_s_compiled"] = step_rate(model, size, batch, settings, args.steps, args.warmup + 2,
                                                         compiled=True)
            if peak:
                best = max(row["images_per_s"], row.get("images_per_s_compiled", 0.0))
                row["mfu"] = best * train_flops / (peak * 1e12)
            ref = timm_model(name) if size == 224 else None
            if ref is not None:
                row["timm_images_per_s"] = step_rate(ref, size, batch, settings, args.steps, args.warmup)
                row["ratio_to_timm"] = row["images_per_s"] / row["timm_images_per_s"]
            rows.append(row)
            if not args.json:
                extra = "".join(f"  {k}={v:.3f}" if k == "mfu" else f"  {k}={v:.1f}" for k, v in row.items()
                                if k not in ("preset", "size", "batch", "device", "precision", "images_per_s"))
                print(f"{name:12s} {size:4d}px batch {batch:4d}: {row['images_per_s']:9.1f} img/s{extra}", flush=True)
            del model
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
