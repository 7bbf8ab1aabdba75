"""Data preparation time with and without the content-keyed token cache.

Prepares the training split of a dataset twice in fresh processes, each time from a new data
module: the first run reads, checks, trains the tokenizer and tokenizes (and fills an empty
cache), the second reads and checks, then takes the tokenizer and the token ids from the cache.
Prints a table and writes ``benchmarks/results/data_cache.json``.

    python benchmarks/data_cache.py [--task dialogue] [--train FILE] [-- data.X=VALUE ...]

Default: the shared dialogue data (``../shared/data/dialogue/train.jsonl``, 76k records).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write_json

HERE = Path(__file__).resolve().parent
CHILD = """
import json, sys, time
from s2s_tasks.registry import TASKS
task, train, cache_dir, extra = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
start = time.perf_counter()
data = TASKS[task].classes()[1](train_file=train, cache_dir=cache_dir, **extra)
encoded = data.encode_split("train")
print(json.dumps({"seconds": time.perf_counter() - start, "rows": len(encoded)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="dialogue")
    parser.add_argument("--train", default=str(HERE.parent.parent / "shared" / "data" / "dialogue" / "train.jsonl"))
    parser.add_argument("--data", nargs="*", default=["source_column=source", "target_column=target"],
                        help="data module arguments KEY=VALUE (default: the shared dialogue data's columns)")
    parser.add_argument("--out", default=str(HERE / "results" / "data_cache.json"))
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.data)
    cache_dir = tempfile.mkdtemp(prefix="s2s_cache_")
    runs = []
    for label in ("first run (empty cache)", "second run (from the cache)"):
        out = subprocess.run([sys.executable, "-c", CHILD, args.task, args.train, cache_dir, json.dumps(extra)],
                             check=True, capture_output=True, text=True).stdout
        runs.append({"run": label, **json.loads(out.strip().splitlines()[-1])})
    print(f"\n{'run':30} {'rows':>8} {'seconds':>8}")
    for run in runs:
        print(f"{run['run']:30} {run['rows']:>8} {run['seconds']:>8.1f}")
    ratio = runs[0]["seconds"] / runs[1]["seconds"]
    print(f"\nfirst / second: x{ratio:.1f}")
    write_json(args.out, {"task": args.task, "train": args.train, "runs": runs, "speedup": ratio})


if __name__ == "__main__":
    main()
