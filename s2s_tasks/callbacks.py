"""Callbacks for cross-cutting behaviour."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

log = logging.getLogger(__name__)


def _flatten(predictions: Any) -> list:
    """Lightning returns a list of per-batch lists (or, for several dataloaders, a list of those)."""
    out: list = []
    for item in predictions or []:
        if isinstance(item, dict):
            out.append(item)
        else:
            out.extend(_flatten(item))
    return out


class PredictionWriter(BasePredictionWriter):
    """Write ``predict`` outputs to a jsonl file: one record per input, in input order.

    The file is written to a temporary name and renamed, so an interrupted run never leaves a
    half-written file in place of a previous one.

    Args:
        output_file: where to write; default ``<log dir>/predictions.jsonl``.
    """

    def __init__(self, output_file: Optional[str] = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_file = output_file

    def resolve_path(self, trainer: pl.Trainer) -> Path:
        if self.output_file:
            return Path(self.output_file)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl"

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        records = _flatten(predictions)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, records)
            records = [r for part in gathered for r in (part or [])]
        if not trainer.is_global_zero:
            return
        # DDP pads the last batches by repeating examples: keep one record per input (a task
        # whose inputs span several rows, e.g. QA windows, merges them in its own way)
        merge = getattr(pl_module, "merge_prediction_records", None)
        if merge is not None:
            ordered = merge(records)
        else:
            ordered = [record for _, record in sorted({r["index"]: r for r in records}.items())]
        path = self.resolve_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in ordered:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        log.info("Wrote %d predictions to %s", len(ordered), path)
