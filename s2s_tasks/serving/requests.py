"""Reading and checking one HTTP request: its body within ``--max_request_bytes``, its JSON shape,
its records within the record and field limits, and its decoding ``parameters`` within the
decoding limits. Every problem is a :class:`RequestError` with the HTTP status and a message that
says what is wrong and how to fix it (the option that raises a limit)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from s2s_tasks.serving.model import Endpoint, beam_changes, check_generation_keys
from s2s_tasks.serving.options import Limits

#: the keys a request body may have
BODY_KEYS = ("inputs", "input", "parameters")


class RequestError(Exception):
    """A request the server does not answer: ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ParsedRequest:
    """A checked request: its records (as the model reads them), the decoding settings it changes
    from the server's defaults, and whether it sent one ``input`` (answered as one ``output``)."""

    records: List[Dict[str, Any]]
    changes: Dict[str, Any]
    single: bool

    @property
    def batch_key(self) -> Tuple:
        """Requests with equal keys may share one model call: same decoding settings and the same
        fields (records of one call are read as one table: NER ``tokens`` and ``text`` records
        do not mix)."""
        fields = sorted({name for record in self.records for name in record})
        return tuple(sorted(self.changes.items())), tuple(fields)


async def read_body(request: Any, limit: int) -> bytes:
    """The body of a Starlette request, refused (413) once it is longer than ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, at_least=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> RequestError:
    return RequestError(413, f"the request body is {'over ' if at_least else ''}{size} bytes, above the server's limit "
                             f"of {limit} bytes (--max_request_bytes): send fewer or shorter records per request")


def parse_request(body: bytes, endpoint: Endpoint, limits: Limits) -> ParsedRequest:
    """Check a request body for ``endpoint`` (see the module docstring for what is checked)."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the request body is not valid JSON ({err}); send a JSON object such as "
                                f"{_example(endpoint)}") from None
    if not isinstance(payload, dict):
        raise RequestError(422, f"the request body is a JSON {_json_type(payload)}; send a JSON object such as {_example(endpoint)}")
    unknown = sorted(set(payload) - set(BODY_KEYS))
    if unknown:
        raise RequestError(422, f"unknown key(s) {unknown} in the request body; it has \"inputs\" (a list of records) "
                                "or \"input\" (one record), and optionally \"parameters\"")
    if ("inputs" in payload) == ("input" in payload):
        raise RequestError(422, "the request body needs exactly one of \"inputs\" (a list of records) and \"input\" "
                                f"(one record), e.g. {_example(endpoint)}")
    single = "input" in payload
    raw = [payload["input"]] if single else payload["inputs"]
    if not isinstance(raw, list):
        raise RequestError(422, f"\"inputs\" is a JSON {_json_type(raw)}; it is a list of records, e.g. {_example(endpoint)}")
    if len(raw) > limits.max_records_per_request:
        raise RequestError(413, f"the request has {len(raw)} records, above the server's limit of "
                                f"{limits.max_records_per_request} per request (--max_records_per_request): split it")
    records = [_record(value, i, endpoint, limits) for i, value in enumerate(raw)]
    changes = check_parameters(payload.get("parameters", {}), endpoint, limits)
    return ParsedRequest(records, changes, single)


def _record(value: Any, i: int, endpoint: Endpoint, limits: Limits) -> Dict[str, Any]:
    where = f"record {i + 1}"
    if isinstance(value, str) and endpoint.string_field:
        value = {endpoint.string_field: value}
    if not isinstance(value, dict):
        strings = f" (or a string, read as its {endpoint.string_field!r})" if endpoint.string_field else ""
        raise RequestError(422, f"{where} is a JSON {_json_type(value)}; a record is a JSON object of the fields "
                                f"{', '.join(endpoint.fields)}{strings}, e.g. {_example(endpoint)}")
    for name, field_value in value.items():
        chars = _characters(field_value)
        if chars > limits.max_field_chars:
            raise RequestError(413, f"{where}, field {name!r}: {chars} characters, above the server's limit of "
                                    f"{limits.max_field_chars} per field (--max_field_chars): shorten it")
    if endpoint.route:
        column, task = endpoint.route
        named = value.get(column, task)
        if named != task:
            raise RequestError(422, f"{where} names task {named!r} in its {column!r} field, but POST {endpoint.path} "
                                    f"answers {task!r}; send it to POST /v1/predict (or drop the field)")
        value = {**value, column: task}
    return value


def _characters(value: Any) -> int:
    """Characters in a field's value (a list's or an object's items together)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_characters(v) for v in value)
    if isinstance(value, dict):
        return sum(_characters(v) for v in value.values())
    return 0


def check_parameters(parameters: Any, endpoint: Endpoint, limits: Limits) -> Dict[str, Any]:
    """A request's ``parameters`` -> the decoding settings it changes (422 for any problem)."""
    if not isinstance(parameters, dict):
        raise RequestError(422, f"\"parameters\" is a JSON {_json_type(parameters)}; it is an object of decoding settings, "
                                "e.g. {\"max_length\": 32, \"beam_size\": 4}")
    if not parameters:
        return {}
    default = endpoint.generation
    if default is None:
        raise RequestError(422, f"the {endpoint.task} model does not generate text: POST {endpoint.path} takes no "
                                f"decoding \"parameters\" (got {sorted(parameters)}); drop them")
    try:
        check_generation_keys(parameters, default)
    except ValueError as err:
        raise RequestError(422, f"\"parameters\": {err}") from None
    for name, value in parameters.items():
        _check_type(name, value, getattr(default, name), dataclasses.fields(default))
    for name, limit, option in (("max_length", limits.max_decode_length, "--max_decode_length"),
                                ("beam_size", limits.max_beam_size, "--max_beam_size"),
                                ("n_best", limits.max_beam_size, "--max_beam_size")):
        if name in parameters and parameters[name] > limit:
            raise RequestError(422, f"\"parameters\": {name} {parameters[name]} is above the server's limit of {limit} "
                                    f"({option}); ask for at most {limit}")
    changes = beam_changes(parameters, default.strategy)
    try:
        dataclasses.replace(default, **changes)
    except ValueError as err:
        raise RequestError(422, "\"parameters\": " + str(err).replace("model.generation.", "")) from None
    return changes


def _check_type(name: str, value: Any, default: Any, fields: Any) -> None:
    declared = {f.name: f.type for f in fields}.get(name, "")
    if isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, int) or "int" in str(declared):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        if value is None and "Optional" in str(declared):
            ok = True
    else:
        return
    if not ok:
        raise RequestError(422, f"\"parameters\": {name} is {kind} (got {json.dumps(value)})")


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def _example(endpoint: Endpoint) -> str:
    fields = [f for f in endpoint.fields if not endpoint.route or f != endpoint.route[0]]
    record = ", ".join(f'"{name}": ...' for name in fields[:3])
    return f'{{"inputs": [{{{record}}}]}}'
