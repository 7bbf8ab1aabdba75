"""Translation head: the shared encoder-decoder, scored with sacreBLEU BLEU and chrF."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

from s2s_tasks.metrics import sacrebleu_scores
from s2s_tasks.seq2seq_module import Seq2SeqModule


class TranslationModule(Seq2SeqModule):
    """Encoder-decoder translation model; metrics ``bleu`` and ``chrf`` on detokenized text
    (sacreBLEU's default 13a tokenization, case-sensitive; signatures printed after ``test``)."""

    task_name = "translation"

    def compute_metrics(
        self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]
    ) -> Tuple[Dict[str, float], Dict[str, str]]:
        return sacrebleu_scores(hypotheses, references)
