"""One short fit + test of a task on an accelerator, with its throughput (issue 6's device check).

    python benchmarks/device_check.py                                   # GPU, bf16-mixed, translation sample
    python benchmarks/device_check.py --accelerator cpu --precision 32-true --max-steps 30   # a dry run here

Runs ``s2s-tasks fit --task TASK --trainer.accelerator A --trainer.devices 1 --trainer.precision P
--trainer.max_steps N`` on the task's embedded sample data (nothing to download or carry), then
``s2s-tasks test`` with the checkpoint of the best validation metric, all in this process.
Everything after ``--`` goes to both commands (e.g. a bigger ``--model`` preset, or real data
files). Reports fit wall time, optimizer steps per second, target tokens per second (counted
by a callback on every training batch: the non-padding tokens of ``tgt_out``), the peak memory
the accelerator allocated, and the validation and test metrics. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import torch
import pytorch_lightning as pl

from common import split_passthrough, validation_metrics, write_json

from s2s_tasks.cli import main as s2s_tasks


class TargetTokens(pl.Callback):
    """Counts the target tokens (``tgt_out`` that are not padding) and the seconds of training
    batches; the first ``warmup`` batches (CUDA start-up, cuDNN autotuning) are left out."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self.tokens = 0
        self.batches = 0
        self.seconds = 0.0
        self._start = 0.0

    def _sync(self, trainer: pl.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._sync(trainer)
        self.batches += 1
        if self.batches <= self.warmup:
            return
        self.seconds += time.perf_counter() - self._start
        self.tokens += int((batch["tgt_out"] != pl_module.hparams.pad_id).sum())


def main() -> None:
    argv, extra = split_passthrough(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="translation", help="a generating task (its batches have tgt_out)")
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--json", default="benchmarks/results/device_check.json")
    parser.add_argument("--workdir", default=None, help="logs and checkpoints (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        common = ["--task", args.task, "--trainer.accelerator", args.accelerator, "--trainer.devices", "1",
                  "--trainer.precision", args.precision, "--trainer.default_root_dir", str(workdir),
                  "--trainer.logger.init_args.save_dir", str(workdir / "logs"), *extra]
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        # appended to the config's callbacks; importable as device_check.TargetTokens (this folder is on sys.path)
        cli = s2s_tasks(["fit", *common, "--trainer.max_steps", str(args.max_steps), "--trainer.max_epochs", "-1",
                         "--trainer.callbacks+=device_check.TargetTokens"])
        counter = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "TargetTokens")
        fit_seconds = time.perf_counter() - start
        val = validation_metrics(cli)
        # the best validated weights; the last ones when fit ended before its first validation
        saved = [cb.best_model_path for cb in cli.trainer.checkpoint_callbacks if cb.monitor and cb.best_model_path]
        saved += [cb.last_model_path for cb in cli.trainer.checkpoint_callbacks if cb.last_model_path]
        best = saved[0] if saved else ""
        if not best:
            raise SystemExit("device_check.py: fit saved no checkpoint to test; raise --max-steps")
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        start = time.perf_counter()
        tested = s2s_tasks(["test", *common, "--ckpt_path", best, "--trainer.logger", "false"])
        test_seconds = time.perf_counter() - start
        test = {k: float(v) for k, v in tested.trainer.callback_metrics.items() if k.startswith("test/")}
    result: Dict[str, Any] = {
        "task": args.task, "accelerator": args.accelerator, "precision": args.precision, "args": extra,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "steps": cli.trainer.global_step, "fit_seconds": round(fit_seconds, 1),
        "steps_per_second": round(cli.trainer.global_step / fit_seconds, 2),
        "measured_batches": max(counter.batches - counter.warmup, 0),
        "target_tokens_per_second": round(counter.tokens / counter.seconds, 1) if counter.seconds else None,
        "peak_memory_mib": round(peak, 1) if peak is not None else None,
        "tested_checkpoint": best, "validation": val, "test": test, "test_seconds": round(test_seconds, 1),
    }
    print(f"\n{'task':<14}{'device':<28}{'precision':<12}{'steps':>6}{'fit s':>8}{'tgt tok/s':>11}{'peak MiB':>10}")
    print(f"{args.task:<14}{result['device'][:27]:<28}{args.precision:<12}{result['steps']:>6}{fit_seconds:>8.1f}"
          f"{result['target_tokens_per_second'] or float('nan'):>11.0f}{(peak or float('nan')):>10.0f}")
    for name, value in sorted({**val, **test}.items()):
        print(f"  {name:<24}{value:>10.3f}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
