"""Translation head: the shared encoder-decoder, scored with sacreBLEU BLEU and chrF."""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

from s2s_tasks.metrics import sacrebleu_scores
from s2s_tasks.seq2seq_module import Seq2SeqModule


class TranslationModule(Seq2SeqModule):
    """Encoder-decoder translation model; metrics ``bleu`` and ``chrf`` on detokenized text
    (signatures printed after ``test``).

    Args:
        bleu_tokenize: sacreBLEU tokenizer: ``13a`` (default, WMT standard), ``intl``, ``zh``,
            ``ja-mecab``, ``char``, or ``none`` for text that is already tokenized (e.g. the
            lowercased, tokenized Multi30k most papers report).
        bleu_lowercase: case-insensitive BLEU.
        **kwargs: the encoder-decoder and training arguments of :class:`Seq2SeqModule`.
    """

    task_name = "translation"
    primary_metric = "bleu"

    def __init__(self, bleu_tokenize: str = "13a", bleu_lowercase: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # save_hyperparameters there records bleu_* too

    def compute_metrics(
        self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]
    ) -> Tuple[Dict[str, float], Dict[str, str]]:
        return sacrebleu_scores(
            hypotheses, references, tokenize=self.hparams.bleu_tokenize, lowercase=self.hparams.bleu_lowercase
        )
