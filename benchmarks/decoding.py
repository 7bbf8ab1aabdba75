"""Compare decoding strategies on one trained checkpoint: validation metrics and time per strategy.

    python benchmarks/decoding.py --ckpt_path best.ckpt --json benchmarks/results/decoding.json -- \\
        --data.validation_file ../shared/data/dialogue/validation.jsonl

Runs ``s2s-tasks validate`` once per strategy (greedy, beam 4 with trigram blocking, nucleus
sampling top-p 0.9), overriding ``model.val_generation``; everything after ``--`` is passed on.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List

from common import split_passthrough, validation_metrics, write_json

from s2s_tasks.cli import main as s2s_tasks

STRATEGIES: Dict[str, List[str]] = {
    "greedy": ["--model.val_generation.strategy", "greedy"],
    "beam4_norepeat3": [
        "--model.val_generation.strategy", "beam", "--model.val_generation.beam_size", "4",
        "--model.val_generation.no_repeat_ngram_size", "3",
    ],
    "nucleus_p0.9": [
        "--model.val_generation.strategy", "sample", "--model.val_generation.top_p", "0.9",
        "--model.val_generation.seed", "1",
    ],
}


def main() -> None:
    argv, extra = split_passthrough(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--json", default="benchmarks/results/decoding.json")
    parser.add_argument("--strategy", action="append", choices=list(STRATEGIES), help="default: all")
    args = parser.parse_args(argv)
    results = {}
    for name in args.strategy or list(STRATEGIES):
        start = time.perf_counter()
        cli = s2s_tasks(["validate", "--ckpt_path", args.ckpt_path, "--trainer.logger", "false", *STRATEGIES[name], *extra])
        results[name] = {"seconds": round(time.perf_counter() - start, 1), "metrics": validation_metrics(cli)}
    names = sorted({m for r in results.values() for m in r["metrics"]})
    print("\n" + f"{'strategy':<18}" + "".join(f"{n:>16}" for n in names) + f"{'seconds':>10}")
    for name, result in results.items():
        print(f"{name:<18}" + "".join(f"{result['metrics'].get(n, float('nan')):>16.3f}" for n in names) + f"{result['seconds']:>10.1f}")
    write_json(args.json, {"ckpt_path": args.ckpt_path, "args": extra, "results": results})


if __name__ == "__main__":
    main()
