"""The cpu matrix products of a linear layer: torch's (MKL's ``mm``) against oneDNN's, per product.

A linear layer's training step is three products: the forward pass ``x·Wᵀ``, the input gradient
``g·W`` and the weight gradient ``gᵀ·x``. archspace's ``layers.modules.linear`` runs the first two
on oneDNN while training on the cpu in fp32 and keeps the third on torch's ``mm``. This script
times each of the three both ways, and the whole layer (``nn.Linear`` against archspace's
``Linear``, forward and backward), for the token matrices of the presets' blocks: rows = batch ×
tokens, in → out features. Median of ``--repeat`` calls after a warm-up, ``--threads`` threads.

    python benchmarks/linear_kernels.py                   # table
    python benchmarks/linear_kernels.py --threads 1 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from archspace.layers.modules import Linear  # noqa: E402

# (what, rows, in, out): the blocks' linear layers at 64 px batch 32 and at 224 px batch 8
SHAPES = [
    ("deit-s 64px b32 qkv", 32 * 17, 384, 1152),
    ("deit-s 64px b32 fc2", 32 * 17, 1536, 384),
    ("cait-xxs24 64px b32 fc1", 32 * 16, 192, 768),
    ("deit-s 224px b8 qkv", 8 * 197, 384, 1152),
    ("deit-s 224px b8 fc1", 8 * 197, 384, 1536),
    ("deit-s 224px b8 fc2", 8 * 197, 1536, 384),
    ("convnext-t 224px b8 stage 1 fc1", 8 * 56 * 56, 96, 384),
    ("convnext-t 224px b8 stage 1 fc2", 8 * 56 * 56, 384, 96),
    ("convnext-t 224px b8 stage 3 fc1", 8 * 14 * 14, 384, 1536),
]


def median_ms(fn, repeat: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(rows: int, fan_in: int, fan_out: int, repeat: int) -> dict:
    onednn = torch.ops.mkldnn._linear_pointwise
    x, w, g = torch.randn(rows, fan_in), torch.randn(fan_out, fan_in), torch.randn(rows, fan_out)
    out = {
        "forward": (median_ms(lambda: torch.mm(x, w.t()), repeat),
                    median_ms(lambda: onednn(x, w, None, "none", [], ""), repeat)),
        "input_grad": (median_ms(lambda: torch.mm(g, w), repeat),
                       median_ms(lambda: onednn(g, w.t(), None, "none", [], ""), repeat)),
        "weight_grad": (median_ms(lambda: torch.mm(g.t(), x), repeat),
                        median_ms(lambda: onednn(g.t(), x.t(), None, "none", [], ""), repeat)),
    }
    torch.manual_seed(0)
    ours = Linear(fan_in, fan_out)
    theirs = torch.nn.Linear(fan_in, fan_out)
    theirs.load_state_dict(ours.state_dict())
    xs = x.clone().requires_grad_()

    def step(layer):
        return lambda: layer(xs).backward(g)

    # the layer, alternated: torch's then archspace's, then the other way round
    first_theirs, first_ours = median_ms(step(theirs), repeat), median_ms(step(ours), repeat)
    then_ours, then_theirs = median_ms(step(ours), repeat), median_ms(step(theirs), repeat)
    out["layer"] = ((first_theirs + then_theirs) / 2, (first_ours + then_ours) / 2)
    return {k: {"torch_ms": round(a, 3), "onednn_ms": round(b, 3), "speedup": round(a / b, 2)} for k, (a, b) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [{"what": what, "rows": r, "in": i, "out": o, **measure(r, i, o, args.repeat)} for what, r, i, o in SHAPES]
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                          "rows": rows}, indent=1))
        return
    print(f"# torch {torch.__version__}, {args.threads} threads; ms per product, median of {args.repeat}; "
          "layer = nn.Linear against archspace's Linear, forward + backward")
    print("| shape | rows × in → out | forward mm / oneDNN | input grad mm / oneDNN | weight grad mm / oneDNN "
          "| layer torch / archspace |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]['torch_ms']:.2f} / {r[k]['onednn_ms']:.2f} ({r[k]['speedup']:.2f}×)"
                 for k in ("forward", "input_grad", "weight_grad", "layer")]
        print(f"| {r['what']} | {r['rows']} × {r['in']} → {r['out']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
