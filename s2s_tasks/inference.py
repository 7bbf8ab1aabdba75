"""A trained model answering records in-process, without a Trainer: what ``serve`` and
``export`` are built on, and the way to use a checkpoint from Python.

    predictor = Predictor.from_checkpoint("model.ckpt")
    predictor.predict([{"source": "ein Hund läuft"}])
    # -> [{"index": 0, "source": "ein Hund läuft", "prediction": "a dog runs", "score": -0.8}]

Records are read, checked and encoded exactly as a ``predict`` file's records are (same fields,
same errors), batched by the data module's evaluation token budget, and answered by the model's
own ``predict_step``; the answers are those ``s2s-tasks predict`` writes, in input order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import Counter
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import torch

from s2s_tasks.checkpoint import EXTRAS_KEY, load_checkpoint
from s2s_tasks.cli import DATA_SOURCE_KEYS
from s2s_tasks.data.records import MISSING, Records
from s2s_tasks.registry import build, get_task

log = logging.getLogger(__name__)



def record_forms(datamodule: Any) -> Iterator[List[Any]]:
    """The field lists (:class:`~s2s_tasks.data.schema.Field`) of each form of predict record a
    task's data module reads (NER: pre-split ``tokens``, or raw ``text``)."""
    columns = [v for k, v in datamodule.hparams.items() if k.endswith("_column") and isinstance(v, str)]
    for present in [[], *([c] for c in columns)]:
        try:
            yield datamodule.fields("predict", Records({c: [] for c in present}, origin="request"))
        except ValueError:  # not a form of this task's records
            continue


class InvalidRecords(ValueError):
    """Some records of a :meth:`Predictor.predict` call cannot be answered; the message names
    each problem (record number, field, fix) and ``problems`` counts them per reason."""

    def __init__(self, message: str, problems: Mapping[str, int]) -> None:
        super().__init__(message)
        self.problems = dict(problems)


def _data_settings(stored: Mapping[str, Any]) -> Dict[str, Any]:
    """A checkpoint's data hyperparameters without the ones about where its data was."""
    settings = {k: v for k, v in stored.items() if k not in DATA_SOURCE_KEYS and not k.startswith("_")}
    if isinstance(settings.get("tasks"), Mapping):  # a multi-task model: each task's own settings too
        settings["tasks"] = {name: {k: v for k, v in (task or {}).items() if k not in DATA_SOURCE_KEYS}
                             for name, task in settings["tasks"].items()}
    return settings


class Predictor:
    """A model and its data module, ready to answer raw records (see the module docstring).

    Args:
        model: a task's LightningModule with its weights and tokenizer.
        datamodule: the task's data module, set to encode text as the model was trained.
        task: the task name (``"multitask"`` for a multi-task model: each record then names its
            task in the data module's ``task_column`` field).
        source: where the model came from, for messages.
    """

    def __init__(self, model: torch.nn.Module, datamodule: Any, task: str, source: str = "model") -> None:
        self.model = model.eval()
        self.datamodule = datamodule
        self.task = task
        self.source = source

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", generation: Optional[Mapping[str, Any]] = None,
                        max_tokens: Optional[int] = None, max_batch_size: Optional[int] = None,
                        quantize: Optional[str] = None) -> "Predictor":
        """Load an s2s-tasks checkpoint (weights, tokenizer, labels, data encoding settings).

        Args:
            path: a ``.ckpt`` file written by ``s2s-tasks fit``.
            device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...).
            generation: decoding settings to change (keys of ``model.generation``, e.g.
                ``{"beam_size": 8, "max_length": 64}``); the checkpoint's are kept otherwise.
            max_tokens, max_batch_size: the batch budget (default: the checkpoint's evaluation budget).
            quantize: ``"int8"``: dynamic int8 quantisation of the linear layers (CPU only;
                :mod:`s2s_tasks.quantize`); ``None`` keeps the trained precision.
        """
        checkpoint = load_checkpoint(path)
        extras = checkpoint.get(EXTRAS_KEY)
        if not isinstance(extras, dict) or not extras.get("task"):
            raise ValueError(f"{path} is not an s2s-tasks checkpoint (it has no {EXTRAS_KEY!r} section); pass one written by s2s-tasks fit")
        task = extras["task"]
        module_class, datamodule_class = get_task(task).classes()
        settings = _data_settings(checkpoint.get("datamodule_hyper_parameters") or {})
        settings["tokenizer_file"] = path
        if max_tokens is not None:
            settings["eval_max_tokens"] = max_tokens
        if max_batch_size is not None:
            settings["max_batch_size"] = max_batch_size
        datamodule = build(datamodule_class, settings)
        del checkpoint  # load_from_checkpoint reads the file again; keep one copy of the weights in memory
        model = module_class.load_from_checkpoint(path, map_location=device)
        model.to(device)
        if quantize is not None:
            from s2s_tasks.quantize import quantize_model

            model = quantize_model(model, quantize)
        predictor = cls(model, datamodule, task, source=path)
        if generation:
            predictor.set_generation(**generation)
        return predictor

    # ----------------------------------------------------------------------------- settings
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generating_modules(self) -> List[torch.nn.Module]:
        """The modules whose decoding settings apply: the model, or a multi-task model's tasks that generate."""
        modules = list(getattr(self.model, "task_modules", {}).values()) or [self.model]
        return [m for m in modules if hasattr(m, "generation") and bool(getattr(m, "generates", True))]

    @property
    def generates(self) -> bool:
        """Whether answers (of some task, for a multi-task model) are generated text (decoding settings apply)."""
        return bool(self.generating_modules())

    @property
    def generation(self):
        """The :class:`~s2s_tasks.generation.GenerationConfig` of the (first) generating module, or ``None``."""
        modules = self.generating_modules()
        return modules[0].generation if modules else None

    def set_generation(self, **changes: Any) -> None:
        """Change decoding settings (checked: a bad value raises ``ValueError`` naming the key);
        a multi-task model's generating tasks all get them."""
        modules = self.generating_modules()
        if not modules:
            raise ValueError(f"the {self.task} model does not generate text: it has no decoding settings to change")
        known = {f.name for f in dataclasses.fields(modules[0].generation)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown decoding setting(s) {unknown}; known: {sorted(known)}")
        for module in modules:
            module.generation = dataclasses.replace(module.generation, **changes)

    def input_fields(self) -> List[str]:
        """The fields a record may have (the data module's predict columns). A task that reads
        several forms (NER: pre-split ``tokens`` or raw ``text``) names every form's; a
        multi-task model's records also name their task (``task_column``)."""
        data = self.datamodule
        modules = list(getattr(data, "task_data", {}).values()) or [data]
        names: List[str] = [data.hparams.task_column] if modules[0] is not data else []
        for module in modules:
            for fields in record_forms(module):
                names += [f.column for f in fields if f.column not in names]
        return names

    # ----------------------------------------------------------------------------- predict
    def encode(self, records: Sequence[Mapping[str, Any]], origin: str = "request") -> List[Dict[str, Any]]:
        """Raw records -> the model's batches (sorted by length; ``batch["index"]`` is the
        0-based position in ``records``). Raises :class:`InvalidRecords` if any record is unusable."""
        if not records:
            return []
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise InvalidRecords(f"{origin}, record {i + 1}: a record is a JSON object of fields "
                                     f"({', '.join(self.input_fields())}), not {type(record).__name__}", {"not an object": 1})
        columns: Dict[str, List[Any]] = {}
        names = list(dict.fromkeys(name for record in records for name in record))
        for name in names:
            columns[name] = [record.get(name, MISSING) for record in records]
        table = Records(columns, origin=origin)
        stream = self.datamodule.predict_stream_class(self.datamodule, None, "request", max_tokens=self._budget(),
                                                      max_batch_size=self.datamodule.hparams.max_batch_size)
        skipped: Counter = Counter()
        try:
            with self._notes_kept_out(), stream.tally():
                batches, usable = stream.chunk_batches(table, origin, skipped)
        except ValueError as err:  # a record that breaks the task's rules (names the record and field)
            raise InvalidRecords(str(err), {type(err).__name__: 1}) from err
        if skipped or usable != len(records):
            reasons = "; ".join(f"{count} record(s): {reason}" for reason, count in skipped.items()) or "unusable records"
            raise InvalidRecords(f"{origin}: {len(records) - usable} of {len(records)} records cannot be answered: {reasons}", skipped)
        for batch in batches:
            batch["index"] = batch["index"] - 1  # record numbers are 1-based
        return batches

    def _budget(self) -> int:
        hp = self.datamodule.hparams
        return hp.eval_max_tokens or hp.max_tokens

    @contextlib.contextmanager
    def _notes_kept_out(self) -> Iterator[None]:
        """The data modules' notes made inside (e.g. an input truncated) are logged, as always,
        but not kept for an end-of-run summary: a long-running server would keep them all."""
        data = self.datamodule
        modules = [data, *getattr(data, "task_data", {}).values()]
        kept = [len(module.notes) for module in modules]
        try:
            yield
        finally:
            for module, count in zip(modules, kept):
                del module.notes[count:]

    @torch.inference_mode()
    def predict(self, records: Sequence[Mapping[str, Any]], origin: str = "request") -> List[Dict[str, Any]]:
        """Answer ``records`` (field -> value, the fields of a predict file's records), one answer
        each in input order (``index`` is the 0-based position). Raises :class:`InvalidRecords`
        if any record cannot be answered, naming it and its field."""
        rows: List[Dict[str, Any]] = []
        for batch in self.encode(records, origin):
            rows += self.model.predict_step(self._to_device(batch), 0)
        # a task whose inputs span several rows (QA windows) merges them in its own way
        merge = getattr(self.model, "merge_prediction_records", None)
        answers = merge(rows) if merge is not None else [row for _, row in sorted({r["index"]: r for r in rows}.items())]
        if [int(a["index"]) for a in answers] != list(range(len(records))):  # would be a bug
            raise RuntimeError(f"{origin}: the model answered records {[a['index'] for a in answers][:10]}..., not each of {len(records)} once")
        return answers

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        device = self.device
        if device.type == "cpu":
            return batch
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

