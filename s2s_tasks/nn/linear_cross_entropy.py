"""The output projection and the label-smoothed cross-entropy in one pass over row chunks.

A training step of a sequence model ends with ``logits = h W^T + b`` over the whole vocabulary,
``(N, V)`` for ``N`` target tokens, then a float32 log-softmax of it, and the backward pass
writes the same ``(N, V)`` float32 gradient again. At ``N`` 2,048 and ``V`` 8,000 each of these
tensors is 65 MB, so the loss is bound by memory traffic, not arithmetic: in a profiled bf16
step the log-softmax alone, forward and backward, was about a tenth of the step.

:func:`linear_cross_entropy` never materialises them. It multiplies ``rows`` rows at a time
and takes each chunk's float32 softmax ``P``, from which it sums the losses (the
label-smoothing term needs only the mean logit of a row, ``h . mean_v W_v + mean_v b_v``). The
gradient is linear in the gradients of the two outputs (loss and NLL), and only its softmax part
needs the logits; so when gradients are wanted the same pass, while the chunk is in cache,
multiplies ``P`` into ``P W`` and ``P^T h`` and sums its columns, and backward adds the
``onehot`` parts (rows of ``W`` and of ``h`` picked by the targets) and the constant part (a
rank-one term) with the gradients' scales. In a low-precision dtype (bf16 autocast) the chunks'
``P`` are gathered, up to 2**24 elements (32 MB), so that ``P^T h`` is one product and one
conversion to float32 instead of one per chunk. This is the scheme of fused "linear
cross-entropy" kernels (e.g. Liger-Kernel's, Hsu et al., 2024, which also take the gradient in
the forward pass), written with PyTorch operations. Measured at N 2,048, D 256, V 8,000 on 2
threads of an AVX-512/AMX CPU (forward and backward of projection + loss; a micro-benchmark
while building the first version, over four runs on a noisy machine; the whole training step is
measured in ``benchmarks/speed.py``): float32 180-200 -> 129-146 ms, bf16 autocast 125-147 ->
60-64 ms at 256 rows per chunk (128 and 512 rows: bf16 65-82 ms). That first version recomputed
each chunk's logits in backward (one more matrix product) and took a log-softmax in forward and
a softmax in backward; the current one, against it, interleaved in one process on an AMD EPYC
(2 threads, ad hoc): float32 112 -> 87 ms, bf16 70 -> 62 ms.

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
from torch.autograd.function import once_differentiable

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
    """Forward over row chunks (module docstring), computing in the same pass, when gradients are
    wanted, the parts of the gradients that need the softmax. Under autocast the operands are cast
    to the autocast dtype once per pass, not per chunk, and the products run in it; the softmax
    and every sum run in float32 (float64 for float64 inputs)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Optional[Tensor], target: Tensor, label_smoothing: float, rows: int,
        wants: Tuple[bool, bool, bool],
    ) -> Tuple[Tensor, Tensor]:
        n, vocab = hidden.size(0), weight.size(0)
        autocast = _autocast_state(hidden.device)
        h, w, b = _operands(hidden, weight, bias, autocast)
        acc = torch.promote_types(torch.float32, hidden.dtype)
        nll = torch.zeros((), dtype=acc, device=hidden.device)
        lse_sum = torch.zeros((), dtype=acc, device=hidden.device)
        # P = softmax(z): the loss's gradient is linear in the two outputs' gradients, and the only
        # part of it that needs the logits is P's: P W (N, D), P^T h (V, D) and P's column sums (V,)
        # are taken here, from the chunk in hand, instead of recomputing every chunk's logits in
        # backward (one matrix product of four, and a softmax pass, saved)
        want_h, want_w, want_b = wants  # False for a missing bias (linear_cross_entropy)
        p_h = torch.empty(hidden.shape, dtype=acc, device=hidden.device) if want_h else None
        p_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_w else None
        p_b = torch.zeros(vocab, dtype=acc, device=weight.device) if want_b else None
        # In a low-precision dtype a chunk's P^T h comes out of the product in that dtype and must
        # be added to the float32 sum (a slow conversion of the whole (V, D) matrix); so chunks
        # are gathered in a buffer of up to _GROUP_ELEMENTS and multiplied once per group.
        low = w.dtype != acc
        group = max(rows, _GROUP_ELEMENTS // vocab // rows * rows) if low and want_w else rows
        with torch.autocast(hidden.device.type, enabled=False):
            for group_start in range(0, n, group):
                group_end = min(group_start + group, n)
                buffer = torch.empty(group_end - group_start, vocab, dtype=w.dtype, device=w.device) if group > rows else None
                for start in range(group_start, group_end, rows):
                    h_chunk = h[start : start + rows]
                    t = target[start : start + rows].unsqueeze(1)
                    logits = linear(h_chunk, w, b)
                    # P in float32 (float64) however low the logits' dtype, in one pass; its largest
                    # value exp(max z - lse) is at least 1 / V, so lse = max z - log max P is exact
                    # to rounding, and log p_t = z_t - lse even where p_t underflows. A softmax and
                    # two maxima took 0.7 ms of a (256, 8000) bf16 chunk where a log-softmax and
                    # the exponential of its output took 1.4 (2 threads, AMD EPYC; ad hoc)
                    probs = torch.softmax(logits, dim=-1, dtype=acc)
                    lse = logits.amax(dim=1, keepdim=True).to(acc) - probs.amax(dim=1, keepdim=True).log_()
                    nll += (lse - logits.gather(1, t).to(acc)).sum()
                    if label_smoothing > 0:
                        lse_sum += lse.sum()
                    if not (want_h or want_w or want_b):
                        continue
                    if p_b is not None:
                        p_b += probs.sum(0)
                    p = probs.to(w.dtype) if low else probs  # the products' dtype (autocast's)
                    if p_h is not None:
                        p_h[start : start + rows] = matmul(p, w)
                    if buffer is not None:
                        buffer[start - group_start : start - group_start + p.size(0)] = p
                    elif p_w is not None:
                        if low or onednn_linear.applies(p, h_chunk):
                            p_w += matmul(p.t(), h_chunk)
                        else:
                            p_w.addmm_(p.t(), h_chunk)  # accumulates without a temporary
                if buffer is not None and p_w is not None:
                    p_w += matmul(buffer.t(), h[group_start:group_end])
            loss = nll
            if label_smoothing > 0:
                # -mean_v log p_v = lse - mean_v z_v, and mean_v z_v = h . mean_v W_v + mean_v b_v:
                # one (D,) product per row instead of a pass over the logits
                mean_logit = hidden.to(acc).sum(0) @ weight.to(acc).mean(0) + (0.0 if bias is None else n * bias.to(acc).mean())
                loss = (1.0 - label_smoothing) * nll + label_smoothing * (lse_sum - mean_logit)
        ctx.save_for_backward(hidden, weight, bias, target, p_h, p_w, p_b)
        ctx.label_smoothing = label_smoothing
        return loss, nll

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor, grad_nll: Tensor):  # type: ignore[override]
        hidden, weight, bias, target, p_h, p_w, p_b = ctx.saved_tensors
        eps = ctx.label_smoothing
        acc, vocab, n = torch.promote_types(torch.float32, hidden.dtype), weight.size(0), hidden.size(0)
        # d(g_loss * loss + g_nll * nll)/dz = s softmax(z) + a onehot(target) - c, with
        # s = g_loss + g_nll, a = -(g_loss (1 - eps) + g_nll), c = g_loss eps / V: the softmax
        # parts come from forward, the onehot parts are rows of W and of h picked by the targets,
        # and the constant enters as a rank-one term
        g_loss, g_nll = float(grad_loss), float(grad_nll)
        s, a, c = g_loss + g_nll, -(g_loss * (1.0 - eps) + g_nll), g_loss * eps / vocab
        grad_hidden = grad_weight = grad_bias = None
        for wanted, part in zip(ctx.needs_input_grad[:3], (p_h, p_w, p_b)):
            if wanted and part is None:  # linear_cross_entropy tells forward which gradients will be wanted
                raise RuntimeError("linear_cross_entropy: a gradient is wanted that the forward pass was not told to prepare")
        if ctx.needs_input_grad[0]:
            grad_hidden = p_h * s
            grad_hidden += weight.to(acc).index_select(0, target).mul_(a)
            if c:
                grad_hidden -= c * weight.to(acc).sum(0)
            grad_hidden = grad_hidden.to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = p_w * s
            grad_weight.index_add_(0, target, hidden.to(acc), alpha=a)
            if c:
                grad_weight -= c * hidden.to(acc).sum(0)
            grad_weight = grad_weight.to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = p_b * s
            grad_bias.index_add_(0, target, torch.full(target.shape, a, dtype=acc, device=target.device))
            if c:
                grad_bias -= c * n
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None


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
    # the forward pass prepares the gradients of the inputs that will get one (see _LinearCrossEntropy)
    grad = torch.is_grad_enabled()
    wants = tuple(grad and t is not None and t.requires_grad for t in (hidden, weight, bias))
    loss, nll = _LinearCrossEntropy.apply(hidden, weight, bias, target, float(label_smoothing), chunk, wants)
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
