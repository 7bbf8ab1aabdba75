"""``torch.compile`` on our Transformer: does it pay, and where (issue 5 asks for it as an opt-in
flag "where it pays")?

    python benchmarks/compile.py --threads 2 --json benchmarks/results/compile.json

The model and batch of ``benchmarks/speed.py``'s part 1 (d_model 256, 3+3 layers, 4 heads, FFN
1024, vocabulary 8000, batch 32, source and target 64 tokens; the same shape flags). Each
measurement runs eager and compiled, interleaved, ``--repeats`` times after a warm-up; the first
compiled call's seconds (compilation included) are reported apart:

* ``train_fp32`` / ``train_bf16``: one training step as ``speed.py`` times it (forward, the
  fused projection + loss, backward, fused AdamW), with the forward and loss under
  ``torch.compile`` (static shapes: every batch has the same shape here, which bucketed real
  batches do not);
* ``greedy`` / ``beam``: generation forced to ``--tgt_len`` new tokens, with the decoder's
  incremental ``step`` under ``torch.compile(dynamic=True)`` (the cached length grows every step).

The first compiled call compiles from scratch: inductor's on-disk cache is pointed at a new
temporary directory (``--warm_cache`` keeps the default one, whose graphs from an earlier run
make the first call much shorter). Also checked: the compiled training loss equals eager's to ``1e-3`` relative, and the greedy
tokens are compared position by position (the share that agree is reported: compiled kernels
round differently, so a near-tie may flip).

Prints a table and writes one JSON file.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import speed  # noqa: E402
from common import write_json  # noqa: E402


def _train_step(adapter: Any, loss_fn: Callable[..., torch.Tensor], batch: Dict[str, torch.Tensor], bf16: bool) -> float:
    adapter.model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = loss_fn(batch["src"], batch["mask"], batch["tgt_in"], batch["tgt_out"])
    loss.backward()
    adapter.optimizer.step()
    adapter.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _decode(adapter: Any, step: Callable[..., Any], batch: Dict[str, torch.Tensor], beam: int, new_tokens: int) -> List[List[int]]:
    model = adapter.model.eval()
    model.decoder.step = step  # an instance attribute shadows the method for this call
    try:
        with torch.no_grad():
            return adapter.generate(batch["src"], batch["mask"], beam, new_tokens)
    finally:
        del model.decoder.step


def main() -> None:
    argv = sys.argv[1:]
    if "--warm_cache" in argv:
        argv.remove("--warm_cache")
    else:  # before anything compiles: inductor reads the variable when it first needs its cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="s2s_compile_bench_")
    json_path = "benchmarks/results/compile.json"
    if "--json" in argv:
        i = argv.index("--json")
        json_path = argv[i + 1]
        del argv[i:i + 2]
    a = speed.parse_args(["--no_hf", *argv])
    torch.set_num_threads(a.threads)
    kinds = a.only or ["train_fp32", "train_bf16", "greedy", "beam"]
    batch = speed.synthetic_batch(a, torch.device("cpu"))
    adapter = speed.OursAdapter(a, torch.device("cpu"))

    def eager_loss(src: torch.Tensor, mask: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
        return speed.ours_loss(adapter.model, a, src, mask, tgt_in, tgt_out)

    compiled_loss = torch.compile(eager_loss)
    eager_step = adapter.model.decoder.step
    compiled_step = torch.compile(eager_step, dynamic=True)
    results: Dict[str, Any] = {}
    for kind in kinds:
        if kind.startswith("train"):
            bf16 = kind == "train_bf16"
            calls = {"eager": lambda: _train_step(adapter, eager_loss, batch, bf16),
                     "compiled": lambda: _train_step(adapter, compiled_loss, batch, bf16)}
        else:
            beam = 1 if kind == "greedy" else a.beam
            calls = {"eager": lambda: _decode(adapter, eager_step, batch, beam, a.tgt_len),
                     "compiled": lambda: _decode(adapter, compiled_step, batch, beam, a.tgt_len)}
        start = time.perf_counter()
        first = calls["compiled"]()
        first_seconds = time.perf_counter() - start
        row: Dict[str, Any] = {"first_compiled_call_seconds": first_seconds}
        reference = calls["eager"]()  # warm-up
        if kind.startswith("train"):
            # one step each on the same weights; the optimizer moved between them, so compare the
            # loss of a compiled and an eager forward at the same weights, without a step
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "train_bf16"):
                adapter.model.eval()
                args = (batch["src"], batch["mask"], batch["tgt_in"], batch["tgt_out"])
                e, c = float(eager_loss(*args)), float(compiled_loss(*args))
            row["loss_eager_compiled"] = [e, c]
            assert abs(e - c) <= 1e-3 * abs(e), (e, c)
        else:
            agree = sum(x == y for r, f in zip(reference, first) for x, y in zip(r, f))
            row["token_agreement"] = agree / sum(len(r) for r in reference)
        times: Dict[str, List[float]] = {"eager": [], "compiled": []}
        for _ in range(a.repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
            print(f"  {kind:<11} eager {times['eager'][-1]:.3f}s  compiled {times['compiled'][-1]:.3f}s", flush=True)
        for name, ts in times.items():
            row[name] = {"seconds": ts, "median": statistics.median(ts)}
        row["speedup_median"] = row["eager"]["median"] / row["compiled"]["median"]
        saved = row["eager"]["median"] - row["compiled"]["median"]
        row["calls_to_repay_compilation"] = (first_seconds - row["compiled"]["median"]) / saved if saved > 0 else None
        results[kind] = row
    print(f"\ntorch {torch.__version__}, {a.threads} threads; median seconds of {a.repeats} interleaved repeats")
    print(f"{'measurement':<11} {'eager':>8} {'compiled':>9} {'speedup':>8} {'1st call':>9} {'calls to repay':>15}")
    for kind, row in results.items():
        repay = row["calls_to_repay_compilation"]
        print(f"{kind:<11} {row['eager']['median']:>8.3f} {row['compiled']['median']:>9.3f} {row['speedup_median']:>7.2f}x "
              f"{row['first_compiled_call_seconds']:>8.1f}s {('never' if repay is None else f'{repay:,.0f}'):>15}")
    write_json(json_path, {"torch": torch.__version__, "threads": a.threads, "args": vars(a),
                           "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"), "results": results})


if __name__ == "__main__":
    main()
