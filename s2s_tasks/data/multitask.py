"""The data of a multi-task run: several tasks' data modules behind one tokenizer and one loader.

Each task keeps its own data module (its files, columns, checks, encoding and metrics data);
this module trains one tokenizer on all their training text, concatenates their splits and
batches them so that every batch holds one task's examples (``batch["task"]`` names it). Training
batches are drawn from the tasks by :class:`~s2s_tasks.data.task_sampler.MultiTaskBatchSampler`
(proportional, uniform or temperature-scaled, T5's scheme); evaluation goes through every task's
split in turn.

With ``mode: text_to_text`` every task is encoder-decoder text-to-text (the structured tasks use
``head: generate``); with ``mode: heads`` the structured tasks keep their encoder heads unless
their settings say ``head: generate``. The input of every task that generates its output starts
with a task token ``<task:NAME>`` (``task_prefix``), so the shared decoder knows what to produce.
Encoder-head inputs have no prefix: their heads are per task, and their features (word starts,
answer positions) point into the unprefixed ids.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter
from contextlib import ExitStack
from typing import Any, ClassVar, ContextManager, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from s2s_tasks.data.datamodule import EncodedSplit, ResumableDataLoader, Seq2SeqCollator
from s2s_tasks.data.streaming import PredictStream
from s2s_tasks.data.records import MISSING, Records, check_file
from s2s_tasks.data.sampler import TokenBudgetBatchSampler
from s2s_tasks.data.structured import StructuredDataModule
from s2s_tasks.data.task_sampler import ChainedBatchSampler, MultiTaskBatchSampler, task_probabilities
from s2s_tasks.data.tokenizer import PAD_ID, check_extra_special_tokens, load_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

MODES = ("heads", "text_to_text")
#: settings of the whole run: a task's own data settings may not set them
SHARED_KEYS = frozenset({
    "tokenizer_file", "tokenizer_kind", "tokenizer_vocab_size", "min_frequency", "lowercase", "predict_file",
    "max_tokens", "eval_max_tokens", "max_batch_size", "num_workers", "seed", "cache_dir",
})


def task_token(task: str) -> str:
    """The special token that starts a generating task's input."""
    return f"<task:{task}>"


class _Concatenated(Dataset):
    """Index space of the tasks' splits laid end to end (the collator looks examples up)."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int) -> int:
        return i


class MultiTaskCollator:
    """Global indices of one task's examples -> that task's batch (:class:`Seq2SeqCollator`)
    plus ``task`` (its name); with a task token, ``src_ids``/``src_mask`` start with it."""

    def __init__(self, splits: Dict[str, EncodedSplit], offsets: Dict[str, int], prefix_ids: Dict[str, Optional[int]]) -> None:
        self.names = list(splits)
        self.starts = [offsets[name] for name in self.names]
        self.collators = {name: Seq2SeqCollator(split, PAD_ID) for name, split in splits.items()}
        self.prefix_ids = prefix_ids

    def __call__(self, indices: List[int]) -> Dict[str, Any]:
        position = bisect_right(self.starts, indices[0]) - 1
        name, start = self.names[position], self.starts[position]
        batch = self.collators[name]([i - start for i in indices])
        return add_task(batch, name, self.prefix_ids.get(name))


def add_task(batch: Dict[str, Any], task: str, prefix_id: Optional[int]) -> Dict[str, Any]:
    """Name the batch's task and, with ``prefix_id``, put the task token before every input."""
    batch["task"] = task
    if prefix_id is not None:
        ids = batch["src_ids"]
        batch["src_ids"] = torch.cat([torch.full((ids.size(0), 1), prefix_id, dtype=ids.dtype), ids], dim=1)
        batch["src_mask"] = torch.cat([torch.ones(ids.size(0), 1, dtype=torch.bool), batch["src_mask"]], dim=1)
    return batch


def _task_data_module(name: str, datamodule_class: type, arguments: Dict[str, Any]):
    """A task's data module from its settings (unknown settings named)."""
    from s2s_tasks.registry import build, init_parameters

    unknown = sorted(set(arguments) - set(init_parameters(datamodule_class)))
    if unknown:
        raise ValueError(f"data.tasks.{name}.{unknown[0]} is not a data setting of {name}; its settings are the data "
                         f"options of `s2s-tasks fit --task {name}` (see its --help)")
    return build(datamodule_class, arguments)


class MultiTaskDataModule(pl.LightningDataModule):
    """Several tasks' data, one tokenizer, single-task batches.

    Args:
        tasks: task name -> that task's data settings, the ``__init__`` arguments of its own data
            module (``{}``: the task's embedded sample data); defaults come from the ``data``
            section of ``configs/NAME.yaml``. The settings of the whole run below may not be set
            per task.
        mode: ``heads`` or ``text_to_text``; set from ``model.mode`` by the CLI.
        task_prefix: start the input of every generating task with its token ``<task:NAME>``.
        sampling, temperature, max_examples_per_task: how training batches are drawn from the
            tasks: ``proportional`` to the number of training examples ``n``, ``uniform``, or
            ``temperature`` (``p ~ n^(1/T)``, T5); ``n`` is capped at ``max_examples_per_task``
            when set (see :func:`~s2s_tasks.data.task_sampler.task_probabilities`).
        batches_per_epoch: training batches per epoch; default: the sum of the tasks' batch
            counts (about one pass over every task with proportional sampling).
        predict_file: inputs for ``predict``; each record goes to the task in its
            ``task_column`` field, or to ``predict_task`` for records without one.
        tokenizer_file: a tokenizer JSON or s2s-tasks checkpoint; otherwise one is trained on
            every task's training text (``tokenizer_kind``, ``tokenizer_vocab_size``,
            ``min_frequency``, ``lowercase``) with every task's special tokens.
        max_tokens, eval_max_tokens, max_batch_size, num_workers, seed, cache_dir: batching and
            loading, as for a single task (see :class:`~s2s_tasks.data.datamodule.Seq2SeqDataModule`).
    """

    #: predict records routed to their task's data module (set below, after the class is defined)
    predict_stream_class: ClassVar[type]

    def __init__(
        self,
        tasks: Optional[Dict[str, Dict[str, Any]]] = None,
        mode: str = "heads",
        task_prefix: bool = True,
        sampling: str = "temperature",
        temperature: float = 2.0,
        max_examples_per_task: Optional[int] = None,
        batches_per_epoch: Optional[int] = None,
        predict_file: Optional[str] = None,
        task_column: str = "task",
        predict_task: Optional[str] = None,
        tokenizer_file: Optional[str] = None,
        tokenizer_kind: str = "bpe",
        tokenizer_vocab_size: int = 8000,
        min_frequency: int = 2,
        lowercase: bool = False,
        max_tokens: int = 4096,
        eval_max_tokens: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        num_workers: int = 0,
        seed: int = 1234,
        cache_dir: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from s2s_tasks.registry import SINGLE_TASKS, get_task

        if not tasks:
            raise ValueError(f"data.tasks must name at least one task (of: {', '.join(SINGLE_TASKS)}) with its data settings")
        if mode not in MODES:
            raise ValueError(f"model.mode must be one of {list(MODES)}, got {mode!r}")
        task_probabilities({name: 1 for name in tasks}, sampling, temperature, max_examples_per_task)  # checks the values
        if batches_per_epoch is not None and batches_per_epoch <= 0:
            raise ValueError(f"data.batches_per_epoch must be positive or null, got {batches_per_epoch}")
        if predict_task is not None and predict_task not in tasks:
            raise ValueError(f"data.predict_task {predict_task!r} is not one of data.tasks: {list(tasks)}")
        stored_labels = self._checkpoint_labels()
        #: task name -> its own data module
        self.task_data: Dict[str, Any] = {}
        for name, settings in tasks.items():
            if name not in SINGLE_TASKS:
                raise ValueError(f"data.tasks: unknown task {name!r}; choose from: {', '.join(SINGLE_TASKS)}")
            settings = dict(settings or {})
            shared = sorted(SHARED_KEYS & set(settings))
            if shared:
                raise ValueError(f"data.tasks.{name}.{shared[0]}: set data.{shared[0]} instead; it applies to every task of the run")
            spec = get_task(name)
            _, datamodule_class = spec.classes()
            defaults = {k: v for k, v in (spec.default_config().get("data") or {}).items() if k not in SHARED_KEYS}
            arguments = {**defaults, **settings, "cache_dir": cache_dir}
            if issubclass(datamodule_class, StructuredDataModule):
                if mode == "text_to_text":
                    if settings.get("head", "generate") != "generate":
                        raise ValueError(f"data.tasks.{name}.head: model.mode text_to_text generates every task; "
                                         "remove the head setting or use model.mode heads")
                    arguments["head"] = "generate"
                if stored_labels.get(name) and not arguments.get("labels"):
                    arguments["labels"] = stored_labels[name]
            elif "head" in settings:
                raise ValueError(f"data.tasks.{name}.head: {name} always generates its output; remove the setting")
            self.task_data[name] = _task_data_module(name, datamodule_class, arguments)
        self._tokenizer = None
        self.notes: List[str] = []

    def _checkpoint_labels(self) -> Dict[str, List[str]]:
        """Each task's labels stored in the checkpoint given as ``tokenizer_file`` (predict)."""
        path = self.hparams.tokenizer_file
        if path is None or not str(path).endswith(".ckpt"):
            return {}
        from s2s_tasks.checkpoint import read_checkpoint_extras

        return dict((read_checkpoint_extras(path).get("label_maps") or {}))

    # ----------------------------------------------------------------------------- what the model needs
    def generates(self, task: str) -> bool:
        data = self.task_data[task]
        return not isinstance(data, StructuredDataModule) or data.hparams.head == "generate"

    @property
    def task_setup(self) -> Dict[str, Dict[str, Any]]:
        """Per task what the data decides for the model (linked into ``model.task_setup``): the
        head and, for tasks with labels, ``num_labels`` and the task's linked settings."""
        setup: Dict[str, Dict[str, Any]] = {}
        for name, data in self.task_data.items():
            entry: Dict[str, Any] = {}
            if isinstance(data, StructuredDataModule):
                entry["head"] = data.hparams.head
                entry["num_labels"] = data.num_labels
                for key in data.model_links:
                    entry[key] = data.hparams[key]
            setup[name] = entry
        return setup

    @property
    def label_names(self) -> Dict[str, List[str]]:
        return {name: list(data.label_names) for name, data in self.task_data.items() if isinstance(data, StructuredDataModule)}

    # ----------------------------------------------------------------------------- the shared tokenizer
    def _special_tokens(self) -> List[str]:
        tokens: List[str] = []
        for name, data in self.task_data.items():
            tokens += [t for t in data.special_tokens if t not in tokens]
            if self.hparams.task_prefix and self.generates(name):
                tokens.append(task_token(name))
        return tokens

    @property
    def tokenizer(self):
        """One tokenizer for every task: loaded from ``tokenizer_file``, or trained on all tasks' training text."""
        if self._tokenizer is None:
            hp = self.hparams
            specials = self._special_tokens()
            if hp.tokenizer_file is not None:
                tokenizer = load_tokenizer(hp.tokenizer_file)
                check_extra_special_tokens(tokenizer, specials, f"data.tokenizer_file {hp.tokenizer_file}")
            else:
                missing = [name for name, data in self.task_data.items() if not data.has_split("train")]
                if missing:
                    raise ValueError(f"no tokenizer: data.tasks.{missing[0]} has no training data; set data.tokenizer_file "
                                     "(a tokenizer JSON or a checkpoint) or pass --ckpt_path")
                log.info("Training a %s tokenizer (data.tokenizer_vocab_size=%d) on the training text of %s",
                         hp.tokenizer_kind, hp.tokenizer_vocab_size, ", ".join(self.task_data))
                texts = (text for data in self.task_data.values() for text in data.tokenizer_training_texts())
                tokenizer = train_tokenizer(texts, vocab_size=hp.tokenizer_vocab_size, kind=hp.tokenizer_kind,
                                            min_frequency=hp.min_frequency, lowercase=hp.lowercase, extra_special_tokens=specials)
            for data in self.task_data.values():
                data._tokenizer = tokenizer
            self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def pad_id(self) -> int:
        return PAD_ID

    def prefix_ids(self) -> Dict[str, Optional[int]]:
        """Task -> the id of its task token (``None``: no prefix)."""
        tokenizer = self.tokenizer
        return {name: tokenizer.token_to_id(task_token(name)) if self.hparams.task_prefix and self.generates(name) else None
                for name in self.task_data}

    # ----------------------------------------------------------------------------- Lightning hooks
    def setup(self, stage: Optional[str] = None) -> None:
        self.tokenizer  # noqa: B018 -- shared before any task encodes
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}
        for split in needed.get(stage, ()) if stage else ("train", "validation"):
            for name, data in self.task_data.items():
                if data.has_split(split):
                    data.encode_split(split)
                elif split == "train":
                    raise ValueError(f"data.tasks.{name}: no training data; set data.tasks.{name}.train_file")
                else:
                    log.warning("data.tasks.%s has no %s data: it is not evaluated on that split", name, split)
        if stage == "predict":
            self._predict_path()

    def _rank(self):
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _task_samplers(self, split: str, shuffle: bool) -> Dict[str, Any]:
        hp = self.hparams
        world_size, rank = self._rank()
        budget = hp.max_tokens if shuffle else (hp.eval_max_tokens or hp.max_tokens)
        samplers, splits = {}, {}
        prefix_ids = self.prefix_ids()
        for position, (name, data) in enumerate(self.task_data.items()):
            if not data.has_split(split):
                continue
            encoded = data.encode_split(split)
            splits[name] = encoded
            # the task token makes each input one longer
            extra = 1 if prefix_ids[name] is not None else 0
            samplers[name] = TokenBudgetBatchSampler(
                [n + extra for n in encoded.lengths()], max_tokens=budget, max_batch_size=hp.max_batch_size,
                shuffle=shuffle, seed=hp.seed + 7919 * (position + 1), num_replicas=world_size, rank=rank, tie_lengths=encoded.tie_lengths(),
            )
        return samplers, splits

    @staticmethod
    def _offsets(splits: Dict[str, EncodedSplit]) -> Dict[str, int]:
        offsets, total = {}, 0
        for name, split in splits.items():
            offsets[name], total = total, total + len(split)
        return offsets

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        samplers, splits = self._task_samplers("train", shuffle=True)
        offsets = self._offsets(splits)
        sampler = MultiTaskBatchSampler(
            samplers, offsets, {name: len(split) for name, split in splits.items()}, sampling=hp.sampling,
            temperature=hp.temperature, max_examples_per_task=hp.max_examples_per_task,
            batches_per_epoch=hp.batches_per_epoch, seed=hp.seed,
        )
        if not getattr(self, "_reported_sampling", False):
            self._reported_sampling = True
            log.info("Training batches drawn per task with probability %s (%s sampling)",
                     ", ".join(f"{name} {p:.3f}" for name, p in sampler.probabilities.items()), hp.sampling)
        return ResumableDataLoader(
            _Concatenated(sum(len(s) for s in splits.values())), batch_sampler=sampler,
            collate_fn=MultiTaskCollator(splits, offsets, self.prefix_ids()),
            num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        samplers, splits = self._task_samplers(split, shuffle=False)
        if not splits:
            raise ValueError(f"no {split} data in any task of data.tasks; set data.tasks.NAME.{split}_file")
        offsets = self._offsets(splits)
        return DataLoader(
            _Concatenated(sum(len(s) for s in splits.values())), batch_sampler=ChainedBatchSampler(samplers, offsets),
            collate_fn=MultiTaskCollator(splits, offsets, self.prefix_ids()), num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self):
        if not any(data.has_split("validation") for data in self.task_data.values()):
            return []
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _predict_path(self) -> str:
        if self.hparams.predict_file is None:
            raise ValueError("no predict data: set data.predict_file")
        return str(check_file(str(self.hparams.predict_file), "data.predict_file"))

    def predict_dataloader(self) -> DataLoader:
        hp = self.hparams
        world_size, rank = self._rank()
        stream = self.predict_stream_class(self, self._predict_path(), "data.predict_file", max_tokens=hp.eval_max_tokens or hp.max_tokens,
                                        max_batch_size=hp.max_batch_size, world_size=world_size, rank=rank)
        return DataLoader(stream, batch_size=None)

    def note(self, message: str) -> None:
        """A warning about the data of the whole run (e.g. predict records skipped), repeated at teardown."""
        log.warning(message)
        if message not in self.notes:
            self.notes.append(message)

    def teardown(self, stage: str) -> None:
        notes = self.notes + [f"[{name}] {note}" for name, data in self.task_data.items() for note in data.notes]
        if notes:
            log.warning("What happened to the data in this run:\n  - %s", "\n  - ".join(notes))


class MultiTaskPredictStream(PredictStream):
    """Batches of a predict file whose records may belong to different tasks, chunk by chunk
    (:class:`~s2s_tasks.data.streaming.PredictStream`): each record goes to the task named in its
    ``data.task_column`` field (else ``data.predict_task``) and is read, checked and encoded by
    that task's data module; every batch is one task's."""

    def origin(self) -> str:
        return f"predict data {self.path!r}"

    def tally(self) -> ContextManager[None]:
        stack = ExitStack()  # every task's counts summed over the chunks
        for data in self.datamodule.task_data.values():
            stack.enter_context(data.tally())
        return stack

    def _route(self, records: Records) -> Dict[str, List[int]]:
        """Row numbers of the chunk per task."""
        data = self.datamodule
        hp = data.hparams
        column = records.columns.get(hp.task_column)
        groups: Dict[str, List[int]] = {}
        for i in range(len(records)):
            value = column[i] if column is not None else None
            task = value if value is not MISSING and value not in (None, "") else hp.predict_task
            if task is None:
                raise ValueError(f"{records.where(i)}: the record has no {hp.task_column!r} field naming its task; add one "
                                 f"(one of {list(data.task_data)}), or set data.predict_task for records without it")
            if task not in data.task_data:
                raise ValueError(f"{records.where(i)}, field {hp.task_column!r} (data.task_column): unknown task {task!r}; "
                                 f"this model knows {list(data.task_data)}")
            groups.setdefault(task, []).append(i)
        return groups

    def chunk_batches(self, records: Records, origin: str, skipped: Counter) -> Tuple[List[Dict[str, Any]], int]:
        data = self.datamodule
        prefix_ids = data.prefix_ids()
        batches, usable = [], 0
        for task, rows in self._route(records).items():
            prefix = prefix_ids[task]
            task_batches, count = self.encoded_batches(data.task_data[task], records.select(rows), origin, skipped,
                                                       extra_tokens=0 if prefix is None else 1, skip_label=f" ({task})")
            batches += [add_task(batch, task, prefix) for batch in task_batches]
            usable += count
        return batches, usable


MultiTaskDataModule.predict_stream_class = MultiTaskPredictStream
