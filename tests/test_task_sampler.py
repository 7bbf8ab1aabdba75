"""Multi-task batch samplers: task probabilities (T5's mixing), single-task batches, the same task
on every rank, determinism, exact resume, and the evaluation chain."""

import math
import random

import pytest

from s2s_tasks.data.datamodule import ResumableDataLoader
from s2s_tasks.data.sampler import TokenBudgetBatchSampler
from s2s_tasks.data.task_sampler import (
    PASS_STRIDE,
    ChainedBatchSampler,
    MultiTaskBatchSampler,
    task_probabilities,
)

#: per-example token lengths of three tasks of different sizes
LENGTHS = {name: [random.Random(name).randint(1, 12) for _ in range(n)] for name, n in
           {"big": 120, "mid": 40, "small": 9}.items()}


def task_samplers(lengths=LENGTHS, max_tokens=24, seed=5, **shard):
    return {name: TokenBudgetBatchSampler(ls, max_tokens=max_tokens, seed=seed, **shard) for name, ls in lengths.items()}


def offsets_of(lengths=LENGTHS):
    starts, total = {}, 0
    for name, ls in lengths.items():
        starts[name], total = total, total + len(ls)
    return starts


def multi_task(lengths=LENGTHS, sampler_seed=5, max_tokens=24, shard=None, **kwargs):
    sizes = {name: len(ls) for name, ls in lengths.items()}
    samplers = task_samplers(lengths, max_tokens, sampler_seed, **(shard or {}))
    return MultiTaskBatchSampler(samplers, offsets_of(lengths), sizes, **kwargs)


def task_of(batch, lengths=LENGTHS):
    """The task whose index range holds the whole batch (fails on a mixed batch)."""
    starts = offsets_of(lengths)
    owners = {name for name in lengths for i in batch if starts[name] <= i < starts[name] + len(lengths[name])}
    assert len(owners) == 1, f"batch {batch} mixes tasks {owners}"
    return owners.pop()


def test_probabilities_follow_t5_mixing():
    sizes = {"a": 400, "b": 100, "c": 25}
    proportional = task_probabilities(sizes, "proportional")
    assert list(proportional) == ["a", "b", "c"]
    assert proportional == pytest.approx({"a": 400 / 525, "b": 100 / 525, "c": 25 / 525})
    assert task_probabilities(sizes, "temperature", temperature=1.0) == pytest.approx(proportional)
    assert task_probabilities(sizes, "temperature", temperature=2.0) == pytest.approx({"a": 4 / 7, "b": 2 / 7, "c": 1 / 7})
    assert task_probabilities(sizes, "temperature", temperature=1e6) == pytest.approx({k: 1 / 3 for k in sizes}, abs=1e-4)
    assert task_probabilities(sizes, "uniform") == {k: 1 / 3 for k in sizes}
    # T5's artificial limit K: tasks above the cap count as the cap
    capped = task_probabilities({"a": 1000, "b": 100, "c": 10}, "proportional", max_examples_per_task=100)
    assert capped == pytest.approx({"a": 100 / 210, "b": 100 / 210, "c": 10 / 210})
    capped = task_probabilities({"a": 1000, "b": 100, "c": 25}, "temperature", 2.0, max_examples_per_task=100)
    assert capped == pytest.approx({"a": 10 / 25, "b": 10 / 25, "c": 5 / 25})
    # tiny temperatures do not overflow
    assert task_probabilities({"a": 10**9, "b": 1}, "temperature", 0.01) == pytest.approx({"a": 1.0, "b": 0.0})
    assert math.fsum(task_probabilities({"x": 7, "y": 3, "z": 11}, "temperature", 3.0).values()) == pytest.approx(1.0)


@pytest.mark.parametrize("sizes, kwargs, message", [
    ({"a": 1}, {"sampling": "mixed"}, "data.sampling must be one of proportional, uniform, temperature"),
    ({"a": 1}, {"temperature": 0.0}, "data.temperature"),
    ({"a": 1}, {"temperature": -1.0}, "data.temperature"),
    ({"a": 1}, {"max_examples_per_task": 0}, "data.max_examples_per_task"),
    ({}, {}, "at least one task"),
    ({"a": 3, "empty_one": 0}, {}, "empty_one"),
])
def test_bad_sampling_values_name_the_config_key(sizes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        task_probabilities(sizes, **kwargs)


def test_sampler_rejects_mismatched_tasks_and_bad_epoch_length():
    samplers = task_samplers()
    with pytest.raises(ValueError, match="offsets"):
        MultiTaskBatchSampler(samplers, {"big": 0}, {name: 1 for name in LENGTHS})
    with pytest.raises(ValueError, match="data.batches_per_epoch"):
        MultiTaskBatchSampler(samplers, offsets_of(), {name: 1 for name in LENGTHS}, batches_per_epoch=0)


def test_task_frequencies_match_the_probabilities():
    """One example per batch (max_tokens 1), 20,000 steps: each task's share within 0.01 of its probability."""
    lengths = {"a": [1] * 2000, "b": [1] * 500, "c": [1] * 50}
    sampler = multi_task(lengths, max_tokens=1, batches_per_epoch=20000, sampling="temperature", temperature=2.0)
    counts = {name: 0 for name in lengths}
    for batch in sampler:
        counts[task_of(batch, lengths)] += 1
    assert len(sampler) == sum(counts.values()) == 20000
    for name, p in sampler.probabilities.items():
        assert abs(counts[name] / 20000 - p) < 0.01, (name, counts[name] / 20000, p)


def test_batches_are_single_task_and_each_task_streams_through_reshuffled_passes():
    sampler = multi_task(sampling="proportional", seed=11)
    sampler.set_epoch(2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == sum(sampler.pass_lengths.values())
    dataset = [(name, i) for name, ls in LENGTHS.items() for i in range(len(ls))]  # the concatenation
    by_task = {name: [] for name in LENGTHS}
    for batch, name in zip(batches, sampler.task_order(2)):
        assert task_of(batch) == name
        assert {dataset[i][0] for i in batch} == {name}
        by_task[name].append([i - sampler.offsets[name] for i in batch])
    assert all(by_task.values())  # proportional, one epoch's length: every task is trained
    # each task's stream: pass j of epoch e is the task sampler's epoch e * PASS_STRIDE + j
    for name, own in by_task.items():
        reference = task_samplers()[name]
        stream = []
        for j in range(math.ceil(len(own) / sampler.pass_lengths[name])):
            reference.set_epoch(2 * PASS_STRIDE + j)
            stream += list(reference)
        assert own == stream[: len(own)]
    # a small task drawn more often than it has batches is passed over again, reshuffled
    small = multi_task(sampling="uniform", batches_per_epoch=300)
    small_batches = [b for b in small if task_of(b) == "small"]
    per_pass = small.pass_lengths["small"]
    assert len(small_batches) > 2 * per_pass
    first, second = small_batches[:per_pass], small_batches[per_pass: 2 * per_pass]
    assert first != second
    assert sorted(i for b in first for i in b) == sorted(i for b in second for i in b)  # both cover the task


def test_same_seed_and_epoch_give_the_same_batches_and_epochs_differ():
    a, b = multi_task(seed=3), multi_task(seed=3)
    a.sampler.set_epoch(4)  # where Lightning calls it (dataloader.batch_sampler.sampler)
    b.set_epoch(4)
    epoch4 = list(a)
    assert epoch4 == list(b) == list(a)  # iterating again changes nothing: no state carried over
    b.set_epoch(5)
    assert list(b) != epoch4 and b.task_order(5) != b.task_order(4)
    assert list(multi_task(seed=4, sampler_seed=5)) != list(multi_task(seed=3, sampler_seed=5))


def test_ranks_train_the_same_task_at_every_step_on_disjoint_batches():
    ranks = [multi_task(shard={"num_replicas": 2, "rank": r}, seed=7, batches_per_epoch=200) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(1)
    zero, one = (list(sampler) for sampler in ranks)
    assert len(zero) == len(one) == len(ranks[0]) == len(ranks[1]) == 200
    assert ranks[0].pass_lengths == ranks[1].pass_lengths
    assert [task_of(b) for b in zero] == [task_of(b) for b in one]
    # over the first pass of each task: the same step's batches are disjoint, and together cover the task
    seen = {name: 0 for name in LENGTHS}
    covered = {name: set() for name in LENGTHS}
    for b0, b1 in zip(zero, one):
        name = task_of(b0)
        if seen[name] < ranks[0].pass_lengths[name]:
            seen[name] += 1
            assert not set(b0) & set(b1)
            covered[name] |= set(b0) | set(b1)
    for name, ls in LENGTHS.items():
        assert seen[name] == ranks[0].pass_lengths[name]  # 200 steps finish a first pass of every task
        assert covered[name] == set(range(offsets_of()[name], offsets_of()[name] + len(ls)))


@pytest.mark.parametrize("k", [0, 1, 37, 150])
def test_resumed_epoch_yields_the_rest_of_the_uninterrupted_one(k):
    full = multi_task(sampling="uniform", batches_per_epoch=150, seed=2)
    full.set_epoch(3)
    epoch3 = list(full)
    full.set_epoch(4)
    epoch4 = list(full)
    resumed = multi_task(sampling="uniform", batches_per_epoch=150, seed=2)
    resumed.load_state_dict({"epoch": 3, "batches_done": k})
    assert resumed.state_dict() == {"epoch": 3, "batches_done": k} and len(resumed) == 150
    unused = iter(resumed)  # made but never drawn from (a multi-worker DataLoader's first iterator)
    assert resumed.state_dict() == {"epoch": 3, "batches_done": k}
    del unused
    assert list(resumed) == epoch3[k:]
    assert list(resumed) == epoch3  # only the resumed iteration is shortened
    resumed.set_epoch(4)
    assert list(resumed) == epoch4


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumable_loader_continues_a_multi_task_epoch(num_workers):
    def loader():
        sampler = multi_task(sampling="temperature", batches_per_epoch=60, seed=9)
        dataset = list(range(sum(len(ls) for ls in LENGTHS.values())))
        return ResumableDataLoader(dataset, batch_sampler=sampler, collate_fn=list, num_workers=num_workers)

    first = loader()
    first.batch_sampler.set_epoch(1)
    epoch1 = [batch for batch in first]
    iterator = iter(first)
    taken = [next(iterator) for _ in range(25)]
    assert taken == epoch1[:25] and first.state_dict() == {"epoch": 1, "batches_done": 25}
    second = loader()
    second.load_state_dict(first.state_dict())
    assert [batch for batch in second] == epoch1[25:]
    assert second.state_dict() == {"epoch": 2, "batches_done": 0}
    second.batch_sampler.set_epoch(2)
    assert len([batch for batch in second]) == 60  # the next epoch is complete again


def test_chained_sampler_yields_each_task_in_turn_with_offsets():
    samplers = {name: TokenBudgetBatchSampler(ls, max_tokens=24, shuffle=False) for name, ls in LENGTHS.items()}
    chained = ChainedBatchSampler(samplers, offsets_of())
    chained.sampler.set_epoch(3)  # harmless on unshuffled samplers
    expected = [[offsets_of()[name] + i for i in batch] for name, s in samplers.items() for batch in s]
    assert list(chained) == expected
    assert len(chained) == sum(len(s) for s in samplers.values()) == len(expected)
    assert [task_of(b) for b in chained] == [name for name, s in samplers.items() for _ in range(len(s))]
    with pytest.raises(ValueError, match="offsets"):
        ChainedBatchSampler(samplers, {"big": 0})
