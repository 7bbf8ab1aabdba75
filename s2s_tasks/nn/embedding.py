"""Token embeddings and positional embeddings.

Shapes: ``B`` batch, ``T`` sequence length, ``D`` embedding size.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .dropout import Dropout

POSITIONAL_CHOICES = ("sinusoidal", "learned", "none")


class TokenEmbedding(nn.Embedding):
    """Lookup table for token ids, optionally scaled by ``sqrt(D)`` (Vaswani et al., 2017, §3.4).

    It is an ``nn.Embedding``, so ``self.weight`` (``(V, D)``) is the parameter to tie with an
    output projection. Initialised from ``N(0, D**-0.5)`` with the padding row at zero.
    """

    def __init__(self, vocab_size: int, dim: int, pad_id: int, scale: bool = False) -> None:
        super().__init__(vocab_size, dim, padding_idx=pad_id)
        self.dim = dim
        self.scale = scale

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=self.embedding_dim**-0.5)
        self._fill_padding_idx_with_zero()

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (B, T)`` long -> ``(B, T, D)``."""
        x = super().forward(ids)
        return x * math.sqrt(self.dim) if self.scale else x

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"


def _check_positions(length: int, offset: int, max_positions: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"positions must be non-negative, got offset={offset}, length={length}")
    if offset + length > max_positions:
        raise ValueError(
            f"sequence needs positions up to {offset + length - 1} but the positional embedding "
            f"holds only {max_positions} positions; raise `model.max_positions` or truncate the inputs"
        )


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed sinusoidal positions (Vaswani et al., 2017, §3.5):

    ``PE(pos, 2i) = sin(pos / 10000^(2i/D))``, ``PE(pos, 2i+1) = cos(pos / 10000^(2i/D))``.

    The table is a non-persistent buffer, so checkpoints do not depend on ``max_positions``.
    """

    def __init__(self, dim: int, max_positions: int) -> None:
        super().__init__()
        self.dim = dim
        self.max_positions = max_positions
        position = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_positions, dim)
        table[:, 0::2] = torch.sin(position * div_term)
        table[:, 1::2] = torch.cos(position * div_term[: dim // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """Embeddings of positions ``offset .. offset+length-1``: ``(length, D)``."""
        _check_positions(length, offset, self.max_positions)
        return self.table[offset : offset + length]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_positions={self.max_positions}"


class LearnedPositionalEmbedding(nn.Module):
    """Trained absolute position embeddings (Gehring et al., 2017; Devlin et al., 2019)."""

    def __init__(self, dim: int, max_positions: int) -> None:
        super().__init__()
        self.dim = dim
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.empty(max_positions, dim))
        nn.init.normal_(self.weight, mean=0.0, std=dim**-0.5)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """Embeddings of positions ``offset .. offset+length-1``: ``(length, D)``."""
        _check_positions(length, offset, self.max_positions)
        return self.weight[offset : offset + length]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_positions={self.max_positions}"


class Embeddings(nn.Module):
    """Token embedding plus optional positions, then dropout:

    ``dropout(E[ids] * sqrt(D) + F(ids) + PE[offset:offset+T])`` (the ``sqrt(D)`` only when
    ``scale``; ``F`` only when ``features`` is set).

    Attributes:
        token: the :class:`TokenEmbedding` (``token.weight`` is the matrix to tie or share).
        position: the positional module, or ``None`` for ``positional="none"``.
        features: ``None``, or a module ``ids (B, T) -> (B, T, D)`` whose output is added to the
            token embedding (e.g. :class:`~s2s_tasks.nn.character.SubwordCharacterCNN`).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        pad_id: int,
        positional: str = "sinusoidal",
        max_positions: int = 1024,
        dropout: float = 0.0,
        scale: bool = True,
    ) -> None:
        super().__init__()
        if positional not in POSITIONAL_CHOICES:
            raise ValueError(f"`model.positional` must be one of {list(POSITIONAL_CHOICES)}, got {positional!r}")
        self.dim = dim
        self.token = TokenEmbedding(vocab_size, dim, pad_id, scale=scale)
        self.position: Optional[nn.Module]
        if positional == "sinusoidal":
            self.position = SinusoidalPositionalEmbedding(dim, max_positions)
        elif positional == "learned":
            self.position = LearnedPositionalEmbedding(dim, max_positions)
        else:
            self.position = None
        self.dropout = Dropout(dropout)
        self.features: Optional[nn.Module] = None

    def forward(self, ids: Tensor, offset: int = 0) -> Tensor:
        """``ids (B, T)`` long -> ``(B, T, D)``; ``offset`` is the position of ``ids[:, 0]``
        (non-zero during incremental decoding)."""
        x = self.token(ids)
        if self.features is not None:
            x = x + self.features(ids).to(x.dtype)
        if self.position is not None:
            x = x + self.position(ids.size(1), offset).to(x.dtype)
        return self.dropout(x)
