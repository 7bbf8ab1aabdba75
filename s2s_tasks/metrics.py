"""Thin adapters over the reference implementations of the metrics users compare across papers.

* BLEU and chrF: sacreBLEU (Post 2018) on detokenized text; the signature is returned so it can
  be logged next to the score.
* ROUGE-1/2/L/Lsum: Google's ``rouge-score`` with Porter stemming. ``rougeLsum`` needs one
  sentence per line; rouge-score would split with nltk (a download that fails offline), so
  :func:`split_sentences` does it here.

All scores are on a 0-100 scale.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple, Union

References = Union[Sequence[str], Sequence[Sequence[str]]]


def _reference_lists(references: References) -> List[List[str]]:
    """Normalise references to one list of alternatives per hypothesis."""
    return [[r] if isinstance(r, str) else list(r) for r in references]


def _check_lengths(hypotheses: Sequence[str], references: List[List[str]]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if any(len(r) == 0 for r in references):
        raise ValueError("every hypothesis needs at least one reference")


def sacrebleu_scores(
    hypotheses: Sequence[str], references: References, tokenize: str = "13a", lowercase: bool = False
) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Corpus BLEU and chrF with sacreBLEU.

    Args:
        hypotheses: ``N`` detokenized system outputs.
        references: ``N`` references, or ``N`` lists of alternative references (any count each).
        tokenize: sacreBLEU tokenizer (``13a``, ``intl``, ``zh``, ``none`` for pre-tokenized text ...).
        lowercase: case-insensitive BLEU.

    Returns:
        ``({"bleu": ..., "chrf": ...}, {"bleu": signature, "chrf": signature})``.
    """
    from sacrebleu.metrics import BLEU, CHRF

    refs = _reference_lists(references)
    _check_lengths(hypotheses, refs)
    # sacreBLEU wants one stream per reference position; pad ragged lists with the first reference
    # which leaves BLEU's max-count clipping and closest-length choice unchanged.
    n_streams = max(len(r) for r in refs) if refs else 1
    streams = [[r[i] if i < len(r) else r[0] for r in refs] for i in range(n_streams)]
    bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
    chrf = CHRF()
    hyps = list(hypotheses)
    scores = {"bleu": bleu.corpus_score(hyps, streams).score, "chrf": chrf.corpus_score(hyps, streams).score}
    signatures = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    return scores, signatures


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> List[str]:
    """Split text into sentences at ``.``, ``!`` or ``?`` followed by whitespace, and at newlines."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def rouge_scores(hypotheses: Sequence[str], references: References, use_stemmer: bool = True) -> Dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F1 (Lin 2004) with rouge-score; with several references the best one counts.

    Returns:
        ``{"rouge1": ..., "rouge2": ..., "rougeL": ..., "rougeLsum": ...}`` on a 0-100 scale.
    """
    from rouge_score import rouge_scorer

    refs = _reference_lists(references)
    _check_lengths(hypotheses, refs)
    keys = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=use_stemmer)
    totals = dict.fromkeys(keys, 0.0)
    for hyp, alternatives in zip(hypotheses, refs):
        hyp_lines = "\n".join(split_sentences(hyp))
        ref_lines = ["\n".join(split_sentences(r)) for r in alternatives]
        result = scorer.score_multi(ref_lines, hyp_lines)
        for key in keys:
            totals[key] += result[key].fmeasure
    n = max(len(hypotheses), 1)
    return {key: 100.0 * value / n for key, value in totals.items()}
