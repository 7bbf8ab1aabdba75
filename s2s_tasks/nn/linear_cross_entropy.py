"""The output projection and the label-smoothed cross-entropy in one pass over row chunks.

A training step of a sequence model ends with ``logits = h W^T + b`` over the whole vocabulary,
``(N, V)`` for ``N`` target tokens, then a float32 log-softmax of it, and the backward pass
writes the same ``(N, V)`` float32 gradient again. At ``N`` 2,048 and ``V`` 8,000 each of these
tensors is 65 MB, so the loss is bound by memory traffic, not arithmetic: in a profiled bf16
step the log-softmax alone, forward and backward, was about a tenth of the step.

:func:`linear_cross_entropy` never materialises them. The forward pass multiplies ``rows``
rows at a time, takes each chunk's float32 log-softmax at the targets and sums the losses (the
label-smoothing term needs only the mean logit of a row, ``h . mean_v W_v + mean_v b_v``); the
backward pass recomputes each chunk's logits (one more matrix product), turns them into
``softmax + onehot`` terms and multiplies them into the gradients of ``h``, ``W`` and ``b``
while the chunk is still in cache; the gradient's scale and its constant part are applied once
to the sums. In a low-precision dtype (bf16 autocast) the chunks' gradients are gathered, up to
2**24 elements (32 MB), so that the weight gradient is one product and one conversion to float32
instead of one per chunk. This is the scheme of fused "linear cross-entropy" kernels (e.g.
Liger-Kernel's, Hsu et al., 2024), written with PyTorch operations. Measured at N 2,048, D 256,
V 8,000 on 2 threads of an AVX-512/AMX CPU (forward and backward of projection + loss; a
micro-benchmark while building this, over four runs on a noisy machine; the whole training step
is measured in ``benchmarks/speed.py``): float32 180-200 -> 129-146 ms, bf16 autocast 125-147 ->
60-64 ms at 256 rows per chunk (128 and 512 rows: bf16 65-82 ms).

The loss is the one ``F.cross_entropy(..., label_smoothing=eps, reduction="sum")`` defines
(Szegedy et al., 2016, §7): per token ``(1 - eps) * NLL + eps * mean_v(-log p_v)``, with
``d/dz = softmax(z) - (1 - eps) * onehot(target) - eps / V``.

In float32 on the CPU the products run in oneDNN (:mod:`s2s_tasks.nn.onednn_linear`), as the
model's other linear layers do.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from . import onednn_linear
from .onednn_linear import linear, matmul

#: rows per chunk on the CPU: a (256, 8000) float32 chunk is 8 MB, and 256 was the fastest in
#: bf16 of 128-1,024 in the measurement above (float32 was within noise of it at 128-512)
CPU_CHUNK_ROWS = 256
#: at most this many elements of low-precision gradient are kept for one weight-gradient product
#: (32 MB in bf16): 2,048 rows at V 8,000
_GROUP_ELEMENTS = 1 << 24
#: elsewhere (GPUs) chunks are bounded by memory, about 128 MB of float32 logits each; this
#: size was chosen for memory, not measured for speed
_ACCELERATOR_CHUNK_ELEMENTS = 1 << 25


def default_chunk_rows(device: torch.device, vocab_size: int) -> int:
    """Rows per chunk: :data:`CPU_CHUNK_ROWS` on the CPU, else about 2**25 logits per chunk."""
    if device.type == "cpu":
        return CPU_CHUNK_ROWS
    return max(CPU_CHUNK_ROWS, _ACCELERATOR_CHUNK_ELEMENTS // max(vocab_size, 1))


def _autocast_state(device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype in force on ``device``'s type, or ``None``."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward and backward over row chunks (module docstring). Under autocast the operands are
    cast to the autocast dtype once per pass, not per chunk, and the products run in it; the
    softmax and every sum run in float32 (float64 for float64 inputs)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Optional[Tensor], target: Tensor, label_smoothing: float, rows: int
    ) -> Tuple[Tensor, Tensor]:
        n = hidden.size(0)
        autocast = _autocast_state(hidden.device)
        h, w, b = _operands(hidden, weight, bias, autocast)
        acc = torch.promote_types(torch.float32, hidden.dtype)
        nll = torch.zeros((), dtype=acc, device=hidden.device)
        lse_sum = torch.zeros((), dtype=acc, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, n, rows):
                t = target[start : start + rows].unsqueeze(1)
                logits = linear(h[start : start + rows], w, b)
                # in float32 (float64) however low the logits' dtype, in one pass that writes once
                log_probs = torch.log_softmax(logits, dim=-1, dtype=acc)
                picked = log_probs.gather(1, t)
                nll -= picked.sum()
                if label_smoothing > 0:  # log-sum-exp = z_t - log p_t
                    lse_sum += (logits.gather(1, t).to(acc) - picked).sum()
            loss = nll
            if label_smoothing > 0:
                # -mean_v log p_v = lse - mean_v z_v, and mean_v z_v = h . mean_v W_v + mean_v b_v:
                # one (D,) product per row instead of a pass over the logits
                mean_logit = hidden.to(acc).sum(0) @ weight.to(acc).mean(0) + (0.0 if bias is None else n * bias.to(acc).mean())
                loss = (1.0 - label_smoothing) * nll + label_smoothing * (lse_sum - mean_logit)
        ctx.save_for_backward(hidden, weight, bias, target)
        ctx.label_smoothing, ctx.rows, ctx.autocast = label_smoothing, rows, autocast
        return loss, nll

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, grad_nll: Tensor):  # type: ignore[override]
        hidden, weight, bias, target = ctx.saved_tensors
        eps, rows = ctx.label_smoothing, ctx.rows
        h, w, b = _operands(hidden, weight, bias, ctx.autocast)
        acc, vocab, n = torch.promote_types(torch.float32, hidden.dtype), weight.size(0), hidden.size(0)
        # d(g_loss * loss + g_nll * nll)/dz = s softmax(z) + a onehot(target) - c, with
        # s = g_loss + g_nll, a = -(g_loss (1 - eps) + g_nll), c = g_loss eps / V. A chunk holds
        # softmax(z) + (a / s) onehot; s scales the products once at the end, and the constant c
        # enters them as rank-one terms, so no extra pass over a chunk is needed for either.
        g_loss, g_nll = float(grad_loss), float(grad_nll)
        s, a, c = g_loss + g_nll, -(g_loss * (1.0 - eps) + g_nll), g_loss * eps / vocab
        want_h, want_w, want_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        grad_hidden = torch.empty(hidden.shape, dtype=acc, device=hidden.device) if want_h else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_w else None
        grad_bias = torch.zeros(vocab, dtype=acc, device=weight.device) if want_b else None
        # In a low-precision dtype the weight gradient of a chunk comes out of the product in that
        # dtype and must be added to the float32 sum (a slow conversion of the whole (V, D)
        # matrix); so chunks are gathered in a buffer of up to _GROUP_ELEMENTS and multiplied
        # into the weight gradient once per group.
        low = w.dtype != acc
        group = max(rows, _GROUP_ELEMENTS // vocab // rows * rows) if low and want_w else rows
        with torch.autocast(hidden.device.type, enabled=False):
            for group_start in range(0, n, group):
                group_end = min(group_start + group, n)
                buffer = torch.empty(group_end - group_start, vocab, dtype=w.dtype, device=w.device) if group > rows else None
                for start in range(group_start, group_end, rows):
                    h_chunk = h[start : start + rows]
                    t = target[start : start + rows]
                    logits = linear(h_chunk, w, b)
                    # softmax in float32 inside the kernel, written once in the logits' dtype (as
                    # autocast's own backward would cast the gradient for its products)
                    grad = torch.softmax(logits, dim=-1) if s != 0 else torch.zeros_like(logits)
                    # index_add_ on the flat view: scatter_add_ along dim 1 took 0.6 ms per bf16 chunk
                    at_target = torch.arange(t.numel(), device=t.device) * vocab + t
                    grad.view(-1).index_add_(0, at_target, grad.new_full(t.shape, a / s if s != 0 else a))
                    if grad_bias is not None:
                        grad_bias += grad.sum(0)
                    if grad_hidden is not None:
                        grad_hidden[start : start + rows] = matmul(grad, w)
                    if buffer is not None:
                        buffer[start - group_start : start - group_start + grad.size(0)] = grad
                    elif grad_weight is not None:
                        if low or onednn_linear.applies(grad, h_chunk):
                            grad_weight += matmul(grad.t(), h_chunk)
                        else:
                            grad_weight.addmm_(grad.t(), h_chunk)  # accumulates without a temporary
                if buffer is not None and grad_weight is not None:
                    grad_weight += matmul(buffer.t(), h[group_start:group_end])
            scale = s if s != 0 else 1.0
            for grad_sum, rank_one in ((grad_hidden, weight), (grad_weight, hidden), (grad_bias, None)):
                if grad_sum is None:
                    continue
                grad_sum.mul_(scale)
                if c:
                    grad_sum -= c * (n if rank_one is None else rank_one.to(acc).sum(0))
        return (
            None if grad_hidden is None else grad_hidden.to(hidden.dtype),
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
        )


def _operands(
    hidden: Tensor, weight: Tensor, bias: Optional[Tensor], autocast: Optional[torch.dtype]
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The operands of the chunked products: cast once to the autocast dtype (autocast itself
    would cast the whole weight again for every chunk), else as they are."""
    if autocast is None:
        return hidden, weight, bias
    return hidden.to(autocast), weight.to(autocast), None if bias is None else bias.to(autocast)


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    rows: Optional[int] = None,
) -> Tuple[Tensor, Tensor, int]:
    """Summed label-smoothed cross-entropy of ``F.linear(hidden, weight, bias)`` against ``target``.

    Args:
        hidden: ``(N, D)`` states before the output projection (any float dtype; under autocast
            the products run in the autocast dtype, the softmax in float32).
        weight, bias: the projection, ``(V, D)`` and ``(V,)`` or ``None``.
        target: ``(N,)`` token ids; rows equal to ``ignore_index`` count nothing and are not
            projected at all.
        label_smoothing: ``eps`` in ``[0, 1)``.
        rows: rows per chunk; default :func:`default_chunk_rows`.

    Returns:
        ``(loss, nll, tokens)``: the smoothed loss and the plain negative log-likelihood, both
        float32 sums over the counted rows (``loss`` equals ``nll`` when ``eps`` is 0), and the
        number of counted rows.
    """
    if hidden.dim() != 2 or target.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (N, D) and target (N,), got {tuple(hidden.shape)} and {tuple(target.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    keep = target != ignore_index
    tokens = int(keep.sum())
    if tokens < target.numel():
        hidden, target = hidden[keep], target[keep]
    chunk = rows if rows is not None else default_chunk_rows(hidden.device, weight.size(0))
    if chunk < 1:
        raise ValueError(f"rows must be at least 1, got {chunk}")
    loss, nll = _LinearCrossEntropy.apply(hidden, weight, bias, target, float(label_smoothing), chunk)
    return loss, nll, tokens


def decoder_losses(
    decoder: Any,
    enc_out: Any,
    tgt_in: Tensor,
    tgt_out: Tensor,
    *,
    pad_id: int,
    label_smoothing: float = 0.0,
) -> Optional[Tuple[Tensor, Tensor, int]]:
    """Teacher-forced ``(loss, nll, tokens)`` of a decoder through :func:`linear_cross_entropy`
    (sums over the target tokens that are not ``pad_id``), or ``None`` when the decoder's output
    is more than a plain ``nn.Linear`` of its :meth:`~s2s_tasks.nn.decoders.Decoder.output_features`
    (copy attention, a LoRA-wrapped or quantized projection, a pretrained network): the caller
    then computes the loss from the logits.

    Args:
        decoder: a :class:`~s2s_tasks.nn.decoders.Decoder`.
        enc_out: its :class:`~s2s_tasks.nn.types.EncoderOutput`.
        tgt_in, tgt_out: ``(B, T)`` decoder inputs and next-token targets.
    """
    projection = getattr(decoder, "output_projection", None)
    if type(projection) is not torch.nn.Linear or not hasattr(decoder, "output_features"):
        return None
    features = decoder.output_features(tgt_in, enc_out)
    if features is None:
        return None
    return linear_cross_entropy(
        features.reshape(-1, features.size(-1)), projection.weight, projection.bias, tgt_out.reshape(-1),
        ignore_index=pad_id, label_smoothing=label_smoothing,
    )
