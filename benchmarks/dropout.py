"""Dropout on the CPU: ``F.dropout`` against :func:`s2s_tasks.nn.dropout.dropout`, side by side.

    python benchmarks/dropout.py --threads 2 --json benchmarks/results/dropout.json

Times forward + backward on tensors of a training step of the default shapes (FFN activations,
attention weights, residual stream), in float32 and bfloat16, interleaved, ``--repeats`` times:
``F.dropout``; ours; and ours with a ``bool`` mask applied by ``masked_fill_`` (what ours does in
float32, and did in bfloat16 before it kept a bfloat16 mask). Prints the median milliseconds and the ratios, and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import write_json

from s2s_tasks.nn.dropout import _MaskedScale, drop_mask, dropout


def bool_mask_dropout(x, p, training=True):
    """A ``bool`` mask applied with ``masked_fill_`` (ours in float32; in every dtype at first)."""
    return _MaskedScale.apply(x, drop_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


SHAPES = {"ffn (32, 64, 1024)": (32, 64, 1024), "attention (32, 4, 64, 64)": (32, 4, 64, 64), "residual (32, 64, 256)": (32, 64, 256)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--json", default="benchmarks/results/dropout.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    impls = {"F.dropout": F.dropout, "ours (bool mask)": bool_mask_dropout, "ours": dropout}
    results = {}
    print(f"{'tensor':<38}" + "".join(f"{k + ' ms':>22}" for k in impls) + f"{'F / ours':>10}{'bool / ours':>13}")
    for dtype in (torch.float32, torch.bfloat16):
        for name, shape in SHAPES.items():
            x = torch.randn(shape, dtype=dtype, requires_grad=True)
            grad = torch.randn(shape, dtype=dtype)
            times = {k: [] for k in impls}
            for _ in range(args.repeats + 1):  # the first round warms up
                for k, fn in impls.items():
                    start = time.perf_counter()
                    fn(x, args.p, True).backward(grad)
                    times[k].append(time.perf_counter() - start)
            med = {k: 1000 * statistics.median(v[1:]) for k, v in times.items()}
            key = f"{name} {str(dtype).replace('torch.', '')}"
            results[key] = {"median_ms": med, "ratio": med["F.dropout"] / med["ours"],
                            "ratio_bool_mask": med["ours (bool mask)"] / med["ours"]}
            print(f"{key:<38}" + "".join(f"{med[k]:>22.2f}" for k in impls)
                  + f"{results[key]['ratio']:>9.2f}x{results[key]['ratio_bool_mask']:>12.2f}x")
    write_json(args.json, {"args": vars(args), "torch": torch.__version__, "results": results})


if __name__ == "__main__":
    main()
