"""The default logger of the task configs: CSV and TensorBoard from one logger.

:class:`CSVAndTensorBoardLogger` is Lightning's ``CSVLogger`` (``metrics.csv``, ``hparams.yaml``
in ``<save_dir>/<name>/version_N/``) that also writes every logged scalar (losses, learning rate,
validation metrics) as TensorBoard events into the same directory, so ``tensorboard --logdir
outputs`` shows the runs the CSV files describe. One logger rather than a list of two keeps
``--trainer.logger.init_args.save_dir`` and the single log directory of a run (checkpoints,
``curves.png``, attention maps) as they are.

The events are written with ``torch.utils.tensorboard`` when the ``tensorboard`` package is
installed, else with the lighter ``tensorboardX`` (a dependency of s2s-tasks).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        return SummaryWriter
    except ImportError:
        pass
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    except ImportError:
        return None


class CSVAndTensorBoardLogger(CSVLogger):
    """A ``CSVLogger`` that also writes its scalars as TensorBoard events (module docstring).

    Args:
        tensorboard: write the TensorBoard events too (``false``: a plain ``CSVLogger``).
        *args, **kwargs: ``CSVLogger``'s (``save_dir``, ``name``, ``version``, ``prefix``,
            ``flush_logs_every_n_steps``).
    """

    def __init__(self, *args: Any, tensorboard: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_tensorboard = tensorboard
        self._tensorboard: Optional[Any] = None
        self._warned = False

    @property
    def tensorboard(self) -> Optional[Any]:
        """The TensorBoard ``SummaryWriter`` of this run (rank 0; created on first use), or ``None``
        when it is switched off or no writer package is installed."""
        if self._tensorboard is None and self._write_tensorboard and rank_zero_only.rank == 0:
            writer_class = _summary_writer_class()
            if writer_class is None:
                if not self._warned:
                    log.warning("TensorBoard events are not written: install tensorboardX or tensorboard "
                                "(or set trainer.logger.init_args.tensorboard false)")
                    self._warned = True
                return None
            self._tensorboard = writer_class(self.log_dir)
        return self._tensorboard

    @rank_zero_only
    def log_metrics(self, metrics: Dict[str, Any], step: Optional[int] = None) -> None:
        super().log_metrics(metrics, step)
        writer = self.tensorboard
        if writer is None:
            return
        for name, value in metrics.items():
            if name == "epoch":
                continue
            try:
                number = float(value.item() if hasattr(value, "item") else value)
            except (TypeError, ValueError):  # not a scalar
                continue
            writer.add_scalar(name, number, global_step=step)

    @rank_zero_only
    def save(self) -> None:
        super().save()
        if self._tensorboard is not None:
            self._tensorboard.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._tensorboard is not None:
            self._tensorboard.flush()
