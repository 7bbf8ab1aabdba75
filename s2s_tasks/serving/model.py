"""The served model: a :class:`~s2s_tasks.inference.Predictor` with the endpoints of its task(s),
its decoding defaults (the checkpoint's, changed by the command line), and the function the batch
worker thread calls to answer the requests of one batch."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from s2s_tasks.inference import InvalidRecords, Predictor, record_forms

log = logging.getLogger(__name__)

#: the endpoint verb of each task: POST /v1/VERB
VERBS = {
    "translation": "translate", "summarization": "summarize", "dialogue": "reply", "classification": "classify",
    "ner": "tag", "qa": "answer", "relation_extraction": "extract",
}
#: the endpoint that takes any record the model reads
GENERIC_VERB = "predict"


@dataclass(frozen=True)
class Endpoint:
    """One ``POST /v1/VERB`` route.

    Attributes:
        verb: ``translate`` ... or ``predict``.
        task: the task it answers (``multitask`` for the generic route of a multi-task model).
        fields: the fields its records may have.
        string_field: the field a plain-string record fills (tasks read from one text field), else None.
        generation: its decoding defaults (``None``: the task does not generate text).
        route: (field, task) that a multi-task model's records get, so that it routes them.
    """

    verb: str
    task: str
    fields: List[str]
    string_field: Optional[str]
    generation: Optional[Any]
    route: Optional[tuple] = None

    @property
    def path(self) -> str:
        return f"/v1/{self.verb}"


def _string_field(datamodule: Any) -> Optional[str]:
    """The one text field of the task's simplest record form (``source``, ``text``, ``history``
    ...), or None when every form needs several fields (QA, relation extraction)."""
    for fields in record_forms(datamodule):
        required = [f for f in fields if not f.optional]
        if len(required) == 1 and required[0].kind == "text":
            return required[0].column
    return None


class ServedModel:
    """A predictor ready to serve: endpoints, decoding defaults and batch answers.

    Args:
        predictor: the loaded model.
        name: the model's name in responses.
        generation: decoding settings to change from the checkpoint's (``ValueError`` naming
            the setting if one is unknown or bad, or the model does not generate text).
        max_decode_length: the default ``max_length`` is lowered to this if above it.
    """

    def __init__(self, predictor: Predictor, name: str, generation: Optional[Mapping[str, Any]] = None,
                 max_decode_length: Optional[int] = None) -> None:
        self.predictor = predictor
        self.name = name
        self.task = predictor.task
        self._decoders = predictor.generating_modules()
        if generation:
            if not self._decoders:
                raise ValueError(f"the {self.task} model does not generate text: it has no decoding settings to change "
                                 f"(got {sorted(generation)})")
            check_generation_keys(generation, self._decoders[0].generation)
        self.defaults = [dataclasses.replace(m.generation, **beam_changes(generation or {}, m.generation.strategy))
                         for m in self._decoders]
        if max_decode_length is not None:
            for i, config in enumerate(self.defaults):
                if config.max_length > max_decode_length:
                    log.info("decoding: max_length %d of the checkpoint is above --max_decode_length %d; using %d",
                             config.max_length, max_decode_length, max_decode_length)
                    self.defaults[i] = dataclasses.replace(config, max_length=max_decode_length)
        self._current: Optional[Dict[str, Any]] = None
        self._use({})
        self.endpoints = self._build_endpoints()

    # ------------------------------------------------------------------------- endpoints
    @property
    def tasks(self) -> List[str]:
        """The tasks the model answers (several for a multi-task model)."""
        return list(getattr(self.predictor.datamodule, "task_data", {}) or [self.task])

    def _generation_of(self, task: str) -> Optional[Any]:
        modules = getattr(self.predictor.model, "task_modules", {})
        module = modules[task] if task in modules else self.predictor.model
        for decoder, config in zip(self._decoders, self.defaults):
            if decoder is module:
                return config
        return None

    def _build_endpoints(self) -> List[Endpoint]:
        data = self.predictor.datamodule
        task_data = getattr(data, "task_data", {}) or {}
        endpoints = []
        for task in self.tasks:
            if task not in VERBS:
                continue  # a task without a verb of its own is answered by /v1/predict
            module = task_data.get(task, data)
            route = (data.hparams.task_column, task) if task_data else None
            endpoints.append(Endpoint(VERBS[task], task, Predictor(self.predictor.model, module, task).input_fields(),
                                      _string_field(module), self._generation_of(task), route))
        # the generic route decodes if the model (a multi-task model: one of its tasks) does
        endpoints.append(Endpoint(GENERIC_VERB, self.task, self.predictor.input_fields(),
                                  None if task_data else _string_field(data), self.defaults[0] if self.defaults else None))
        return endpoints

    # ------------------------------------------------------------------------- answering
    def _use(self, changes: Mapping[str, Any]) -> None:
        """Decode with the defaults changed by ``changes`` (called in the batch worker thread only)."""
        if changes == self._current:
            return
        for module, default in zip(self._decoders, self.defaults):
            module.generation = dataclasses.replace(default, **changes)
        self._current = dict(changes)

    def check_changes(self, changes: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` if decoding ``changes`` are not valid for every decoder."""
        for default in self.defaults:
            dataclasses.replace(default, **changes)

    def answer(self, changes: Mapping[str, Any], requests: Sequence[List[Dict[str, Any]]]) -> List[Union[List[Dict[str, Any]], Exception]]:
        """Answer several requests' records in one model call (decoded with the defaults changed by
        ``changes``); per request its answers (``index`` counts within the request) or the
        :class:`InvalidRecords` error of its records: one request's bad record fails only that
        request (the batch is then answered request by request)."""
        self._use(changes)
        records = [record for request in requests for record in request]
        try:
            answers = self.predictor.predict(records)
        except InvalidRecords as err:
            if len(requests) == 1:
                return [err]
            return [self._answer_alone(request) for request in requests]
        results: List[Union[List[Dict[str, Any]], Exception]] = []
        start = 0
        for request in requests:
            part = answers[start:start + len(request)]
            start += len(request)
            for i, answer in enumerate(part):
                answer["index"] = i
            results.append(part)
        return results

    def _answer_alone(self, records: List[Dict[str, Any]]) -> Union[List[Dict[str, Any]], Exception]:
        try:
            return self.predictor.predict(records)
        except InvalidRecords as err:
            return err


def check_generation_keys(changes: Mapping[str, Any], config: Any) -> None:
    """``ValueError`` naming the unknown decoding settings in ``changes``."""
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown decoding setting(s) {unknown}; known: {sorted(known)}")


def beam_changes(changes: Mapping[str, Any], default_strategy: str) -> Dict[str, Any]:
    """``changes`` where ``beam_size`` > 1 without a ``strategy`` also asks for beam search when
    the default strategy is greedy (the one strategy that would ignore the beam size)."""
    changes = dict(changes)
    beam_size = changes.get("beam_size", 1)
    if isinstance(beam_size, int) and beam_size > 1 and "strategy" not in changes and default_strategy == "greedy":
        changes["strategy"] = "beam"
    return changes
