"""The base data module of the tasks that predict structure from text: a label (classification),
tags (NER), an answer span (extractive QA) or a relation (relation extraction).

A task subclass declares its fields (:meth:`~s2s_tasks.data.datamodule.TextDataModule.fields`,
checked by :mod:`s2s_tasks.data.schema`), says how one checked record becomes an *example*
(:meth:`~s2s_tasks.data.datamodule.TextDataModule.read_record`, with the task's own checks), and then how examples are encoded in each head mode:

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
from typing import Any, ClassVar, Dict, Iterable, Iterator, List, Optional, Tuple

from s2s_tasks.data.datamodule import EncodedSplit, TextDataModule
from s2s_tasks.data.tokenizer import EOS_ID, encode_batch

log = logging.getLogger(__name__)

HEADS = ("encoder", "generate")


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
        pretrained: the Hugging Face model whose tokenizer is used (set from ``model.pretrained``
            by the CLI); the tokenizer settings above are then unused.
        max_source_tokens: longest encoder input (special tokens included); longer inputs are
            cut (or windowed, for QA) and counted.
        max_target_tokens: longest rendered target in ``generate`` mode.
        max_tokens, eval_max_tokens, max_batch_size: token budget of training / evaluation
            batches, and an optional cap on examples per batch.
        num_workers, seed, cache_dir: DataLoader workers, shuffling seed, the token cache (see
            :class:`~s2s_tasks.data.datamodule.Seq2SeqDataModule`).
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
        pretrained: Optional[str] = None,
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
        self._label_names: Optional[List[str]] = None

    # ----------------------------------------------------------------------------- task hooks
    # fields(split, records) and read_record(record, with_gold): see TextDataModule
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
    def check_examples(self, split: str, examples: List[Any], numbers: List[int], origin: str) -> None:
        if self.uses_labels and split not in ("train", "predict"):
            self._check_labels(examples, numbers, origin)

    def _check_labels(self, examples: List[Any], numbers: List[int], origin: str) -> None:
        known = set(self.label_names)
        for example, number in zip(examples, numbers):
            unknown = [label for label in self.example_labels(example) if label not in known]
            if unknown:
                raise ValueError(
                    f"{self.locate(origin, number)}: label {unknown[0]!r} is not in the label set {self.label_names} "
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
            elif self._checkpoint_labels():
                self._label_names = self._checkpoint_labels()
            elif hp.tokenizer_file is not None and str(hp.tokenizer_file).endswith(".ckpt") and not self.has_split("train"):
                raise ValueError(f"checkpoint {hp.tokenizer_file} has no label set; set data.labels")
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

    def _checkpoint_labels(self) -> List[str]:
        """The labels of the checkpoint given as ``tokenizer_file`` (none for another file)."""
        path = self.hparams.tokenizer_file
        if path is None or not str(path).endswith(".ckpt"):
            return []
        from s2s_tasks.checkpoint import read_checkpoint_extras

        return list((read_checkpoint_extras(path).get("label_maps") or {}).get("labels") or [])

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

    def tokenize(self, examples: List[Any], origin: str, with_gold: bool) -> Dict[str, List[Any]]:
        hp = self.hparams
        tokenizer = self.tokenizer
        if hp.head == "generate":
            limit = hp.max_source_tokens - 1
            ids = encode_batch(tokenizer, [self.source_text(e) for e in examples])
            self.report(origin, sum(len(i) > limit for i in ids), len(ids), f"inputs truncated to data.max_source_tokens={hp.max_source_tokens} tokens")
            columns: Dict[str, List[Any]] = {"src_ids": [i[:limit] + [EOS_ID] for i in ids], "example": list(range(len(examples)))}
            if with_gold:
                limit_t = hp.max_target_tokens - 1
                tgt = encode_batch(tokenizer, [self.target_text(e) for e in examples])
                self.report(origin, sum(len(i) > limit_t for i in tgt), len(tgt), f"targets truncated to data.max_target_tokens={hp.max_target_tokens} tokens")
                columns["tgt_ids"] = [i[:limit_t] for i in tgt]
            return columns
        features = self.encode_examples(examples, tokenizer, with_gold, origin)
        names = list(features[0]) if features else ["src_ids", "example"]
        return {name: [f[name] for f in features] for name in names}

    def assemble(self, examples: List[Any], numbers: List[int], columns: Dict[str, List[Any]], with_gold: bool) -> EncodedSplit:
        hp = self.hparams
        columns = dict(columns)
        src_ids = columns.pop("src_ids")
        tgt_ids = columns.pop("tgt_ids", None)
        owners = columns.pop("example")
        fields: Dict[str, List[Any]] = dict(columns)
        fields["example"] = [examples[o] for o in owners]
        if with_gold:
            golds = [self.gold(e) for e in examples]
            fields["gold"] = [golds[o] for o in owners]
        return EncodedSplit(
            src_ids=src_ids,
            tgt_ids=tgt_ids,
            sources=[self.display_source(examples[o]) for o in owners],
            references=None,
            record_numbers=[numbers[o] for o in owners],
            fields=fields,
            tensor_fields=self.tensor_fields if hp.head == "encoder" else (),
        )

    def cache_settings(self) -> Dict[str, Any]:
        settings = super().cache_settings()
        if self.uses_labels:
            settings["labels"] = self.label_names
        return settings
