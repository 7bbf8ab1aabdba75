"""The vocabulary projection at inference time, with its weight pre-packed by oneDNN on the CPU.

A decoding step multiplies a few rows (batch x beams) by the ``(V, D)`` output projection, the
largest matrix of the model. For such short, wide products MKL's ``F.linear`` reaches about a
third of the CPU's float32 rate; oneDNN with the weight reordered once into its blocked layout
was 1.6-2x faster on that product alone at 32-128 rows and d_model 256, V 8,000 (2 threads,
AVX2; a micro-benchmark while building this, not kept). On whole decodes, measured with it on
and off in ``python benchmarks/decode_paths.py``: greedy 1.18x, beam 4 1.08x (Transformer) on an
AVX2 CPU, 0.95-1.03x on an AVX-512 one (MKL's own product is efficient there). This is
the same primitive ``torch.compile`` uses for frozen CPU linears (``mkldnn._linear_pointwise``),
called directly because compiling does not pay on the CPUs we target (see the README).

The packed copy is cached per module (in a weak dictionary beside it, so copying, pickling or
saving the module never meets the opaque oneDNN tensor) and re-made whenever the weight or
bias changes (their version counters move on every in-place optimizer update), so a model that
trains between decodes is always decoded with its current weights. It costs one extra copy of the matrix
(8 MB at V 8,000, D 256) while cached.

Used only where it is exactly a linear layer's job and safe: float32 CPU tensors, no autograd,
no autocast, not while tracing, scripting or exporting (ONNX and TorchScript see the plain
``nn.Linear``), and a PyTorch built with oneDNN. Everything else calls the layer itself.
"""

from __future__ import annotations

import weakref
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

#: a batch-size hint for oneDNN's weight layout; 32-128 rows all run at the same speed with it
_PACK_ROWS_HINT = 64
#: module -> ((weight/bias pointers and versions), packed weight); an entry goes with its module
_PACKED: "weakref.WeakKeyDictionary[nn.Linear, Tuple[tuple, Tensor]]" = weakref.WeakKeyDictionary()


def _ops_available() -> bool:
    try:
        return (
            torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        )
    except (AttributeError, RuntimeError):  # an op namespace the build lacks
        return False


_AVAILABLE = _ops_available()


def _usable(linear: nn.Module, x: Tensor) -> bool:
    if not _AVAILABLE or type(linear) is not nn.Linear:  # quantized, LoRA-wrapped ... layers: their own forward
        return False
    weight = linear.weight
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32 or weight.device.type != "cpu":
        return False
    if torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad):
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return False
    # inference tensors (weights made under torch.inference_mode) have no version counter to key the cache on
    return not weight.is_inference() and not (linear.bias is not None and linear.bias.is_inference())


def _key(linear: nn.Linear) -> Tuple[int, int, Optional[int], Optional[int]]:
    bias = linear.bias
    return (linear.weight.data_ptr(), linear.weight._version,
            None if bias is None else bias.data_ptr(), None if bias is None else bias._version)


def _packed(linear: nn.Linear) -> Tensor:
    key = _key(linear)
    cached = _PACKED.get(linear)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), _PACK_ROWS_HINT))
        _PACKED[linear] = cached
    return cached[1]


def inference_linear(linear: nn.Module, x: Tensor) -> Tensor:
    """``linear(x)`` for ``x`` of shape ``(..., in_features)`` -> ``(..., out_features)``, through the
    cached oneDNN-packed weight where that is safe (see the module docstring), else the layer's own call."""
    if not _usable(linear, x):
        return linear(x)
    bias = linear.bias.detach() if linear.bias is not None else None
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), _packed(linear), bias, "none", [], "")
