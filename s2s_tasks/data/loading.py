"""Splits of a dataset hub name through ``datasets.load_dataset``, with a clear error offline."""

from __future__ import annotations

from typing import Optional


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
