"""Linear layers at inference time, with their weights pre-packed by oneDNN on the CPU.

A decoding step multiplies a few rows (batch x beams) by every matrix of the decoder and by the
``(V, D)`` output projection, the largest. oneDNN with a weight reordered once into its blocked
layout is the fastest float32 product for such short rows: at 32 and 128 rows, d_model 256, it
ran the layers' products 1.3-3.0x and the vocabulary projection 2.6-4.1x faster than MKL's
``F.linear`` on an AMD EPYC with AVX-512 (2 threads; ``python benchmarks/linear_kernels.py``),
1.6-2x on the vocabulary projection on an AVX2 CPU, and about level with MKL on an Intel Xeon
(earlier sessions' runs of ``benchmarks/decode_paths.py``, which switches the packing on and
off on whole decodes). This is the same primitive ``torch.compile`` uses for frozen CPU linears
(``mkldnn._linear_pointwise``), called directly because compiling pays only for long decoding
jobs on the CPUs we target (greedy 1.36x after 74 s of compiling; ``benchmarks/compile.py`` and
the README). Layers reach it through :func:`s2s_tasks.nn.onednn_linear.apply_linear`, which
uses the packed weight where :func:`usable` allows and oneDNN's unpacked product otherwise.

Packing happens only inside :func:`packed_projections`, which every search of
:mod:`s2s_tasks.generation` enters, and with it ``Seq2SeqModule``'s decoding and evaluation
steps (so the encoder's products are packed too). The packed copy is kept (in a weak dictionary
beside the module, so copying, pickling or saving the module never meets the opaque oneDNN
tensor; one extra copy of the weights: 8 MB for the projection at V 8,000, D 256, 30 MB for a
7.6M-parameter model) and re-made when the weights change. Version counters
alone miss changes: Lightning's weight-averaging callbacks (``EMAWeightAveraging``,
``StochasticWeightAveraging``) swap averaged weights in and out through ``param.data.copy_``, and
torch's fused AdamW updates in place, neither moving the counters (torch 2.13). So the first use
in each search also compares a fingerprint of each weight (its product with a fixed random vector,
one matrix-vector product per layer: about 2.5 ms a search for all 31 matrices of a 7.6M-parameter
model, 2 threads) and the bias with those of the packed
copy; within a search the pointers and version counters suffice. Re-packing every search
instead would cost a reorder of the matrix per search, which a server would pay per request: 1.3
ms at V 8,000, D 256 and 27 ms at 32,000 x 512, against 0.26 and 2.3 ms for the fingerprint (2
threads, AVX-512; a measurement while building this, not kept). A change that moves no row's
product with the random vector beyond rounding is not seen: one that alters the weights by about
their rounding error.

Used only where it is exactly a linear layer's job and safe: a plain ``nn.Linear``, float32 CPU
tensors, no autograd, no autocast, not while tracing, scripting or exporting (ONNX and
TorchScript see the plain ``nn.Linear``), a PyTorch built with oneDNN, and the environment
variable ``S2S_TASKS_ONEDNN_LINEAR`` not ``0``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

Rows = Tuple[int, int]

#: a batch-size hint for oneDNN's weight layout; 32-128 rows all run at the same speed with it
_PACK_ROWS_HINT = 64


class _Packed(NamedTuple):
    key: tuple  # data pointers and version counters of weight and bias
    fingerprint: Tensor  # weight @ a fixed random vector, (out_features,)
    bias: Optional[Tensor]  # a copy of the bias
    packs: Dict[Rows, Tensor]  # (first, end) output rows -> the oneDNN-packed weight rows
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
    """Within this scope (a search) :func:`~s2s_tasks.nn.onednn_linear.apply_linear` uses packed
    weights: packed at first use, or the earlier packing if the weights did not change since (see
    the module docstring). Scopes nest and may be open in several threads at once."""
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


#: set to ``0`` to keep MKL for every float32 product: no packed weights here, no oneDNN products
#: in :mod:`s2s_tasks.nn.onednn_linear` (read at import)
ONEDNN_SWITCH = "S2S_TASKS_ONEDNN_LINEAR"


def onednn_allowed() -> bool:
    """Whether the environment allows oneDNN products (:data:`ONEDNN_SWITCH` is not ``0``)."""
    return os.environ.get(ONEDNN_SWITCH, "1").strip() != "0"


_AVAILABLE = _ops_available() and onednn_allowed()


def plain_linear(layer: nn.Module) -> bool:
    """Whether ``layer`` is a plain ``nn.Linear`` whose call is exactly ``F.linear``: not a
    subclass (LoRA, quantized ... layers have their own forward) and no hooks that its call
    would run (a user's, or ``torch.nn.utils.prune``'s, which recomputes the weight)."""
    if type(layer) is not nn.Linear:
        return False
    own = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    if any(getattr(layer, name, None) for name in own):
        return False
    hooks = torch.nn.modules.module
    return not any(getattr(hooks, f"_global{name}", None) for name in own)


def usable(linear: nn.Module, x: Tensor) -> bool:
    """Whether ``linear(x)`` may use the packed weight here (see the module docstring)."""
    if not _AVAILABLE or _OPEN_SCOPES == 0 or not plain_linear(linear):
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


def _packed(linear: nn.Linear, rows: Rows) -> Tensor:
    """The packed weight rows ``rows`` of ``linear``: the earlier packing while the weights did not
    change, else packed now (every row range of the layer is dropped when the weights change)."""
    key = _key(linear)
    cached = _PACKED.get(linear)
    with torch.no_grad():
        weight, bias = linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
        if cached is None or cached.key != key or cached.search != _SEARCH:
            # new weights by their pointers and counters, or the first use in this search, where
            # the fingerprint also catches swaps that move no counter (module docstring)
            fingerprint = _fingerprint(weight)
            same_bias = cached is not None and (
                bias is None if cached.bias is None else bias is not None and torch.equal(bias, cached.bias)
            )
            if same_bias and cached.key == key and torch.equal(fingerprint, cached.fingerprint):
                cached = cached._replace(search=_SEARCH)
            else:
                cached = _Packed(key, fingerprint, None if bias is None else bias.clone(), {}, _SEARCH)
            _PACKED[linear] = cached
        packed = cached.packs.get(rows)
        if packed is None:
            packed = cached.packs[rows] = torch.ops.mkldnn._reorder_linear_weight(weight[rows[0]:rows[1]], _PACK_ROWS_HINT)
    return packed


def packed_product(linear: nn.Linear, x: Tensor, rows: Optional[slice] = None) -> Tensor:
    """``linear(x)`` (with ``rows``, only those output features) through the packed weight, for
    ``x (..., in_features)`` where :func:`usable` holds; callers use
    :func:`s2s_tasks.nn.onednn_linear.apply_linear`, which checks that."""
    span = (0, linear.weight.size(0)) if rows is None else rows.indices(linear.weight.size(0))[:2]
    bias = linear.bias.detach()[span[0]:span[1]] if linear.bias is not None else None
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), _packed(linear, span), bias, "none", [], "")
