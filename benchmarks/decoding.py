"""Compare decoding strategies on one trained checkpoint: validation metrics and time per strategy.

    python benchmarks/decoding.py --ckpt_path best.ckpt --json benchmarks/results/decoding.json -- \\
        --data.validation_file ../shared/data/dialogue/validation.jsonl

Runs ``s2s-tasks validate`` once per strategy (greedy, beam 4 with trigram blocking, nucleus
sampling top-p 0.9), overriding ``model.val_generation``; everything after ``--`` is passed on.
``--variant NAME=FLAGS`` adds a decoding of your own (repeatable; FLAGS split as a shell would),
e.g. ``--variant "greedy_min8=--model.val_generation.strategy greedy
--model.val_generation.min_length 8"``; with variants and no ``--strategy``, only the variants
run. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Dict, List, Tuple

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


def parse_variant(text: str) -> Tuple[str, List[str]]:
    """``"NAME=FLAGS"`` -> ``(NAME, FLAGS split as a shell would)``."""
    name, sep, flags = text.partition("=")
    if not sep or not name.strip() or not flags.strip():
        raise argparse.ArgumentTypeError(
            f"--variant wants NAME=FLAGS (e.g. greedy_min8=--model.val_generation.min_length 8), got {text!r}"
        )
    return name.strip(), shlex.split(flags)


def main() -> None:
    argv, extra = split_passthrough(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--json", default="benchmarks/results/decoding.json")
    parser.add_argument("--strategy", action="append", choices=list(STRATEGIES),
                        help="default: all, unless --variant is given")
    parser.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="NAME=FLAGS",
                        help="a decoding of your own: s2s-tasks flags that set model.val_generation (repeatable)")
    args = parser.parse_args(argv)
    runs = {name: STRATEGIES[name] for name in args.strategy or ([] if args.variant else list(STRATEGIES))}
    for name, flags in args.variant:
        if name in runs:
            parser.error(f"--variant {name}: the name is taken; choose another")
        runs[name] = flags
    results = {}
    for name, flags in runs.items():
        start = time.perf_counter()
        cli = s2s_tasks(["validate", "--ckpt_path", args.ckpt_path, "--trainer.logger", "false", *flags, *extra])
        results[name] = {"seconds": round(time.perf_counter() - start, 1), "metrics": validation_metrics(cli)}
    names = sorted({m for r in results.values() for m in r["metrics"]})
    print("\n" + f"{'strategy':<18}" + "".join(f"{n:>16}" for n in names) + f"{'seconds':>10}")
    for name, result in results.items():
        print(f"{name:<18}" + "".join(f"{result['metrics'].get(n, float('nan')):>16.3f}" for n in names) + f"{result['seconds']:>10.1f}")
    write_json(args.json, {"ckpt_path": args.ckpt_path, "args": extra, "decodings": runs, "results": results})


if __name__ == "__main__":
    main()
