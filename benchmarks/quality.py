"""Train a task with its default config under a time budget and report validation metrics,
next to the same model untrained.

    python benchmarks/quality.py --task summarization                        # embedded sample data
    python benchmarks/quality.py --task translation --max-time 00:00:30:00 -- \\
        --model configs/model/transformer-small.yaml \\
        --data.train_file ../shared/data/translation/train.jsonl \\
        --data.validation_file ../shared/data/translation/validation.jsonl \\
        --data.source_column source_lc_tok --data.target_column target_lc_tok \\
        --model.bleu_tokenize none

Everything after ``--`` is passed to ``s2s-tasks`` (both the untrained ``validate`` and ``fit``).
Prints a table and writes a JSON file (``--json``).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from common import split_passthrough, validation_metrics, write_json

from s2s_tasks.cli import main as s2s_tasks


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(task: str, max_time: str, max_epochs: int, extra: List[str], workdir: Path) -> Dict:
    common = ["--task", task, "--trainer.default_root_dir", str(workdir), "--trainer.logger.init_args.save_dir", str(workdir / "logs"), *extra]
    untrained = validation_metrics(s2s_tasks(["validate", *common]))
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    fit_args = ["fit", *common]
    if max_time:
        fit_args += ["--trainer.max_time", max_time, "--trainer.max_epochs", str(max_epochs)]
    cli = s2s_tasks(fit_args)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    return {
        "task": task,
        "args": extra,
        "max_time": max_time or None,
        "epochs": cli.trainer.current_epoch,
        "steps": cli.trainer.global_step,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "torch_threads": torch.get_num_threads(),
        "untrained": untrained,
        "trained": validation_metrics(cli),
        "best_checkpoint": cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else None,
    }


def main() -> None:
    argv, extra = split_passthrough(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", action="append", help="task(s) to run (repeatable); default: all")
    parser.add_argument("--max-time", default="", help="fit time budget DD:HH:MM:SS (default: the config's max_epochs)")
    parser.add_argument("--max-epochs", type=int, default=1000, help="epoch cap used together with --max-time")
    parser.add_argument("--json", default="benchmarks/results/quality.json", help="where to write the results")
    parser.add_argument("--workdir", default=None, help="logs and checkpoints (default: a temporary folder)")
    args = parser.parse_args(argv)
    from s2s_tasks.registry import TASKS

    tasks = args.task or list(TASKS)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            workdir = Path(args.workdir or tmp) / task
            results.append(run(task, args.max_time, args.max_epochs, extra, workdir))
    rows = []
    for r in results:
        for name in sorted(set(r["untrained"]) | set(r["trained"])):
            rows.append((r["task"], name, r["untrained"].get(name, float("nan")), r["trained"].get(name, float("nan")), r["wall_seconds"], r["steps"]))
    print(f"\n{'task':<14} {'metric':<16} {'untrained':>10} {'trained':>10} {'wall s':>8} {'steps':>7}")
    for task, name, before, after, wall, steps in rows:
        print(f"{task:<14} {name:<16} {before:>10.3f} {after:>10.3f} {wall:>8.1f} {steps:>7}")
    write_json(args.json, {"machine": {"cpus": os.cpu_count()}, "results": results})


if __name__ == "__main__":
    main()
