"""Dynamic int8 quantisation of a trained model's linear layers, for CPU inference.

    model = quantize_model(model, "int8")      # in place, returns the model (eval mode)

``int8`` is PyTorch's dynamic quantisation (``torch.ao.quantization.quantize_dynamic``): each
``nn.Linear`` weight is stored as int8 with one scale per layer, activations are quantised on
the fly per batch, and the matrix products run in int8 (fbgemm / oneDNN kernels). Embeddings,
LayerNorms, recurrent weights (``nn.LSTM``/``nn.GRU``) and the CRF stay float32.

What needs care in this project's networks:

* :class:`~s2s_tasks.nn.attention.MultiHeadAttention` slices its fused ``W^Q, W^K, W^V``
  projection (``in_proj``, ``(3 D, D)``) row-wise, which a quantised linear cannot do; it is
  replaced by :class:`Int8FusedProjection`, three int8 ``(D, D)`` linears behind the
  ``forward_rows`` hook that ``MultiHeadAttention`` already calls (the one LoRA uses).
* LoRA layers (:class:`~s2s_tasks.nn.peft.LoRALinear`) are merged first (``W + (alpha/r) B A``
  becomes the plain weight), so the adapted model is quantised as one linear per layer.
* Tied weights (output projection = target embedding): the projection gets its own int8 copy;
  the embedding keeps the float32 matrix. Both compute what the tied pair computed.

Why ``torch.ao`` and not torchao: ``quantize_dynamic`` still works in torch 2.13 (it warns that
it is deprecated in favour of torchao). Measured on a 2-core CPU, one thread, a
``512 -> 2048 -> 512 -> 8000`` linear stack on ``(16, 24, 512)`` inputs (min / median of 20):
float32 65.6 / 83.9 ms; ``torch.ao`` dynamic int8 37.1 / 59.3 ms; torchao 0.18
``Int8DynamicActivationInt8WeightConfig`` 1797 / 2055 ms (eager CPU has no fused kernel for
it: it needs ``torch.compile``); torchao ``Int8WeightOnlyConfig`` 76.3 / 86.6 ms (no faster than
float32). So ``torch.ao`` is used, with its deprecation warning silenced at the one call.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from pytorch_lightning import Callback
from torch import Tensor, nn

QUANTIZE_METHODS = ("int8",)


class Int8FusedProjection(nn.Module):
    """A fused ``(3 D, D)`` projection (``MultiHeadAttention.in_proj``) as three dynamically
    quantised ``(D, D)`` linears (``W^Q``, ``W^K``, ``W^V``), so that any run of whole thirds
    can be computed: ``forward_rows(x, rows)`` with ``rows`` a multiple of ``D`` on both ends.

    ``(*, D) -> (*, len(rows))``.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        out_features, in_features = linear.weight.shape
        if out_features % 3 != 0:
            raise ValueError(f"a fused Q/K/V projection has 3 * D output features, got {out_features}")
        self.d_model = out_features // 3
        parts = []
        weight = linear.weight.detach()
        bias = None if linear.bias is None else linear.bias.detach()
        for i in range(3):
            part = nn.Linear(in_features, self.d_model, bias=bias is not None)
            rows = slice(i * self.d_model, (i + 1) * self.d_model)
            with torch.no_grad():
                part.weight.copy_(weight[rows])
                if bias is not None:
                    part.bias.copy_(bias[rows])
            parts.append(part)
        self.parts = _dynamic_int8(nn.ModuleList(parts))

    def forward_rows(self, x: Tensor, rows: slice) -> Tensor:
        start = 0 if rows.start is None else rows.start
        stop = 3 * self.d_model if rows.stop is None else rows.stop
        if start % self.d_model or stop % self.d_model or rows.step not in (None, 1):
            raise ValueError(f"rows {rows} do not cover whole thirds of the fused projection (D = {self.d_model})")
        outputs = [self.parts[i](x) for i in range(start // self.d_model, stop // self.d_model)]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_rows(x, slice(None))


def _dynamic_int8(module: nn.Module) -> nn.Module:
    """Every plain ``nn.Linear`` of ``module`` -> a dynamically quantised int8 linear."""
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, whose int8 dynamic
        # quantisation is ~30x slower than this on an eager CPU (see the module docstring)
        # (torch 2.13 warns at quantize_dynamic and again at each quantize_per_tensor it calls)
        warnings.filterwarnings("ignore", message=r"(?s).*(torch\.ao\.quantization|quantize_per_tensor)")
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)


def _merge_lora(model: nn.Module) -> int:
    """Replace every LoRA layer by a plain ``nn.Linear`` holding ``W + (alpha / r) B A``; returns how many."""
    from s2s_tasks.nn.peft import LoRALinear

    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                with torch.no_grad():
                    plain.weight.copy_(child.weight + child.scaling * child.lora_B @ child.lora_A)
                    if child.bias is not None:
                        plain.bias.copy_(child.bias)
                setattr(parent, name, plain)
                merged += 1
    return merged


def _replace_fused_projections(model: nn.Module) -> None:
    from s2s_tasks.nn.attention import MultiHeadAttention

    for module in model.modules():
        if isinstance(module, MultiHeadAttention) and isinstance(module.in_proj, nn.Linear):
            module.in_proj = Int8FusedProjection(module.in_proj)


def quantize_model(model: nn.Module, method: str) -> nn.Module:
    """Quantise ``model`` for CPU inference, in place; returns it (in eval mode).

    Args:
        model: a task's LightningModule (or any ``nn.Module`` of ``s2s_tasks.nn`` layers), on the CPU.
        method: ``"int8"``: dynamic int8 quantisation of the linear layers (see the module docstring).

    Raises:
        ValueError: an unknown ``method``, or a model that is not on the CPU.
    """
    if method not in QUANTIZE_METHODS:
        raise ValueError(f"unknown quantisation {method!r}; valid choices: {', '.join(QUANTIZE_METHODS)} "
                         "(or leave it unset for the trained precision)")
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"int8 quantisation runs on the CPU, and the model is on {', '.join(sorted(devices - {'cpu'}))}: "
                         "load it with device='cpu' (s2s-tasks predict: --trainer.accelerator cpu), or drop --quantize")
    if any(p.dtype != torch.float32 for p in model.parameters() if p.is_floating_point()):
        model.float()  # dynamic quantisation reads float32 weights
    model.eval()
    _merge_lora(model)
    _replace_fused_projections(model)
    _dynamic_int8(model)
    return model


def quantized_linear_count(model: nn.Module) -> int:
    """How many dynamically quantised linear layers ``model`` holds."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in model.modules())


class Int8Quantization(Callback):
    """Callback of ``s2s-tasks predict --quantize int8``: quantises the model (already restored
    from ``--ckpt_path``) when prediction starts, with :func:`quantize_model`.

    Args:
        method: a :data:`QUANTIZE_METHODS` value.
    """

    def __init__(self, method: str = "int8") -> None:
        super().__init__()
        if method not in QUANTIZE_METHODS:
            raise ValueError(f"--quantize {method!r} is not a quantisation; valid choices: {', '.join(QUANTIZE_METHODS)}")
        self.method = method
        self.quantized: Optional[int] = None

    def on_predict_start(self, trainer: Any, pl_module: nn.Module) -> None:
        quantize_model(pl_module, self.method)
        self.quantized = quantized_linear_count(pl_module)
