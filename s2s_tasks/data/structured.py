"""The base data module of the tasks that predict structure from text: a label (classification),
tags (NER), an answer span (extractive QA) or a relation (relation extraction).

A task subclass says how one raw record becomes an *example* (:meth:`StructuredDataModule.read_record`,
which also validates it), and then how examples are encoded in each head mode:

* ``head: encoder`` -- :meth:`~StructuredDataModule.encode_examples` turns examples into features
  (token ids plus integer labels/positions) for an encoder and a task head;
* ``head: generate`` -- :meth:`~StructuredDataModule.source_text` and
  :meth:`~StructuredDataModule.target_text` render each example as a text-to-text pair for the
  shared encoder-decoder; the model parses generated text back into the same structure.

Examples are ``NamedTuple``s (Lightning moves batches to the device by walking them, and
refuses frozen dataclasses). Every batch carries ``example`` (the parsed examples) and, where gold is known, ``gold`` (what the
metrics compare against), so both modes are scored by the same code.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, ClassVar, Dict, Iterable, Iterator, List, Optional, Tuple

from s2s_tasks.data.datamodule import EncodedSplit, TextDataModule
from s2s_tasks.data.loading import check_columns
from s2s_tasks.data.tokenizer import EOS_ID, encode_batch

log = logging.getLogger(__name__)

HEADS = ("encoder", "generate")


class RecordError(ValueError):
    """A record that cannot be used: ``field`` names the offending column, ``message`` says what
    was expected and how to fix it (the data module adds the file and record number)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class SkipRecord(Exception):
    """A record the task skips by policy (e.g. empty text); ``reason`` is counted and reported."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_text(record: Dict[str, Any], column: str, what: str = "text") -> str:
    """The text in ``record[column]``: a :class:`RecordError` when it is not a string, a
    :class:`SkipRecord` (counted as "empty or whitespace-only <what>") when it is empty."""
    value = record[column]
    if value is not None and not isinstance(value, str):
        expected = "text" if what == "text" else f"the {what} as text"
        raise RecordError(column, f"expected {expected}, got {type(value).__name__} ({str(value)[:60]!r})")
    if not value or not value.strip():
        raise SkipRecord(f"empty or whitespace-only {what}")
    return value


class StructuredDataModule(TextDataModule):
    """Records -> examples -> features (encoder head) or text pairs (generate head).

    Args:
        train_file, validation_file, test_file, predict_file, dataset, dataset_config,
        train_split, validation_split, test_split: where the data is (see
            :class:`~s2s_tasks.data.datamodule.Seq2SeqDataModule`); with none given, the task's
            embedded sample data.
        head: ``encoder`` or ``generate``; set from ``model.head`` by the CLI.
        labels: the label inventory in a fixed order; by default the labels of the training
            split (or, with ``--ckpt_path``, the checkpoint's). A validation/test label outside
            it is an error.
        tokenizer_file, tokenizer_kind, tokenizer_vocab_size, min_frequency, lowercase: the
            tokenizer (loaded, or trained on the training split's rendered inputs, and targets
            in ``generate`` mode).
        max_source_tokens: longest encoder input (special tokens included); longer inputs are
            cut (or windowed, for QA) and counted.
        max_target_tokens: longest rendered target in ``generate`` mode.
        max_tokens, eval_max_tokens, max_batch_size: token budget of training / evaluation
            batches, and an optional cap on examples per batch.
        num_workers, seed, cache_dir: DataLoader workers, shuffling seed, ``datasets`` cache.
    """

    #: whether the task has a label inventory (``num_labels`` is linked into the model)
    uses_labels: ClassVar[bool] = True
    #: feature names turned into tensors by the collator (ints -> (B,), int lists -> padded (B, L))
    tensor_fields: ClassVar[Tuple[str, ...]] = ()
    #: ``__init__`` arguments the model has too and must share: the CLI sets ``model.X`` from
    #: ``data.X`` (``link_arguments``), so a user sets them once, on the data
    model_links: ClassVar[Tuple[str, ...]] = ()

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
        head: str = "encoder",
        labels: Optional[List[str]] = None,
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if head not in HEADS:
            raise ValueError(f"model.head must be one of {list(HEADS)}, got {head!r}")
        for key, value in (("max_source_tokens", max_source_tokens), ("max_target_tokens", max_target_tokens)):
            if value < 3:
                raise ValueError(f"data.{key} must be at least 3 (room for the special tokens), got {value}")
        if labels is not None and (not labels or len(set(labels)) != len(labels)):
            raise ValueError(f"data.labels must list distinct labels, got {labels!r}")
        self._examples: Dict[str, Tuple[List[Any], List[int]]] = {}
        self._label_names: Optional[List[str]] = None

    # ----------------------------------------------------------------------------- task hooks
    def columns(self, split: str, column_names: List[str]) -> Dict[str, str]:
        """Config key -> column that the split must have (``predict`` needs the inputs only)."""
        raise NotImplementedError

    def read_record(self, record: Dict[str, Any], with_gold: bool) -> Any:
        """One raw record (column -> value) -> an example; raises :class:`RecordError` for bad
        data and :class:`SkipRecord` for a record skipped by policy."""
        raise NotImplementedError

    def example_labels(self, example: Any) -> Iterable[str]:
        """The labels an example uses (to build and check the label inventory)."""
        return ()

    def order_labels(self, labels: Iterable[str]) -> List[str]:
        """The inventory's order when read from the training data (default: sorted)."""
        return sorted(labels)

    def source_text(self, example: Any) -> str:
        """The input as one text: the encoder input in ``generate`` mode, and what the tokenizer trains on."""
        raise NotImplementedError

    def target_text(self, example: Any) -> str:
        """The gold structure rendered as text (``generate`` mode)."""
        raise NotImplementedError

    def gold(self, example: Any) -> Any:
        """What the metrics compare predictions with."""
        raise NotImplementedError

    def display_source(self, example: Any) -> Any:
        """The input as written to prediction files."""
        return self.source_text(example)

    def encode_examples(self, examples: List[Any], tokenizer, with_gold: bool, origin: str) -> List[Dict[str, Any]]:
        """Features for the encoder head: dicts with ``src_ids``, ``example`` (position in
        ``examples``; several features may share one, e.g. QA windows) and task fields."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- examples and labels
    def examples(self, split: str) -> Tuple[List[Any], List[int]]:
        """The split's examples and their 1-based record numbers (read and validated once)."""
        if split in self._examples:
            return self._examples[split]
        dataset = self.raw_split(split)
        origin = self._origin(split)
        columns = self.columns(split, list(dataset.column_names))
        check_columns(dataset, columns, origin)
        key_of = {column: key for key, column in columns.items()}
        with_gold = split != "predict"
        values = {column: list(dataset[column]) for column in columns.values()}
        examples, numbers, skipped = [], [], Counter()
        for i in range(len(dataset)):
            record = {column: column_values[i] for column, column_values in values.items()}
            try:
                examples.append(self.read_record(record, with_gold))
                numbers.append(i + 1)
            except SkipRecord as skip:
                skipped[skip.reason] += 1
            except RecordError as err:
                key = key_of.get(err.field)
                where = f"field {err.field!r}" + (f" ({key})" if key else "")
                raise ValueError(f"{origin}, record {i + 1}, {where}: {err.message}") from None
        for reason, count in skipped.items():
            log.warning("%s: skipped %d of %d records: %s", origin, count, len(dataset), reason)
        if not examples:
            raise ValueError(f"{origin}: no usable records (all {len(dataset)} were skipped)")
        if self.uses_labels and with_gold and split != "train":
            self._check_labels(examples, numbers, origin)
        self._examples[split] = (examples, numbers)
        return examples, numbers

    def _check_labels(self, examples: List[Any], numbers: List[int], origin: str) -> None:
        known = set(self.label_names)
        for example, number in zip(examples, numbers):
            unknown = [label for label in self.example_labels(example) if label not in known]
            if unknown:
                raise ValueError(
                    f"{origin}, record {number}: label {unknown[0]!r} is not in the label set {self.label_names} "
                    "(read from the training data or the checkpoint). Fix the record, or list every label in data.labels."
                )

    @property
    def label_names(self) -> List[str]:
        """The label inventory: ``data.labels``, else the checkpoint's (``--ckpt_path``), else the
        training split's labels in :meth:`order_labels` order."""
        if not self.uses_labels:
            return []
        if self._label_names is None:
            hp = self.hparams
            if hp.labels:
                self._label_names = list(hp.labels)
            elif hp.tokenizer_file is not None and str(hp.tokenizer_file).endswith(".ckpt"):
                from s2s_tasks.checkpoint import read_checkpoint_extras

                stored = (read_checkpoint_extras(hp.tokenizer_file).get("label_maps") or {}).get("labels")
                if not stored:
                    raise ValueError(f"checkpoint {hp.tokenizer_file} has no label set; set data.labels")
                self._label_names = list(stored)
            elif self.has_split("train"):
                examples, _ = self.examples("train")
                found = {label for example in examples for label in self.example_labels(example)}
                if not found:
                    raise ValueError(f"{self._origin('train')}: no labels found; set data.labels or fix the label column")
                self._label_names = self.order_labels(found)
                log.info("%d labels from the training data: %s", len(self._label_names), self._label_names)
            else:
                raise ValueError("no label set: give training data, --ckpt_path of a trained model, or data.labels")
            if self.hparams.labels and self.has_split("train") and hp.tokenizer_file is None:
                train, numbers = self.examples("train")
                self._check_labels(train, numbers, self._origin("train"))
        return self._label_names

    @property
    def num_labels(self) -> int:
        """Size of the label inventory; linked into ``model.num_labels``."""
        return len(self.label_names)

    @property
    def label_to_id(self) -> Dict[str, int]:
        return {label: i for i, label in enumerate(self.label_names)}

    # ----------------------------------------------------------------------------- tokenizer and encoding
    def tokenizer_training_texts(self) -> Iterator[str]:
        examples, _ = self.examples("train")
        for example in examples:
            yield self.source_text(example)
            if self.hparams.head == "generate":
                yield self.target_text(example)

    def report(self, origin: str, count: int, total: int, message: str) -> None:
        """Log ``"N of M records <message>"`` when ``count`` > 0 (truncations and the like)."""
        if count:
            log.warning("%s: %d of %d %s", origin, count, total, message)

    def encode_split(self, split: str) -> EncodedSplit:
        if split in self._encoded:
            return self._encoded[split]
        hp = self.hparams
        examples, numbers = self.examples(split)
        origin = self._origin(split)
        with_gold = split != "predict"
        tokenizer = self.tokenizer
        if self.uses_labels:
            self.label_names  # noqa: B018 -- resolve (and check) the inventory before encoding
        fields: Dict[str, List[Any]] = {}
        if hp.head == "generate":
            limit = hp.max_source_tokens - 1
            ids = encode_batch(tokenizer, [self.source_text(e) for e in examples])
            self.report(origin, sum(len(i) > limit for i in ids), len(ids), f"inputs truncated to data.max_source_tokens={hp.max_source_tokens} tokens")
            src_ids = [i[:limit] + [EOS_ID] for i in ids]
            tgt_ids = None
            if with_gold:
                limit_t = hp.max_target_tokens - 1
                tgt = encode_batch(tokenizer, [self.target_text(e) for e in examples])
                self.report(origin, sum(len(i) > limit_t for i in tgt), len(tgt), f"targets truncated to data.max_target_tokens={hp.max_target_tokens} tokens")
                tgt_ids = [i[:limit_t] for i in tgt]
            owners = list(range(len(examples)))
        else:
            features = self.encode_examples(examples, tokenizer, with_gold, origin)
            src_ids = [f.pop("src_ids") for f in features]
            tgt_ids = None
            owners = [f.pop("example") for f in features]
            for name in features[0] if features else ():
                fields[name] = [f[name] for f in features]
        fields["example"] = [examples[o] for o in owners]
        if with_gold:
            golds = [self.gold(e) for e in examples]
            fields["gold"] = [golds[o] for o in owners]
        result = EncodedSplit(
            src_ids=src_ids,
            tgt_ids=tgt_ids,
            sources=[self.display_source(examples[o]) for o in owners],
            references=None,
            record_numbers=[numbers[o] for o in owners],
            fields=fields,
            tensor_fields=self.tensor_fields if hp.head == "encoder" else (),
        )
        self._encoded[split] = result
        return result
