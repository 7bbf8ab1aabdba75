"""Learning-rate schedules: linear warmup followed by a decay, as a ``LambdaLR`` multiplier.

* ``inverse_sqrt``: the Transformer schedule (Vaswani et al. 2017, eq. 3) rescaled so the peak
  multiplier is 1 at the end of warmup: ``min(step / warmup, sqrt(warmup / step))``.
* ``linear`` and ``cosine`` (Loshchilov & Hutter 2017, without restarts): decay from 1 after warmup
  to ``min_lr_ratio`` at ``total_steps``.
* ``constant``: 1 after warmup.
"""

from __future__ import annotations

import math
from typing import Callable

LR_SCHEDULES = ("inverse_sqrt", "linear", "cosine", "constant")


def lr_multiplier(schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """Return ``f(step) -> multiplier`` of the peak learning rate (``step`` counts from 0)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"model.lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if warmup_steps < 0:
        raise ValueError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"model.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    warmup = max(warmup_steps, 0)
    total = max(total_steps, warmup + 1)

    def multiplier(step: int) -> float:
        step = step + 1  # the first optimizer step already uses a non-zero rate
        if warmup and step <= warmup:
            return step / warmup
        if schedule == "constant":
            return 1.0
        if schedule == "inverse_sqrt":
            return math.sqrt(max(warmup, 1) / step)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        if schedule == "linear":
            decay = 1.0 - progress
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay

    return multiplier
