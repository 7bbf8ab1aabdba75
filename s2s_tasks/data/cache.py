"""A disk cache of tokenized data and trained tokenizers, keyed by content.

A key is the SHA-256 of everything the cached value depends on: the bytes of the data file,
the tokenizer (its full JSON), the data settings that shape the encoding, the label set, and the
source code of the data module's classes and of the tokenizer code. A changed file, tokenizer,
setting or encoding code therefore gets a new key and can never be served a stale entry (file
names, paths and modification times are not part of the key, so a copied or touched file is
still found).

Entries hold only integer arrays (``.npz``, read with ``allow_pickle=False``) and JSON: loading a
cache runs no code. They are written to a temporary name and renamed, so an interrupted run
leaves no half-written entry; an entry that cannot be read is reported, removed and rebuilt.

Splits of fewer than :data:`MIN_RECORDS` records are not cached: they tokenize in well under a
second and would only fill the disk. The cache lives in ``data.cache_dir``, else in
``$S2S_TASKS_CACHE``, else in ``~/.cache/s2s-tasks``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

#: splits with fewer records are not cached
MIN_RECORDS = 20_000
#: bump when the layout of an entry changes
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("S2S_TASKS_CACHE") or Path.home() / ".cache" / "s2s-tasks")


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_digest(classes: Iterable[type], modules: Iterable[str] = ()) -> str:
    """SHA-256 of the source files that define ``classes`` (and their base classes in this
    project) and of the named modules: the encoding code a cached value came from."""
    files = set()
    for cls in classes:
        for base in inspect.getmro(cls):
            if base.__module__.startswith("s2s_tasks"):
                files.add(inspect.getsourcefile(base))
    for name in modules:
        files.add(inspect.getsourcefile(sys.modules[name]))
    digest = hashlib.sha256()
    for file in sorted(f for f in files if f):
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()


def make_key(*parts: Any) -> str:
    """SHA-256 of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- integer columns <-> arrays
def _pack(name: str, values: List[Any], arrays: Dict[str, np.ndarray]) -> str:
    """Store one column of ints, int lists or lists of int pairs as flat arrays; returns its layout."""
    sample = next((v for v in values if not isinstance(v, (list, tuple)) or len(v)), None)
    if sample is None or isinstance(sample, (int, np.integer)) and not isinstance(sample, bool):
        if all(isinstance(v, (list, tuple)) for v in values):  # every row empty
            arrays[f"{name}.offsets"] = np.zeros(len(values) + 1, dtype=np.int64)
            arrays[f"{name}.flat"] = np.zeros(0, dtype=np.int64)
            return "ragged"
        arrays[name] = np.asarray(values, dtype=np.int64)
        return "ints"
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    arrays[f"{name}.offsets"] = offsets
    first = sample[0]
    if isinstance(first, (list, tuple)):
        arrays[f"{name}.flat"] = np.asarray([p for v in values for p in v], dtype=np.int64).reshape(-1, len(first))
        return "ragged_tuples"
    arrays[f"{name}.flat"] = np.fromiter((i for v in values for i in v), dtype=np.int64, count=int(offsets[-1]))
    return "ragged"


def _unpack(name: str, layout: str, arrays) -> List[Any]:
    if layout == "ints":
        return arrays[name].tolist()
    offsets = arrays[f"{name}.offsets"].tolist()
    flat = arrays[f"{name}.flat"].tolist()
    if layout == "ragged_tuples":
        flat = [tuple(p) for p in flat]
    return [flat[a:b] for a, b in zip(offsets, offsets[1:])]


class TokenCache:
    """Entries under ``root``: ``<key>.npz`` (tokenized columns) and ``<key>.json`` (text)."""

    def __init__(self, root: Optional[str] = None) -> None:
        self.root = Path(root) if root else default_cache_dir()

    def _path(self, key: str, suffix: str) -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def _write(self, path: Path, write) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                write(out)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _broken(self, path: Path, err: Exception) -> None:
        log.warning("cache entry %s could not be read (%s: %s); rebuilding it", path, type(err).__name__, err)
        path.unlink(missing_ok=True)

    # ------------------------------------------------------------------- tokenized columns
    def load_columns(self, key: str) -> Optional[Tuple[Dict[str, List[Any]], List[str]]]:
        """The columns stored under ``key`` and the notes made when they were built, or None."""
        path = self._path(key, ".npz")
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as arrays:
                meta = json.loads(bytes(arrays["__meta__"]).decode("utf-8"))
                if meta.get("version") != FORMAT_VERSION:
                    return None
                columns = {name: _unpack(name, layout, arrays) for name, layout in meta["layouts"].items()}
            return columns, list(meta["notes"])
        except Exception as err:  # truncated or foreign file: rebuild
            self._broken(path, err)
            return None

    def save_columns(self, key: str, columns: Dict[str, List[Any]], notes: List[str]) -> None:
        arrays: Dict[str, np.ndarray] = {}
        layouts = {name: _pack(name, values, arrays) for name, values in columns.items()}
        meta = json.dumps({"version": FORMAT_VERSION, "layouts": layouts, "notes": notes}).encode("utf-8")
        arrays["__meta__"] = np.frombuffer(meta, dtype=np.uint8)
        self._write(self._path(key, ".npz"), lambda out: np.savez(out, **arrays))

    # ------------------------------------------------------------------- text (tokenizer JSON)
    def load_text(self, key: str) -> Optional[str]:
        path = self._path(key, ".json")
        if not path.is_file():
            return None
        try:
            return path.read_text(encoding="utf-8")
        except Exception as err:
            self._broken(path, err)
            return None

    def save_text(self, key: str, text: str) -> None:
        self._write(self._path(key, ".json"), lambda out: out.write(text.encode("utf-8")))
