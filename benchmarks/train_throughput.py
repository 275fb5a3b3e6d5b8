"""Training-step throughput: forward + backward + optimizer step, in images per second.

For a few presets at a small resolution and at 224, on the CPU (and on CUDA when present:
bf16 autocast, channels-last, SDPA, with and without torch.compile). Where timm is
importable, the same architecture in timm is timed too and the ratio printed.

    python benchmarks/train_throughput.py                       # CPU, default presets
    python benchmarks/train_throughput.py --device cuda --compile --batch 128
    python benchmarks/train_throughput.py --presets coatnet-0 convnext-t --sizes 64 --json
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from archspace import compile_network, load_spec
from archspace.train import TrainConfig
from archspace.train.optim import make_optimizer

TIMM_NAMES = {"coatnet-0": "coatnet_0_224", "convnext-t": "convnext_tiny", "resnet-50": "resnet50",
              "vit_p-4gf": None, "cait-xxs24": "cait_xxs24_224", "deit-s": "deit_small_patch16_224"}


def step_rate(model: torch.nn.Module, size: int, batch: int, device: torch.device, steps: int, warmup: int,
              bf16: bool) -> float:
    model.to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, TrainConfig(lr=1e-4))  # the trainer's own parameter groups
    x = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()

    def one() -> None:
        with autocast:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
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
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = device.type == "cuda"
    rows = []
    print(f"# torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", {torch.get_num_threads()} threads")
          + (", bf16 autocast + channels-last" if bf16 else ", fp32"))
    for name in args.presets:
        for size in args.sizes:
            batch = args.batch or (128 if device.type == "cuda" else (32 if size <= 64 else 8))
            spec = load_spec(name, size=size)
            torch.manual_seed(0)
            model = compile_network(spec)
            row = {"preset": name, "size": size, "batch": batch, "device": str(device)}
            row["images_per_s"] = step_rate(model, size, batch, device, args.steps, args.warmup, bf16)
            if args.compile:
                row["images_per_s_compiled"] = step_rate(torch.compile(model), size, batch, device, args.steps,
                                                         args.warmup + 2, bf16)
            ref = timm_model(name) if size == 224 else None
            if ref is not None:
                row["timm_images_per_s"] = step_rate(ref, size, batch, device, args.steps, args.warmup, bf16)
                row["ratio_to_timm"] = row["images_per_s"] / row["timm_images_per_s"]
            rows.append(row)
            if not args.json:
                extra = "".join(f"  {k}={v:.1f}" for k, v in row.items() if k not in ("preset", "size", "batch",
                                                                                    "device", "images_per_s"))
                print(f"{name:12s} {size:4d}px batch {batch:4d}: {row['images_per_s']:9.1f} img/s{extra}", flush=True)
            del model
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
