"""Callbacks for cross-cutting behaviour."""

from __future__ import annotations

import heapq
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import random
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Callback

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
        save_attention: also draw the attention of each prediction over its source, one PNG per
            input record (``record{index}.png``; models that generate only, see
            :class:`~s2s_tasks.insight.PredictionAttention`): one more decoder pass and a PNG per record.
        attention_dir: where the PNGs go; default ``<output file name>_attention/`` next to the
            output file.
        attention_layer, attention_head: Transformer cross-attention to draw (default: the last
            layer, mean over heads), as for :class:`~s2s_tasks.insight.AttentionMaps`.
    """

    def __init__(
        self,
        output_file: Optional[str] = None,
        save_attention: bool = False,
        attention_dir: Optional[str] = None,
        attention_layer: Optional[int] = None,
        attention_head: Optional[int] = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_file = output_file
        self.save_attention = save_attention
        self.attention_dir = attention_dir
        self.attention_layer = attention_layer
        self.attention_head = attention_head
        self._handle = None
        self._pending: List[Dict[str, Any]] = []
        self._written = 0
        self._attention = None  # a PredictionAttention while predicting with save_attention

    def resolve_path(self, trainer: pl.Trainer) -> Path:
        if self.output_file:
            return Path(self.output_file)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl"

    def attention_directory(self, trainer: pl.Trainer) -> Path:
        """``attention_dir``, else ``<output file name>_attention/`` next to the output file."""
        if self.attention_dir:
            return Path(self.attention_dir)
        path = self.resolve_path(trainer)
        return path.with_name(f"{path.stem}_attention")

    def _part(self, trainer: pl.Trainer, rank: int) -> Path:
        path = self.resolve_path(trainer)
        return path.with_name(f"{path.name}.part{rank}.tmp" if trainer.world_size > 1 else f"{path.name}.tmp")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        part = self._part(trainer, trainer.global_rank)
        part.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(part, "w", encoding="utf-8")
        self._pending, self._written = [], 0
        self._attention = None
        if self.save_attention:
            from s2s_tasks.insight import PredictionAttention

            self._attention = PredictionAttention.for_module(
                pl_module, self.attention_directory(trainer), self.attention_layer, self.attention_head)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        self._pending.extend(prediction)
        if self._attention is not None:
            self._attention.write(batch, prediction)
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
        if self._attention is not None:
            log.info("Wrote %d attention maps to %s", self._attention.written, self._attention.directory)
            self._attention = None
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


# ------------------------------------------------------------------------------------- exact resume
#: checkpoint key of :class:`ResumeState`'s state
RESUME_KEY = "s2s_tasks_resume"


def collect_rng_states() -> Dict[str, Any]:
    """The global random states of torch (CPU and every CUDA device), Python and NumPy, as tensors
    and plain data only (checkpoints are read with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(python_state), python_gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }


def set_rng_states(states: Dict[str, Any]) -> None:
    """Restore what :func:`collect_rng_states` returned (CUDA states only where the devices match)."""
    torch.set_rng_state(states["torch"])
    cuda = states.get("torch.cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    elif cuda:
        log.warning("the checkpoint holds the random states of %d CUDA devices and this run has %d: they are not "
                    "restored", len(cuda), torch.cuda.device_count() if torch.cuda.is_available() else 0)
    version, python_state, python_gauss = states["python"]
    random.setstate((version, tuple(python_state), python_gauss))
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))


class ResumeState(Callback):
    """Makes ``fit --ckpt_path`` continue exactly where the checkpoint was written.

    Lightning restores the weights, optimizer, LR scheduler, loop counters and callback states
    (e.g. ModelCheckpoint's best score), and saves the train loader's position in the epoch
    (:class:`~s2s_tasks.data.datamodule.ResumableDataLoader`), but it does not restore random
    states, and it does not restore that position either when the train data was set up before
    the checkpoint was loaded, as ``configure_optimizers`` does here by reading
    ``trainer.estimated_stepping_batches`` for the LR schedule (Lightning issue #20550). This callback:

    - after a mid-epoch checkpoint, puts the train loader after the batches of the epoch already
      trained on, as Lightning's loop counters say (the same batches in the same order: the order
      depends only on ``data.seed + epoch``), unless Lightning has already done so; and it
      restores the random states just before the first batch (dropout masks continue as if there
      had been no interruption);
    - after an end-of-epoch checkpoint, restores the random states before the next epoch's data
      iterator is made (making one draws a seed from the torch random state). Lightning makes the
      resumed run's first iterator before any callback runs and before it sets the sampler's
      epoch, so it is made anew here for that epoch, as Lightning does at every other epoch start.

    The random states of torch (CPU and CUDA), Python and NumPy are stored at the moment of saving
    under the checkpoint key ``"s2s_tasks_resume"``. With this callback, ``fit`` for N steps and
    ``fit`` for N/2 steps resumed for the rest give the same weights (``tests/test_resume.py``).
    Under data parallelism rank 0's random states are stored and restored on every rank (every
    rank starts from the same ``seed_everything`` seed).
    """

    def __init__(self) -> None:
        #: what the checkpoint being resumed from holds: random states and the train loader's position
        self._resumed: Optional[Dict[str, Any]] = None
        self._rng_at_first_batch: Optional[Dict[str, Any]] = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Dict[str, Any]) -> None:
        checkpoint[RESUME_KEY] = {"rng": collect_rng_states()}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Dict[str, Any]) -> None:
        state = checkpoint.get(RESUME_KEY)
        loaders = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader") or []
        self._resumed = {"rng": state.get("rng") if isinstance(state, dict) else None,
                         "loader": loaders[0] if len(loaders) == 1 else None}

    @staticmethod
    def _renew_train_iterator(trainer: pl.Trainer) -> None:
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is not None:
            iter(fetcher)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is None:
            return
        rng = resumed["rng"]
        loader = trainer.train_dataloader
        resumable = callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None))
        epoch = trainer.current_epoch
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # batches of this epoch trained on
        if not 0 < done < trainer.num_training_batches:
            # an end-of-epoch checkpoint: the next epoch starts at its beginning, and its iterator
            # draws its seed from the random states as they were when the first run made it
            if not resumable:
                self._rng_at_first_batch = rng
                return
            if rng is not None:
                set_rng_states(rng)
            loader.load_state_dict({"epoch": epoch, "batches_done": 0})
            self._renew_train_iterator(trainer)
            return
        self._rng_at_first_batch = rng  # the random states right after the last trained batch
        if not resumable:
            return  # Lightning has warned that the epoch restarts from its first batch
        expected = {"epoch": epoch, "batches_done": done}
        saved = resumed["loader"]
        if saved is not None and saved != expected:
            log.warning("resume: the checkpoint's train data position (epoch %s after %s batches) differs from "
                        "Lightning's loop counters (epoch %d after %d batches); continuing after %d",
                        saved.get("epoch"), saved.get("batches_done"), epoch, done, done)
        if loader.state_dict() != expected:  # not restored by Lightning (issue #20550)
            loader.load_state_dict(expected)
            self._renew_train_iterator(trainer)
        log.info("resume: epoch %d continues after its first %d batches", epoch, done)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        rng, self._rng_at_first_batch = self._rng_at_first_batch, None
        if rng is not None:
            set_rng_states(rng)


# ------------------------------------------------------------------------------------- non-finite loss
class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite (a ValueError: the console prints it as one paragraph)."""


class NonFiniteLossCheck(Callback):
    """Stop training with a clear error as soon as the training loss is NaN or infinite.

    The check runs before the backward pass, so the weights and the last checkpoint are never
    overwritten with NaNs. It costs one device-to-host sync of the loss per batch (Lightning's
    ``detect_anomaly`` would check every operation and is far slower).
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        value = "nan" if bool(torch.isnan(loss.detach()).any()) else "infinite"
        precision = str(trainer.precision)
        if "16" in precision and "bf16" not in precision:
            hint = (f"and train in bfloat16 (--trainer.precision bf16-mixed) or 32-bit instead of {precision}, whose "
                    "float16 range overflows easily")
        else:
            hint = "and prefer --trainer.precision bf16-mixed to 16-mixed (float16 overflows easily)"
        epoch_loop = trainer.fit_loop.epoch_loop
        raise NonFiniteLossError(
            f"training stopped: the training loss is {value} at step {trainer.global_step} (after "
            f"{trainer.global_step} optimizer steps; epoch {trainer.current_epoch}, batch {epoch_loop.batch_idx} of "
            f"the epoch), so the weights would become NaN. Try a lower learning rate (--model.learning_rate, now "
            f"{pl_module.hparams.get('learning_rate', '?')}) or a longer warmup (--model.warmup_steps), gradient "
            f"clipping (--trainer.gradient_clip_val 1.0, now {trainer.gradient_clip_val}), and {hint}; look for "
            f"broken or extreme examples in the training data. Checkpoints written before this step are not affected "
            f"(--ckpt_path last resumes from the latest)."
        )
