"""Train a task with its default config under a time budget and report validation metrics,
next to the same model untrained.

    python benchmarks/quality.py --task summarization                        # embedded sample data
    python benchmarks/quality.py --data-dir ../shared/data --task ner        # real data, --preset real
    python benchmarks/quality.py --task translation --max-time 00:00:30:00 -- \\
        --model configs/model/transformer-small.yaml \\
        --data.train_file ../shared/data/translation/train.jsonl \\
        --data.validation_file ../shared/data/translation/validation.jsonl \\
        --data.source_column source_lc_tok --data.target_column target_lc_tok \\
        --model.bleu_tokenize none

Everything after ``--`` is passed to ``s2s-tasks`` (both the untrained ``validate`` and ``fit``).
Prints a table and writes a JSON file (``--json``).

The best checkpoint is then validated once more with the task's default decoding: the
``model.generation`` that test and predict use, as the run's arguments resolve it (the default
config, a preset, ``--config``/``--model`` files and flags: :func:`default_decoding`), not the
cheaper per-epoch ``model.val_generation``.

``--data-dir DIR`` trains on the real data sets (``DIR/TASK/{train,validation}.jsonl``, as in
``../shared/data``) with ``--preset real``, each task for its time budget (``--max-time`` overrides
it), and prints each task's metric next to the published from-scratch result it is meant to reach.

``--seeds 1234,1,2`` trains the task once per seed (``--seed_everything``; ``--max-time`` is each
run's), then validates the ensemble of the runs' best checkpoints (``--model.ensemble``: the
members' probabilities averaged; tasks with an encoder head) with the task's default decoding
(NER models are not averaged: there only the runs are reported):

    python benchmarks/quality.py --data-dir ../shared/data --task classification --seeds 1234,1,2,3,4

``--seeds 1`` is one run with ``--seed_everything 1``.

Each run parses its command line in this process, and jsonargparse reads the model classes'
source to do so: code of the checkout edited during a long run (between two seeds) makes the next
run fail with ``No action for key "model.vocab_size"``. Leave the checkout alone meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from common import split_passthrough, validation_metrics, write_json

from s2s_tasks.cli import main as s2s_tasks
from s2s_tasks.generation import GenerationConfig
from s2s_tasks.registry import get_task


@dataclass(frozen=True)
class RealData:
    """How a task trains on its real data set, and the result it should reach there."""

    dataset: str
    args: Tuple[str, ...] = ()
    targets: Tuple[Tuple[str, float], ...] = ()  # (validation metric, published from-scratch value)
    max_time: str = "00:01:00:00"
    source: str = ""


REAL_DATA: Dict[str, RealData] = {
    "translation": RealData(
        "Multi30k en-de (lowercased, tokenized)",
        ("--data.source_column", "source_lc_tok", "--data.target_column", "target_lc_tok", "--model.bleu_tokenize", "none"),
        (("val/bleu", 35.5),), "00:00:45:00",
        "joeynmt 2.3 at 45 min on this machine class: 33.4 greedy; attention RNNs 33.7-35.5 (test)",
    ),
    "summarization": RealData(
        "AESLC", ("--data.references_column", "references"),
        (("val/rouge1", 23.7), ("val/rouge2", 10.3), ("val/rougeL", 23.4)), "00:01:00:00",
        "Zhang and Tetreault 2019",
    ),
    "dialogue": RealData(
        # DailyDialog's text is tokenized (spaced punctuation): BLEU and Distinct count its own tokens
        "DailyDialog", ("--data.source_column", "source", "--data.target_column", "target", "--model.bleu_tokenize", "none"),
        (("val/bleu2", 20.0), ("val/sentence_bleu2", 20.0), ("val/distinct2", 15.0)), "00:01:00:00",
        "the issue's targets (Distinct-2 as a percentage); a BLEU-2 of 20 is on the scale of the smoothed "
        "sentence-level BLEU-2 most DailyDialog papers report (PLATO, Bao et al. 2020), so both BLEU-2s are held to it",
    ),
    "qa": RealData("SQuAD v1.1 re-split (10%)", (), (("val/f1", 51.0),), source="SQuAD paper's logistic regression"),
    "classification": RealData("SST-2", (), (("val/accuracy", 85.0),)),
    "ner": RealData("CoNLL-2003", (), (("val/f1", 87.0),), source="BiLSTM-CRF with pretrained embeddings: 90.9"),
    "relation_extraction": RealData("SemEval-2010 Task 8", (), (("val/semeval_macro_f1", 80.0),)),
}


def real_data_args(task: str, data_dir: Path) -> List[str]:
    folder = data_dir / task
    return ["--preset", "real", "--data.train_file", str(folder / "train.jsonl"),
            "--data.validation_file", str(folder / "validation.jsonl"), *REAL_DATA[task].args]


def resolved_model_config(cli_args: Sequence[str]) -> Dict:
    """The ``model`` section that ``s2s-tasks validate CLI_ARGS`` resolves (default config, preset,
    ``--config``/``--model`` files and flags, in the CLI's own order): its ``--print_config``."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            s2s_tasks(["validate", *cli_args, "--print_config"])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    return (yaml.safe_load(out.getvalue()) or {}).get("model") or {}


def default_decoding(cli_args: Sequence[str]) -> Tuple[str, ...]:
    """``--model.val_generation`` flags that make validation decode as test and predict do: every
    field of the ``model.generation`` that ``CLI_ARGS`` (``--task`` and the rest of a run's
    arguments) resolve to. Empty for tasks that do not generate (no ``model.generation``, or
    ``model.head: encoder``)."""
    model = resolved_model_config(cli_args)
    generation = model.get("generation")
    if generation is None or model.get("head") == "encoder":
        return ()
    flags: List[str] = []
    for key, value in {**asdict(GenerationConfig()), **generation}.items():
        flags += [f"--model.val_generation.{key}", "null" if value is None else str(value)]
    return tuple(flags)


def validation_curve(cli) -> List[Dict[str, float]]:
    """Every validation of a fit, in order: ``{"epoch": ..., "step": ..., "val/...": ...}`` (Lightning's
    0-based epoch, and the optimizer steps done: the number checkpoint names carry), read from the
    run's ``metrics.csv`` (the CSV logger of the task configs); empty when the run has no such file
    (another logger, or none)."""
    log_dir = getattr(cli.trainer.logger, "log_dir", None)
    path = Path(log_dir) / "metrics.csv" if log_dir else None
    if path is None or not path.is_file():
        return []
    curve = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
            if values:
                # Lightning logs a validation at the index of the last step taken (steps done - 1)
                curve.append({"epoch": int(float(row["epoch"])), "step": int(float(row["step"])) + 1, **values})
    return curve


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def validate_in_new_process(cli_args: List[str]) -> Dict[str, float]:
    """``s2s-tasks validate CLI_ARGS`` in a fresh Python process (same torch thread count); its
    ``val/*`` metrics.

    Not in this process: after an hour of training, the code on disk may no longer be the code this
    process loaded (someone edited the checkout meanwhile), and jsonargparse reads the model's
    source to follow its ``**kwargs``: building a second LightningCLI then fails with
    ``No action for key "model.vocab_size"``. A new process reads code and source consistently.
    """
    code = (
        "import json, sys, torch\n"
        "from s2s_tasks.cli import main\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "cli = main(sys.argv[2:])\n"
        "metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith('val/')}\n"
        "open(sys.argv[1], 'w').write(json.dumps(metrics))\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "metrics.json"
        subprocess.run([sys.executable, "-c", code, str(out), "validate", *cli_args], check=True)
        return json.loads(out.read_text())


def common_args(task: str, extra: List[str], workdir: Path) -> List[str]:
    return ["--task", task, "--trainer.default_root_dir", str(workdir), "--trainer.logger.init_args.save_dir", str(workdir / "logs"), *extra]


def run(task: str, max_time: str, max_epochs: Optional[int], extra: List[str], workdir: Path,
        decode: Tuple[str, ...] = (), save: Callable[[Dict], None] = lambda result: None) -> Dict:
    """Validate untrained, fit, then validate the best checkpoint again. ``save(result)`` is called
    after fit and again at the end, so a failure in the last validation keeps the training's result."""
    common = common_args(task, extra, workdir)
    untrained = validation_metrics(s2s_tasks(["validate", *common]))
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    fit_args = ["fit", *common]
    if max_time:
        fit_args += ["--trainer.max_time", max_time]
    if max_epochs:
        fit_args += ["--trainer.max_epochs", str(max_epochs)]
    cli = s2s_tasks(fit_args)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    checkpoint = cli.trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else None
    result = {
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
        "curve": validation_curve(cli),
        "best_checkpoint": best_path,
        "best_checkpoint_decoding": list(decode),
        "best": {},
    }
    save(result)
    if best_path:
        # the best checkpoint (what a user keeps), validated once more, with the default decoding
        start = time.perf_counter()
        try:
            best = validate_in_new_process([*common, "--ckpt_path", best_path, "--trainer.logger", "false", *decode])
        except Exception as err:  # noqa: BLE001 - keep the run's result; the error is recorded with it
            result["best_error"] = f"{type(err).__name__}: {err}"
            print(f"quality.py: validating the best checkpoint of {task} failed: {result['best_error']}", file=sys.stderr)
        else:
            best["seconds"] = round(time.perf_counter() - start, 1)
            result["best"] = best
        save(result)
    return result


def averages_ensembles(task: str) -> bool:
    """Whether ``--model.ensemble`` averages ``task``'s models (the task module says so)."""
    module_class, _ = get_task(task).classes()
    return bool(getattr(module_class, "averages_ensembles", False))


def run_ensemble(task: str, seeds: List[str], max_time: str, max_epochs: Optional[int], extra: List[str], workdir: Path,
                 decode: Tuple[str, ...] = (), save: Callable[[Dict], None] = lambda result: None) -> Dict:
    """:func:`run` once per seed, then the runs' best checkpoints validated as one ensemble."""
    runs: List[Dict] = []
    result: Dict = {"task": task, "args": extra, "seeds": seeds, "runs": runs, "ensemble": {}}
    for seed in seeds:
        runs.append(run(task, max_time, max_epochs, [*extra, "--seed_everything", seed], workdir / f"seed{seed}", decode,
                        save=lambda r: save({**result, "runs": [*runs, r]})))
    first = runs[0]
    result.update({k: first[k] for k in ("max_time", "torch_threads", "untrained")},
                  epochs=[r["epochs"] for r in runs], steps=sum(r["steps"] for r in runs),
                  wall_seconds=round(sum(r["wall_seconds"] for r in runs), 1),
                  cpu_seconds=round(sum(r["cpu_seconds"] for r in runs), 1))
    members = [r["best_checkpoint"] for r in runs if r["best_checkpoint"]]
    result["trained"] = {}
    result["best"] = {}
    if not averages_ensembles(task):
        result["ensemble_skipped"] = f"{task} models are not averaged (README: Ensembles); see each run's best"
        print(f"quality.py: {result['ensemble_skipped']}", file=sys.stderr)
    elif len(members) == len(runs):
        start = time.perf_counter()
        try:
            metrics = validate_in_new_process([*common_args(task, extra, workdir / "ensemble"), "--ckpt_path", members[0],
                                               "--model.ensemble", json.dumps(members[1:]), "--trainer.logger", "false", *decode])
        except Exception as err:  # noqa: BLE001 - keep the runs' results
            result["ensemble_error"] = f"{type(err).__name__}: {err}"
            print(f"quality.py: validating the ensemble of {task} failed: {result['ensemble_error']}", file=sys.stderr)
        else:
            result["ensemble"] = {**metrics, "seconds": round(time.perf_counter() - start, 1), "members": members}
            result["best"] = metrics  # the table's "best ckpt" column: the ensemble of the best checkpoints
    for name in runs[0]["best"]:
        if name.startswith("val/"):
            values = [r["best"].get(name) for r in runs if name in r["best"]]
            result["trained"][name] = sum(values) / len(values)  # the table's "final" column: the members' mean
    save(result)
    return result


def main() -> None:
    argv, extra = split_passthrough(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", action="append", help="task(s) to run (repeatable); default: all")
    parser.add_argument("--max-time", default="", help="fit time budget DD:HH:MM:SS (default: the config's max_epochs)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="epoch cap (default: the config's trainer.max_epochs; with --max-time, whichever comes first ends fit)")
    parser.add_argument("--json", default="benchmarks/results/quality.json", help="where to write the results")
    parser.add_argument("--workdir", default=None, help="logs and checkpoints (default: a temporary folder)")
    parser.add_argument("--data-dir", default=None, help="train on DIR/TASK/{train,validation}.jsonl with --preset real")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, i.e. OMP_NUM_THREADS or all cores)")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds: one run per seed, then their best checkpoints validated as an ensemble "
                             "(one seed: a single run with that seed)")
    args = parser.parse_args(argv)
    seeds = [seed.strip() for seed in args.seeds.split(",") if seed.strip()] if args.seeds else []
    if args.seeds and not seeds:
        parser.error(f"--seeds {args.seeds!r}: give one seed, or several for an ensemble, e.g. --seeds 1234,1,2")
    if len(seeds) == 1:  # one run with that seed, no ensemble
        extra, seeds = [*extra, "--seed_everything", seeds[0]], []
    from s2s_tasks.registry import TASKS

    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = args.task or (list(REAL_DATA) if args.data_dir else [t for t in TASKS if t != "multitask"])
    results: List[Dict] = []

    def save(result: Dict) -> None:
        """Write the finished tasks' results and this one's so far (a long run is never lost)."""
        if args.data_dir:
            real = REAL_DATA[result["task"]]
            result.update(dataset=real.dataset, targets=dict(real.targets), target_source=real.source)
        write_json(args.json, {"machine": machine, "results": [*results, result]})

    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            workdir = Path(args.workdir or tmp) / task
            if args.data_dir:
                real = REAL_DATA[task]
                run_args = [*real_data_args(task, Path(args.data_dir)), *extra]
                task_args = (args.max_time or real.max_time, args.max_epochs, run_args, workdir,
                             default_decoding(["--task", task, *run_args]), save)
            else:
                task_args = (args.max_time, args.max_epochs, extra, workdir, default_decoding(["--task", task, *extra]), save)
            result = run_ensemble(task, seeds, *task_args) if seeds else run(task, *task_args)
            results.append(result)
    rows = []
    for r in results:
        targets = r.get("targets") or {}
        for name in sorted(set(r["untrained"]) | set(r["trained"])):
            rows.append((r["task"], name, r["untrained"].get(name, float("nan")), r["trained"].get(name, float("nan")),
                         r["best"].get(name, float("nan")), targets.get(name, float("nan")), r["wall_seconds"], r["steps"]))
    print(f"\n{'task':<20} {'metric':<22} {'untrained':>10} {'final':>8} {'best ckpt':>10} {'target':>8} {'wall s':>8} {'steps':>7}")
    for task, name, before, after, best, target, wall, steps in rows:
        print(f"{task:<20} {name:<22} {before:>10.2f} {after:>8.2f} {best:>10.2f} {target:>8.1f} {wall:>8.1f} {steps:>7}")
    print("(best ckpt: the checkpoint with the best monitored metric, validated again with the task's default decoding"
          + ("; with --seeds, the ensemble of the seeds' best checkpoints, and final: their mean)" if seeds else ")"))
    write_json(args.json, {"machine": machine, "results": results})


if __name__ == "__main__":
    main()
