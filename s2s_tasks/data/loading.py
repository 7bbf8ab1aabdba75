"""Raw records from files or the dataset hub through ``datasets.load_dataset``, with clear errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, Optional

log = logging.getLogger(__name__)

# file suffix -> (datasets builder, extra builder kwargs)
FILE_FORMATS: Dict[str, tuple] = {
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
}


def load_split_file(path: str, config_key: str, cache_dir: Optional[str] = None):
    """Load one local file as a ``datasets.Dataset``.

    ``config_key`` (e.g. ``data.train_file``) is named in every error so the user knows what to fix.
    A ``.txt`` file becomes one record per line in a ``text`` column.
    """
    import datasets

    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{config_key}: {path} does not exist")
    if not file.is_file():
        raise ValueError(f"{config_key}: {path} is not a file")
    suffix = file.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise ValueError(
            f"{config_key}: {path} has an unknown extension {suffix!r}; "
            f"supported: {', '.join(sorted(FILE_FORMATS))}"
        )
    builder, kwargs = FILE_FORMATS[suffix]
    try:
        return datasets.load_dataset(
            builder, data_files={"split": str(file)}, split="split", cache_dir=cache_dir, **kwargs
        )
    except Exception as err:
        raise ValueError(f"{config_key}: could not read {path} as {builder} ({type(err).__name__}: {err})") from None


def load_hub_split(name: str, config_name: Optional[str], split: str, cache_dir: Optional[str] = None):
    """Load ``split`` of a dataset hub name (needs network access the first time)."""
    import datasets

    try:
        return datasets.load_dataset(name, config_name, split=split, cache_dir=cache_dir)
    except Exception as err:
        raise ValueError(
            f"data.dataset: could not load split {split!r} of {name!r} (config {config_name!r}): "
            f"{type(err).__name__}: {err}. Offline, pass local files with data.train_file / "
            "data.validation_file / data.test_file instead."
        ) from None


def check_columns(dataset, required: Dict[str, Optional[str]], origin: str) -> None:
    """Raise if a configured column is missing, listing the columns that do exist.

    Args:
        required: config key -> column name (``None`` entries are skipped).
    """
    present = list(dataset.column_names)
    for key, column in required.items():
        if column is not None and column not in present:
            raise ValueError(
                f"{origin}: column {column!r} not found; the file has columns {present}. "
                f"Set {key} to the column that holds this field."
            )


def check_text_values(values: Iterable, origin: str, column: str, config_key: str, allow_list: bool = False) -> None:
    """Raise on the first value that is not a string (or a list of strings when ``allow_list``)."""
    for number, value in enumerate(values, start=1):
        ok = isinstance(value, str) or value is None
        if allow_list and isinstance(value, (list, tuple)):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise ValueError(
                f"{origin}, record {number}: field {column!r} should be "
                f"{'text or a list of texts' if allow_list else 'text'}, got {type(value).__name__} ({str(value)[:60]!r}). "
                f"Fix the record or point {config_key} at another column."
            )
