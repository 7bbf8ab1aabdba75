"""Data for summarization: document and summary columns (optionally several references)."""

from __future__ import annotations

from pathlib import Path

from s2s_tasks.data.datamodule import Seq2SeqDataModule


class SummarizationDataModule(Seq2SeqDataModule):
    """Documents (``data.source_column``) and summaries (``data.target_column``); set
    ``data.references_column`` to a list-of-strings column to score against several references.

    Without files or a dataset it uses the embedded sample: short synthetic e-mails and their
    subject lines made by ``sample_data.py`` (deterministic, seeded).
    """

    sample_dir = Path(__file__).resolve().parent / "sample"
