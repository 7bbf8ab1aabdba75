"""Word dropout: during training each input token is replaced by ``<unk>`` with probability ``p``.

A regulariser for small training sets: the model cannot lean on any single word being there,
and it learns an ``<unk>`` embedding that is useful for the unseen words of new text. Iyyer et
al. (2015) drop words before averaging them (a deep averaging network for sentiment); Bowman et
al. (2016) replace them with ``<unk>``, which keeps positions and lengths, as here. Special
tokens (padding, ``<s>``, ``</s>``, and a task's own such as relation extraction's entity markers
or QA's separator) are never replaced.
"""

from __future__ import annotations

import torch
from torch import Tensor


def word_dropout(ids: Tensor, p: float, keep: Tensor, unk_id: int) -> Tensor:
    """``ids (B, S)`` token ids -> a copy with each id replaced by ``unk_id`` with probability ``p``,
    except ids where ``keep (V,)`` (bool) is true. The random numbers come from torch's default
    generator, so ``seed_everything`` and the random states in checkpoints cover them."""
    if p <= 0.0:
        return ids
    drop = torch.rand(ids.shape, device=ids.device) < p
    return ids.masked_fill(drop & ~keep[ids], unk_id)


def special_token_mask(tokenizer, vocab_size: int) -> Tensor:
    """``(vocab_size,)`` bool: true at the ids of the tokenizer's special tokens (never dropped)."""
    keep = torch.zeros(vocab_size, dtype=torch.bool)
    for token_id, token in tokenizer.get_added_tokens_decoder().items():
        if token.special and token_id < vocab_size:
            keep[token_id] = True
    return keep
