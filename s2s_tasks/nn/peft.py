"""Parameter-efficient fine-tuning: a trained network stays frozen and small added modules learn.

* :class:`LoRALinear` -- low-rank adaptation of a linear layer (Hu et al., 2021).
* :class:`BottleneckAdapter` -- bottleneck adapter after a Transformer sublayer (Houlsby et al., 2019).
* :func:`add_lora`, :func:`add_adapters` -- put them into a network in place;
  :func:`freeze_base` -- leave only them (and the modules named in ``keep``) trainable.

Both start as the identity (``B = 0``; the adapter's up-projection ``= 0``), so an adapted network
computes exactly what the trained one did until the first update. Neither renames a weight of the
network (``LoRALinear`` is an ``nn.Linear`` that keeps ``weight`` and ``bias``; adapters fill the
empty ``*_adapter`` slots of the Transformer layers), so checkpoints of the network load into the
adapted one as they are, and only the added tensors (``lora_A``, ``lora_B``, ``*_adapter.*``) are new.

Targets (``add_lora(..., targets)``):

* ``"attention"``: the projections of :class:`~s2s_tasks.nn.attention.MultiHeadAttention`, the fused
  ``W^Q, W^K, W^V`` (``in_proj``, ``(3 D, D)``: one rank-``r`` update of the fused matrix) and
  ``W^O`` (``out_proj``); in RNN decoders the layers of the attention mechanism (Bahdanau / Luong).
* ``"ffn"``: both linears of every Transformer feed-forward block; in RNN decoders the other
  feed-forward layers, the attentional-vector layer ``W_c`` and the bridge to the initial state.

Embeddings, recurrent weights (``nn.LSTM``/``nn.GRU``), output projections and copy gates are never
adapted. Shapes: ``*`` any leading dimensions, ``D`` model size, ``r`` rank, ``m`` bottleneck size.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionMechanism, MultiHeadAttention
from .decoders import RNNDecoder, TransformerDecoderLayer
from .dropout import Dropout
from .encoders import FeedForward, TransformerEncoderLayer
from .pretrained import hf_adapter_sites, hf_lora_sites, is_pretrained_network

LORA_TARGETS = ("attention", "ffn")
#: the adapter slots of a Transformer layer (Houlsby placement: after self-attention and after the FFN)
ADAPTER_SLOTS = ("self_attn_adapter", "ffn_adapter")


class LoRALinear(nn.Linear):
    """A linear layer with a trainable low-rank update (Hu et al., 2021, eq. 3):

    ``h = W x + b + (alpha / r) B A x``, ``A (r, in)``, ``B (out, r)``, ``(*, in) -> (*, out)``.

    ``A`` starts Kaiming-uniform and ``B`` at zero, so ``B A = 0`` and the layer starts as the
    plain ``W x + b`` (Hu et al., 2021, §4.1); the scale ``alpha / r`` keeps the update's size
    independent of ``r``. ``dropout`` applies to the input of the low-rank path only.
    ``weight`` and ``bias`` keep their names, so state dicts of the plain layer load as they are.

    Args:
        rank: ``r >= 1``.
        alpha: numerator of the scale ``alpha / r``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if rank < 1:
            raise ValueError(f"the LoRA rank must be at least 1, got {rank}")
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank, device=device, dtype=dtype))
        self.lora_dropout = Dropout(dropout)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """``A`` as ``nn.Linear`` initialises a weight (Kaiming-uniform), ``B = 0``."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> "LoRALinear":
        """A ``LoRALinear`` over the very ``weight`` and ``bias`` parameters of ``linear`` (tied
        weights stay tied); only ``lora_A`` and ``lora_B`` are new."""
        weight = linear.weight
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, rank=rank, alpha=alpha,
                    dropout=dropout, device=weight.device, dtype=weight.dtype)
        layer.weight = weight
        layer.bias = linear.bias
        return layer

    def _update(self, x: Tensor, rows: slice) -> Tensor:
        """``(alpha / r) B[rows] A x``: ``(*, in) -> (*, rows)``."""
        return self.scaling * F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B[rows])

    def forward(self, x: Tensor) -> Tensor:
        """``(*, in) -> (*, out)``."""
        return F.linear(x, self.weight, self.bias) + self._update(x, slice(None))

    def forward_rows(self, x: Tensor, rows: slice) -> Tensor:
        """Output features ``rows`` only, ``(*, in) -> (*, len(rows))``: one of the fused
        projections of :class:`~s2s_tasks.nn.attention.MultiHeadAttention` (e.g. ``W^K, W^V`` of
        cross-attention), each with its rows of the update."""
        bias = None if self.bias is None else self.bias[rows]
        return F.linear(x, self.weight[rows], bias) + self._update(x, rows)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


class BottleneckAdapter(nn.Module):
    """Bottleneck adapter (Houlsby et al., 2019, §2.1 and fig. 2):

    ``adapter(h) = h + W_up f(W_down h + b_down) + b_up``, ``(*, D) -> (*, D)``, ``W_down (m, D)``,
    ``W_up (D, m)``, ``f`` = GELU.

    Houlsby et al. initialise near the identity so that training starts from the trained network;
    here ``W_up`` and ``b_up`` start at exactly zero (the limit of their near-zero initialisation),
    so the adapter starts as the identity, and ``W_down`` Kaiming-uniform so that ``W_up`` gets
    gradients from the first step.
    """

    def __init__(self, d_model: int, bottleneck: int) -> None:
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f"the adapter bottleneck size must be at least 1, got {bottleneck}")
        self.down = nn.Linear(d_model, bottleneck)
        self.activation = nn.GELU()
        self.up = nn.Linear(bottleneck, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.activation(self.down(h)))


class AdaptedLinear(nn.Linear):
    """A linear layer followed by a :class:`BottleneckAdapter` on its output: where adapters go in
    pretrained networks, whose layers have no adapter slots (the output projections of the
    self-attention and feed-forward sublayers, before the residual sum: Houlsby et al., 2019).
    ``weight`` and ``bias`` keep their names, so the network's state dicts load as they are.

    ``(*, in) -> (*, out)``."""

    def __init__(self, in_features: int, out_features: int, bottleneck: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.adapter = BottleneckAdapter(out_features, bottleneck)

    @classmethod
    def from_linear(cls, linear: nn.Linear, bottleneck: int) -> "AdaptedLinear":
        """An ``AdaptedLinear`` over the very ``weight`` and ``bias`` of ``linear``; only the adapter is new."""
        weight = linear.weight
        layer = cls(linear.in_features, linear.out_features, bottleneck, bias=linear.bias is not None).to(
            device=weight.device, dtype=weight.dtype)
        layer.weight = weight
        layer.bias = linear.bias
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(F.linear(x, self.weight, self.bias))


# --------------------------------------------------------------------------------------------- insertion
def _lora_sites(module: nn.Module, targets: Sequence[str]) -> Iterator[Tuple[nn.Module, str]]:
    """``(parent, attribute)`` of every ``nn.Linear`` that ``targets`` select in ``module``."""
    for parent in module.modules():
        names: List[str] = []
        if "attention" in targets and isinstance(parent, MultiHeadAttention):
            names = ["in_proj", "out_proj"]
        elif "attention" in targets and isinstance(parent, AttentionMechanism):
            names = [name for name, child in parent.named_children() if isinstance(child, nn.Linear)]
        elif "ffn" in targets and isinstance(parent, FeedForward):
            parent = parent.net
            names = [name for name, child in parent.named_children() if isinstance(child, nn.Linear)]
        elif "ffn" in targets and isinstance(parent, RNNDecoder):
            names = ["att_vector_layer", "bridge"]
        for name in names:
            yield parent, name


def add_lora(
    module: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, targets: Sequence[str] = LORA_TARGETS
) -> List[str]:
    """Replace the linear layers that ``targets`` select (``"attention"``, ``"ffn"``; see the module
    docstring) by :class:`LoRALinear` layers over the same weights, in place.

    Returns the qualified names of the adapted layers (empty when ``module`` has none of them,
    e.g. an RNN encoder). Layers already adapted are left as they are.
    """
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown or not targets:
        raise ValueError(f"LoRA targets must be a non-empty list of {list(LORA_TARGETS)}, got {list(targets)}")
    if rank < 1:
        raise ValueError(f"the LoRA rank must be at least 1, got {rank}")
    names = {id(m): name for name, m in module.named_modules()}
    adapted = []
    sites = hf_lora_sites(module, targets) if is_pretrained_network(module) else list(_lora_sites(module, targets))
    for parent, attribute in sites:
        layer = getattr(parent, attribute)
        if isinstance(layer, LoRALinear):
            continue
        setattr(parent, attribute, LoRALinear.from_linear(layer, rank=rank, alpha=alpha, dropout=dropout))
        adapted.append(f"{names[id(parent)]}.{attribute}".lstrip("."))
    return adapted


def add_adapters(module: nn.Module, bottleneck: int = 64) -> List[str]:
    """Put a :class:`BottleneckAdapter` into every adapter slot of the Transformer layers of
    ``module``, in place: after the self-attention and after the feed-forward sublayer of each
    encoder and decoder layer, on the sublayer's output before the residual sum (Houlsby et al.,
    2019, fig. 2; decoder cross-attention gets none, as in Houlsby's configuration of AdapterHub).

    Returns the qualified names of the new adapters.

    Raises:
        ValueError: ``module`` has no Transformer layer (e.g. an RNN), so there is nowhere to put one.
    """
    added = []
    if is_pretrained_network(module):
        names = {id(m): name for name, m in module.named_modules()}
        for parent, attribute in hf_adapter_sites(module):
            layer = getattr(parent, attribute)
            if not isinstance(layer, AdaptedLinear):
                setattr(parent, attribute, AdaptedLinear.from_linear(layer, bottleneck))
                added.append(f"{names[id(parent)]}.{attribute}.adapter".lstrip("."))
        if not added and not any(isinstance(m, AdaptedLinear) for m in module.modules()):
            raise ValueError("this pretrained network has no self-attention or feed-forward output layer that s2s-tasks "
                             "recognises for adapters; use --model.peft lora")
        return added
    for name, layer in module.named_modules():
        if not isinstance(layer, (TransformerEncoderLayer, TransformerDecoderLayer)):
            continue
        d_model = layer.self_attn.d_model
        for slot in ADAPTER_SLOTS:
            if not isinstance(getattr(layer, slot), BottleneckAdapter):
                device, dtype = layer.self_attn.out_proj.weight.device, layer.self_attn.out_proj.weight.dtype
                setattr(layer, slot, BottleneckAdapter(d_model, bottleneck).to(device=device, dtype=dtype))
                added.append(f"{name}.{slot}".lstrip("."))
    if not added and not any(isinstance(m, BottleneckAdapter) for m in module.modules()):
        raise ValueError("bottleneck adapters go after the sublayers of Transformer layers, and this network has none "
                         "(an RNN network has no such sublayers: use LoRA there)")
    return added


# --------------------------------------------------------------------------------------------- freezing
def peft_parameters(module: nn.Module) -> Iterator[Tuple[str, nn.Parameter]]:
    """``(qualified name, parameter)`` of every LoRA and adapter parameter of ``module``."""
    for name, child in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(child, LoRALinear):
            yield prefix + "lora_A", child.lora_A
            yield prefix + "lora_B", child.lora_B
        elif isinstance(child, BottleneckAdapter):
            for param_name, param in child.named_parameters():
                yield prefix + param_name, param


def freeze_base(module: nn.Module, keep: Iterable[nn.Module] = (), train_norms: bool = False) -> None:
    """Freeze (``requires_grad = False``) every parameter of ``module`` except

    * the LoRA and adapter parameters (:func:`peft_parameters`),
    * the parameters of the modules in ``keep`` (e.g. a task head over a new label set, which
      must be learned in full),
    * with ``train_norms``, the LayerNorm gains and biases (a few ``2 D`` per layer).

    Everything else (embeddings, attention and FFN weights and biases, recurrent weights, output
    projections) keeps the values it has.
    """
    trainable = {id(param) for _, param in peft_parameters(module)}
    trainable |= {id(param) for kept in keep for param in kept.parameters()}
    if train_norms:
        trainable |= {id(param) for norm in module.modules() if isinstance(norm, nn.LayerNorm) for param in norm.parameters()}
    for param in module.parameters():
        param.requires_grad_(id(param) in trainable)


def count_parameters(module: nn.Module) -> Tuple[int, int]:
    """``(trainable, total)`` numbers of parameters, tied parameters counted once."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
