"""Raw records from local files, read with exact line numbers for every error.

Local ``.jsonl`` / ``.json`` / ``.csv`` / ``.tsv`` / ``.txt`` files are read here line by line
rather than through ``datasets.load_dataset``: a malformed line is then reported by its line
number (pyarrow's readers report byte offsets or nothing), a field whose type differs from one
record to the next reaches the schema check with its record instead of failing Arrow's type
inference, nothing is written to a cache (so a changed file can never be served from a stale
one), and a file can be read in chunks (``predict`` streams). ``.parquet`` files go through
pyarrow, dataset hub names through ``datasets`` (see :mod:`s2s_tasks.data.loading`).

Every string value has C0/C1 control characters other than tab, newline and carriage return
replaced by a space (the length stays, so character offsets stay valid); the records affected
are counted and reported. Invalid UTF-8 is an error naming the line and byte.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

log = logging.getLogger(__name__)

#: file suffixes read from local files
FILE_FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
#: control characters replaced by a space: C0 except tab/newline/carriage return, DEL, C1
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: a value absent from a record (a jsonl object without the key), unlike an explicit null
MISSING = type("Missing", (), {"__repr__": lambda self: "<missing>", "__bool__": lambda self: False})()

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default (128 KiB) rejects long documents


@dataclass
class Records:
    """A table of raw records: ``columns`` maps a column name to its values (one per record).

    Attributes:
        origin: what to call the data in messages, e.g. ``"train data 'x.jsonl'"``.
        lines: where each record starts in its file (1-based line numbers), or ``None`` for data
            without lines (parquet, dataset hub): records are then named by their number.
        first: the 1-based number of the first record (a chunk of a streamed file starts later).
        features: ``datasets`` features of the columns where known (``ClassLabel`` names of
            integer labels), else empty.
    """

    columns: Dict[str, List[Any]]
    origin: str
    lines: Optional[List[int]] = None
    first: int = 1
    features: Dict[str, Any] = field(default_factory=dict)
    #: the record numbers of the rows when they are not consecutive (a :meth:`select`\ ion)
    numbers: Optional[List[int]] = None

    @property
    def column_names(self) -> List[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, column: str) -> List[Any]:
        return self.columns[column]

    def number(self, i: int) -> int:
        """The 1-based record number of row ``i`` (the order of outputs)."""
        return self.first + i if self.numbers is None else self.numbers[i]

    def select(self, rows: Sequence[int]) -> "Records":
        """The table of the given rows only; they keep their record and line numbers."""
        return Records(
            {name: [values[i] for i in rows] for name, values in self.columns.items()}, self.origin,
            lines=None if self.lines is None else [self.lines[i] for i in rows], first=self.first,
            features=self.features, numbers=[self.number(i) for i in rows],
        )

    def where(self, i: int) -> str:
        """``"<origin>, line 7"`` (or ``", record 7"``): where row ``i`` is, for messages."""
        if self.lines is not None:
            return f"{self.origin}, line {self.lines[i]}"
        return f"{self.origin}, record {self.number(i)}"

    def class_names(self, column: str) -> Optional[List[str]]:
        """The names of an integer label column (a ``datasets`` ``ClassLabel``, or a sequence of them)."""
        feature = self.features.get(column)
        names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
        return list(names) if names else None


class DataFileError(ValueError):
    """A data file that cannot be read; the message names the file, the line and the fix."""


def check_file(path: str, config_key: str) -> Path:
    """The path as a readable data file of a known format, or a :class:`DataFileError`."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{config_key}: {path} does not exist")
    if file.is_dir():
        raise DataFileError(f"{config_key}: {path} is a directory; give the path of a data file")
    if not file.is_file():
        raise DataFileError(f"{config_key}: {path} is not a regular file")
    suffix = file.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise DataFileError(
            f"{config_key}: {path} has an unknown extension {suffix!r}; supported: {', '.join(FILE_FORMATS)} "
            "(rename the file if it is in one of these formats)"
        )
    try:
        with open(file, "rb") as handle:
            handle.read(1)
    except OSError as err:
        raise DataFileError(f"{config_key}: {path} cannot be read ({err.strerror or err}); check its permissions") from None
    if file.stat().st_size == 0:
        raise DataFileError(f"{config_key}: {path} is empty; it needs at least one record")
    return file


def read_file(path: str, config_key: str, origin: str, report: Callable[[str], None] = log.warning) -> Records:
    """The whole file as one :class:`Records` table (see :func:`iter_file`)."""
    chunks = list(iter_file(path, config_key, origin, chunk_size=None, report=report))
    return chunks[0]


def iter_file(
    path: str, config_key: str, origin: str, chunk_size: Optional[int] = 10_000,
    report: Callable[[str], None] = log.warning,
) -> Iterator[Records]:
    """Read a local data file in tables of at most ``chunk_size`` records (all at once for ``None``).

    Raises a :class:`DataFileError` naming ``config_key``, the file and the line for a missing,
    unreadable, empty or malformed file. Control characters are replaced, and once the whole
    file has been read ``report`` is called with how many records had them.
    """
    file = check_file(path, config_key)
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        yield from _iter_parquet(file, config_key, origin, chunk_size)
        return
    reader = {".jsonl": _json_lines, ".json": _json_file, ".csv": _csv_rows, ".tsv": _csv_rows, ".txt": _text_lines}[suffix]
    cleaned = CleaningReport()
    rows: List[Dict[str, Any]] = []
    lines: List[int] = []
    first, total = 1, 0
    for line, row in reader(file, config_key):
        cleaned.clean(row, line)
        rows.append(row)
        lines.append(line)
        if chunk_size is not None and len(rows) >= chunk_size:
            yield _table(rows, lines, first, origin)
            first += len(rows)
            total += len(rows)
            rows, lines = [], []
    total += len(rows)
    if total == 0:
        what = "a header but no records" if suffix in (".csv", ".tsv") else "no records (only blank lines)"
        raise DataFileError(f"{config_key}: {path} has {what}; it needs at least one record")
    if rows:
        yield _table(rows, lines, first, origin)
    if cleaned.records:
        report(cleaned.message(origin, total))


def _table(rows: List[Dict[str, Any]], lines: List[int], first: int, origin: str) -> Records:
    names: Dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {name: [row.get(name, MISSING) for row in rows] for name in names}
    return Records(columns=columns, origin=origin, lines=lines, first=first)


class CleaningReport:
    """Replaces control characters in a record's strings and remembers the first one for the report."""

    def __init__(self) -> None:
        self.records = 0
        self.example: Optional[str] = None

    def clean(self, row: Dict[str, Any], line: int) -> bool:
        changed = False
        for key, value in row.items():
            new = _clean_value(value)
            if new is not value:
                if self.example is None:
                    char = _first_control(value)
                    self.example = f"U+{ord(char):04X} in field {key!r} on line {line}"
                row[key] = new
                changed = True
        self.records += changed
        return changed

    def message(self, origin: str, total: int) -> str:
        return (f"{origin}: {self.records} of {total} records had control characters (first: {self.example}); "
                "replaced by spaces (offsets are kept)")


def _first_control(value: Any) -> str:
    """The first control character in a value's strings ("?" if none)."""
    if isinstance(value, str):
        found = CONTROL_CHARACTERS.search(value)
        return found.group() if found else "?"
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((c for c in (_first_control(v) for v in items) if c != "?"), "?")


def _clean_value(value: Any) -> Any:
    """``value`` with control characters in its strings replaced by spaces (the same object when clean)."""
    if isinstance(value, str):
        return CONTROL_CHARACTERS.sub(" ", value) if CONTROL_CHARACTERS.search(value) else value
    if isinstance(value, list):
        cleaned = [_clean_value(v) for v in value]
        return cleaned if any(a is not b for a, b in zip(cleaned, value)) else value
    if isinstance(value, dict):
        cleaned_dict = {k: _clean_value(v) for k, v in value.items()}
        return cleaned_dict if any(cleaned_dict[k] is not value[k] for k in value) else value
    return value


def _decoded_lines(file: Path, config_key: str) -> Iterator[tuple]:
    """``(line number, text without the line break)`` of a UTF-8 file (a leading BOM is dropped)."""
    with open(file, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFileError(
                    f"{config_key}: {file}, line {number}: byte {err.start + 1} of the line ({raw[err.start:err.start + 1]!r}) "
                    f"is not valid UTF-8 ({err.reason}). Data files must be UTF-8: convert it, e.g. "
                    f"`iconv -f latin1 -t utf-8 {file.name} > fixed{file.suffix}`"
                ) from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text.rstrip("\r\n")


def _json_error(config_key: str, file: Path, number: int, err: json.JSONDecodeError, line: str) -> DataFileError:
    snippet = line[max(0, err.colno - 30) : err.colno + 30]
    return DataFileError(
        f"{config_key}: {file}, line {number}, column {err.colno}: malformed JSON ({err.msg}) near {snippet!r}. "
        "A .jsonl file holds one JSON object per line; fix or remove that line"
    )


def _json_lines(file: Path, config_key: str) -> Iterator[tuple]:
    decoder = json.JSONDecoder(strict=False)  # literal tabs/newlines inside strings are common; cleaned later
    for number, line in _decoded_lines(file, config_key):
        if not line.strip():
            continue
        try:
            value = decoder.decode(line)
        except json.JSONDecodeError as err:
            raise _json_error(config_key, file, number, err, line) from None
        if not isinstance(value, dict):
            raise DataFileError(
                f"{config_key}: {file}, line {number}: expected a JSON object ({{\"field\": value, ...}}), "
                f"got {type(value).__name__} ({line[:60]!r}). Each line must be one record"
            )
        yield number, value


def _json_file(file: Path, config_key: str) -> Iterator[tuple]:
    """A ``.json`` file: a JSON array of objects, or JSON lines (as ``datasets`` accepts both)."""
    with open(file, "rb") as handle:
        head = handle.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not head.startswith("["):
        yield from _json_lines(file, config_key)
        return
    text = "\n".join(line for _, line in _decoded_lines(file, config_key))
    try:
        values = json.JSONDecoder(strict=False).decode(text)
    except json.JSONDecodeError as err:
        raise _json_error(config_key, file, err.lineno, err, text.splitlines()[err.lineno - 1] if text else "") from None
    for k, value in enumerate(values):
        if not isinstance(value, dict):
            raise DataFileError(
                f"{config_key}: {file}, item {k + 1} of the JSON array: expected a JSON object, got {type(value).__name__}"
            )
        yield k + 1, value  # records of a JSON array are named by their position


def _csv_rows(file: Path, config_key: str) -> Iterator[tuple]:
    delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    numbered = _decoded_lines(file, config_key)
    position = {"line": 0}

    def lines() -> Iterator[str]:
        for number, text in numbered:
            position["line"] = number
            yield text

    reader = csv.reader(lines(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as err:
        raise DataFileError(f"{config_key}: {file}, line 1: {err}") from None
    names = [name.strip() for name in header]
    if not any(names) or len(set(names)) != len(names) or not all(names):
        raise DataFileError(
            f"{config_key}: {file}, line 1: the header {header} must name every column once; "
            "the first line of a CSV/TSV file is its header"
        )
    start = position["line"]
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataFileError(f"{config_key}: {file}, line {position['line']}: {err}; check the quoting") from None
        line = start + 1
        start = position["line"]
        if not row or (len(row) == 1 and not row[0].strip() and len(names) > 1):
            continue  # a blank line
        if len(row) != len(names):
            sep = "tab" if delimiter == "\t" else "comma"
            raise DataFileError(
                f"{config_key}: {file}, line {line}: {len(row)} fields, but the header has {len(names)} ({', '.join(names)}). "
                f"Quote fields that contain a {sep} or a line break (\"...\", with \"\" for a quote inside)"
            )
        yield line, dict(zip(names, row))


def _text_lines(file: Path, config_key: str) -> Iterator[tuple]:
    """A ``.txt`` file: one record a line in a ``text`` column (blank lines are records too:
    they are skipped and counted as empty inputs, so the output still lines up with the input)."""
    for number, line in _decoded_lines(file, config_key):
        yield number, {"text": line}


def _iter_parquet(file: Path, config_key: str, origin: str, chunk_size: Optional[int]) -> Iterator[Records]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
        features = _features_of(parquet.schema_arrow)
        batches = parquet.iter_batches(batch_size=chunk_size) if chunk_size else [parquet.read()]
        first = 1
        for batch in batches:
            columns = batch.to_pydict()
            table = Records(columns=columns, origin=origin, lines=None, first=first, features=features)
            first += len(table)
            if len(table):
                yield table
    except (OSError, ValueError) as err:
        if isinstance(err, DataFileError):
            raise
        raise DataFileError(f"{config_key}: {file} could not be read as parquet ({type(err).__name__}: {err})") from None
    if first == 1:
        raise DataFileError(f"{config_key}: {file} has no records; it needs at least one")


def _features_of(schema) -> Dict[str, Any]:
    """``datasets`` features stored in a parquet file's metadata (``ClassLabel`` names), if any."""
    try:
        import datasets

        return dict(datasets.Features.from_arrow_schema(schema))
    except Exception:  # not written by datasets: plain columns
        return {}


def records_from_dataset(dataset, origin: str) -> Records:
    """A ``datasets.Dataset`` (a hub split) as :class:`Records` (columns materialised once)."""
    columns = {name: list(dataset[name]) for name in dataset.column_names}
    return Records(columns=columns, origin=origin, lines=None, features=dict(dataset.features))


def describe_columns(names: Sequence[str]) -> str:
    return "[" + ", ".join(repr(n) for n in names) + "]"
