"""Pointer-generator copy attention and the coverage loss.

After See et al., 2017, "Get To The Point: Summarization with Pointer-Generator Networks"
(ACL, arXiv:1704.04368), §2.2 and §2.3. At decoder step ``t``, with attention ``a^t`` over the
source, context vector ``h*_t = sum_i a^t_i h_i``, decoder state ``s_t`` and decoder input
``x_t``:

* eq. 8:  ``p_gen = sigmoid(w_h*^T h*_t + w_s^T s_t + w_x^T x_t + b_ptr)``;
* eq. 9:  ``P(w) = p_gen P_vocab(w) + (1 - p_gen) sum_{i: w_i = w} a^t_i``;
* eq. 10: coverage ``c^t = sum_{t' < t} a^{t'}``;
* eq. 12: coverage loss ``covloss_t = sum_i min(a^t_i, c^t_i)``, added to the NLL with weight
  ``lambda`` (eq. 13, ``model.coverage_loss_weight``).

Our vocabulary is subword and shared between source and target, so every source token already
has a target id: the copy distribution is scattered straight onto the vocabulary ids of the
source tokens, and no extended (per-article out-of-vocabulary) vocabulary is needed.

The decoders return ``log P(w)`` (log of the mixture, clamped away from 0) in place of logits
when copy attention is on. ``log_softmax`` of normalised log-probabilities is the identity, so
search, cross-entropy and label smoothing use them unchanged.

Shapes: ``B`` batch, ``T`` target length, ``S`` source length, ``V`` vocabulary size; ``*``
stands for ``(B,)`` in incremental steps and ``(B, T)`` in teacher forcing.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

#: probabilities are clamped to this before the log, so that tokens neither generated nor copied
#: get a large finite negative log-probability (and no NaN gradient)
COPY_EPS = 1e-12


class PointerGenerator(nn.Module):
    """The generation gate ``p_gen`` (eq. 8) and the mixture of eq. 9.

    Args:
        context_size: size of the context vector ``h*_t``.
        state_size: size of the decoder state ``s_t``.
        input_size: size of the decoder input ``x_t`` (the embedded previous token).
    """

    def __init__(self, context_size: int, state_size: int, input_size: int) -> None:
        super().__init__()
        # One linear layer over [h*_t; s_t; x_t] holds w_h*, w_s, w_x and b_ptr.
        self.gate = nn.Linear(context_size + state_size + input_size, 1)

    def forward(
        self,
        logits: Tensor,
        attention: Tensor,
        context: Tensor,
        state: Tensor,
        inputs: Tensor,
        src_ids: Optional[Tensor],
    ) -> Tensor:
        """Final log-distribution ``log P(w)`` ``(*, V)``, float32.

        Args:
            logits: ``(*, V)`` vocabulary logits (``P_vocab = softmax(logits)``).
            attention: ``(*, S)`` copy distribution over the source (rows sum to 1 over real tokens).
            context, state, inputs: ``(*, ·)`` gate inputs ``h*_t``, ``s_t``, ``x_t``.
            src_ids: ``(B, S)`` vocabulary ids of the source tokens (``EncoderOutput.src_ids``).
        """
        if src_ids is None:
            raise ValueError(
                "copy attention (`model.copy_attention`) needs the source token ids in EncoderOutput.src_ids; "
                "encode with Seq2Seq.encode, which fills them"
            )
        p_gen = torch.sigmoid(self.gate(torch.cat([context, state, inputs], dim=-1)).float())  # (*, 1), eq. 8
        vocab_dist = torch.softmax(logits.float(), dim=-1)
        attention = attention.float()
        # src_ids (B, S) -> (*, S): one row of source ids per query position.
        index = src_ids.view(src_ids.size(0), *([1] * (attention.dim() - 2)), src_ids.size(1)).expand_as(attention)
        copy_dist = torch.zeros_like(vocab_dist).scatter_add(-1, index, attention)  # sum_{i: w_i = w} a_i
        mixture = p_gen * vocab_dist + (1.0 - p_gen) * copy_dist  # eq. 9
        return mixture.clamp_min(COPY_EPS).log()


def coverage(attention: Tensor) -> Tensor:
    """Coverage vectors ``c^t = sum_{t' < t} a^{t'}`` (eq. 10): ``(B, T, S) -> (B, T, S)``, ``c^0 = 0``."""
    return attention.cumsum(dim=1) - attention


def coverage_loss(attention: Tensor, tgt_mask: Optional[Tensor] = None) -> Tensor:
    """Sum over target positions of ``sum_i min(a^t_i, c^t_i)`` (eq. 12), a scalar (float32).

    Args:
        attention: ``(B, T, S)`` attention distributions of the target positions (teacher forcing).
        tgt_mask: ``(B, T)`` bool, ``True`` for real target positions; padded positions count 0.

    Divide by the number of target tokens to get the per-token loss of eq. 13.
    """
    attention = attention.float()
    per_step = torch.minimum(attention, coverage(attention)).sum(-1)  # (B, T)
    if tgt_mask is not None:
        per_step = per_step.masked_fill(~tgt_mask, 0.0)
    return per_step.sum()
