"""Data types shared by encoders, decoders and the search code.

Conventions used everywhere in ``s2s_tasks.nn``:

* masks are ``torch.bool`` with ``True`` marking a real token and ``False`` padding;
* every tensor is batch-first;
* a decoder cache is a ``dict`` whose tensor values all have the batch (or batch x beam)
  dimension first, so one generic :func:`reorder_cache` serves every decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor


@dataclass
class EncoderOutput:
    """What every encoder returns.

    Attributes:
        states: ``(B, S, D)`` contextual states of the source tokens.
        mask: ``(B, S)`` bool, ``True`` for real tokens.
        final_state: ``(B, D)`` summary of the whole source (RNN: concatenated last-layer final
            hidden states of both directions; Transformer: ``None``). RNN decoders use it to
            initialise their hidden state.
        src_ids: ``(B, S)`` long, the source token ids (pad where ``mask`` is ``False``), or
            ``None``. Filled by :meth:`Seq2Seq.encode`; copy attention scatters its attention
            onto these vocabulary ids.
    """

    states: Tensor
    mask: Tensor
    final_state: Optional[Tensor] = None
    src_ids: Optional[Tensor] = None

    def index_select(self, index: Tensor) -> "EncoderOutput":
        """Rows ``index`` of the batch (used to expand per beam and to drop finished rows)."""
        return replace(
            self,
            **{f.name: getattr(self, f.name).index_select(0, index) for f in fields(self) if getattr(self, f.name) is not None},
        )

    def repeat_interleave(self, repeats: int) -> "EncoderOutput":
        """Each batch row repeated ``repeats`` times in place: ``(B, ...) -> (B * repeats, ...)``."""
        index = torch.arange(self.states.size(0), device=self.states.device).repeat_interleave(repeats)
        return self.index_select(index)


Cache = Dict[str, Any]


def reorder_cache(cache: Cache, index: Tensor, source_index: Optional[Tensor] = None, keep_source: bool = False) -> Cache:
    """Select rows ``index`` (``(B',)`` long) of every tensor in ``cache``; non-tensors are kept.

    Nested dicts and lists/tuples of tensors (one entry per layer) are handled recursively.

    Entries under a ``"source"`` key hold what depends on the source alone (cross-attention keys
    and values, projected attention keys); they are selected with ``source_index`` when given
    (a decoder whose source state has one row per input while the search runs several rows per
    input, see :attr:`s2s_tasks.nn.decoders.Decoder.shares_source_rows`), and kept as they are
    with ``keep_source=True``: the caller promises that every row of ``index`` takes the place
    of a row with the same source (beam search reordering the beams of each input; fairseq skips
    the encoder-decoder attention state likewise when the batch size is unchanged).
    """

    moves: Dict[int, Optional[Tuple[Tensor, Tensor]]] = {}  # one plan per index for all layers' buffers

    def pick(value: Any, rows: Tensor) -> Any:
        if isinstance(value, Tensor):
            return value.index_select(0, rows)
        if isinstance(value, dict) and "filled" in value:
            return reorder_kv_buffers(value, rows, moves)
        if isinstance(value, dict):
            return {
                k: (v if keep_source else pick(v, rows if source_index is None else source_index)) if k == "source" else pick(v, rows)
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return type(value)(pick(v, rows) for v in value)
        return value

    return pick(cache, index)


def _moved_rows(rows: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
    """``(moved, sources)`` when at most half of the rows of ``rows (B,)`` move (row ``moved[i]``
    takes row ``sources[i]``), else None."""
    moved = (rows != torch.arange(rows.numel(), device=rows.device)).nonzero().squeeze(1)
    if 2 * moved.numel() > rows.numel():
        return None
    return moved, rows.index_select(0, moved)


def reorder_kv_buffers(cache: Cache, rows: Tensor, moves: Optional[Dict[int, Optional[Tuple[Tensor, Tensor]]]] = None) -> Cache:
    """Rows ``rows`` of a self-attention cache whose ``"k"``/``"v"`` buffers ``(B, heads, capacity, d)``
    hold ``"filled"`` valid positions (:class:`~s2s_tasks.nn.attention.MultiHeadAttention`).

    Only the valid positions are copied, and into the buffers the previous reorder of this cache
    left behind (kept as ``"spare"``) when their shape fits. Copying whole buffers into new ones
    at every step took a fifth of the first beam-4 decode of a process in one profile (page
    faults on a fresh buffer per layer per step); in steady state this saves about 2% of a
    Transformer beam-4 decode on an AVX2 CPU and 1.10-1.13x on an AVX-512 one
    (``benchmarks/decode_paths.py``). On the CPU, when at most half of the rows move (most beams
    keep theirs), only the moved rows are copied, within the buffers themselves (the reorder's
    copies fell from 77 to 34 ms of a beam-4 decode in a profile). Like a step, this consumes
    ``cache``: keep only the returned one. ``moves`` (keyed by ``id(rows)``) shares that count
    between the layers' caches reordered with the same ``rows``.
    """
    filled, buffers = cache["filled"], (cache["k"], cache["v"])
    spare = cache.get("spare")
    if torch.is_grad_enabled() and any(buf.requires_grad for buf in buffers):  # out= does not record gradients
        picked = tuple(buf.index_select(0, rows) for buf in buffers)
        rest = {key: value for key, value in cache.items() if key != "spare"}
        return {**rest, "k": picked[0], "v": picked[1]}
    if rows.numel() == buffers[0].size(0) and buffers[0].device.type == "cpu":
        # Most beams keep their row from one step to the next (81% a step in a beam-4 decode of
        # benchmarks/speed.py): when at most half of the rows move, copy only those, in place,
        # which moves less memory than copying all rows into the spare buffers. On the CPU the
        # count is free; a GPU would pay a host sync a step for it.
        moves = {} if moves is None else moves
        if id(rows) not in moves:
            moves[id(rows)] = _moved_rows(rows)
        plan = moves[id(rows)]
        if plan is not None:
            moved, sources = plan
            for buf in buffers:
                filled_part = buf[:, :, :filled]
                filled_part.index_copy_(0, moved, filled_part.index_select(0, sources))  # sources read before any write
            return cache
    shape = (rows.numel(), *buffers[0].shape[1:])
    if spare is None or spare[0].shape != shape or spare[0].dtype != buffers[0].dtype or spare[0].device != buffers[0].device:
        spare = tuple(buf.new_empty(shape) for buf in buffers)
    for buf, target in zip(buffers, spare):
        torch.index_select(buf[:, :, :filled], 0, rows, out=target[:, :, :filled])
    picked, spare = spare, buffers
    return {**cache, "k": picked[0], "v": picked[1], "spare": spare}
