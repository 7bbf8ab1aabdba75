"""Callbacks for cross-cutting behaviour."""

from __future__ import annotations

import heapq
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

log = logging.getLogger(__name__)


class PredictionWriter(BasePredictionWriter):
    """Write ``predict`` outputs to a jsonl file: one record per input, in input order.

    Predictions are written as they come, a chunk of inputs at a time (the data module streams
    the predict file, see :mod:`s2s_tasks.data.streaming`), so memory stays flat however long
    the file is. Each rank writes its own part to a temporary file; at the end rank 0 merges
    the parts by record number and renames the result into place, so an interrupted or failed
    run never leaves a half-written file in place of a previous one.

    Args:
        output_file: where to write; default ``<log dir>/predictions.jsonl``.
    """

    def __init__(self, output_file: Optional[str] = None) -> None:
        super().__init__(write_interval="batch")
        self.output_file = output_file
        self._handle = None
        self._pending: List[Dict[str, Any]] = []
        self._written = 0

    def resolve_path(self, trainer: pl.Trainer) -> Path:
        if self.output_file:
            return Path(self.output_file)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl"

    def _part(self, trainer: pl.Trainer, rank: int) -> Path:
        path = self.resolve_path(trainer)
        return path.with_name(f"{path.name}.part{rank}.tmp" if trainer.world_size > 1 else f"{path.name}.tmp")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        part = self._part(trainer, trainer.global_rank)
        part.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(part, "w", encoding="utf-8")
        self._pending, self._written = [], 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        self._pending.extend(prediction)
        if batch.get("chunk_end", True):
            self._flush(pl_module)

    def _flush(self, pl_module: pl.LightningModule) -> None:
        """Write the pending records (all of a chunk's inputs) in input order; a task whose
        inputs span several rows (QA windows) merges them in its own way."""
        merge = getattr(pl_module, "merge_prediction_records", None)
        if merge is not None:
            ordered = merge(self._pending)
        else:
            ordered = [record for _, record in sorted({r["index"]: r for r in self._pending}.items())]
        for record in ordered:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._written += len(ordered)
        self._pending = []

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(pl_module)
        self._handle.close()
        self._handle = None
        path = self.resolve_path(trainer)
        if trainer.world_size == 1:
            os.replace(self._part(trainer, 0), path)
            log.info("Wrote %d predictions to %s", self._written, path)
            return
        trainer.strategy.barrier("predictions written")
        if trainer.is_global_zero:
            parts = [self._part(trainer, rank) for rank in range(trainer.world_size)]
            tmp = path.with_name(path.name + ".tmp")
            written = 0
            handles = [open(part, encoding="utf-8") for part in parts]
            try:
                with open(tmp, "w", encoding="utf-8") as out:
                    for line in heapq.merge(*handles, key=lambda line: json.loads(line)["index"]):
                        out.write(line)
                        written += 1
            finally:
                for handle in handles:
                    handle.close()
            os.replace(tmp, path)
            for part in parts:
                part.unlink()
            log.info("Wrote %d predictions to %s", written, path)
        trainer.strategy.barrier("predictions merged")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Remove this rank's partial output; the previous predictions file stays as it was."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._part(trainer, trainer.global_rank).unlink(missing_ok=True)
