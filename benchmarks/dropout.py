"""Dropout on the CPU: ``F.dropout`` against :func:`s2s_tasks.nn.dropout.dropout`, side by side.

    python benchmarks/dropout.py --threads 2 --json benchmarks/results/dropout.json

Times forward + backward of both on tensors of a training step of the default shapes (FFN
activations, attention weights, residual stream), interleaved, ``--repeats`` times; prints the
median milliseconds and the ratio, and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import write_json

from s2s_tasks.nn.dropout import dropout

SHAPES = {"ffn (32, 64, 1024)": (32, 64, 1024), "attention (32, 4, 64, 64)": (32, 4, 64, 64), "residual (32, 64, 256)": (32, 64, 256)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--json", default="benchmarks/results/dropout.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    impls = {"F.dropout": F.dropout, "ours": dropout}
    results = {}
    print(f"{'tensor':<28}{'F.dropout ms':>14}{'ours ms':>10}{'ratio':>8}")
    for name, shape in SHAPES.items():
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        times = {k: [] for k in impls}
        for _ in range(args.repeats + 1):  # the first round warms up
            for k, fn in impls.items():
                start = time.perf_counter()
                fn(x, args.p, True).backward(grad)
                times[k].append(time.perf_counter() - start)
        med = {k: 1000 * statistics.median(v[1:]) for k, v in times.items()}
        results[name] = {"median_ms": med, "ratio": med["F.dropout"] / med["ours"]}
        print(f"{name:<28}{med['F.dropout']:>14.2f}{med['ours']:>10.2f}{results[name]['ratio']:>7.2f}x")
    write_json(args.json, {"args": vars(args), "torch": torch.__version__, "results": results})


if __name__ == "__main__":
    main()
