"""Single-task batches from several tasks: the batch samplers of multi-task training.

Every training batch holds examples of one task (tasks have their own heads), and the task of
each step is drawn at random, with probabilities from the tasks' sizes (:func:`task_probabilities`).
The tasks' datasets are concatenated: task ``t``'s example ``i`` is index ``offsets[t] + i``.
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, List, Mapping, Optional

import torch
from torch.utils.data import Sampler

from s2s_tasks.data.sampler import EpochPosition, TokenBudgetBatchSampler, _EpochForwarder

SAMPLING = ("proportional", "uniform", "temperature")

#: pass ``j`` over a task in multi-task epoch ``e`` is its batch sampler's epoch ``e * PASS_STRIDE + j``
#: (a prime, so that the passes of all epochs get distinct shuffles while ``j < PASS_STRIDE``)
PASS_STRIDE = 1_000_003


def task_probabilities(
    sizes: Mapping[str, int],
    sampling: str = "temperature",
    temperature: float = 2.0,
    max_examples_per_task: Optional[int] = None,
) -> Dict[str, float]:
    """The probability of drawing each task for a training step, in the order of ``sizes``.

    With ``n_t = min(sizes[t], max_examples_per_task)`` (T5's "examples-proportional mixing" with
    an artificial limit K; Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
    Unified Text-to-Text Transformer", sec. 3.5.2): ``proportional`` gives ``p_t ~ n_t``,
    ``uniform`` gives ``p_t = 1 / (number of tasks)``, and ``temperature`` gives
    ``p_t ~ n_t ** (1 / temperature)`` (T5's temperature-scaled mixing: 1 is proportional, larger
    values move towards uniform and so up-sample the small tasks).

    Args:
        sizes: number of training examples of each task, by task name.
        sampling: one of :data:`SAMPLING` (config ``data.sampling``).
        temperature: the ``T`` of temperature sampling, > 0 (config ``data.temperature``).
        max_examples_per_task: optional cap ``K`` on a task's size, > 0 (config
            ``data.max_examples_per_task``).
    """
    if sampling not in SAMPLING:
        raise ValueError(f"data.sampling must be one of {', '.join(SAMPLING)}; got {sampling!r}")
    if not temperature > 0:
        raise ValueError(f"data.temperature must be positive, got {temperature}")
    if max_examples_per_task is not None and max_examples_per_task <= 0:
        raise ValueError(f"data.max_examples_per_task must be positive or null, got {max_examples_per_task}")
    if not sizes:
        raise ValueError("multi-task sampling needs at least one task; got none")
    empty = [name for name, size in sizes.items() if size <= 0]
    if empty:
        raise ValueError(f"task(s) {', '.join(empty)} have no training examples")
    capped = {name: min(size, max_examples_per_task or size) for name, size in sizes.items()}
    exponent = {"proportional": 1.0, "uniform": 0.0, "temperature": 1.0 / temperature}[sampling]
    # n ** exponent in log space, scaled by the largest: no overflow for small temperatures
    logs = {name: exponent * math.log(n) for name, n in capped.items()}
    top = max(logs.values())
    weights = {name: math.exp(log - top) for name, log in logs.items()}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def _check_tasks(names: List[str], given: Mapping[str, int], what: str) -> None:
    if set(given) != set(names):
        raise ValueError(f"{what} are for tasks {sorted(given)}, the batch samplers for {sorted(names)}")


class MultiTaskBatchSampler(EpochPosition, Sampler[List[int]]):
    """Training batches of several tasks: each batch is one task's, the task drawn at random.

    Each step's task is drawn with :func:`task_probabilities` by a generator seeded with
    ``seed + epoch``, so every data-parallel rank draws the same task at the same step (needed:
    the tasks' heads differ, and every rank must run the same ones). Each task's batches come from
    a stream of passes over its data: pass ``j`` of multi-task epoch ``e`` is the task sampler's
    epoch ``e * PASS_STRIDE + j`` (its own shuffle), starting again at pass 0 every epoch. An epoch
    is thus a function of ``(seed, epoch)`` and of the task samplers alone.

    Args:
        samplers: each task's batch sampler over the task's own examples (indices ``0..n-1``),
            shuffling and sharded for this rank like every other rank's (the same number of batches
            on every rank). This sampler sets their epochs: they are its own.
        offsets: each task's first index in the concatenation of the tasks' datasets.
        sizes: each task's number of training examples (what the probabilities come from).
        sampling, temperature, max_examples_per_task: see :func:`task_probabilities`.
        batches_per_epoch: steps per epoch (config ``data.batches_per_epoch``); by default the
            sum of the task samplers' lengths, so that proportional sampling makes about one pass
            over every task per epoch.
        seed: seed of the task draws; epoch ``e`` uses ``seed + e``.

    Resuming inside an epoch works as for
    :class:`~s2s_tasks.data.sampler.TokenBudgetBatchSampler` (same ``state_dict``, so
    :class:`~s2s_tasks.data.datamodule.ResumableDataLoader` takes either): after
    ``load_state_dict({"epoch": e, "batches_done": k})`` the next iteration yields epoch ``e``'s
    batches from the ``k``-th on, and later iterations are complete again.
    """

    def __init__(
        self,
        samplers: Mapping[str, TokenBudgetBatchSampler],
        offsets: Mapping[str, int],
        sizes: Mapping[str, int],
        sampling: str = "temperature",
        temperature: float = 2.0,
        max_examples_per_task: Optional[int] = None,
        batches_per_epoch: Optional[int] = None,
        seed: int = 0,
    ) -> None:
        self.task_names = list(samplers)
        _check_tasks(self.task_names, offsets, "offsets")
        _check_tasks(self.task_names, sizes, "sizes")
        self.samplers = dict(samplers)
        self.offsets = {name: int(offsets[name]) for name in self.task_names}
        self.probabilities = task_probabilities(
            {name: sizes[name] for name in self.task_names}, sampling, temperature, max_examples_per_task
        )
        #: this rank's batches per pass over each task (the same for every pass: only ties reorder)
        self.pass_lengths = {name: len(sampler) for name, sampler in self.samplers.items()}
        empty = [name for name, count in self.pass_lengths.items() if count == 0]
        if empty:
            raise ValueError(f"task(s) {', '.join(empty)} have no training batches")
        self.batches_per_epoch = sum(self.pass_lengths.values()) if batches_per_epoch is None else batches_per_epoch
        if self.batches_per_epoch <= 0:
            raise ValueError(f"data.batches_per_epoch must be positive or null, got {batches_per_epoch}")
        if math.ceil(self.batches_per_epoch / min(self.pass_lengths.values())) > PASS_STRIDE:
            raise ValueError(f"data.batches_per_epoch={self.batches_per_epoch} would make more than "
                             f"{PASS_STRIDE} passes over a task in one epoch")
        self.seed = seed
        self._start_epochs()

    def task_order(self, epoch: int) -> List[str]:
        """The task of every step of ``epoch``."""
        return [self.task_names[t] for t in self._draws(epoch)]

    def _draws(self, epoch: int) -> List[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        probabilities = torch.tensor([self.probabilities[name] for name in self.task_names], dtype=torch.float64)
        return torch.multinomial(probabilities, self.batches_per_epoch, replacement=True, generator=generator).tolist()

    def _pass(self, name: str, epoch: int, j: int) -> List[List[int]]:
        sampler = self.samplers[name]
        sampler.set_epoch(epoch * PASS_STRIDE + j)
        return list(sampler)

    def __iter__(self) -> Iterator[List[int]]:
        skip = self._skip if self._skip_epoch == self.epoch else 0
        return self._batches(self.epoch, skip)

    def _batches(self, epoch: int, skip: int) -> Iterator[List[int]]:
        # A generator: this runs when the first batch is drawn, not when the iterator is made
        # (a multi-worker DataLoader makes two iterators and draws from the second), so that is
        # when the skip is used up and the next iteration of the epoch is complete again.
        if skip and self._skip == skip and self._skip_epoch == epoch:
            self._skip = 0
        draws = self._draws(epoch)
        taken = [0] * len(self.task_names)  # batches of each task's stream so far
        for t in draws[:skip]:
            taken[t] += 1
        passes: Dict[int, tuple] = {}  # task -> (pass number, that pass' batches)
        for t in draws[skip:]:
            name = self.task_names[t]
            j, i = divmod(taken[t], self.pass_lengths[name])
            taken[t] += 1
            if t not in passes or passes[t][0] != j:
                passes[t] = (j, self._pass(name, epoch, j))
            offset = self.offsets[name]
            yield [offset + index for index in passes[t][1][i]]

    def __len__(self) -> int:
        return self.batches_per_epoch


class ChainedBatchSampler(Sampler[List[int]]):
    """Evaluation batches of several tasks: every batch of each task in turn, in the order of ``samplers``.

    Args:
        samplers: each task's batch sampler over its own examples (indices ``0..n-1``), sharded
            for this rank.
        offsets: each task's first index in the concatenation of the tasks' datasets.
    """

    def __init__(self, samplers: Mapping[str, TokenBudgetBatchSampler], offsets: Mapping[str, int]) -> None:
        self.task_names = list(samplers)
        _check_tasks(self.task_names, offsets, "offsets")
        self.samplers = dict(samplers)
        self.offsets = {name: int(offsets[name]) for name in self.task_names}
        #: Lightning reaches :meth:`set_epoch` through this attribute (see :class:`_EpochForwarder`)
        self.sampler = _EpochForwarder(self)

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers.values():
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[List[int]]:
        for name in self.task_names:
            offset = self.offsets[name]
            for batch in self.samplers[name]:
                yield [offset + index for index in batch]

    def __len__(self) -> int:
        return sum(len(sampler) for sampler in self.samplers.values())
