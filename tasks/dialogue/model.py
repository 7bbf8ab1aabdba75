"""Dialogue head: the shared encoder-decoder, scored with corpus and sentence-level BLEU-1/2, Distinct-1/2 and perplexity."""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

from s2s_tasks.metrics import bleu_n_scores, distinct_n, sentence_bleu_n_means
from s2s_tasks.seq2seq_module import Seq2SeqModule


class DialogueModule(Seq2SeqModule):
    """Encoder-decoder response generator.

    Metrics on the decoded responses (0-100 scale):

    * ``bleu1``, ``bleu2``: corpus BLEU with ``max_ngram_order`` 1 and 2 (sacreBLEU, ``13a``
      tokens, exponential smoothing);
    * ``sentence_bleu1``, ``sentence_bleu2``: the mean of each response's smoothed sentence-level
      BLEU-1/2 (nltk, smoothing method 7), the "BLEU-1/2" of PLATO (Bao et al. 2020) and most
      DailyDialog papers: a higher number than corpus BLEU on the same responses, and not capped
      at 100 (:func:`s2s_tasks.metrics.sentence_bleu_n_means`);
    * ``len_ratio``: the responses' length over the references' in BLEU's tokens (a plain ratio,
      not 0-100): below 1, BLEU's brevity penalty scales both BLEU scores down (short generic
      replies; ``model.val_generation.min_length`` counters it);
    * ``distinct1``, ``distinct2``: distinct n-grams / all n-grams over all generated
      responses (Li et al. 2016), on sacreBLEU ``13a`` tokens, case-sensitive;
    * ``ppl`` of the reference responses is logged by :class:`Seq2SeqModule` (``val/ppl``):
      ``exp`` of the mean token NLL, subword tokens and ``</s>`` included.

    Args:
        bleu_tokenize: sacreBLEU tokenizer for BLEU and Distinct (``13a`` default; ``none``
            for text that is already tokenized, e.g. DailyDialog's spaced punctuation).
        **kwargs: the encoder-decoder and training arguments of :class:`Seq2SeqModule`.
    """

    task_name = "dialogue"
    primary_metric = "bleu2"

    def __init__(self, bleu_tokenize: str = "13a", **kwargs: Any) -> None:
        super().__init__(**kwargs)  # save_hyperparameters there records bleu_tokenize too

    def compute_metrics(
        self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]
    ) -> Tuple[Dict[str, float], Dict[str, str]]:
        tokenize = self.hparams.bleu_tokenize
        scores, signatures = bleu_n_scores(hypotheses, references, orders=(1, 2), tokenize=tokenize)
        scores.update(sentence_bleu_n_means(hypotheses, references, orders=(1, 2), tokenize=tokenize))
        signatures["sentence_bleu"] = f"mean of nltk sentence_bleu, smoothing method7, weights 1/n, tok:{tokenize}, case:mixed"
        for n in (1, 2):
            scores[f"distinct{n}"] = distinct_n(hypotheses, n, tokenize=tokenize)
        signatures["distinct"] = f"distinct n-grams / all n-grams over all responses, tok:{tokenize}, case:mixed"
        return scores, signatures
