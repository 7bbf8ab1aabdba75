"""Data for translation: parallel text, one source and one target column."""

from __future__ import annotations

from pathlib import Path

from s2s_tasks.data.datamodule import Seq2SeqDataModule


class TranslationDataModule(Seq2SeqDataModule):
    """Parallel text (columns ``data.source_column`` / ``data.target_column``).

    Without files or a dataset it uses the embedded sample: an invented English-like to
    German-like language pair made by ``sample_data.py`` (deterministic, seeded).
    """

    sample_dir = Path(__file__).resolve().parent / "sample"
