"""Dropout (Srivastava et al., 2014) with a faster mask on the CPU.

``torch.nn.functional.dropout`` draws one Bernoulli sample per element from a Mersenne
Twister, which makes it the most expensive element-wise operation of a Transformer training
step on the CPU (about 10% of the step at d_model 256). Here one 64-bit random integer
gives the mask of four elements: each 16-bit lane is compared with ``p * 2^16``, so the
dropout probability is exact to 2^-16 (0.1 becomes 0.100006). Forward + backward on a 2-core
AVX2 CPU, 2 threads, a ``(32, 64, 1024)`` float32 tensor: 32 ms for ``F.dropout``, 16 ms here,
1.8-2x on every shape of a training step (``python benchmarks/dropout.py``). On other devices,
whose ``F.dropout`` kernels draw the mask in place, ``F.dropout`` is used.

For bfloat16 and float16 inputs the mask is kept for backward as ``x.dtype`` values ``0`` or
``1 / (1 - p)``, so forward and backward are each one multiplication: ``masked_fill_`` with a
``bool`` mask took about 1.4 ms on a ``(32, 64, 1024)`` bfloat16 tensor of an AVX-512 CPU against
0.3 ms for the multiplication (dropout was a fifth of a profiled bf16 training step), for one more
byte per element of saved mask. In float32 that would be three more bytes per element (the peak
memory of a benchmark training step rose from 194 to 329 MiB, for a speed change within noise), so float32
keeps the ``bool`` mask (``python benchmarks/dropout.py`` measures both).
The random integers come from torch's default generator, so ``seed_everything`` and the
random states saved in checkpoints cover them as before.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LANES = 4  # 16-bit lanes per 64-bit random integer
_HALF_TYPES = (torch.bfloat16, torch.float16)  # dropped with a mask of their own dtype (see above)


def _lanes(shape: torch.Size, p: float, device: torch.device) -> Tuple[Tensor, int]:
    """``(numel)`` int16 lanes uniform on [-32768, 32767] (four per random 64-bit integer) and the
    threshold below which a lane drops its element (with probability ``p``, to within 2^-16)."""
    numel = shape.numel()
    bits = torch.empty((numel + _LANES - 1) // _LANES, dtype=torch.int64, device=device).random_(-(2**63), None)
    return bits.view(torch.int16)[:numel], round(p * 65536) - 32768


def drop_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """``bool`` tensor of ``shape``, ``True`` (dropped) with probability ``p`` (to within 2^-16)."""
    lanes, threshold = _lanes(shape, p, device)
    return (lanes < threshold).view(shape)


def keep_scale(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``dtype`` tensor of ``shape``: ``1 / (1 - p)`` where an element is kept, ``0`` where it is
    dropped (with probability ``p``, to within 2^-16); the same draws as :func:`drop_mask`."""
    lanes, threshold = _lanes(shape, p, device)
    # through uint8: bool -> bf16 directly took 1.7x as long in a micro-benchmark (not kept)
    return (lanes >= threshold).view(torch.uint8).to(dtype).mul_(1.0 / (1.0 - p)).view(shape)


class _MaskedScale(torch.autograd.Function):
    """``x * scale`` with the masked elements zeroed; backward applies the same mask and scale."""

    @staticmethod
    def forward(ctx, x: Tensor, drop: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return (x * scale).masked_fill_(drop, 0.0)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (drop,) = ctx.saved_tensors
        return (grad * ctx.scale).masked_fill_(drop, 0.0), None, None


class _Scale(torch.autograd.Function):
    """``x * keep`` with ``keep`` saved for backward (``grad * keep``), no gradient for ``keep``."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Same contract as ``F.dropout`` (inverted dropout: survivors scaled by ``1 / (1 - p)``)."""
    if not training or p == 0.0:
        return x
    # Under torch.compile, inductor draws and applies the mask in one fused kernel of its own; our
    # int16 view of int64 draws also breaks AOT autograd's replay of aliased outputs (torch 2.13).
    if x.device.type != "cpu" or p >= 1.0 or not x.is_floating_point() or torch.compiler.is_compiling():
        return F.dropout(x, p, training)
    if x.dtype in _HALF_TYPES:
        return _Scale.apply(x, keep_scale(x.shape, p, x.dtype, x.device))
    return _MaskedScale.apply(x, drop_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the faster CPU mask of :func:`dropout` (same arguments, no state)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
