"""Single-task against joint (multi-task) training at equal total steps, on real data.

    python benchmarks/multitask.py                      # NER + classification + relation extraction
    python benchmarks/multitask.py --tasks ner,classification --steps 2000 --threads 2

For each task a model is trained alone for ``--steps`` optimizer steps; then one multi-task model
(shared encoder, each task's own head, one tokenizer over all the tasks' text) is trained for
``--steps`` x (number of tasks) steps in all, the tasks drawn by temperature sampling (T5,
``p ~ n^(1/T)``). Every run uses the same network and optimizer settings and is scored on the
task's validation split of ``../shared/data`` (train and validation only). Prints a table and
writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from common import write_json

from s2s_tasks.cli import main as s2s_tasks
from s2s_tasks.data.task_sampler import task_probabilities
from s2s_tasks.registry import SINGLE_TASKS, get_task

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

def primary(task: str) -> str:
    """The task's primary metric (what multi-task ``val/score`` averages)."""
    return get_task(task).classes()[0].primary_metric
#: data settings the shared data needs beyond the defaults (column names)
DATA_SETTINGS = {
    "translation": {"source_column": "source_lc_tok", "target_column": "target_lc_tok"},
    "summarization": {"references_column": "references"},
}


def network_flags(args) -> List[str]:
    return [
        "--model.d_model", str(args.d_model), "--model.ffn_dim", str(4 * args.d_model), "--model.num_heads", "4",
        "--model.num_encoder_layers", str(args.layers), "--model.num_decoder_layers", str(args.layers),
        "--model.dropout", "0.1", "--model.learning_rate", str(args.learning_rate), "--model.warmup_steps", str(args.warmup),
        "--model.lr_schedule", "inverse_sqrt",
    ]


def trainer_flags(steps: int, workdir: Path) -> List[str]:
    # validation once, after training; nothing written but the tokenizer caches
    return [
        "--trainer.max_steps", str(steps), "--trainer.max_epochs", "10000", "--trainer.check_val_every_n_epoch", "10000",
        "--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(workdir),
    ]


def data_settings(task: str) -> Dict[str, str]:
    settings = {"train_file": str(DATA / task / "train.jsonl"), "validation_file": str(DATA / task / "validation.jsonl")}
    settings.update(DATA_SETTINGS.get(task, {}))
    return settings


def validate(cli) -> Dict[str, float]:
    results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return {k: float(v) for k, v in results.items()}


def single_task(task: str, args, workdir: Path) -> Dict:
    flags = [f"--data.{k}={v}" for k, v in data_settings(task).items()]
    start = time.perf_counter()
    cli = s2s_tasks(["fit", "--task", task, *flags, "--data.tokenizer_vocab_size", str(args.vocab),
                     "--data.max_tokens", str(args.max_tokens), *network_flags(args), *trainer_flags(args.steps, workdir)])
    wall = time.perf_counter() - start
    metrics = validate(cli)
    return {"steps": cli.trainer.global_step, "wall_seconds": round(wall, 1), "metrics": metrics,
            "primary": metrics[f"val/{primary(task)}"]}


def joint(tasks: List[str], args, workdir: Path) -> Dict:
    steps = args.steps * len(tasks)
    start = time.perf_counter()
    cli = s2s_tasks([
        "fit", "--task", "multitask", "--data.tasks", json.dumps({t: data_settings(t) for t in tasks}),
        "--model.task_options", "{}", "--data.tokenizer_vocab_size", str(args.vocab), "--data.max_tokens", str(args.max_tokens),
        "--data.temperature", str(args.temperature), *network_flags(args), *trainer_flags(steps, workdir),
    ])
    wall = time.perf_counter() - start
    metrics = validate(cli)
    sizes = {t: len(cli.datamodule.task_data[t].encode_split("train")) for t in tasks}
    return {"steps": cli.trainer.global_step, "wall_seconds": round(wall, 1), "metrics": metrics,
            "probabilities": task_probabilities(sizes, "temperature", args.temperature),
            "primary": {t: metrics[f"val/{t}/{primary(t)}"] for t in tasks}}


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="ner,classification,relation_extraction",
                        help=f"comma-separated, of: {', '.join(SINGLE_TASKS)}")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps of each single-task run")
    parser.add_argument("--d_model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--max_tokens", type=int, default=4096)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/results/multitask.json")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in SINGLE_TASKS]
    if unknown:
        parser.error(f"unknown task {unknown[0]!r}")
    missing = [t for t in tasks if not (DATA / t / "train.jsonl").is_file()]
    if missing:
        sys.exit(f"no data for {missing[0]} under {DATA}: this benchmark needs ../shared/data")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("S2S_TASKS_CACHE", str(Path(tempfile.gettempdir()) / "s2s-tasks-bench-cache"))
    results: Dict = {"settings": {**vars(args), "tasks": tasks, "torch_threads": torch.get_num_threads()}, "single": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            torch.manual_seed(0)
            results["single"][task] = single_task(task, args, Path(tmp) / task)
            write_json(args.json, results)  # kept if a later run fails
            print(f"{task}: alone {results['single'][task]['primary']:.2f} ({results['single'][task]['wall_seconds']} s)", flush=True)
        torch.manual_seed(0)
        results["joint"] = joint(tasks, args, Path(tmp) / "joint")

    rows = []
    print(f"\nSingle-task ({args.steps} steps each) against joint training ({args.steps * len(tasks)} steps in all, "
          f"temperature {args.temperature}); d_model {args.d_model}, {args.layers} layers, {torch.get_num_threads()} threads\n")
    print("| task | metric | alone | joint | joint - alone | share of joint steps |\n|---|---|---|---|---|---|")
    for task in tasks:
        alone, together = results["single"][task]["primary"], results["joint"]["primary"][task]
        share = results["joint"]["probabilities"][task]
        rows.append({"task": task, "metric": primary(task), "alone": alone, "joint": together, "share": share})
        print(f"| {task} | {primary(task)} | {alone:.2f} | {together:.2f} | {together - alone:+.2f} | {share:.2f} |")
    single_wall = sum(r["wall_seconds"] for r in results["single"].values())
    print(f"\nwall time: single-task runs {single_wall:.0f} s in all, joint {results['joint']['wall_seconds']:.0f} s")
    results["table"] = rows
    write_json(args.json, results)


if __name__ == "__main__":
    main(sys.argv[1:])
