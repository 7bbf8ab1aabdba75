"""Shared plumbing of the tasks' sample-data generators (``tasks/NAME/sample_data.py``).

A generator provides ``generate(seed, n) -> [{"source", "target"}, ...]`` (deterministic, no
repeated source; a task may use other fields, e.g. dialogue's ``{"history": [...], "response"}``);
this module cuts the stream into disjoint splits, takes the prediction inputs from its
continuation and writes the files byte-for-byte reproducibly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

Records = List[Dict[str, Any]]
Generator = Callable[[int, int], Records]


def make_splits(generate: Generator, sizes: Dict[str, int], seed: int) -> Dict[str, Records]:
    """Consecutive slices of one generated stream: no source occurs in two splits."""
    records = generate(seed, sum(sizes.values()))
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = records[start : start + size]
        start += size
    return splits


def predict_lines(
    generate: Generator, sizes: Dict[str, int], count: int, seed: int,
    line: Callable[[Dict[str, Any]], str] = lambda record: record["source"],
) -> List[str]:
    """``count`` sources that occur in none of the splits (the same stream, continued), each
    made one line of text by ``line`` (default: the ``source`` field)."""
    records = generate(seed, sum(sizes.values()) + count)
    return [line(r) for r in records[-count:]]


def write_files(directory, splits: Dict[str, Records], lines: List[str]) -> None:
    """``NAME.jsonl`` per split (one JSON object a line) and ``predict.txt`` into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, records in splits.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(out / "predict.txt", "w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line + "\n")


def command_line(description: str, default_dir: Path, write: Callable[..., None], argv: Optional[List[str]] = None) -> None:
    """``python tasks/NAME/sample_data.py [--out DIR] [--seed N]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=str(default_dir), help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    write(args.out, args.seed)
