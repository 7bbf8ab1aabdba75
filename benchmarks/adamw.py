"""AdamW's step alone: torch's default implementation (a loop over parameter tensors on the CPU),
``foreach`` and the fused kernel that :func:`s2s_tasks.optim.adamw` picks, on the parameters of
``benchmarks/speed.py``'s Transformer (d_model 256, 3+3 layers, FFN 1024, vocabulary 8000),
interleaved, each ``--repeats`` rounds of ``--steps`` steps; median milliseconds per step.

    python benchmarks/adamw.py --threads 2 --json benchmarks/results/adamw.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

from s2s_tasks.nn.seq2seq import build_seq2seq  # noqa: E402
from s2s_tasks.optim import adamw  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--d_model", type=int, default=256)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_seq2seq(vocab_size=8000, pad_id=0, d_model=a.d_model, num_encoder_layers=3, num_decoder_layers=3,
                          num_heads=4, ffn_dim=4 * a.d_model, dropout=0.1, max_positions=66, tie_embeddings=True,
                          share_embeddings=True)
    params = list(model.parameters())
    for param in params:
        param.grad = torch.randn_like(param)
    optimizers = {
        "default": torch.optim.AdamW(params, lr=1e-4, foreach=False),
        "foreach": torch.optim.AdamW(params, lr=1e-4, foreach=True),
        "fused (s2s_tasks.optim.adamw)": adamw(params, lr=1e-4),
    }
    times = {name: [] for name in optimizers}
    for optimizer in optimizers.values():
        optimizer.step()  # warm-up, and the state tensors exist
    for _ in range(a.repeats):
        for name, optimizer in optimizers.items():
            start = time.perf_counter()
            for _ in range(a.steps):
                optimizer.step()
            times[name].append(1000 * (time.perf_counter() - start) / a.steps)
    base = statistics.median(times["default"])
    print(f"{len(params)} parameter tensors, {sum(x.numel() for x in params):,} parameters, {a.threads} threads")
    print(f"{'implementation':<32} {'ms/step':>8} {'vs default':>10}")
    rows = {}
    for name, values in times.items():
        med = statistics.median(values)
        rows[name] = {"ms_per_step_median": med, "ms_per_step": values, "speedup_vs_default": base / med}
        print(f"{name:<32} {med:>8.2f} {base / med:>9.2f}x")
    if a.json:
        write_json(a.json, {"args": vars(a), "torch": torch.__version__, "parameters": sum(x.numel() for x in params),
                            "tensors": len(params), "results": rows})


if __name__ == "__main__":
    main()
