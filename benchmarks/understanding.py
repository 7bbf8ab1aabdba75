"""The structured-prediction tasks on real data, in both head modes: train each with its default
config for a fixed time and report validation metrics next to the untrained model's.

    python benchmarks/understanding.py --max-time 00:00:04:00            # all four tasks, both heads
    python benchmarks/understanding.py --task ner --head encoder --max-time 00:00:10:00 -- --model.crf true

Data: ``../shared/data/{classification,ner,qa,relation_extraction}/{train,validation}.jsonl``
(``--data-dir``); the default configs' column names match those files. Only train and
validation are used. Everything after ``--`` is passed to ``s2s-tasks`` for every run.
After ``fit`` stops (time budget or max_epochs), the final weights are validated once more, so a
task whose epoch is longer than the budget still gets a score. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from common import split_passthrough, validation_metrics, write_json

from s2s_tasks.cli import main as s2s_tasks

TASKS = ("classification", "ner", "qa", "relation_extraction")
HEADS = ("encoder", "generate")
MAIN_METRIC = {"classification": "accuracy", "ner": "f1", "qa": "f1", "relation_extraction": "semeval_macro_f1"}


def best_logged(metrics_csv: Path, metric: str) -> Dict[str, float]:
    """The best validation value of ``val/<metric>`` over a fit run's CSV log, and its step
    (what the best-metric checkpoint holds; the final weights may have overfitted since)."""
    rows = [r for r in csv.DictReader(open(metrics_csv)) if r.get(f"val/{metric}")]
    if not rows:
        return {}
    best = max(rows, key=lambda r: float(r[f"val/{metric}"]))
    return {"metric": f"val/{metric}", "value": round(float(best[f"val/{metric}"]), 3), "step": int(best["step"])}


def run(task: str, head: str, data_dir: Path, max_time: str, extra: List[str], workdir: Path) -> Dict:
    files = ["--data.train_file", str(data_dir / task / "train.jsonl"), "--data.validation_file", str(data_dir / task / "validation.jsonl")]
    common = ["--task", task, "--model.head", head, "--trainer.default_root_dir", str(workdir),
              "--trainer.logger.init_args.save_dir", str(workdir / "logs"), "--trainer.enable_progress_bar", "false",
              "--model.log_examples", "0", *files, *extra]
    untrained = validation_metrics(s2s_tasks(["validate", *common]))
    start = time.perf_counter()
    cli = s2s_tasks(["fit", *common, "--trainer.max_time", max_time, "--trainer.max_epochs", "1000"])
    train_wall = time.perf_counter() - start
    log_dir = Path(cli.trainer.logger.log_dir)
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    final = validation_metrics(cli)
    return {
        "task": task,
        "head": head,
        "args": extra,
        "max_time": max_time,
        "epochs": cli.trainer.current_epoch,
        "steps": cli.trainer.global_step,
        "train_wall_seconds": round(train_wall, 1),
        "total_wall_seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in cli.model.parameters()),
        "untrained": untrained,
        "trained": final,
        "best_during_training": best_logged(log_dir / "metrics.csv", MAIN_METRIC[task]),
    }


def main() -> None:
    argv, extra = split_passthrough(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", action="append", choices=TASKS, help="task(s) to run (repeatable); default: all four")
    parser.add_argument("--head", action="append", choices=HEADS, help="head mode(s) (repeatable); default: both")
    parser.add_argument("--max-time", default="00:00:04:00", help="fit time budget per run, DD:HH:MM:SS (default: %(default)s)")
    parser.add_argument("--data-dir", default="../shared/data", help="folder with one subfolder per task (default: %(default)s)")
    parser.add_argument("--json", default="benchmarks/results/understanding.json", help="where to write the results")
    parser.add_argument("--workdir", default=None, help="logs and checkpoints (default: a temporary folder)")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    missing = [t for t in args.task or TASKS if not (data_dir / t / "train.jsonl").is_file()]
    if missing:
        parser.error(f"no train.jsonl under {data_dir} for {missing}; pass --data-dir")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.task or TASKS:
            for head in args.head or HEADS:
                workdir = Path(args.workdir or tmp) / f"{task}-{head}"
                results.append(run(task, head, data_dir, args.max_time, extra, workdir))
                write_json(args.json, {"machine": {"cpus": os.cpu_count()}, "results": results})  # keep partial results
    print(f"\n{'task':<20} {'head':<9} {'metric':<24} {'untrained':>10} {'trained':>10} {'train s':>8} {'steps':>7}")
    for r in results:
        for name in sorted(r["trained"]):
            if name.endswith(("/loss", "/ppl")) or "/" not in name:
                continue
            before = r["untrained"].get(name, float("nan"))
            print(f"{r['task']:<20} {r['head']:<9} {name:<24} {before:>10.2f} {r['trained'][name]:>10.2f} "
                  f"{r['train_wall_seconds']:>8.0f} {r['steps']:>7}")
        best = r.get("best_during_training") or {}
        if best:
            print(f"{r['task']:<20} {r['head']:<9} {'best ' + best['metric']:<24} {'':>10} {best['value']:>10.2f} {'':>8} {best['step']:>7}")


if __name__ == "__main__":
    main()
