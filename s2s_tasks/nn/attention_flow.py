"""Bidirectional attention flow (BiDAF; Seo et al., 2017, sec. 2): question-aware context states
for extractive reading comprehension.

* :class:`AttentionFlow` -- the attention flow layer: trilinear similarity, context-to-question
  and question-to-context attention, and the query-aware vectors ``G``.
* :class:`MaskedLSTM` -- a (bidirectional) LSTM over feature vectors that never reads padding,
  for BiDAF's modeling and output layers.

Shapes: ``B`` batch, ``S`` sequence length (question and context positions of one joint
sequence), ``D`` state size. Masks are bool, ``True`` = a position of that kind.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import masked_softmax
from .masked_rnn import run_masked


class AttentionFlow(nn.Module):
    """The attention flow layer of BiDAF (Seo et al., 2017, sec. 2.4).

    Similarity of context position ``t`` and question position ``j`` (eq. 1):
    ``S_tj = w^T [h_t; u_j; h_t * u_j]``. Context-to-question attention
    ``a_t = softmax_j(S_t:)``, ``ũ_t = sum_j a_tj u_j``; question-to-context attention
    ``b = softmax_t(max_j S_tj)``, ``h̃ = sum_t b_t h_t`` (one vector per example, tiled over
    ``t``). Output (eq. 2, with BiDAF's choice of beta): ``G_t = [h_t; ũ_t; h_t * ũ_t; h_t * h̃]``.

    Here the question and the context are two sets of positions of one encoded sequence (e.g.
    ``<s> question <sep> context </s>``), so both come from the same ``states``.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.context_weight = nn.Linear(size, 1, bias=False)
        self.question_weight = nn.Linear(size, 1, bias=False)
        self.product_weight = nn.Parameter(torch.empty(size).uniform_(-1.0 / size**0.5, 1.0 / size**0.5))
        self.size = size

    @property
    def output_size(self) -> int:
        return 4 * self.size

    def forward(self, states: Tensor, question_mask: Tensor, context_mask: Tensor) -> Tensor:
        """``states (B, S, D)``, ``question_mask`` and ``context_mask`` ``(B, S)`` -> ``G (B, S, 4D)``
        (rows outside the context are computed too; the caller masks them)."""
        # S_tj = w_h . h_t + w_u . u_j + (h_t * w_hu) . u_j, without materialising (B, S, S, 3D)
        similarity = (
            self.context_weight(states)  # (B, S, 1)
            + self.question_weight(states).transpose(1, 2)  # (B, 1, S)
            + torch.bmm(states * self.product_weight, states.transpose(1, 2))  # (B, S, S)
        )
        to_question = masked_softmax(similarity, question_mask[:, None, :], dim=-1)  # (B, S, S)
        attended_question = torch.bmm(to_question, states)  # (B, S, D)
        best = similarity.masked_fill(~question_mask[:, None, :], torch.finfo(similarity.dtype).min).amax(-1)  # (B, S)
        to_context = masked_softmax(best, context_mask, dim=-1)  # (B, S)
        attended_context = torch.bmm(to_context[:, None, :], states)  # (B, 1, D)
        return torch.cat([states, attended_question, states * attended_question, states * attended_context], dim=-1)


class MaskedLSTM(nn.Module):
    """A (bidirectional) LSTM over feature vectors ``(B, S, input_size)`` -> ``(B, S, hidden_size)``
    that reads only the first ``mask.sum(1)`` positions of each row (zeros after them), so a
    row's outputs do not depend on how far it was padded. ``hidden_size`` counts both directions."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        directions = 2 if bidirectional else 1
        if hidden_size % directions:
            raise ValueError(f"a bidirectional LSTM needs an even hidden size, got {hidden_size}")
        self.rnn = nn.LSTM(input_size, hidden_size // directions, num_layers=num_layers, batch_first=True,
                           bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return run_masked(self.rnn, features, mask)[0]
