"""Pooling of encoder states into one vector per sequence (classification heads)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

POOLINGS = ("mean", "max", "first", "attention")


class SequencePooling(nn.Module):
    """``states (B, S, D)``, ``mask (B, S)`` bool -> ``(B, D)``.

    * ``mean``: average of the real tokens' states;
    * ``max``: element-wise maximum over real tokens (Collobert et al. 2011; Kim 2014);
    * ``first``: the state of the first token (the ``<s>`` the data module prepends; BERT's
      ``[CLS]`` convention, Devlin et al. 2019);
    * ``attention``: additive attention pooling ``a = softmax(v^T tanh(W h_i))``,
      ``sum_i a_i h_i`` (Yang et al. 2016, "Hierarchical Attention Networks", eq. 8-10).
    """

    def __init__(self, kind: str, size: int) -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {list(POOLINGS)}, got {kind!r}")
        self.kind = kind
        if kind == "attention":
            self.proj = nn.Linear(size, size)
            self.score = nn.Linear(size, 1, bias=False)

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        if self.kind == "first":
            return states[:, 0]
        m = mask.unsqueeze(-1)
        if self.kind == "mean":
            return (states * m).sum(1) / m.sum(1).clamp(min=1)
        if self.kind == "max":
            return states.masked_fill(~m, torch.finfo(states.dtype).min).max(1).values
        scores = self.score(torch.tanh(self.proj(states))).squeeze(-1).masked_fill(~mask, torch.finfo(states.dtype).min)
        weights = scores.softmax(-1).unsqueeze(-1)
        return (weights * states).sum(1)
