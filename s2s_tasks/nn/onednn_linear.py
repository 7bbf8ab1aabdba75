"""Float32 linear layers and matrix products on the CPU through oneDNN instead of MKL.

``F.linear`` and ``torch.mm`` in float32 on the CPU call MKL's ``sgemm``. On AMD CPUs MKL takes
a generic code path (it dispatches on the CPU vendor): on an AMD EPYC with AVX-512, 2 threads,
it reached 190-200 GFLOP/s at a Transformer layer's shapes (2,048 rows, d_model 256, FFN 1,024)
where oneDNN's matrix multiplication, the library behind torch's bfloat16 CPU products and
``torch.compile``'s frozen linears, reached 380-400: the forward product 1.9-2.1x faster, forward
and both gradient products together 1.5-1.9x (``python benchmarks/linear_kernels.py``,
``benchmarks/results/linear_kernels.json``). Intel CPUs get MKL's fast path; there oneDNN ran
the vocabulary projection at MKL's speed (0.95-1.03x in ``benchmarks/decode_paths.py`` on an
Intel Xeon, an earlier session), so this is expected to cost nothing there (not measured).

* :func:`linear`: ``F.linear(x, weight, bias)`` as an autograd function whose forward and
  backward products run in oneDNN (:class:`_OneDNNLinear`);
* :func:`matmul`: ``a @ b`` of two matrices, for code that computes its own gradients
  (:mod:`s2s_tasks.nn.linear_cross_entropy`); no autograd;
* :func:`apply_linear`: an ``nn.Linear`` layer applied to ``x`` (optionally only some of its
  output rows, optionally followed by a ReLU) with the best of these, and with its weight
  pre-packed inside a search (:mod:`s2s_tasks.nn.packed_linear`, which fuses the ReLU into the
  product).

Used only where the result is what ``F.linear`` computes, in float32: CPU float32 tensors, no
autocast (under ``bf16-mixed`` ``F.linear`` already runs in oneDNN, in bfloat16), not while
tracing, scripting, exporting or compiling (graphs see plain ``linear``/``mm``), and a PyTorch
built with oneDNN. Gradients are first-order only (``torch.autograd.grad(...,
create_graph=True)`` through these layers is refused). Products are summed in another order
than MKL's, so results differ from ``F.linear``'s by float32 rounding, as between two BLAS
libraries. Set the environment variable ``S2S_TASKS_ONEDNN_LINEAR=0`` to keep MKL for every
float32 product, packed weights included (read at import).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import packed_linear


#: whether :func:`linear` and :func:`matmul` may use oneDNN (benchmarks switch it to compare);
#: the same ops and switch as the packed weights
ENABLED = packed_linear._ops_available() and packed_linear.onednn_allowed()


def _product(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``x (M, K) @ weight (N, K)^T + bias`` in oneDNN; both operands may be strided (transposed views)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _forward(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """:func:`_product` over every leading dimension of ``x (..., K)`` -> ``(..., N)``."""
    return _product(x.reshape(-1, x.size(-1)), weight, bias).view(*x.shape[:-1], weight.size(0))


def applies(*tensors: Optional[Tensor]) -> bool:
    """Whether oneDNN computes the float32 products of these tensors here (see the module docstring)."""
    if not ENABLED:
        return False
    for t in tensors:
        if t is not None and (t.device.type != "cpu" or t.dtype != torch.float32):
            return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return not packed_linear.capturing_graph()


class _OneDNNLinear(torch.autograd.Function):
    """``y = x W^T + b`` for ``x (..., K)``, ``W (N, K)``, ``b (N,)``; backward
    ``dx = dy W`` and ``dW = dy^T x`` (over all leading dimensions of ``x``), ``db = sum dy``, each
    product one oneDNN matrix multiplication on strided views (no transposed copies)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _forward(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.size(-1))
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _product(grad_rows, weight.t(), None).view(x.shape)
        if ctx.needs_input_grad[1]:
            grad_weight = _product(grad_rows.t(), x.reshape(-1, x.size(-1)).t(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``: ``x (..., K)``, ``weight (N, K)``, ``bias (N,)`` -> ``(..., N)``,
    through oneDNN where :func:`applies` (with gradients for every input), else ``F.linear``."""
    if not applies(x, weight, bias) or x.numel() == 0:
        return F.linear(x, weight, bias)
    if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))):
        return _forward(x, weight.detach(), None if bias is None else bias.detach())
    return _OneDNNLinear.apply(x, weight, bias)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for matrices ``a (M, K)`` and ``b (K, N)`` -> ``(M, N)``, through oneDNN where
    :func:`applies`, else ``torch.mm``. No autograd: for code that computes its own gradients."""
    if not applies(a, b) or a.numel() == 0 or b.numel() == 0:
        return torch.mm(a, b)
    return _product(a, b.t(), None)


def apply_linear(layer: nn.Module, x: Tensor, rows: Optional[slice] = None, activation: str = "none") -> Tensor:
    """``layer(x)`` for a linear ``layer``, ``x (..., in_features)`` -> ``(..., out_features)``, or
    with ``rows`` (a ``slice`` of the weight's rows) only those output features, as
    :class:`~s2s_tasks.nn.attention.MultiHeadAttention` projects queries alone with the first
    third of its fused Q/K/V matrix; ``activation="relu"`` returns ``relu(layer(x))``.

    Inside a search (:func:`~s2s_tasks.nn.packed_linear.packed_projections`) a plain
    ``nn.Linear`` uses its oneDNN-packed weight (with the ReLU fused into the product); otherwise
    :func:`linear`. Other layers (LoRA, quantized ...) and layers with hooks run their own call
    (with ``rows``: ``linear`` of the weight's rows, as before these kernels)."""
    if activation not in ("none", "relu"):
        raise ValueError(f"activation must be 'none' or 'relu', got {activation!r}")
    out = packed_linear.packed_product(layer, x, rows, activation)
    if out is not None:
        return out
    if rows is None:
        out = linear(x, layer.weight, layer.bias) if packed_linear.plain_linear(layer) else layer(x)
    else:
        out = linear(x, layer.weight[rows], None if layer.bias is None else layer.bias[rows])
    return out if activation == "none" else torch.relu(out)
