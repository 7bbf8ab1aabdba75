"""``predict`` over a file of any size in flat memory: read, checked, tokenized and batched a
chunk of records at a time.

Each chunk is read from the file (:func:`~s2s_tasks.data.records.iter_file`), checked and
tokenized by the data module (:meth:`~s2s_tasks.data.datamodule.TextDataModule.read_records`,
``encode``) and cut into token-budget batches, sorted by length within the chunk. The last
batch of a chunk carries ``chunk_end``: the prediction writer then has every prediction of the
chunk's records, puts them in input order and appends them to its file
(:class:`~s2s_tasks.callbacks.PredictionWriter`). Memory is bounded by the chunk size, not the
file size. Under DDP each rank takes every ``world_size``-th chunk, so the ranks' outputs are
disjoint and each rank's part is in input order.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ContextManager, Dict, Iterator, List, Optional, Tuple

from torch.utils.data import IterableDataset

from s2s_tasks.data.records import Records, iter_file
from s2s_tasks.data.sampler import TokenBudgetBatchSampler

#: records per chunk: large enough for length-sorted batches to be well filled, small enough
#: that a chunk's text, ids and predictions take a few MB
CHUNK_RECORDS = 4096


class PredictStream(IterableDataset):
    """Batches of a predict file, chunk by chunk (see the module docstring).

    Args:
        datamodule: the task's data module (reads, checks and encodes records).
        path, config_key: the file and the config key that names it (for errors).
        max_tokens, max_batch_size: the batch budget (as for evaluation).
        world_size, rank: this process's share of the chunks.
        chunk_records: records read per chunk (default :data:`CHUNK_RECORDS`).
    """

    def __init__(self, datamodule, path: str, config_key: str, max_tokens: int, max_batch_size, world_size: int = 1,
                 rank: int = 0, chunk_records: Optional[int] = None) -> None:
        self.datamodule = datamodule
        self.path = path
        self.config_key = config_key
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.world_size = world_size
        self.rank = rank
        self.chunk_records = chunk_records or CHUNK_RECORDS

    # ---- hooks: a multi-task stream routes each record to its task's data module
    def origin(self) -> str:
        """What to call the predict data in messages."""
        return self.datamodule._origin("predict")

    def note(self, message: str) -> None:
        """Report something that happened to the data (kept for the end-of-run summary)."""
        self.datamodule.note(message)

    def tally(self) -> ContextManager[None]:
        """Where the data module's counts (truncations ...) are summed over the chunks."""
        return self.datamodule.tally()

    def chunk_batches(self, records: Records, origin: str, skipped: Counter) -> Tuple[List[Dict[str, Any]], int]:
        """One chunk's batches and how many of its records are usable (skips counted in ``skipped``)."""
        return self.encoded_batches(self.datamodule, records, origin, skipped)

    def encoded_batches(self, data, records: Records, origin: str, skipped: Counter, extra_tokens: int = 0,
                        skip_label: str = "") -> Tuple[List[Dict[str, Any]], int]:
        """``records`` read, checked and encoded by ``data`` (a task's data module), as batches
        sorted by length; ``extra_tokens`` is added to every input's batching length (a task token)."""
        from s2s_tasks.data.datamodule import Seq2SeqCollator  # the data module imports this module

        examples, numbers, chunk_skipped = data.read_records(records, "predict")
        skipped.update({reason + skip_label: count for reason, count in chunk_skipped.items()})
        if not examples:
            return [], 0
        encoded = data.encode(examples, numbers, origin, with_gold=False)
        collate = Seq2SeqCollator(encoded, data.pad_id)
        sampler = TokenBudgetBatchSampler([n + extra_tokens for n in encoded.lengths()], max_tokens=self.max_tokens,
                                          max_batch_size=self.max_batch_size, shuffle=False)
        return [collate(indices) for indices in sampler], len(examples)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        origin = self.origin()
        skipped: Counter = Counter()
        total = usable = 0
        with self.tally():  # counts over all chunks, reported once at the end
            for number, records in enumerate(iter_file(self.path, self.config_key, origin, self.chunk_records, self.note)):
                total += len(records)
                if number % self.world_size != self.rank:
                    continue
                batches, count = self.chunk_batches(records, origin, skipped)
                usable += count
                for b, batch in enumerate(batches):
                    batch["chunk_end"] = b == len(batches) - 1
                    yield batch
        for reason, count in skipped.items():
            self.note(f"{origin}: skipped {count} of {total} records: {reason}")
        if self.world_size == 1 and not usable:
            raise ValueError(f"{origin}: no usable records (all {total} were skipped)")
