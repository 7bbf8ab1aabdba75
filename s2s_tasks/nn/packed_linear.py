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
uses the packed weight where :func:`packed_product` may and oneDNN's unpacked product otherwise.

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
    weight: Tensor  # the weight and bias tensors packed (kept, so that identity means the same tensor)
    bias: Optional[Tensor]
    versions: Tuple[int, int]  # their version counters then (the bias's 0 without a bias)
    fingerprint: Tensor  # weight @ a fixed random vector, (out_features,)
    bias_copy: Optional[Tensor]  # a copy of the bias values
    packs: Dict[Rows, Tuple[Tensor, Optional[Tensor]]]  # (first, end) output rows -> packed weight rows, bias rows
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
    if layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks or layer._backward_pre_hooks:
        return False
    return not (_hooks._global_forward_hooks or _hooks._global_forward_pre_hooks
                or _hooks._global_backward_hooks or _hooks._global_backward_pre_hooks)


_hooks = torch.nn.modules.module  # the global hook registries, read at every call
_float32 = torch.float32


def capturing_graph() -> bool:
    """Whether a graph is being recorded, which must see plain ``linear``/``mm``: TorchScript
    tracing (ONNX's TorchScript exporter) or scripting, ``torch.compile``, ``torch.export``
    (ONNX's dynamo exporter). Four flag reads, cheap enough for every layer call."""
    return (torch._C._get_tracing_state() is not None or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting())


def packed_product(linear: nn.Module, x: Tensor, rows: Optional[slice] = None, activation: str = "none") -> Optional[Tensor]:
    """``linear(x)`` (with ``rows``, only those output features; with ``activation="relu"``, its
    ReLU, applied by oneDNN as the product's last step) through the packed weight, for ``x (...,
    in_features)``; ``None`` where the packed weight may not be used (see the module docstring):
    callers use :func:`s2s_tasks.nn.onednn_linear.apply_linear`, which then computes it otherwise.

    This runs for every layer at every decoding step, so its checks are ordered cheapest first and
    read the module's dictionaries directly: about 1.4-2 us on top of oneDNN's product (about 12 us
    for a tiny one), where the first version's checks took about 15 (a tiny layer timed in a
    loop, 2 threads, AMD EPYC; ad hoc).
    """
    if not _AVAILABLE or _OPEN_SCOPES == 0 or not plain_linear(linear):
        return None
    if x.dtype is not _float32 or not x.is_cpu:
        return None
    params = linear._parameters
    weight, bias = params["weight"], params["bias"]
    if torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad):
        return None
    if torch.is_autocast_enabled("cpu"):
        return None
    if capturing_graph():
        return None
    cached = _PACKED.get(linear)
    if (
        cached is None or cached.search != _SEARCH or cached.weight is not weight or cached.bias is not bias
        or cached.versions != (weight._version, 0 if bias is None else bias._version)
    ):
        cached = _renew(linear, weight, bias, cached)
        if cached is None:
            return None
    span = (0, weight.size(0)) if rows is None else rows.indices(weight.size(0))[:2]
    pack = cached.packs.get(span)
    if pack is None:
        with torch.no_grad():
            pack = cached.packs[span] = (
                torch.ops.mkldnn._reorder_linear_weight(weight.detach()[span[0]:span[1]], _PACK_ROWS_HINT),
                None if bias is None else bias.detach()[span[0]:span[1]],
            )
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), pack[0], pack[1], activation, [], "")


def _renew(linear: nn.Linear, weight: Tensor, bias: Optional[Tensor], cached: Optional[_Packed]) -> Optional[_Packed]:
    """The cache entry of ``linear`` for this search: ``cached`` (its packings kept) when the weights
    are the ones it packed, else a new entry whose row ranges are packed at first use; ``None``
    for weights that cannot be packed here."""
    if weight.dtype is not _float32 or not weight.is_cpu or (bias is not None and (bias.dtype is not _float32 or not bias.is_cpu)):
        return None
    # inference tensors (weights made under torch.inference_mode) have no version counter to key the cache on
    if weight.is_inference() or (bias is not None and bias.is_inference()):
        return None
    versions = (weight._version, 0 if bias is None else bias._version)
    with torch.no_grad():
        w, b = weight.detach(), None if bias is None else bias.detach()
        # the first use in this search (or other tensors or counters): the fingerprint also
        # catches swaps that move no counter (module docstring)
        fingerprint = _fingerprint(w)
        same = (
            cached is not None and cached.weight is weight and cached.bias is bias and cached.versions == versions
            and (b is None or torch.equal(b, cached.bias_copy)) and torch.equal(fingerprint, cached.fingerprint)
        )
        if same:
            cached = cached._replace(search=_SEARCH)
        else:
            cached = _Packed(weight, bias, versions, fingerprint, None if b is None else b.clone(), {}, _SEARCH)
    _PACKED[linear] = cached
    return cached
