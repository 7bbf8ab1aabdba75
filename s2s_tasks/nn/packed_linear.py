"""The vocabulary projection at inference time, with its weight pre-packed by oneDNN on the CPU.

A decoding step multiplies a few rows (batch x beams) by the ``(V, D)`` output projection, the
largest matrix of the model. For such short, wide products MKL's ``F.linear`` reaches about a
third of the CPU's float32 rate; oneDNN with the weight reordered once into its blocked layout
was 1.6-2x faster on that product alone at 32-128 rows and d_model 256, V 8,000 (2 threads,
AVX2; a micro-benchmark while building this, not kept). On whole decodes, measured with it on
and off in ``python benchmarks/decode_paths.py``: greedy 1.18x, beam 4 1.08x (Transformer) on an
AVX2 CPU, 0.95-1.03x on an AVX-512 one (MKL's own product is efficient there). This is
the same primitive ``torch.compile`` uses for frozen CPU linears (``mkldnn._linear_pointwise``),
called directly because compiling pays only for long decoding jobs on the CPUs we target (greedy
1.36x after 74 s of compiling; ``benchmarks/compile.py`` and the README).

Packing happens only inside :func:`packed_projections`, which every search of
:mod:`s2s_tasks.generation` enters. The packed copy is kept (in a weak dictionary beside the
module, so copying, pickling or saving the module never meets the opaque oneDNN tensor; one extra
copy of the matrix, 8 MB at V 8,000, D 256) and re-made when the weights change. Version counters
alone miss changes: Lightning's weight-averaging callbacks (``EMAWeightAveraging``,
``StochasticWeightAveraging``) swap averaged weights in and out through ``param.data.copy_``, and
torch's fused AdamW updates in place, neither moving the counters (torch 2.13). So the first use
in each search also compares a fingerprint of the weight (its product with a fixed random vector,
one matrix-vector product: a fraction of a millisecond) and the bias with those of the packed
copy; within a search the pointers and version counters suffice. Re-packing every search
instead would cost a reorder of the matrix per search, which a server would pay per request: 1.3
ms at V 8,000, D 256 and 27 ms at 32,000 x 512, against 0.26 and 2.3 ms for the fingerprint (2
threads, AVX-512; a measurement while building this, not kept). A change that moves no row's
product with the random vector beyond rounding is not seen: one that alters the weights by about
their rounding error.

Used only where it is exactly a linear layer's job and safe: float32 CPU tensors, no autograd,
no autocast, not while tracing, scripting or exporting (ONNX and TorchScript see the plain
``nn.Linear``), and a PyTorch built with oneDNN. Everything else calls the layer itself.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

#: a batch-size hint for oneDNN's weight layout; 32-128 rows all run at the same speed with it
_PACK_ROWS_HINT = 64


class _Packed(NamedTuple):
    key: tuple  # data pointers and version counters of weight and bias
    fingerprint: Tensor  # weight @ a fixed random vector, (out_features,)
    bias: Optional[Tensor]  # a copy of the bias
    packed: Tensor  # the oneDNN-packed weight
    search: int  # the search that last checked the fingerprint


#: module -> its packed weight; an entry goes with its module
_PACKED: "weakref.WeakKeyDictionary[nn.Linear, _Packed]" = weakref.WeakKeyDictionary()
#: open packed_projections scopes (searches may run in several threads of a server), and a count
#: of the times the first of them opened: the search that fingerprints are checked once in
_OPEN_SCOPES = 0
_SEARCH = 0
_SCOPE_LOCK = threading.Lock()
_PROBES: Dict[int, Tensor] = {}  # in_features -> the fixed random vector of the fingerprints


@contextlib.contextmanager
def packed_projections() -> Iterator[None]:
    """Within this scope (a search) :func:`inference_linear` uses packed weights: packed at first
    use, or the earlier packing if the weights did not change since (see the module docstring).
    Scopes nest and may be open in several threads at once."""
    global _OPEN_SCOPES, _SEARCH
    with _SCOPE_LOCK:
        if _OPEN_SCOPES == 0:
            _SEARCH += 1
        _OPEN_SCOPES += 1
    try:
        yield
    finally:
        with _SCOPE_LOCK:
            _OPEN_SCOPES -= 1


def _fingerprint(weight: Tensor) -> Tensor:
    """``weight @ r`` for a fixed standard-normal ``r`` of ``in_features`` values: ``(out_features,)``."""
    probe = _PROBES.get(weight.size(1))
    if probe is None:
        probe = _PROBES[weight.size(1)] = torch.randn(weight.size(1), generator=torch.Generator().manual_seed(0))
    return torch.mv(weight, probe)


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
    if not _AVAILABLE or _OPEN_SCOPES == 0 or type(linear) is not nn.Linear:  # quantized, LoRA ... layers: their own forward
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
    with torch.no_grad():
        weight, bias = linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
        if cached is not None and cached.key == key:
            if cached.search == _SEARCH:
                return cached.packed
            unchanged = torch.equal(_fingerprint(weight), cached.fingerprint) and (
                (bias is None and cached.bias is None)
                or (bias is not None and cached.bias is not None and torch.equal(bias, cached.bias))
            )
            if unchanged:
                _PACKED[linear] = cached._replace(search=_SEARCH)
                return cached.packed
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_ROWS_HINT)
        _PACKED[linear] = _Packed(key, _fingerprint(weight), None if bias is None else bias.clone(), packed, _SEARCH)
    return packed


def inference_linear(linear: nn.Module, x: Tensor) -> Tensor:
    """``linear(x)`` for ``x`` of shape ``(..., in_features)`` -> ``(..., out_features)``, through the
    oneDNN-packed weight inside :func:`packed_projections` where that is safe (see the module
    docstring), else the layer's own call."""
    if not _usable(linear, x):
        return linear(x)
    bias = linear.bias.detach() if linear.bias is not None else None
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), _packed(linear), bias, "none", [], "")
