"""Float32 linear layers on the CPU: torch's ``F.linear`` (MKL) against oneDNN, side by side.

    python benchmarks/linear_kernels.py --threads 2 --json benchmarks/results/linear_kernels.json

At the shapes of ``benchmarks/speed.py``'s model (d_model 256, FFN 1,024, vocabulary 8,000) and
row counts of a greedy step (32 rows), a beam-4 step (128) and a training batch or an encoder
pass (2,048 = 32 x 64 tokens), each product is timed, interleaved, ``--repeats`` times (median
reported):

* ``forward``: ``F.linear`` against oneDNN's product on the plain weight
  (:func:`s2s_tasks.nn.onednn_linear.linear`) and on a weight packed once
  (:mod:`s2s_tasks.nn.packed_linear`, what a search uses);
* ``train`` (the training rows only): forward and backward of ``F.linear`` under autograd
  against :func:`~s2s_tasks.nn.onednn_linear.linear`'s autograd function.

Every variant's output is checked against ``F.linear``'s. Prints a table (microseconds, GFLOP/s
and the ratio MKL / oneDNN) and writes one JSON file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, write_json  # noqa: E402

from s2s_tasks.nn import onednn_linear, packed_linear  # noqa: E402

#: (in_features, out_features) of the model's layers
SHAPES = {"qkv": (256, 768), "attn_out": (256, 256), "ffn_in": (256, 1024), "ffn_out": (1024, 256), "vocab": (256, 8000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rows", type=int, nargs="+", default=[32, 128, 2048])
    parser.add_argument("--train_rows", type=int, default=2048)
    parser.add_argument("--json", default="benchmarks/results/linear_kernels.json")
    a = parser.parse_args()
    if not packed_linear._ops_available():
        raise SystemExit("this PyTorch build has no oneDNN linear ops (torch.ops.mkldnn._linear_pointwise): nothing to compare")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    product = torch.ops.mkldnn._linear_pointwise
    rows_out: List[Dict[str, object]] = []
    print(f"torch {torch.__version__}, {a.threads} threads; median microseconds of {a.repeats} interleaved repeats")
    print(f"{'kind':<8}{'layer':<10}{'rows':>6}{'MKL us':>10}{'oneDNN us':>11}{'packed us':>11}{'MKL GF/s':>10}"
          f"{'oneDNN GF/s':>12}{'MKL/oneDNN':>11}{'MKL/packed':>11}")
    for kind in ("forward", "train"):
        for m in (a.rows if kind == "forward" else [a.train_rows]):
            for layer, (k, n) in SHAPES.items():
                x = torch.randn(m, k)
                weight, bias = torch.randn(n, k) / k**0.5, torch.randn(n)
                flops = 2.0 * m * k * n
                if kind == "forward":
                    packed = torch.ops.mkldnn._reorder_linear_weight(weight, 64)
                    expected = F.linear(x, weight, bias)
                    for out in (product(x, weight, bias, "none", [], ""), product(x, packed, bias, "none", [], "")):
                        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
                    calls = {
                        "mkl": lambda: F.linear(x, weight, bias),
                        "onednn": lambda: product(x, weight, bias, "none", [], ""),
                        "packed": lambda: product(x, packed, bias, "none", [], ""),
                    }
                    with torch.no_grad():
                        seconds = interleaved_medians(calls, a.repeats)
                else:
                    flops *= 3  # forward, input gradient, weight gradient
                    xg, wg, bg = (t.clone().requires_grad_() for t in (x, weight, bias))
                    grad = torch.randn(m, n)

                    def step(fn: Callable[..., torch.Tensor]) -> None:
                        fn(xg, wg, bg).backward(grad)
                        xg.grad = wg.grad = bg.grad = None

                    step(onednn_linear.linear)
                    assert xg.grad is None  # step() clears them
                    calls = {"mkl": lambda: step(F.linear), "onednn": lambda: step(onednn_linear.linear)}
                    seconds = interleaved_medians(calls, a.repeats)
                row = {"kind": kind, "layer": layer, "rows": m, "in": k, "out": n,
                       **{f"{name}_us": s * 1e6 for name, s in seconds.items()},
                       **{f"{name}_gflops": flops / s / 1e9 for name, s in seconds.items()},
                       "mkl_over_onednn": seconds["mkl"] / seconds["onednn"]}
                if "packed" in seconds:
                    row["mkl_over_packed"] = seconds["mkl"] / seconds["packed"]
                rows_out.append(row)
                packed_us = f"{row['packed_us']:>11.1f}" if "packed_us" in row else f"{'-':>11}"
                packed_ratio = f"{row['mkl_over_packed']:>10.2f}x" if "mkl_over_packed" in row else f"{'-':>11}"
                print(f"{kind:<8}{layer:<10}{m:>6}{row['mkl_us']:>10.1f}{row['onednn_us']:>11.1f}{packed_us}"
                      f"{row['mkl_gflops']:>10.0f}{row['onednn_gflops']:>12.0f}{row['mkl_over_onednn']:>10.2f}x{packed_ratio}", flush=True)
    write_json(a.json, {"torch": torch.__version__, "threads": a.threads, "repeats": a.repeats, "rows": rows_out})


if __name__ == "__main__":
    main()
