"""Character features of subword tokens: a character CNN over each vocabulary entry's spelling.

Character-aware word representations (Kim et al. 2016, "Character-Aware Neural Language
Models"; Ma & Hovy 2016, "End-to-end Sequence Labeling via Bi-directional LSTM-CNNs-CRF", sec.
2.1; BiDAF's character embedding layer, Seo et al. 2017) let rare words share what their
spelling says with frequent ones. Here the tokens are subwords, whose spelling is fixed by their
id: the features are a function of the vocabulary entry, so each batch runs the CNN once per
distinct id and gathers the result, instead of once per token.

Characters are the UTF-8 bytes of the entry (SentencePiece's word-start mark ``\u2581`` included:
it tells a word's first piece from the pieces inside it), so the character vocabulary is fixed
(256 bytes and padding) and nothing about it has to be stored besides the model's weights.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: byte ``b`` has character id ``b + 1``; 0 pads
NUM_CHARACTER_IDS = 257


def spelling_table(tokens: Sequence[str], max_chars: int) -> Tensor:
    """The character ids of each vocabulary entry: ``(V, max_chars)`` long, ``tokens[i]``'s UTF-8
    bytes plus one in row ``i`` (longer entries cut at ``max_chars`` bytes), zeros after."""
    table = torch.zeros(len(tokens), max_chars, dtype=torch.long)
    for i, token in enumerate(tokens):
        data = token.encode("utf-8")[:max_chars]
        if data:
            table[i, : len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).long() + 1
    return table


class SubwordCharacterCNN(nn.Module):
    """``ids (B, T)`` -> character features ``(B, T, D)`` of each token's spelling.

    Per distinct id: character embeddings ``(L, C)`` -> dropout -> a convolution of ``filters``
    filters of width ``width`` (Ma & Hovy: 30 filters of width 3 over 30-dimensional characters)
    -> ReLU -> the maximum over the entry's characters -> a linear map to ``D``, so the result can
    be added to a token embedding of size ``D``; adding is a concatenation followed by the next
    layer's linear map, with the character part's weights factorised.

    The spelling of each id comes from :meth:`set_vocabulary`, a non-persistent buffer: rebuild it
    from the tokenizer after loading the weights (the model does, from the tokenizer its
    checkpoint stores).

    Args:
        dim: output size ``D`` (the token embedding's size).
        filters: number of convolution filters.
        char_dim: character embedding size ``C``.
        width: convolution width (odd: entries shorter than it are padded on both sides).
        max_chars: bytes of each entry read; longer entries are cut (8,000-piece BPE entries of
            English are almost all under 16 bytes).
        dropout: dropout on the character embeddings (Ma & Hovy: 0.5).
    """

    def __init__(self, dim: int, filters: int = 64, char_dim: int = 16, width: int = 3, max_chars: int = 16,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if filters < 1 or char_dim < 1 or max_chars < 1:
            raise ValueError(f"filters, char_dim and max_chars must be positive, got {filters}, {char_dim}, {max_chars}")
        if width < 1 or width % 2 == 0:
            raise ValueError(f"the character CNN's width must be odd and positive, got {width}")
        self.max_chars = max_chars
        self.embed = nn.Embedding(NUM_CHARACTER_IDS, char_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv1d(char_dim, filters, width, padding=width // 2)
        self.proj = nn.Linear(filters, dim)
        self.spellings: Optional[Tensor]
        self.register_buffer("spellings", None, persistent=False)

    def set_vocabulary(self, tokens: Sequence[str]) -> None:
        """Read the spelling of every id: ``tokens[i]`` is the vocabulary entry of id ``i``."""
        device = self.proj.weight.device
        self.spellings = spelling_table(tokens, self.max_chars).to(device)

    @property
    def has_vocabulary(self) -> bool:
        return self.spellings is not None

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (B, T)`` long -> ``(B, T, D)``; an id without a spelling (padding) gets the
        features of the empty string, a constant."""
        if self.spellings is None:
            raise RuntimeError("SubwordCharacterCNN has no vocabulary: call set_vocabulary(tokens) first")
        if self.spellings.device != ids.device:
            self.spellings = self.spellings.to(ids.device)
        distinct, inverse = torch.unique(ids, return_inverse=True)
        chars = self.spellings[distinct]  # (U, L)
        x = self.dropout(self.embed(chars)).transpose(1, 2)  # (U, C, L)
        h = F.relu(self.conv(x))  # (U, filters, L)
        # the maximum over the real characters only: after the ReLU every value is >= 0, so zeros
        # at the padding positions never exceed it
        h = h.masked_fill((chars == 0)[:, None, :], 0.0)
        features = self.proj(h.amax(dim=2))  # (U, D)
        # index_select, not features[inverse]: on the CPU the backward of advanced indexing adds
        # rows in a thread-dependent order, so training was not repeatable from the seed; this
        # backward (index_add_) is, and 4x faster at a QA batch's shape (35 x 384 tokens; ad hoc)
        return features.index_select(0, inverse.reshape(-1)).view(*ids.shape, features.size(-1))

    def extra_repr(self) -> str:
        return f"max_chars={self.max_chars}"
