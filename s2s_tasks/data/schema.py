"""The one place where raw record fields are checked against what a task declared.

A task's data module declares its fields (:class:`Field`: the column, the config key that
names it, and its kind); :func:`read_examples` checks every record's values against their
kinds (:data:`KINDS`), turns them into plain Python values and hands them to the task's
``read_record``, which only adds checks that tie fields together (tags per token, answer
offsets in the context, spans inside the text). Errors name the file, the line or record, the
field, what was expected and the config key; records skipped by policy (empty text) are
counted per reason and reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from s2s_tasks.data.records import MISSING, Records, describe_columns


class RecordError(ValueError):
    """A record that cannot be used: ``field`` names the offending column, ``message`` says what
    was expected and how to fix it (:func:`read_examples` adds the file, line and config key)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class SkipRecord(Exception):
    """A record skipped by policy (e.g. empty text); ``reason`` is counted and reported."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Field:
    """One column a task reads.

    Attributes:
        column: the column name in the data.
        key: the config key that names the column (``data.text_column``), quoted in errors.
        kind: what the values must be, a key of :data:`KINDS`.
        what: the noun for messages ("source", "context" ...); an empty one is skipped as
            "empty or whitespace-only <what>".
        optional: the column may be absent (its values are then ``None``).
        names: label names of integer values (a ``datasets`` ``ClassLabel``), for ``label``,
            ``labels`` and ``tags``.
        hint: a sentence added to the errors of a value of the wrong kind (the task's fix).
    """

    column: str
    key: str
    kind: str
    what: str = "text"
    optional: bool = False
    names: Optional[Tuple[str, ...]] = None
    hint: str = ""


def _short(value: Any) -> str:
    return f"{type(value).__name__} ({str(value)[:60]!r})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_text(value: Any, field: Field) -> str:
    """Text: a string; empty or whitespace-only (or null) is skipped."""
    if value is not None and not isinstance(value, str):
        expected = "text" if field.what == "text" else f"the {field.what} as text"
        raise RecordError(field.column, f"expected {expected}, got {_short(value)}")
    if not value or not value.strip():
        raise SkipRecord(f"empty or whitespace-only {field.what}")
    return value


def check_texts(value: Any, field: Field) -> Any:
    """Text or a list of texts (a dialogue history, several references); skipped when no text
    in it has a non-space character."""
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise RecordError(field.column, f"expected text or a list of texts, got a list holding {_short(bad[0])}")
        if not any(v.strip() for v in value):
            raise SkipRecord(f"empty or whitespace-only {field.what}")
        return list(value)
    return check_text(value, field)


def check_tokens(value: Any, field: Field) -> List[str]:
    """Pre-split tokens: a list of non-empty strings without whitespace; an empty list is skipped."""
    if not isinstance(value, (list, tuple)):
        raise RecordError(field.column, f"expected a list of tokens, got {_short(value)}")
    if not value:
        raise SkipRecord(f"no {field.what}")
    for i, token in enumerate(value):
        if not isinstance(token, str) or not token or token.split() != [token]:
            raise RecordError(field.column, f"token {i} is {token!r}: every token must be a non-empty string without "
                              "whitespace; split it into several tokens")
    return list(value)


def _label(value: Any, field: Field, what: str = "a label") -> str:
    if _is_int(value) and field.names is not None:
        if not 0 <= value < len(field.names):
            raise RecordError(field.column, f"{what} is the integer {value}, outside the column's {len(field.names)} class names")
        return field.names[value]
    if _is_int(value):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(field.column, f"expected {what} (a non-empty string or an integer), got {value!r}"[:300])
    return value.strip()


def check_label(value: Any, field: Field) -> str:
    """One label: a non-empty string, or an integer (its class name where the column has names)."""
    if isinstance(value, (list, tuple)):
        raise RecordError(field.column, f"expected one label, got a list {str(value)[:60]!r}")
    return _label(value, field)


def check_labels(value: Any, field: Field) -> Tuple[str, ...]:
    """Several labels: a list of labels (possibly empty) or one label; sorted, duplicates dropped."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if value is None:
        raise RecordError(field.column, "expected a list of labels, got null; give [] for no label")
    return tuple(sorted({_label(v, field) for v in values}))


def check_tags(value: Any, field: Field) -> List[str]:
    """A tag sequence: a list of strings (or integers with class names)."""
    if not isinstance(value, (list, tuple)):
        raise RecordError(field.column, f"expected a list of {field.what}, one per token, got {_short(value)}")
    tags = []
    for i, tag in enumerate(value):
        if _is_int(tag) and field.names is None:
            raise RecordError(field.column, f"tag {i} is the integer {tag}, and the column has no tag names for it "
                              "(a datasets ClassLabel); give tag strings such as 'B-PER'")
        if not _is_int(tag) and not isinstance(tag, str):
            raise RecordError(field.column, f"tag {i} is {tag!r}; give tag strings such as 'B-PER'")
        tags.append(_label(tag, field, f"tag {i}") if _is_int(tag) else tag)
    return tags


ENTITY_FORM = "{'start': int, 'end': int, 'label': str} (character offsets into the text, end exclusive)"


def check_spans(value: Any, field: Field) -> List[Tuple[int, int, str]]:
    """Labelled character spans: a list of ``{"start", "end", "label"}`` objects or
    ``[start, end, label]`` lists, offsets integers with ``start < end``."""
    if not isinstance(value, (list, tuple)):
        raise RecordError(field.column, f"expected a list of entities {ENTITY_FORM}, got {_short(value)}; "
                          "give [] for a text without entities")
    spans = []
    for k, entity in enumerate(value):
        if isinstance(entity, dict):
            start, end, label = entity.get("start"), entity.get("end"), entity.get("label")
        elif isinstance(entity, (list, tuple)) and len(entity) == 3:
            start, end, label = entity
        else:
            raise RecordError(field.column, f"entity {k} is {entity!r}; give {ENTITY_FORM}")
        if not (_is_int(start) and _is_int(end)) or not 0 <= start < end:
            raise RecordError(field.column, f"entity {k} has start={start!r}, end={end!r}; give integer character "
                              "offsets with 0 <= start < end (end is exclusive)")
        if not isinstance(label, str) or not label.strip():
            raise RecordError(field.column, f"entity {k} has label {label!r}; give a type name such as 'PER'")
        spans.append((start, end, label))
    return spans


SPAN_FORM = '{"start": int, "end": int} (character offsets into the text, end exclusive), or [start, end]'


def check_span(value: Any, field: Field) -> Tuple[int, int, Optional[str]]:
    """One character span: ``{"start", "end"[, "text"]}`` or ``[start, end]`` -> ``(start, end, text or None)``."""
    if isinstance(value, dict):
        if "start" not in value or "end" not in value:
            raise RecordError(field.column, f"expected an entity with 'start' and 'end', got keys {sorted(value)}. Give it as {SPAN_FORM}.")
        start, end, mention = value["start"], value["end"], value.get("text")
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        (start, end), mention = value, None
    else:
        raise RecordError(field.column, f"expected an entity span, got {_short(value)}. Give it as {SPAN_FORM}.")
    if not (_is_int(start) and _is_int(end)):
        raise RecordError(field.column, f"start and end must be integers, got start={start!r}, end={end!r}. Give it as {SPAN_FORM}.")
    if mention is not None and not isinstance(mention, str):
        raise RecordError(field.column, f"the entity's 'text' must be a string, got {_short(mention)}")
    return start, end, mention


ANSWERS_FORM = 'SQuAD answers: {"text": [...], "answer_start": [...]} or a list of {"text", "answer_start"} objects'


def check_answers(value: Any, field: Field) -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
    """SQuAD answers -> ``(texts, starts)``; a record without answers is skipped."""
    if isinstance(value, dict) and {"text", "answer_start"} <= set(value):
        texts, starts = value["text"], value["answer_start"]
        if isinstance(texts, str) and _is_int(starts):
            texts, starts = [texts], [starts]
        if not isinstance(texts, (list, tuple)) or not isinstance(starts, (list, tuple)):
            raise RecordError(field.column, f"expected {ANSWERS_FORM}; 'text' and 'answer_start' must be lists, got {value!r}"[:300])
        if len(texts) != len(starts):
            raise RecordError(field.column, f"'text' has {len(texts)} answers but 'answer_start' has {len(starts)}; give one offset per answer")
    elif isinstance(value, (list, tuple)) and all(isinstance(a, dict) and {"text", "answer_start"} <= set(a) for a in value):
        texts, starts = [a["text"] for a in value], [a["answer_start"] for a in value]
    else:
        raise RecordError(field.column, f"expected {ANSWERS_FORM}, got {str(value)[:120]!r}")
    if not texts:
        raise SkipRecord("no answer (SQuAD 2.0-style unanswerable questions are not part of SQuAD v1.1 extractive QA)")
    for k, (text, start) in enumerate(zip(texts, starts)):
        if not isinstance(text, str) or not text.strip():
            raise RecordError(field.column, f"answer {k}: expected a non-empty answer text, got {text!r}")
        if not _is_int(start) or start < 0:
            raise RecordError(field.column, f"answer {k} ({text!r}): answer_start must be a character offset (an integer >= 0), got {start!r}")
    return tuple(texts), tuple(starts)


def check_id(value: Any, field: Field) -> Optional[str]:
    """An identifier copied to the outputs: any scalar, as text."""
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        raise RecordError(field.column, f"expected an identifier (text or a number), got {_short(value)}")
    return str(value)


#: kind -> checker(value, field) -> the value as the task reads it
KINDS: Dict[str, Callable[[Any, Field], Any]] = {
    "text": check_text,
    "texts": check_texts,
    "tokens": check_tokens,
    "label": check_label,
    "labels": check_labels,
    "tags": check_tags,
    "spans": check_spans,
    "span": check_span,
    "answers": check_answers,
    "id": check_id,
}


def check_columns(records: Records, fields: Sequence[Field]) -> None:
    """Raise if a required column is missing, listing the columns that do exist."""
    present = records.column_names
    for f in fields:
        if f.kind not in KINDS:
            raise ValueError(f"unknown field kind {f.kind!r} of {f.key}; one of {sorted(KINDS)}")
        if not f.optional and f.column not in present:
            raise ValueError(
                f"{records.origin}: column {f.column!r} not found; the data has columns {describe_columns(present)}. "
                f"Set {f.key} to the column that holds the {f.what}."
            )


def read_examples(
    records: Records, fields: Sequence[Field], read_record: Callable[[Dict[str, Any]], Any],
) -> Tuple[List[Any], List[int], Counter]:
    """Check every record against ``fields`` and turn it into an example with ``read_record``.

    Returns:
        the examples, their 1-based record numbers, and the count of skipped records per reason.

    Raises:
        ValueError naming the file, line (or record), field, config key and the fix, for the
        first record that breaks the schema or the task's own checks.
    """
    check_columns(records, fields)
    columns = {f.column: records.columns.get(f.column) for f in fields}
    keys = {f.column: f.key for f in fields}
    examples, numbers, skipped = [], [], Counter()
    for i in range(len(records)):
        try:
            record = {column: MISSING if values is None else values[i] for column, values in columns.items()}
            examples.append(read_record(check_record(record, fields)))
            numbers.append(records.number(i))
        except SkipRecord as skip:
            skipped[skip.reason] += 1
        except RecordError as err:
            key = keys.get(err.field)
            where = f"field {err.field!r}" + (f" ({key})" if key else "")
            raise ValueError(f"{records.where(i)}, {where}: {err.message}") from None
    return examples, numbers, skipped


def check_record(record: Dict[str, Any], fields: Sequence[Field]) -> Dict[str, Any]:
    """One record's values (column -> raw value) checked against ``fields``: column -> the value
    as the task reads it (``None`` for an absent optional field). Raises :class:`RecordError`
    or :class:`SkipRecord`."""
    values = {}
    for f in fields:
        value = record.get(f.column, MISSING)
        if value is MISSING and not f.optional:
            raise RecordError(f.column, f"the record has no {f.column!r} field; every record needs its {f.what}")
        if f.optional and value in (None, MISSING):
            values[f.column] = None
            continue
        try:
            values[f.column] = KINDS[f.kind](value, f)
        except RecordError as err:
            if f.hint:
                err.message = f"{err.message}; {f.hint}"
            raise
    return values
