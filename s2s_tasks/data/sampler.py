"""Batches under a token budget, built from length buckets.

Sorting by length before batching keeps padding low (the batching of fairseq's
``batch_by_size`` and of tensor2tensor's bucketing); shuffling then happens at two levels: ties
and near-ties inside a length bucket are broken randomly per epoch, and the order of the finished
batches is shuffled. Unshuffled (evaluation) batches come in :func:`spread_order`, so that the
first batches, which ``--trainer.limit_val_batches`` keeps, cover short and long examples alike.
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import Sampler


def spread_order(count: int) -> List[int]:
    """``0 .. count-1`` in bit-reversed order (van der Corput): ``[0, 4, 2, 6, 1, 5, 3, 7]`` for 8.

    Applied to batches sorted by length, every prefix of the result is spread evenly over the
    lengths (the first half takes every second batch, the first quarter every fourth), so a
    fraction of the evaluation batches is a stratified sample rather than the shortest examples.
    The order is fixed: the same batches in the same order every epoch and every run."""
    if count <= 1:
        return list(range(count))
    bits = (count - 1).bit_length()
    reversed_index = [int(format(i, f"0{bits}b")[::-1], 2) for i in range(1 << bits)]
    return [i for i in reversed_index if i < count]


class _EpochForwarder:
    """What Lightning calls ``set_epoch`` on: it looks for ``dataloader.sampler`` and
    ``dataloader.batch_sampler.sampler``, never at a batch sampler itself
    (``lightning_fabric.utilities.data._set_sampler_epoch``), so without this every epoch would
    repeat epoch 0's batch order."""

    def __init__(self, batch_sampler: "TokenBudgetBatchSampler") -> None:
        self._batch_sampler = batch_sampler

    def set_epoch(self, epoch: int) -> None:
        self._batch_sampler.set_epoch(epoch)


class EpochPosition:
    """The epoch of a batch sampler and where a resumed epoch continues: ``set_epoch`` (from
    Lightning, through :class:`_EpochForwarder`), and ``state_dict`` / ``load_state_dict`` as
    :class:`~s2s_tasks.data.datamodule.ResumableDataLoader` saves and restores them. A subclass's
    ``__iter__`` leaves out the first ``_skip`` batches when ``_skip_epoch == epoch``."""

    def _start_epochs(self) -> None:
        self.epoch = 0
        #: batches of epoch ``_skip_epoch`` that the next iteration leaves out (already trained on)
        self._skip = 0
        self._skip_epoch = 0
        #: Lightning reaches :meth:`set_epoch` through this attribute (see :class:`_EpochForwarder`)
        self.sampler = _EpochForwarder(self)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch so each epoch reshuffles."""
        self.epoch = epoch

    def state_dict(self) -> Dict[str, int]:
        """The epoch and how many of its batches the next iteration leaves out."""
        return {"epoch": self.epoch, "batches_done": self._skip if self._skip_epoch == self.epoch else 0}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``state["batches_done"]`` batches."""
        done = int(state.get("batches_done", 0))
        if done < 0:
            raise ValueError(f"batches_done must be >= 0, got {done}")
        self.epoch = self._skip_epoch = int(state["epoch"])
        self._skip = done


class TokenBudgetBatchSampler(EpochPosition, Sampler[List[int]]):
    """Yield lists of example indices whose padded size stays within ``max_tokens``.

    A batch of ``n`` examples with longest length ``L`` costs ``n * L`` tokens; a batch is closed
    before it would exceed ``max_tokens`` (an example longer than the budget alone gets a batch
    of its own) or ``max_batch_size`` examples.

    Under data parallelism every rank builds the same batch list (same seed and epoch), takes
    every ``num_replicas``-th batch starting at ``rank``, and the list is first padded by repeating
    its first batches so that all ranks get the same number of batches (no rank waits forever at
    a collective on an uneven last batch).

    Args:
        lengths: per-example cost in tokens (e.g. ``max(source_len, target_len)``).
        tie_lengths: optional per-example tuples (e.g. ``(source_len, target_len)``) that order
            examples of equal cost: the cost is the longer side, so sorting by it alone mixes
            examples whose other side differs, which is padding. On Multi30k (joint BPE 8k,
            4,096-token batches) this takes the padding share from 6.5% to 3.9%
            (``python benchmarks/speed.py --parts 3 --padding_only``).
        max_tokens: token budget per batch (config ``data.max_tokens``).
        max_batch_size: optional cap on examples per batch (config ``data.max_batch_size``).
        shuffle: shuffle within length buckets and the batch order, anew each epoch. Without
            shuffling (evaluation), the batches come in :func:`spread_order` of their lengths.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        num_replicas, rank: data-parallel world size and this process' rank.

    Resuming inside an epoch: :meth:`load_state_dict` (``{"epoch": e, "batches_done": k}``) makes
    the next iteration of epoch ``e`` yield only its batches from the ``k``-th on (this rank's
    ``k``-th), the same batches in the same order as the interrupted run would have (the order
    depends only on ``seed + epoch``); ``len()`` stays the full epoch's count, as Lightning
    expects, and every later epoch is complete again. Through the train loader
    (:class:`s2s_tasks.data.datamodule.ResumableDataLoader`) Lightning saves this state in
    checkpoints; :class:`s2s_tasks.callbacks.ResumeState` restores it.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        max_batch_size: Optional[int] = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        tie_lengths: Optional[Sequence[Sequence[int]]] = None,
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"data.max_tokens must be positive, got {max_tokens}")
        if max_batch_size is not None and max_batch_size <= 0:
            raise ValueError(f"data.max_batch_size must be positive or null, got {max_batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        #: one int64 per example ordering by (cost, *tie_lengths): the sort key of the buckets
        self.sort_key = self.lengths if tie_lengths is None else self._combined_key(self.lengths, tie_lengths)
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self._cached: Optional[tuple] = None
        self._start_epochs()

    @staticmethod
    def _combined_key(lengths: torch.Tensor, tie_lengths: Sequence[Sequence[int]]) -> torch.Tensor:
        if len(tie_lengths) != len(lengths):
            raise ValueError(f"tie_lengths has {len(tie_lengths)} entries for {len(lengths)} examples")
        key = lengths.clone()
        if len(lengths) == 0:
            return key
        for column in torch.as_tensor([list(t) for t in tie_lengths], dtype=torch.long).unbind(1):
            key = key * (int(column.max()) + 1) + column
        return key

    def _all_batches(self) -> List[List[int]]:
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, self._build_batches())
        return self._cached[1]

    def _build_batches(self) -> List[List[int]]:
        n = len(self.lengths)
        if n == 0:
            return []
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            # Random order first, then a stable sort by length: equal lengths end up shuffled.
            perm = torch.randperm(n, generator=generator)
            order = perm[torch.sort(self.sort_key[perm], stable=True).indices]
        else:
            order = torch.sort(self.sort_key, stable=True).indices
        batches: List[List[int]] = []
        current: List[int] = []
        longest = 0
        for index, length in zip(order.tolist(), self.lengths[order].tolist()):
            new_longest = max(longest, length)
            too_many = (len(current) + 1) * new_longest > self.max_tokens
            too_big = self.max_batch_size is not None and len(current) >= self.max_batch_size
            if current and (too_many or too_big):
                batches.append(current)
                current, new_longest = [], length
            current.append(index)
            longest = new_longest
        if current:
            batches.append(current)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        else:
            batches = [batches[i] for i in spread_order(len(batches))]
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        batches = self._all_batches()
        if self.num_replicas > 1 and batches:
            total = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
            batches = [batches[i % len(batches)] for i in range(total)]
            batches = batches[self.rank :: self.num_replicas]
        skip = self._skip if self._skip_epoch == self.epoch else 0
        return self._resumed(batches[skip:], skip) if skip else iter(batches)

    def _resumed(self, batches: List[List[int]], skip: int) -> Iterator[List[int]]:
        """The rest of a resumed epoch. The skip is used up (the next iteration of the epoch is
        complete again) when the first batch is drawn, not when the iterator is made: a
        multi-worker DataLoader makes two iterators of its batch sampler and draws from the second."""
        if self._skip == skip and self._skip_epoch == self.epoch:
            self._skip = 0
        yield from batches

    def __len__(self) -> int:
        count = len(self._all_batches())
        return math.ceil(count / self.num_replicas) if self.num_replicas > 1 else count
