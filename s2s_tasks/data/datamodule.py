"""The base LightningDataModule for text-to-text tasks.

Raw records (jsonl / csv / tsv / parquet / txt files, or a dataset hub name) are loaded with
``datasets``, checked against the configured columns, tokenized with a ``tokenizers`` model in a
batched ``map`` and batched under a token budget over length buckets.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from s2s_tasks.data.loading import check_columns, check_text_values, load_hub_split, load_split_file
from s2s_tasks.data.sampler import TokenBudgetBatchSampler
from s2s_tasks.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    check_extra_special_tokens,
    encode_batch,
    iter_texts,
    load_tokenizer,
    train_tokenizer,
)

log = logging.getLogger(__name__)

# Lightning warns that it cannot force drop_last=False on a custom batch sampler at predict time;
# TokenBudgetBatchSampler never drops an example (tests/test_data.py checks it).
warnings.filterwarnings("ignore", message="You are using a custom batch sampler", category=UserWarning)

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
        if self.tgt_ids is None:
            return [len(s) for s in self.src_ids]
        return [max(len(s), len(t) + 1) for s, t in zip(self.src_ids, self.tgt_ids)]


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

    def __init__(self) -> None:
        super().__init__()
        self._raw: Dict[str, Any] = {}
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

    def raw_split(self, split: str):
        """The split as a ``datasets.Dataset`` (loaded once)."""
        if split not in self._raw:
            source = self._split_source(split)
            if source is None:
                raise ValueError(
                    f"no {split} data: set data.{split}_file"
                    + (" or data.dataset" if split != "predict" else "")
                )
            kind, location, _ = source
            if kind == "file":
                if self.sample_dir is not None and Path(location).parent == Path(self.sample_dir):
                    log.info("Using the embedded sample data: %s", location)
                self._raw[split] = load_split_file(location, f"data.{split}_file", self.hparams.cache_dir)
            else:
                self._raw[split] = load_hub_split(
                    self.hparams.dataset, self.hparams.dataset_config, location, self.hparams.cache_dir
                )
        return self._raw[split]

    def _origin(self, split: str) -> str:
        source = self._split_source(split)
        return f"{split} data {source[1]!r}" if source else f"{split} data"

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
            else:
                if self._split_source("train") is None:
                    raise ValueError(
                        "no tokenizer: set data.tokenizer_file (a tokenizer JSON or a checkpoint), "
                        "pass --ckpt_path, or give training data (data.train_file / data.dataset) to train one"
                    )
                log.info(
                    "Training a %s tokenizer (data.tokenizer_vocab_size=%d) on the training split",
                    hp.tokenizer_kind, hp.tokenizer_vocab_size,
                )
                self._tokenizer = train_tokenizer(
                    self.tokenizer_training_texts(),
                    vocab_size=hp.tokenizer_vocab_size,
                    kind=hp.tokenizer_kind,
                    min_frequency=hp.min_frequency,
                    lowercase=hp.lowercase,
                    extra_special_tokens=self.special_tokens,
                )
        return self._tokenizer

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
        """The split tokenized and ready to batch (computed once)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- Lightning hooks
    def setup(self, stage: Optional[str] = None) -> None:
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}
        for split in needed.get(stage, ()) if stage else ("train", "validation"):
            if split == "validation" and stage == "fit" and self._split_source("validation") is None:
                log.warning("No validation data (data.validation_file): training without validation")
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
            shuffle=shuffle, seed=hp.seed, num_replicas=world_size, rank=rank,
        )
        return DataLoader(
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

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)

class Seq2SeqDataModule(TextDataModule):
    """Source/target text pairs for generation tasks (translation, summarization, dialogue ...).

    With no file and no dataset given, the task's embedded sample data (``sample_dir``) is used.

    Args:
        train_file, validation_file, test_file: local jsonl/json/csv/tsv/parquet files.
        predict_file: inputs for ``predict``: the same formats, or ``.txt`` with one input per line.
        dataset, dataset_config: a dataset hub name (and config) used for the splits whose file
            is not given; split names are ``train_split``, ``validation_split``, ``test_split``.
        source_column, target_column: column names of the input and output text.
        references_column: optional column with a list of reference texts (multi-reference
            evaluation); the target column is used otherwise.
        tokenizer_file: a ``tokenizers`` JSON file or an s2s-tasks checkpoint to take the
            tokenizer from; otherwise one is trained on the training split (shared source/target).
        tokenizer_kind, tokenizer_vocab_size, min_frequency, lowercase: settings for that training.
        max_source_tokens, max_target_tokens: truncation lengths (special tokens included);
            the number of truncated records is reported.
        max_tokens: token budget of a training batch (padded size); ``eval_max_tokens`` for
            validation/test/predict (defaults to ``max_tokens``).
        max_batch_size: optional cap on examples per batch.
        num_workers: DataLoader worker processes.
        seed: seed of the batch shuffling (reshuffled every epoch).
        cache_dir: where ``datasets`` keeps its cache (default: its own).
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for key, value in (("max_source_tokens", max_source_tokens), ("max_target_tokens", max_target_tokens)):
            if value < 2:
                raise ValueError(f"data.{key} must be at least 2 (room for the special tokens), got {value}")

    def _text_columns(self, split: str, dataset) -> Dict[str, Optional[str]]:
        """Config key -> column for the fields this split must have."""
        hp = self.hparams
        if split == "predict":
            if "text" in dataset.column_names and hp.source_column not in dataset.column_names:
                return {"data.source_column": "text"}
            return {"data.source_column": hp.source_column}
        columns = {"data.source_column": hp.source_column, "data.target_column": hp.target_column}
        if split != "train" and hp.references_column is not None:
            columns["data.references_column"] = hp.references_column
        return columns

    def tokenizer_training_texts(self) -> Iterator[str]:
        hp = self.hparams
        train = self.raw_split("train")
        check_columns(train, self._text_columns("train", train), self._origin("train"))
        source_texts = (t for v in train[hp.source_column] for t in self.source_segments(v, hp))
        return iter_texts([source_texts, list(train[hp.target_column])])

    # ----------------------------------------------------------------------------- encoding
    # The two hooks are classmethods taking the hyperparameters explicitly: the batched
    # ``datasets.map`` hashes its function (the cache key), which must not pickle the data module.
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

    def encode_split(self, split: str) -> EncodedSplit:
        """Tokenize a split (once); records with empty text are skipped, counted and reported."""
        if split in self._encoded:
            return self._encoded[split]
        hp = self.hparams
        dataset = self.raw_split(split)
        origin = self._origin(split)
        columns = self._text_columns(split, dataset)
        check_columns(dataset, columns, origin)
        source_column = columns["data.source_column"]
        target_column = columns.get("data.target_column")
        references_column = columns.get("data.references_column")
        for key, column in columns.items():
            allow_list = key == "data.references_column" or (key == "data.source_column" and self.list_sources)
            check_text_values(list(dataset[column]), origin, column, key, allow_list=allow_list)

        tokenizer = self.tokenizer
        max_tgt = hp.max_target_tokens - 1
        encode_sources, hparams = type(self).encode_sources, dict(hp)

        def encode(batch: Dict[str, list]) -> Dict[str, list]:
            out = encode_sources(batch[source_column], tokenizer, hparams)
            if target_column is not None:
                tgt = encode_batch(tokenizer, [t or "" for t in batch[target_column]])
                out["tgt_ids"] = [ids[:max_tgt] for ids in tgt]
                out["tgt_truncated"] = [len(i) > max_tgt for i in tgt]
            return out

        encoded = dataset.map(encode, batched=True, batch_size=1000, desc=f"Tokenizing {split}")
        # materialise columns once: datasets >= 4 returns lazy Column objects, slow to index per row
        sources = list(encoded[source_column])
        targets = list(encoded[target_column]) if target_column else None
        keep = [
            i
            for i in range(len(encoded))
            if any(t.strip() for t in self.source_segments(sources[i], hp)) and (targets is None or (targets[i] or "").strip())
        ]
        skipped = len(encoded) - len(keep)
        if skipped:
            log.warning(
                "%s: skipped %d of %d records with an empty or whitespace-only %s",
                origin, skipped, len(encoded), "source or target" if targets is not None else "source",
            )
        if not keep:
            raise ValueError(f"{origin}: no usable records (all {len(encoded)} have empty text)")
        messages = dict(self.source_flags)
        if target_column is not None:
            messages["tgt_truncated"] = "truncated to data.max_target_tokens={max_target_tokens} tokens"
        for column, message in messages.items():
            flags = list(encoded[column])
            count = sum(flags[i] for i in keep)
            if count:
                log.warning("%s: %d of %d records %s", origin, count, len(keep), message.format(**hp))
        src_ids = list(encoded["src_ids"])
        tgt_ids = list(encoded["tgt_ids"]) if target_column else None
        if references_column is not None:
            raw_refs = list(encoded[references_column])
            references = [[r] if isinstance(r, str) else list(r) for r in (raw_refs[i] for i in keep)]
        elif targets is not None:
            references = [[targets[i]] for i in keep]
        else:
            references = None
        result = EncodedSplit(
            src_ids=[src_ids[i] for i in keep],
            tgt_ids=[tgt_ids[i] for i in keep] if tgt_ids is not None else None,
            sources=[sources[i] for i in keep],
            references=references,
            record_numbers=[i + 1 for i in keep],
        )
        self._encoded[split] = result
        return result
