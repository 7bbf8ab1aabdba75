"""Helpers shared by the test modules (importable because pytest puts tests/ on sys.path)."""

import json
from typing import Any, Dict, List, Tuple

import pytorch_lightning as pl


def write_jsonl(path, records: List[Dict[str, Any]]) -> str:
    """Write one JSON object per line; returns the path as a string (for a ``*_file`` argument)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def quiet_trainer(tmp_path, **overrides: Any) -> pl.Trainer:
    """A single-process Trainer with no logger, checkpoints, progress bar, model summary or
    sanity check, writing under ``tmp_path``; ``overrides`` adds or replaces Trainer arguments."""
    kwargs: Dict[str, Any] = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, num_sanity_val_steps=0, use_distributed_sampler=False,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def validate_fit_validate(model, data, tmp_path, **trainer_kwargs: Any) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Validation metrics of ``model`` before and after ``fit`` on ``data`` (a learning test's core)."""
    trainer = quiet_trainer(tmp_path, **trainer_kwargs)
    before = trainer.validate(model, datamodule=data, verbose=False)[0]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]
    return before, after


#: a model small enough to train in seconds (for tests that need a checkpoint, not a good model)
TINY_MODEL_ARGS = [
    "--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2",
    "--model.num_encoder_layers", "1", "--model.num_decoder_layers", "1",
    "--model.generation.max_length", "8", "--model.val_generation.max_length", "8",
    "--model.warmup_steps", "2", "--data.tokenizer_vocab_size", "300", "--data.max_tokens", "1024",
]


def train_tiny_checkpoint(task: str, directory, *extra: str, steps: int = 3) -> str:
    """Fit a tiny model of ``task`` for a few steps on its embedded sample data (no validation,
    no logger) under ``directory``; returns the path of its last checkpoint."""
    from pathlib import Path

    from s2s_tasks.cli import main

    main(["fit", "--task", task, "--trainer.default_root_dir", str(directory), "--trainer.logger", "false",
          "--data.cache_dir", str(Path(directory) / "cache"), "--trainer.max_steps", str(steps),
          "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
          *([] if task == "multitask" else TINY_MODEL_ARGS), *extra])
    (path,) = Path(directory).rglob("last.ckpt")
    return str(path)
