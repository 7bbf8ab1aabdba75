"""Summarization head: the shared encoder-decoder, scored with ROUGE."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

from s2s_tasks.metrics import rouge_scores
from s2s_tasks.seq2seq_module import Seq2SeqModule


class SummarizationModule(Seq2SeqModule):
    """Encoder-decoder summarizer; metrics ``rouge1``, ``rouge2``, ``rougeL`` and ``rougeLsum``
    (rouge-score F1 with Porter stemming; best reference when there are several)."""

    task_name = "summarization"
    primary_metric = "rougeL"

    def compute_metrics(
        self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]
    ) -> Tuple[Dict[str, float], Dict[str, str]]:
        return rouge_scores(hypotheses, references), {"rouge": "rouge-score, use_stemmer=True, F1, max over references"}
