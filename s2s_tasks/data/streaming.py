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
from typing import Any, Dict, Iterator, Optional

from torch.utils.data import IterableDataset

from s2s_tasks.data.records import iter_file
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

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        from s2s_tasks.data.datamodule import Seq2SeqCollator

        data = self.datamodule
        origin = data._origin("predict")
        skipped: Counter = Counter()
        total = usable = 0
        with data.tally():  # counts over all chunks, reported once at the end
            for number, records in enumerate(iter_file(self.path, self.config_key, origin, self.chunk_records, data.note)):
                total += len(records)
                if number % self.world_size != self.rank:
                    continue
                examples, numbers, chunk_skipped = data.read_records(records, "predict")
                skipped.update(chunk_skipped)
                usable += len(examples)
                if not examples:
                    continue
                encoded = data.encode(examples, numbers, origin, with_gold=False)
                collate = Seq2SeqCollator(encoded, data.pad_id)
                batches = list(TokenBudgetBatchSampler(
                    encoded.lengths(), max_tokens=self.max_tokens, max_batch_size=self.max_batch_size, shuffle=False,
                ))
                for b, indices in enumerate(batches):
                    batch = collate(indices)
                    batch["chunk_end"] = b == len(batches) - 1
                    yield batch
        for reason, count in skipped.items():
            data.note(f"{origin}: skipped {count} of {total} records: {reason}")
        if self.world_size == 1 and not usable:
            raise ValueError(f"{origin}: no usable records (all {total} were skipped)")
