"""Learning-rate schedules: linear warmup followed by a decay, as a ``LambdaLR`` multiplier.

* ``inverse_sqrt``: the Transformer schedule (Vaswani et al. 2017, eq. 3) rescaled so the peak
  multiplier is 1 at the end of warmup: ``min(step / warmup, sqrt(warmup / step))``.
* ``linear`` and ``cosine`` (Loshchilov & Hutter 2017, without restarts): decay from 1 after warmup
  to ``min_lr_ratio`` at ``total_steps``.
* ``constant``: 1 after warmup.

:func:`adamw` builds the optimizer every task trains with.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional

import torch

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


def fused_adamw_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch has a fused AdamW kernel for these parameters' device: CUDA, and the CPU
    from torch 2.4."""
    devices = {p.device.type for p in params}
    if devices == {"cuda"}:
        return True
    return devices == {"cpu"} and tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)


def adamw(param_groups: Any, fused: Optional[bool] = None, **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW(param_groups, **kwargs)``, by default (``fused=None``) with torch's fused
    kernel where the device has one and no ``foreach`` is asked for. The default on the CPU is a
    loop of about ten operations per parameter tensor: 24 ms a step for the 7.6M parameters (96
    tensors) of ``benchmarks/speed.py``'s Transformer on 2 threads of an AVX-512 CPU, against 6 ms
    fused (foreach: 21 ms; ``python benchmarks/adamw.py``). In whole training steps against HF's (``--ours_adamw``), that moved the
    float32 ratio by about +0.04 and the bf16 one by less than the runs resolve. The update is the
    same up to float rounding."""
    groups = list(param_groups)
    params = [p for group in groups for p in (group["params"] if isinstance(group, dict) else [group])]
    if fused is None:
        fused = "foreach" not in kwargs and bool(params) and fused_adamw_supported(params)
    optimizer = torch.optim.AdamW(groups, fused=fused, **kwargs)
    if fused:
        optimizer.register_step_post_hook(_mark_parameters_modified)
    return optimizer


def _mark_parameters_modified(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """The fused kernel updates the parameters in place without bumping their version counters
    (torch 2.13, CPU), so whatever is cached on them would go stale unnoticed: the packed
    vocabulary projection of :mod:`s2s_tasks.nn.packed_linear` decoded with the weights of its
    first use (a test's chrF fell from 17.8 to 9.0 at the same validation loss)."""
    torch.autograd.graph.increment_version([p for group in optimizer.param_groups for p in group["params"]])
