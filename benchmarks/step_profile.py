"""Where a training step's time goes, archspace against timm, on the same network.

For each preset and its timm twin (``train_throughput.VS_TIMM``; both built and trained as in
``train_throughput.py --vs-timm``), this script prints:

- the step's wall time and its forward / backward / optimizer phases (unprofiled, medians of
  ``--rounds`` interleaved steps);
- ``torch.profiler``'s self time per kernel over ``--profiled`` steps, grouped: matrix products
  (``mm``, ``addmm``, ``bmm``, ``baddbmm``, oneDNN's linear), attention kernels, convolutions,
  the optimizer (all under ``Optimizer.step``), the other ATen kernels (elementwise, norms,
  reductions, copies), autograd and Python (the engine's nodes' and autograd functions' own
  time), and the time between events (the interpreter between kernels);
- the products' rate: their FLOPs (``torch.utils.flop_counter`` over the same steps, same drop
  path draws) over their profiled time, against this machine's peak (the faster of MKL's and
  oneDNN's 2048³ product), and the *floor*: how long the step would take if its products ran at
  that peak and nothing else took any time.

The profiler adds its own cost per kernel, so its shares are of the profiled step; the phases
and the floor are what to compare with ``train_throughput.py``::

    python benchmarks/step_profile.py                          # deit-s and cait-xxs24, 64 px, batch 32
    python benchmarks/step_profile.py --presets deit-s --sizes 224 --top 12
    python benchmarks/step_profile.py --presets convnext-t --sizes 64 224 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import train_throughput as tt  # noqa: E402
from archspace.train.device import DeviceSettings  # noqa: E402

GROUPS = ("matmul", "attention", "convolution", "optimizer", "other aten", "autograd + python", "between events")
PRODUCTS = ("matmul", "attention", "convolution")
_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "_linear_pointwise"}


def _kernel_group(name: str) -> str | None:
    """A kernel's group by its name (``aten::mm``, ``mkldnn::_linear_pointwise``); None for what
    is not an ATen or oneDNN kernel (autograd nodes, autograd functions, record ranges)."""
    space, _, op = name.partition("::")
    if space not in ("aten", "mkldnn") or not op:
        return None
    if op in _MATMUL:
        return "matmul"
    if "scaled_dot_product" in op:
        return "attention"
    if "conv" in op:
        return "convolution"
    return "other aten"


def _flop_group(op) -> str:
    """The group of a flop counter's op (``aten.mm.default``, ``mkldnn._linear_pointwise``)."""
    name = str(op).split(".")
    return _kernel_group("::".join(name[:2])) or "other aten"


def step_flops(stepper: tt.Stepper, seeds: list[int]) -> dict[str, float]:
    """The products' FLOPs per group, averaged over one step per seed (forward and backward)."""
    total: dict[str, float] = defaultdict(float)
    for seed in seeds:
        torch.manual_seed(seed)
        with FlopCounterMode(display=False) as counter:
            stepper.step()
        for op, flops in counter.get_flop_counts()["Global"].items():
            total[_flop_group(op)] += flops / len(seeds)
    return dict(total)


def profiled(stepper: tt.Stepper, seeds: list[int], top: int) -> dict:
    """Self time per group (ms per step) over one profiled step per seed, and the top kernels."""
    groups: dict[str, float] = defaultdict(float)
    kernels: dict[str, float] = defaultdict(float)
    walls = []
    for seed in seeds:
        torch.manual_seed(seed)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            stepper.step()
            walls.append(time.perf_counter() - start)
        for event in prof.events():
            in_optimizer, node = False, event
            while node is not None and not in_optimizer:
                in_optimizer, node = node.name.startswith("Optimizer.step"), node.cpu_parent
            kernel = _kernel_group(event.name)
            ms = event.self_cpu_time_total / 1e3 / len(seeds)
            groups["optimizer" if in_optimizer else kernel or "autograd + python"] += ms
            if kernel is not None:
                kernels[event.name] += ms
    wall = statistics.median(walls) * 1e3
    groups["between events"] = max(0.0, wall - sum(groups.values()))
    top_kernels = sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
    return {"profiled_step_ms": wall, "groups_ms": {g: groups.get(g, 0.0) for g in GROUPS},
            "top_kernels_ms": dict(top_kernels)}


def machine_peak() -> dict[str, float]:
    """GFLOP/s of a 2048³ fp32 product on MKL (``torch.mm``) and on oneDNN, fastest of 5."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    runs = {"mkl": lambda: torch.mm(a, b)}
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        runs["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    out = {}
    for name, fn in runs.items():
        fn()
        best = min(_seconds(fn) for _ in range(5))
        out[name] = 2 * 2048 ** 3 / best / 1e9
    return out


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, size: int, batch: int, rounds: int, n_profiled: int, top: int, peak: float) -> list[dict]:
    ours, info = tt.archspace_stepper(name, size, batch, "cpu")
    arch = tt.VS_TIMM[name]
    theirs = tt.timm_stepper(arch, size, batch, DeviceSettings(ours.settings.device, ours.settings.precision,
                                                               False, False), info["drop_path_rate"])
    pair = {"archspace": ours, "timm": theirs}
    for stepper in pair.values():
        for _ in range(2):
            stepper.step()
    times: dict[str, list] = {label: [] for label in pair}
    for r in range(rounds):
        for label in (("archspace", "timm") if r % 2 == 0 else ("timm", "archspace")):
            times[label].append(pair[label].step())
    seeds = list(range(1000, 1000 + n_profiled))
    rows = []
    for label, stepper in pair.items():
        phase_ms = [statistics.median(t[k] for t in times[label]) * 1e3 for k in range(3)]
        flops = step_flops(stepper, seeds)
        prof = profiled(stepper, seeds, top)
        product_flops = sum(flops.get(g, 0.0) for g in PRODUCTS)
        product_ms = sum(prof["groups_ms"][g] for g in PRODUCTS)
        rows.append({
            "preset": name, "model": "archspace" if label == "archspace" else arch, "size": size, "batch": batch,
            "threads": torch.get_num_threads(), "step_ms": statistics.median(sum(t) for t in times[label]) * 1e3,
            "forward_ms": phase_ms[0], "backward_ms": phase_ms[1], "optimizer_ms": phase_ms[2],
            "product_gflop": product_flops / 1e9, "product_gflops_per_s": product_flops / product_ms / 1e6,
            "peak_gflops_per_s": peak, "floor_ms": product_flops / peak / 1e6, **prof})
    return rows


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        groups = row["groups_ms"]
        profiled_total = row["profiled_step_ms"]
        print(f"\n## {row['preset']} / {row['model']}, {row['size']} px, batch {row['batch']}, {row['threads']} threads")
        print(f"step {row['step_ms']:.1f} ms (forward {row['forward_ms']:.1f}, backward {row['backward_ms']:.1f}, "
              f"optimizer {row['optimizer_ms']:.1f}); products {row['product_gflop']:.1f} GFLOP at "
              f"{row['product_gflops_per_s']:.0f} GFLOP/s in the profile (peak {row['peak_gflops_per_s']:.0f}): "
              f"floor {row['floor_ms']:.1f} ms")
        print(f"profiled step {profiled_total:.1f} ms: " + ", ".join(
            f"{g} {ms:.1f} ({100 * ms / profiled_total:.0f}%)" for g, ms in groups.items()))
        print("top kernels (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in row["top_kernels_ms"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["deit-s", "cait-xxs24"], choices=sorted(tt.VS_TIMM))
    ap.add_argument("--sizes", nargs="+", type=int, default=[64])
    ap.add_argument("--batch", type=int, default=None, help="default: 32 at 64 px and below, 8 above")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved unprofiled steps of each (phases)")
    ap.add_argument("--profiled", type=int, default=3, help="profiled (and flop-counted) steps of each")
    ap.add_argument("--top", type=int, default=10, help="kernels listed by self time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peaks = machine_peak()
    peak = max(peaks.values())
    if not args.json:
        print(f"# torch {torch.__version__}, cpu, {args.threads} threads; 2048³ product: "
              + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    rows = []
    for name in args.presets:
        for size in args.sizes:
            batch = args.batch or (32 if size <= 64 else 8)
            new = measure(name, size, batch, args.rounds, args.profiled, args.top, peak)
            rows.extend(new)
            if not args.json:
                print_rows(new)
                ours, theirs = new
                print(f"\nratio {theirs['step_ms'] / ours['step_ms']:.2f}; with both at their floors "
                      f"{theirs['floor_ms'] / ours['floor_ms']:.2f}; timm's step over archspace's floor "
                      f"{theirs['step_ms'] / ours['floor_ms']:.2f}", flush=True)
    if args.json:
        print(json.dumps({"peaks_gflops_per_s": peaks, "rows": rows}))


if __name__ == "__main__":
    main()
