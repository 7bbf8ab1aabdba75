"""The base LightningDataModules: what every task's data shares, and text-to-text pairs.

Raw records (jsonl / json / csv / tsv / parquet / txt files, read by :mod:`records` with line
numbers, or a dataset hub split through ``datasets``) are checked against the fields the task
declares (:mod:`schema`), tokenized with a ``tokenizers`` model and batched under a token budget
over length buckets.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from s2s_tasks.data import cache
from s2s_tasks.data.loading import load_hub_split
from s2s_tasks.data.records import Records, check_file, read_file, records_from_dataset
from s2s_tasks.data.schema import Field, SkipRecord, check_record, read_examples
from s2s_tasks.data.sampler import TokenBudgetBatchSampler
from s2s_tasks.data.streaming import PredictStream
from s2s_tasks.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    check_extra_special_tokens,
    encode_batch,
    iter_texts,
    load_tokenizer,
    tokenizer_from_json,
    train_tokenizer,
)

log = logging.getLogger(__name__)

# Lightning warns that it cannot force drop_last=False on a custom batch sampler at predict time;
# TokenBudgetBatchSampler never drops an example (tests/test_data.py checks it).
warnings.filterwarnings("ignore", message="You are using a custom batch sampler", category=UserWarning)
# predict streams batches (an IterableDataset): the prediction writer orders records by their
# record numbers, not by Lightning's batch indices
warnings.filterwarnings("ignore", message="Couldn't infer the batch indices", category=UserWarning)

SPLITS = ("train", "validation", "test", "predict")
#: padding value of label tensors: ``ignore_index`` of the losses
LABEL_PAD = -100


@dataclass
class EncodedSplit(Dataset):
    """A tokenized split held in memory: ids per example plus the raw text for metrics and output."""

    src_ids: List[List[int]]
    tgt_ids: Optional[List[List[int]]]
    sources: List[Any]  # the raw source values: text (or a list of texts where a task allows it)
    references: Optional[List[List[str]]]
    record_numbers: List[int]  # 1-based position in the input file, so outputs keep input order
    #: per-example task fields (labels, tags, span positions, parsed examples ...), batched by name
    fields: Dict[str, List[Any]] = dc_field(default_factory=dict)
    #: the names in ``fields`` the collator turns into tensors: ints -> ``(B,)``, lists of ints ->
    #: ``(B, L)`` padded with ``LABEL_PAD`` (ignored by the losses); the other fields stay lists
    tensor_fields: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.src_ids)

    def __getitem__(self, i: int) -> int:
        return i  # the collator looks the example up; cheaper than building a dict per example

    def lengths(self) -> List[int]:
        """Batching cost per example: the longer of source and target (``<s> y`` / ``y </s>``)."""
        pairs = self.tie_lengths()
        return [len(s) for s in self.src_ids] if pairs is None else [max(pair) for pair in pairs]

    def tie_lengths(self) -> Optional[List[Tuple[int, int]]]:
        """``(source, target)`` lengths that order examples of equal :meth:`lengths` in a bucket
        (less padding on the shorter side); ``None`` without targets."""
        if self.tgt_ids is None:
            return None
        return [(len(s), len(t) + 1) for s, t in zip(self.src_ids, self.tgt_ids)]


class Seq2SeqCollator:
    """Pad a list of example indices of an :class:`EncodedSplit` into a batch.

    Batch keys: ``src_ids`` (B,S), ``src_mask`` (B,S) bool, ``tgt_in`` (B,T) = ``<s> y``,
    ``tgt_out`` (B,T) = ``y </s>`` (pad elsewhere), ``index`` (B,) record numbers, ``source``
    and ``references`` as lists of text, and the split's task ``fields`` under their names.
    """

    def __init__(self, split: EncodedSplit, pad_id: int = PAD_ID) -> None:
        self.split = split
        self.pad_id = pad_id

    def _pad(self, rows: List[List[int]]) -> torch.Tensor:
        out = torch.full((len(rows), max(len(r) for r in rows)), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def __call__(self, indices: List[int]) -> Dict[str, Any]:
        split = self.split
        src = self._pad([split.src_ids[i] for i in indices])
        batch: Dict[str, Any] = {
            "src_ids": src,
            "src_mask": src != self.pad_id,
            "index": torch.tensor([split.record_numbers[i] for i in indices], dtype=torch.long),
            "source": [split.sources[i] for i in indices],
        }
        if split.tgt_ids is not None:
            batch["tgt_in"] = self._pad([[BOS_ID] + split.tgt_ids[i] for i in indices])
            batch["tgt_out"] = self._pad([split.tgt_ids[i] + [EOS_ID] for i in indices])
        if split.references is not None:
            batch["references"] = [split.references[i] for i in indices]
        for name, values in split.fields.items():
            column = [values[i] for i in indices]
            if name not in split.tensor_fields:
                batch[name] = column
            elif isinstance(column[0], (list, tuple)):
                batch[name] = self._pad_labels(column)
            else:
                batch[name] = torch.tensor(column, dtype=torch.long)
        return batch

    @staticmethod
    def _pad_labels(rows: List[List[int]]) -> torch.Tensor:
        out = torch.full((len(rows), max(1, max(len(r) for r in rows))), LABEL_PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`~s2s_tasks.data.sampler.TokenBudgetBatchSampler` that can
    continue an interrupted epoch where it stopped.

    Lightning saves the ``state_dict()`` of a train loader that has one in every checkpoint
    (``FitLoop.on_save_checkpoint``) and, on ``fit --ckpt_path``, passes it back to
    ``load_state_dict`` if it sets up the train data after loading the checkpoint; here
    ``configure_optimizers`` sets it up earlier (Lightning issue #20550), so
    :class:`s2s_tasks.callbacks.ResumeState` moves the loader instead. The
    state is ``{"epoch": e, "batches_done": k}``: the next iteration continues epoch ``e`` after
    its first ``k`` batches (this rank's, under data parallelism); a finished epoch is saved as
    the start of the next one.

    ``k`` counts the batches this loader has handed out, not those its batch sampler has: worker
    processes draw from the sampler ahead of training. Lightning itself fetches ahead only from
    a loader without a length (``_PrefetchDataFetcher``); this one has a length, so when a
    checkpoint is written ``k`` is exactly the number of batches of the epoch trained on.
    """

    _position: Optional[Dict[str, int]] = None

    def __iter__(self) -> Iterator[Any]:
        # where this iteration starts (the sampler's pending skip is used up once it yields a batch)
        self._position = position = dict(self.batch_sampler.state_dict())
        return self._counted(super().__iter__(), position)  # the iterator is made now, as a plain DataLoader's

    @staticmethod
    def _counted(batches: Iterator[Any], position: Dict[str, int]) -> Iterator[Any]:
        for batch in batches:
            position["batches_done"] += 1
            yield batch

    def state_dict(self) -> Dict[str, int]:
        if self._position is None:  # not iterated yet: where the first iteration will start
            return dict(self.batch_sampler.state_dict())
        epoch, done = self._position["epoch"], self._position["batches_done"]
        if done >= len(self.batch_sampler):
            return {"epoch": epoch + 1, "batches_done": 0}
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)
        self._position = None


class TextDataModule(pl.LightningDataModule):
    """What every task's data module shares: finding each split (a local file, a dataset hub
    split, or the task's embedded sample), the tokenizer (loaded, or trained on the training
    split), and token-budget batching. Subclasses define their ``__init__`` arguments (typed, for
    LightningCLI), :meth:`encode_split` and :meth:`tokenizer_training_texts`.

    It reads these hyperparameters: ``train_file``, ``validation_file``, ``test_file``,
    ``predict_file``, ``dataset``, ``dataset_config``, ``*_split``, ``tokenizer_file``,
    ``tokenizer_kind``, ``tokenizer_vocab_size``, ``min_frequency``, ``lowercase``,
    ``max_tokens``, ``eval_max_tokens``, ``max_batch_size``, ``num_workers``, ``seed``,
    ``cache_dir`` (documented in :class:`Seq2SeqDataModule`).
    """

    #: folder holding the task's embedded ``train/validation/test.jsonl`` and ``predict.txt``
    sample_dir: Optional[Path] = None
    #: extra special tokens of the task (e.g. turn or entity markers): registered when a
    #: tokenizer is trained (never split, dropped when decoding) and required in a loaded one
    special_tokens: ClassVar[Tuple[str, ...]] = ()
    #: how predict records are read and batched (also used for in-process prediction)
    predict_stream_class: ClassVar[type] = PredictStream

    def __init__(self) -> None:
        super().__init__()
        self._raw: Dict[str, Records] = {}
        #: warnings about the data, repeated as a summary at the end of the run
        self.notes: List[str] = []
        self._tally: Optional[Dict[Tuple[str, str], List[int]]] = None
        self._captures: List[List[str]] = []
        #: SHA-256 digests for cache keys: of each data file (by path) and of the encoding code
        self._digests: Dict[str, str] = {}
        self._examples: Dict[str, Tuple[List[Any], List[int]]] = {}
        self._encoded: Dict[str, EncodedSplit] = {}
        self._tokenizer = None

    # ----------------------------------------------------------------------------- raw data
    def _split_source(self, split: str) -> Optional[tuple]:
        """(kind, location, config key) of a split, or None when the split has no data."""
        hp = self.hparams
        file = getattr(hp, f"{split}_file")
        if file is not None:
            return ("file", str(file), f"data.{split}_file")
        if split == "predict":
            return None
        if hp.dataset is not None:
            return ("hub", getattr(hp, f"{split}_split"), "data.dataset")
        if self.sample_dir is not None and not any(
            getattr(hp, f"{s}_file") for s in ("train", "validation", "test")
        ):
            return ("file", str(Path(self.sample_dir) / f"{split}.jsonl"), f"data.{split}_file")
        return None

    def raw_split(self, split: str) -> Records:
        """The split's raw records (read once)."""
        if split not in self._raw:
            source = self._split_source(split)
            if source is None:
                raise ValueError(
                    f"no {split} data: set data.{split}_file"
                    + (" or data.dataset" if split != "predict" else "")
                )
            kind, location, _ = source
            origin = self._origin(split)
            if kind == "file":
                if self.sample_dir is not None and Path(location).parent == Path(self.sample_dir):
                    log.info("Using the embedded sample data: %s", location)
                self._raw[split] = read_file(location, f"data.{split}_file", origin, self.note)
            else:
                dataset = load_hub_split(self.hparams.dataset, self.hparams.dataset_config, location, self.hparams.cache_dir)
                self._raw[split] = records_from_dataset(dataset, origin)
        return self._raw[split]

    def _origin(self, split: str) -> str:
        source = self._split_source(split)
        return f"{split} data {source[1]!r}" if source else f"{split} data"

    def locate(self, origin: str, number: int) -> str:
        """Where record ``number`` of the split called ``origin`` is (its line, where it has one)."""
        for records in self._raw.values():
            if records.origin == origin and 0 <= number - records.first < len(records):
                return records.where(number - records.first)
        return f"{origin}, record {number}"

    # ----------------------------------------------------------------------------- reports
    def note(self, message: str) -> None:
        """Log a warning about the data (records skipped, cut or cleaned) and keep it for the
        summary at the end of the run (:meth:`teardown`)."""
        log.warning(message)
        if message not in self.notes:
            self.notes.append(message)
        for captured in self._captures:
            captured.append(message)

    def report(self, origin: str, count: int, total: int, message: str) -> None:
        """Note ``"<origin>: N of M <message>"`` when ``count`` > 0 (skips, truncations and the like);
        inside :meth:`tally` the counts are summed and noted when it ends."""
        if self._tally is not None:
            counts = self._tally.setdefault((origin, message), [0, 0])
            counts[0] += count
            counts[1] += total
        elif count:
            self.note(f"{origin}: {count} of {total} {message}")

    @contextmanager
    def tally(self) -> Iterator[None]:
        """Sum the :meth:`report` counts of several chunks of data into one note each."""
        self._tally = {}
        try:
            yield
        finally:
            tallied, self._tally = self._tally, None
            for (origin, message), (count, total) in tallied.items():
                self.report(origin, count, total, message)

    def teardown(self, stage: str) -> None:
        if self.notes:
            log.warning("What happened to the data in this run:\n  - %s", "\n  - ".join(self.notes))

    # ----------------------------------------------------------------------------- records -> examples
    def fields(self, split: str, records: Records) -> List[Field]:
        """The columns a split must have and their kinds (``predict`` needs the inputs only)."""
        raise NotImplementedError

    def read_record(self, record: Dict[str, Any], with_gold: bool) -> Any:
        """One record (column -> value, already checked against :meth:`fields`) -> an example;
        raises :class:`~s2s_tasks.data.schema.RecordError` for data that breaks the task's own
        rules and :class:`~s2s_tasks.data.schema.SkipRecord` for a record skipped by policy."""
        raise NotImplementedError

    def check_examples(self, split: str, examples: List[Any], numbers: List[int], origin: str) -> None:
        """Checks across a split's examples once they are read (e.g. labels unseen in training)."""

    def read_records(self, records: Records, split: str) -> Tuple[List[Any], List[int], Counter]:
        """Examples of a table of records, their record numbers and the skip counts per reason."""
        with_gold = split != "predict"
        return read_examples(records, self.fields(split, records), lambda record: self.read_record(record, with_gold))

    def parse_record(self, record: Dict[str, Any], with_gold: bool = True) -> Any:
        """One raw record (column -> value) -> an example, checked as a file's records are;
        raises :class:`~s2s_tasks.data.schema.RecordError` or :class:`~s2s_tasks.data.schema.SkipRecord`."""
        table = Records({column: [value] for column, value in record.items()}, origin="record")
        fields = self.fields("train" if with_gold else "predict", table)
        return self.read_record(check_record(record, fields), with_gold)

    def examples(self, split: str) -> Tuple[List[Any], List[int]]:
        """The split's examples and their 1-based record numbers (read and checked once);
        skipped records are reported per reason."""
        if split not in self._examples:
            records = self.raw_split(split)
            origin = self._origin(split)
            examples, numbers, skipped = self.read_records(records, split)
            for reason, count in skipped.items():
                self.note(f"{origin}: skipped {count} of {len(records)} records: {reason}")
            if not examples:
                raise ValueError(f"{origin}: no usable records (all {len(records)} were skipped)")
            self.check_examples(split, examples, numbers, origin)
            self._examples[split] = (examples, numbers)
        return self._examples[split]

    # ----------------------------------------------------------------------------- tokenizer
    @property
    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` (loaded from ``tokenizer_file`` or trained on the train split)."""
        if self._tokenizer is None:
            hp = self.hparams
            if hp.tokenizer_file is not None:
                tokenizer = load_tokenizer(hp.tokenizer_file)
                check_extra_special_tokens(tokenizer, self.special_tokens, f"data.tokenizer_file {hp.tokenizer_file}")
                self._tokenizer = tokenizer
            elif hp.get("pretrained"):
                from s2s_tasks.data.pretrained_tokenizer import load_hf_tokenizer, pretrained_tokenizer

                self._tokenizer = pretrained_tokenizer(load_hf_tokenizer(hp.pretrained), self.special_tokens)
                log.info("Using the tokenizer of model.pretrained %s (%d tokens)", hp.pretrained, self._tokenizer.get_vocab_size())
            else:
                if self._split_source("train") is None:
                    raise ValueError(
                        "no tokenizer: set data.tokenizer_file (a tokenizer JSON or a checkpoint), "
                        "pass --ckpt_path, or give training data (data.train_file / data.dataset) to train one"
                    )
                self._tokenizer = self._trained_tokenizer()
        return self._tokenizer

    def _trained_tokenizer(self):
        """A tokenizer trained on the training split (from the disk cache for a large local file)."""
        hp = self.hparams
        key = None
        if len(self.examples("train")[0]) >= cache.MIN_RECORDS:
            key = self._cache_key("tokenizer", "train", with_tokenizer=False)
        store = cache.TokenCache(hp.cache_dir) if key else None
        text = store.load_text(key) if store else None
        if text is not None:
            try:
                tokenizer = tokenizer_from_json(text, f"cached tokenizer {key}")
                log.info("Tokenizer trained on %s read from the cache %s", self._origin("train"), store.root)
                return tokenizer
            except ValueError as err:
                log.warning("%s; training the tokenizer again", err)
        log.info(
            "Training a %s tokenizer (data.tokenizer_vocab_size=%d) on the training split",
            hp.tokenizer_kind, hp.tokenizer_vocab_size,
        )
        tokenizer = train_tokenizer(
            self.tokenizer_training_texts(),
            vocab_size=hp.tokenizer_vocab_size,
            kind=hp.tokenizer_kind,
            min_frequency=hp.min_frequency,
            lowercase=hp.lowercase,
            extra_special_tokens=self.special_tokens,
        )
        if store is not None:
            store.save_text(key, tokenizer.to_str())
        return tokenizer

    def tokenizer_training_texts(self) -> Iterator[str]:
        """The texts a new tokenizer is trained on (the training split's inputs and outputs)."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer (special tokens included); linked into ``model.vocab_size``."""
        return self.tokenizer.get_vocab_size()

    @property
    def pad_id(self) -> int:
        return PAD_ID

    def encode_split(self, split: str) -> EncodedSplit:
        """The split tokenized and ready to batch (computed once; large splits of local files
        are cached on disk, keyed by content: see :mod:`~s2s_tasks.data.cache`)."""
        if split not in self._encoded:
            examples, numbers = self.examples(split)
            with_gold = split != "predict"
            key = self._cache_key("tokenized", split) if len(examples) >= cache.MIN_RECORDS else None
            self._encoded[split] = self.encode(examples, numbers, self._origin(split), with_gold, cache_key=key)
        return self._encoded[split]

    def encode(self, examples: List[Any], numbers: List[int], origin: str, with_gold: bool,
               cache_key: Optional[str] = None) -> EncodedSplit:
        """Examples (with their record numbers) tokenized and ready to batch; truncations and
        the like are reported with :meth:`report`. With ``cache_key`` the token ids are read from
        or written to the disk cache."""
        store = cache.TokenCache(self.hparams.cache_dir) if cache_key else None
        found = store.load_columns(cache_key) if store else None
        if found is not None:
            columns, notes = found
            log.info("%s: token ids read from the cache %s", origin, store.root)
            for message in notes:
                self.note(message)
        else:
            with self._capture_notes() as notes:
                columns = self.tokenize(examples, origin, with_gold)
            if store is not None:
                store.save_columns(cache_key, columns, notes)
        return self.assemble(examples, numbers, columns, with_gold)

    def tokenize(self, examples: List[Any], origin: str, with_gold: bool) -> Dict[str, List[Any]]:
        """Token ids and other integer features of examples, as columns (one value per encoded
        row): ``src_ids``, optionally ``tgt_ids``, and task columns."""
        raise NotImplementedError

    def assemble(self, examples: List[Any], numbers: List[int], columns: Dict[str, List[Any]], with_gold: bool) -> EncodedSplit:
        """The :class:`EncodedSplit` of examples and their tokenized columns."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- the disk cache
    def cache_settings(self) -> Dict[str, Any]:
        """What the encoding depends on besides the data and the tokenizer: the data settings
        (not where the data is or how it is batched)."""
        ignore = {"train_file", "validation_file", "test_file", "predict_file", "dataset", "dataset_config",
                  "train_split", "validation_split", "test_split", "tokenizer_file", "cache_dir", "num_workers",
                  "max_tokens", "eval_max_tokens", "max_batch_size", "seed"}
        return {k: v for k, v in dict(self.hparams).items() if k not in ignore}

    def _cache_key(self, what: str, split: str, with_tokenizer: bool = True) -> Optional[str]:
        """The content key of a split's cache entry; None for data that is not a local file."""
        source = self._split_source(split)
        if source is None or source[0] != "file":
            return None
        # the tokenizer's and the split's keys need the same digests: compute each once
        if "code" not in self._digests:
            self._digests["code"] = cache.code_digest(
                [type(self)], ["s2s_tasks.data.tokenizer", "s2s_tasks.data.records", "s2s_tasks.data.schema"])
        if source[1] not in self._digests:
            self._digests[source[1]] = cache.file_digest(source[1])
        tokenizer = self.tokenizer.to_str() if with_tokenizer else None
        return cache.make_key(what, split, self._digests[source[1]], tokenizer, self.cache_settings(), self._digests["code"])

    @contextmanager
    def _capture_notes(self) -> Iterator[List[str]]:
        """The notes made inside the block (stored with a cache entry and replayed when it is used)."""
        captured: List[str] = []
        self._captures.append(captured)
        try:
            yield captured
        finally:
            self._captures.remove(captured)

    # ----------------------------------------------------------------------------- Lightning hooks
    def setup(self, stage: Optional[str] = None) -> None:
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}
        for split in needed.get(stage, ()) if stage else ("train", "validation"):
            if split == "validation" and stage == "fit" and self._split_source("validation") is None:
                log.warning("No validation data (data.validation_file): training without validation")
                continue
            if split == "predict":  # streamed by predict_dataloader; fail here, before the model runs
                self._predict_path()
                self.tokenizer  # noqa: B018 -- likewise
                continue
            self.encode_split(split)

    def has_split(self, split: str) -> bool:
        return self._split_source(split) is not None

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.encode_split(split)
        trainer = self.trainer
        world_size = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        hp = self.hparams
        budget = hp.max_tokens if shuffle else (hp.eval_max_tokens or hp.max_tokens)
        sampler = TokenBudgetBatchSampler(
            data.lengths(), max_tokens=budget, max_batch_size=hp.max_batch_size,
            shuffle=shuffle, seed=hp.seed, num_replicas=world_size, rank=rank, tie_lengths=data.tie_lengths(),
        )
        # the train loader is resumable mid-epoch; evaluation always reads its data from the start
        return (ResumableDataLoader if split == "train" else DataLoader)(
            data,
            batch_sampler=sampler,
            collate_fn=Seq2SeqCollator(data, PAD_ID),
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("validation", shuffle=False) if self.has_split("validation") else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _predict_path(self) -> str:
        """``data.predict_file``, checked to be a readable data file."""
        if self.hparams.predict_file is None:
            raise ValueError("no predict data: set data.predict_file")
        return str(check_file(str(self.hparams.predict_file), "data.predict_file"))

    def predict_dataloader(self) -> DataLoader:
        """The predict file, read in chunks (:mod:`~s2s_tasks.data.streaming`): flat memory."""
        path = self._predict_path()
        trainer = self.trainer
        hp = self.hparams
        stream = self.predict_stream_class(
            self, path, "data.predict_file", max_tokens=hp.eval_max_tokens or hp.max_tokens,
            max_batch_size=hp.max_batch_size, world_size=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )
        # one process reads the stream: a worker would hold a copy of the data module and its
        # notes (what was skipped or cut) would not reach the end-of-run summary
        return DataLoader(stream, batch_size=None)

class Seq2SeqDataModule(TextDataModule):
    """Source/target text pairs for generation tasks (translation, summarization, dialogue ...).

    With no file and no dataset given, the task's embedded sample data (``sample_dir``) is used.

    Args:
        train_file, validation_file, test_file: local jsonl/json/csv/tsv/parquet files.
        predict_file: inputs for ``predict``: the same formats, or ``.txt`` with one input per
            line; read in chunks (:mod:`~s2s_tasks.data.streaming`), so it may be of any size.
        dataset, dataset_config: a dataset hub name (and config) used for the splits whose file
            is not given; split names are ``train_split``, ``validation_split``, ``test_split``.
        source_column, target_column: column names of the input and output text.
        references_column: optional column with a list of reference texts (multi-reference
            evaluation); the target column is used otherwise.
        tokenizer_file: a ``tokenizers`` JSON file or an s2s-tasks checkpoint to take the
            tokenizer from; otherwise one is trained on the training split (shared source/target).
        tokenizer_kind, tokenizer_vocab_size, min_frequency, lowercase: settings for that training.
        pretrained: the Hugging Face model whose tokenizer is used (set from ``model.pretrained``
            by the CLI); the tokenizer settings above are then unused.
        max_source_tokens, max_target_tokens: truncation lengths (special tokens included);
            the number of truncated records is reported.
        max_tokens: token budget of a training batch (padded size); ``eval_max_tokens`` for
            validation/test/predict (defaults to ``max_tokens``).
        max_batch_size: optional cap on examples per batch.
        num_workers: DataLoader worker processes.
        seed: seed of the batch shuffling (reshuffled every epoch).
        cache_dir: where tokenized splits and trained tokenizers of large files are cached (keyed
            by content, see :mod:`~s2s_tasks.data.cache`; default ``$S2S_TASKS_CACHE`` or
            ``~/.cache/s2s-tasks``), and where ``datasets`` keeps hub downloads (default: its own).
    """

    # ---- hooks for tasks whose source is more than one text (e.g. a dialogue history) ----------
    #: whether ``data.source_column`` may hold a list of texts besides plain text
    list_sources: ClassVar[bool] = False
    #: boolean columns returned by :meth:`encode_sources` -> what a True means; each is counted
    #: over the kept records and reported as "N of M records <message>" (formatted with the hparams)
    source_flags: ClassVar[Dict[str, str]] = {
        "src_truncated": "truncated to data.max_source_tokens={max_source_tokens} tokens",
    }

    def __init__(
        self,
        train_file: Optional[str] = None,
        validation_file: Optional[str] = None,
        test_file: Optional[str] = None,
        predict_file: Optional[str] = None,
        dataset: Optional[str] = None,
        dataset_config: Optional[str] = None,
        train_split: str = "train",
        validation_split: str = "validation",
        test_split: str = "test",
        source_column: str = "source",
        target_column: str = "target",
        references_column: Optional[str] = None,
        tokenizer_file: Optional[str] = None,
        tokenizer_kind: str = "bpe",
        tokenizer_vocab_size: int = 8000,
        min_frequency: int = 2,
        lowercase: bool = False,
        max_source_tokens: int = 256,
        max_target_tokens: int = 128,
        max_tokens: int = 4096,
        eval_max_tokens: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        num_workers: int = 0,
        seed: int = 1234,
        cache_dir: Optional[str] = None,
        pretrained: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for key, value in (("max_source_tokens", max_source_tokens), ("max_target_tokens", max_target_tokens)):
            if value < 2:
                raise ValueError(f"data.{key} must be at least 2 (room for the special tokens), got {value}")

    def fields(self, split: str, records: Records) -> List[Field]:
        hp = self.hparams
        source_kind = "texts" if self.list_sources else "text"
        source_column = hp.source_column
        if split == "predict" and "text" in records.column_names and source_column not in records.column_names:
            source_column = "text"  # a .txt predict file
        fields = [Field(source_column, "data.source_column", source_kind, "source")]
        if split != "predict":
            fields.append(Field(hp.target_column, "data.target_column", "text", "target"))
            if split != "train" and hp.references_column is not None:
                fields.append(Field(hp.references_column, "data.references_column", "texts", "references"))
        self._columns = [f.column for f in fields]
        return fields

    def read_record(self, record: Dict[str, Any], with_gold: bool) -> "Seq2SeqExample":
        columns = self._columns
        source = record[columns[0]]
        if not any(t.strip() for t in self.source_segments(source, self.hparams)):
            raise SkipRecord("empty or whitespace-only source")
        target = record[columns[1]] if with_gold else None
        references = None
        if len(columns) > 2:
            value = record[columns[2]]
            references = [value] if isinstance(value, str) else [r for r in value if r.strip()]
        return Seq2SeqExample(source, target, references)

    def tokenizer_training_texts(self) -> Iterator[str]:
        examples, _ = self.examples("train")
        hp = self.hparams
        source_texts = (t for e in examples for t in self.source_segments(e.source, hp))
        return iter_texts([source_texts, [e.target for e in examples]])

    # ----------------------------------------------------------------------------- encoding
    # The two hooks are classmethods taking the hyperparameters explicitly: they depend on
    # nothing but the text and the settings.
    @classmethod
    def source_segments(cls, value: Any, hparams: Mapping[str, Any]) -> List[str]:
        """The texts inside one raw source value: what the tokenizer is trained on and what the
        empty-record check looks at. Default: the value itself (``[]`` when missing)."""
        return [value] if value else []

    @classmethod
    def encode_sources(cls, values: List[Any], tokenizer, hparams: Mapping[str, Any]) -> Dict[str, list]:
        """Token ids of a batch of raw source values.

        Returns:
            ``{"src_ids": [[id, ..., EOS]], ...}``: one list per value, at most
            ``max_source_tokens`` long and ending in ``</s>``, plus one list of booleans per key of
            :attr:`source_flags`. Default: the text encoded and cut at the end (``src_truncated``).
        """
        limit = hparams["max_source_tokens"] - 1
        ids = encode_batch(tokenizer, [v or "" for v in values])
        return {"src_ids": [i[:limit] + [EOS_ID] for i in ids], "src_truncated": [len(i) > limit for i in ids]}

    def tokenize(self, examples: List["Seq2SeqExample"], origin: str, with_gold: bool) -> Dict[str, List[Any]]:
        hp = self.hparams
        tokenizer = self.tokenizer
        out = self.encode_sources([e.source for e in examples], tokenizer, dict(hp))
        messages = dict(self.source_flags)
        columns = {"src_ids": out["src_ids"]}
        if with_gold:
            max_tgt = hp.max_target_tokens - 1
            tgt = encode_batch(tokenizer, [e.target for e in examples])
            columns["tgt_ids"] = [ids[:max_tgt] for ids in tgt]
            out["tgt_truncated"] = [len(i) > max_tgt for i in tgt]
            messages["tgt_truncated"] = "truncated to data.max_target_tokens={max_target_tokens} tokens"
        for column, message in messages.items():
            self.report(origin, sum(out[column]), len(examples), "records " + message.format(**hp))
        return columns

    def assemble(self, examples: List["Seq2SeqExample"], numbers: List[int], columns: Dict[str, List[Any]], with_gold: bool) -> EncodedSplit:
        return EncodedSplit(
            src_ids=columns["src_ids"],
            tgt_ids=columns.get("tgt_ids"),
            sources=[e.source for e in examples],
            references=[e.references or [e.target] for e in examples] if with_gold else None,
            record_numbers=list(numbers),
        )


class Seq2SeqExample(NamedTuple):
    """One source/target pair: the raw source value (text, or a list of texts where a task
    allows it), the target text (``None`` at predict time) and optional references."""

    source: Any
    target: Optional[str]
    references: Optional[List[str]]
