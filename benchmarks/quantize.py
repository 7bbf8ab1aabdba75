"""float32 against dynamic int8 (``--quantize int8``) on the CPU: predict throughput, model size and
the task metric, on the validation split of ``../shared/data``.

    python benchmarks/quantize.py --ckpt translation.ckpt --ckpt sst2.ckpt       # trained checkpoints
    python benchmarks/quantize.py --tasks translation,classification --steps 3000 # or train small models first

For each checkpoint (given with ``--ckpt``, repeatable, or trained here for ``--steps`` steps on
the task's training split) the first ``--max-examples`` validation records are encoded once and
answered by the float32 model and by the same model quantised by
:func:`s2s_tasks.quantize.quantize_model`, ``--repeats`` times each, the two interleaved, with
the checkpoint's decoding settings. Reported: records per second (from the fastest and from the
median repetition), the serialized size of the weights (``torch.save`` of the state dict) and the
task metric (BLEU / accuracy ...) of each, with int8 / float32 ratios. Prints a table and writes
JSON (``--json``).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

from common import write_json

from s2s_tasks.checkpoint import read_checkpoint_extras
from s2s_tasks.cli import main as s2s_tasks
from s2s_tasks.inference import Predictor
from s2s_tasks.quantize import quantize_model
from s2s_tasks.registry import SINGLE_TASKS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: data settings the shared data needs beyond the defaults (column names), as benchmarks/multitask.py
DATA_SETTINGS = {
    "translation": {"source_column": "source_lc_tok", "target_column": "target_lc_tok"},
    "summarization": {"references_column": "references"},
}
#: tasks whose metric this script computes: generated text against references, or one label
TEXT_TASKS = ("translation", "summarization", "dialogue")
LABEL_TASKS = ("classification", "relation_extraction")


def train(task: str, args, workdir: Path) -> str:
    """Fit a small model of ``task`` on the shared data; returns its last checkpoint."""
    settings = {"train_file": str(DATA / task / "train.jsonl"), **DATA_SETTINGS.get(task, {})}
    s2s_tasks([
        "fit", "--task", task, *[f"--data.{k}={v}" for k, v in settings.items()],
        "--data.tokenizer_vocab_size", str(args.vocab), "--data.max_tokens", str(args.max_tokens),
        "--model.d_model", str(args.d_model), "--model.ffn_dim", str(4 * args.d_model), "--model.num_heads", "4",
        "--model.num_encoder_layers", str(args.layers), "--model.num_decoder_layers", str(args.layers),
        "--model.warmup_steps", str(min(200, max(1, args.steps // 5))),
        "--trainer.max_steps", str(args.steps), "--trainer.max_epochs", "10000", "--trainer.limit_val_batches", "0",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(workdir),
    ])
    (path,) = workdir.rglob("last.ckpt")
    return str(path)


def validation_records(task: str, count: int) -> List[Dict[str, Any]]:
    lines = (DATA / task / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def metric(predictor: Predictor, answers: List[Dict[str, Any]], records: List[Dict[str, Any]]) -> Dict[str, float]:
    """The task's validation metrics of ``answers`` (empty for a task this script does not score)."""
    hp = predictor.datamodule.hparams
    model = predictor.model
    if predictor.task in TEXT_TASKS:
        column = hp.get("references_column") or hp.target_column
        refs = [r[column] if isinstance(r[column], list) else [r[column]] for r in records]
        scores, _ = model.compute_metrics([a["prediction"] for a in answers], refs)
        return scores
    if predictor.task in LABEL_TASKS and not getattr(hp, "multi_label", False):
        relation = predictor.task == "relation_extraction"
        column = hp.relation_column if relation else hp.label_column
        key = "relation" if relation else "label"
        scores, _ = model.compute_metrics([a.get(key) for a in answers], [str(r[column]) for r in records])
        return scores
    return {}


def serialized_mb(model: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 2**20


def answer(model: torch.nn.Module, batches: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    with torch.inference_mode():
        for batch in batches:
            rows += model.predict_step(batch, 0)
    merge = getattr(model, "merge_prediction_records", None)
    return merge(rows) if merge is not None else sorted({r["index"]: r for r in rows}.values(), key=lambda r: r["index"])


def measure(path: str, args) -> Dict[str, Any]:
    task = read_checkpoint_extras(path)["task"]
    records = validation_records(task, args.max_examples)
    predictor = Predictor.from_checkpoint(path)
    batches = predictor.encode(records)
    variants = {"fp32": predictor.model, "int8": quantize_model(copy.deepcopy(predictor.model), "int8")}
    seconds: Dict[str, List[float]] = {name: [] for name in variants}
    answers: Dict[str, List[Dict[str, Any]]] = {}
    for name, model in variants.items():  # a warm-up run each, whose answers are scored
        answers[name] = answer(model, batches)
    for _ in range(args.repeats):
        for name, model in variants.items():  # interleaved: a slow spell of the machine hits both
            start = time.perf_counter()
            answer(model, batches)
            seconds[name].append(time.perf_counter() - start)
    result: Dict[str, Any] = {"checkpoint": path, "task": task, "records": len(records)}
    for name, model in variants.items():
        predictor.model = model
        result[name] = {
            "records_per_s_best": len(records) / min(seconds[name]),
            "records_per_s_median": len(records) / statistics.median(seconds[name]),
            "seconds": seconds[name],
            "size_mb": serialized_mb(model),
            "metrics": metric(predictor, answers[name], records),
        }
    fp32, int8 = result["fp32"], result["int8"]
    result["ratios"] = {
        "speed_best": int8["records_per_s_best"] / fp32["records_per_s_best"],
        "speed_median": int8["records_per_s_median"] / fp32["records_per_s_median"],
        "size": int8["size_mb"] / fp32["size_mb"],
    }
    result["answers_agree"] = sum(a == b for a, b in zip(
        [a.get("prediction", a.get("label")) for a in answers["fp32"]], [a.get("prediction", a.get("label")) for a in answers["int8"]]
    )) / max(len(records), 1)
    return result


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", action="append", default=[], help="a trained checkpoint (repeatable); none: train --tasks")
    parser.add_argument("--tasks", default="translation,classification", help=f"tasks to train when no --ckpt, of: {', '.join(SINGLE_TASKS)}")
    parser.add_argument("--steps", type=int, default=3000, help="training steps of each model trained here")
    parser.add_argument("--max-examples", type=int, default=1000, help="validation records measured")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each model (after one warm-up)")
    parser.add_argument("--d_model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--max_tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default="benchmarks/results/quantize.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("S2S_TASKS_CACHE", str(Path(tempfile.gettempdir()) / "s2s-tasks-bench-cache"))
    results: Dict[str, Any] = {"settings": {**vars(args), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
                               "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = list(args.ckpt)
        if not paths:
            tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
            for task in tasks:
                if task not in SINGLE_TASKS:
                    parser.error(f"unknown task {task!r}")
                if not (DATA / task / "train.jsonl").is_file():
                    sys.exit(f"no data for {task} under {DATA}: training here needs ../shared/data (or pass --ckpt)")
                torch.manual_seed(0)
                paths.append(train(task, args, Path(tmp) / task))
        for path in paths:
            result = measure(path, args)
            results["models"].append(result)
            write_json(args.json, results)  # kept if a later one fails

    print(f"\nfloat32 against dynamic int8, {args.max_examples} validation records at most, {args.repeats} interleaved "
          f"repetitions, {torch.get_num_threads()} threads\n")
    print("| task | metric | fp32 | int8 | records/s fp32 (best / median) | int8 | speed-up (best / median) "
          "| size MB fp32 | int8 | size ratio | same answers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["models"]:
        fp32, int8, ratios = r["fp32"], r["int8"], r["ratios"]
        names = list(fp32["metrics"]) or ["-"]
        main_metric = names[0]
        m32, m8 = fp32["metrics"].get(main_metric), int8["metrics"].get(main_metric)
        fmt = (lambda v: "-" if v is None else f"{v:.2f}")
        print(f"| {r['task']} | {main_metric} | {fmt(m32)} | {fmt(m8)} "
              f"| {fp32['records_per_s_best']:.1f} / {fp32['records_per_s_median']:.1f} "
              f"| {int8['records_per_s_best']:.1f} / {int8['records_per_s_median']:.1f} "
              f"| x{ratios['speed_best']:.2f} / x{ratios['speed_median']:.2f} | {fp32['size_mb']:.1f} | {int8['size_mb']:.1f} "
              f"| x{ratios['size']:.2f} | {100 * r['answers_agree']:.0f}% |")
    write_json(args.json, results)


if __name__ == "__main__":
    main(sys.argv[1:])
