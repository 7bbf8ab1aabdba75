"""Attention on the CPU for a few queries: ``F.scaled_dot_product_attention`` against two batched
products (``bmm``, masked softmax, ``bmm``), side by side, through ``MultiHeadAttention`` itself.

    python benchmarks/attention_kernels.py --threads 2 --json benchmarks/results/attention_kernels.json

Each case is a cross-attention step of a decode: the keys and values are projected once into the
module's ``static_kv`` cache (the last few keys masked as padding), then the timed call projects
``queries`` queries of each of ``rows`` rows, attends and projects the output, under
``torch.no_grad`` in eval mode. A greedy step has 1 query a row; a beam-4 step whose beams share
their source row attends with 4 queries a row (``TransformerDecoder.shares_source_rows``); a
teacher-forced pass with the target length. The two paths are the module's own, chosen by
``s2s_tasks.nn.attention.EXPLICIT_MAX_QUERIES`` (set to 0 for SDPA, to the query count for the
explicit path), timed interleaved ``--repeats`` times (median reported), and their outputs are
checked against each other. Prints a table and writes one JSON file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, write_json  # noqa: E402

from s2s_tasks.nn import attention  # noqa: E402


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--d_model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--keys", type=int, default=64)
    parser.add_argument("--rows", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--budget", type=float, default=0.05, help="seconds per timed repeat of one path")
    parser.add_argument("--json", default="benchmarks/results/attention_kernels.json")
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    module = attention.MultiHeadAttention(a.d_model, a.heads).eval()
    results: List[Dict[str, object]] = []
    print(f"torch {torch.__version__}, {a.threads} threads, d_model {a.d_model}, {a.heads} heads, {a.keys} keys; "
          f"median microseconds of {a.repeats} interleaved repeats")
    print(f"{'rows':>6}{'queries':>9}{'SDPA us':>10}{'explicit us':>13}{'SDPA/explicit':>15}")
    saved = attention.EXPLICIT_MAX_QUERIES
    try:
        for rows in a.rows:
            memory = torch.randn(rows, a.keys, a.d_model)
            key_mask = torch.ones(rows, a.keys, dtype=torch.bool)
            key_mask[:, a.keys - a.keys // 8 :] = False
            with torch.no_grad():
                _, _, cache = module(memory[:, :1], memory, memory, key_mask=key_mask, cache={}, static_kv=True)
            for queries in a.queries:
                query = torch.randn(rows, queries, a.d_model)

                def call(limit: int) -> Callable[[], torch.Tensor]:
                    def run() -> torch.Tensor:
                        attention.EXPLICIT_MAX_QUERIES = limit
                        with torch.no_grad():
                            return module(query, None, None, cache=cache, static_kv=True)[0]
                    return run

                calls = {"sdpa": call(0), "explicit": call(queries)}
                torch.testing.assert_close(calls["sdpa"](), calls["explicit"](), atol=1e-5, rtol=1e-4)
                us = {name: seconds * 1e6 for name, seconds in interleaved_medians(calls, a.repeats, a.budget).items()}
                row = {"rows": rows, "queries": queries, "keys": a.keys, "sdpa_us": us["sdpa"],
                       "explicit_us": us["explicit"], "sdpa_over_explicit": us["sdpa"] / us["explicit"]}
                results.append(row)
                print(f"{rows:>6}{queries:>9}{us['sdpa']:>10.1f}{us['explicit']:>13.1f}{row['sdpa_over_explicit']:>14.2f}x", flush=True)
    finally:
        attention.EXPLICIT_MAX_QUERIES = saved
    write_json(a.json, {"torch": torch.__version__, "threads": a.threads, "repeats": a.repeats,
                        "d_model": a.d_model, "heads": a.heads, "explicit_max_queries": saved, "results": results})


if __name__ == "__main__":
    main()
