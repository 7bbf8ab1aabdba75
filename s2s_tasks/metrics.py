"""Thin adapters over the reference implementations of the metrics users compare across papers.

* BLEU and chrF: sacreBLEU (Post 2018) on detokenized text; the signature is returned so it can
  be logged next to the score.
* ROUGE-1/2/L/Lsum: Google's ``rouge-score`` with Porter stemming. ``rougeLsum`` needs one
  sentence per line; rouge-score would split with nltk (a download that fails offline), so
  :func:`split_sentences` does it here.
* BLEU-1/2 (dialogue): sacreBLEU corpus BLEU with ``max_ngram_order`` 1 or 2.
* Distinct-1/2 (Li et al. 2016): distinct n-grams over all n-grams of all responses, computed
  here on sacreBLEU's ``13a`` tokens (the tokens BLEU sees).

All scores are on a 0-100 scale.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Sequence, Tuple, Union

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


def bleu_n_scores(
    hypotheses: Sequence[str], references: References, orders: Iterable[int] = (1, 2), tokenize: str = "13a"
) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Corpus BLEU-n for each ``n`` in ``orders``: sacreBLEU BLEU with ``max_ngram_order=n``
    (geometric mean of the 1..n-gram precisions times the brevity penalty; Papineni et al. 2002).

    Returns:
        ``({"bleu1": ..., "bleu2": ...}, {"bleu1": signature, ...})`` on a 0-100 scale.
    """
    from sacrebleu.metrics import BLEU

    refs = _reference_lists(references)
    _check_lengths(hypotheses, refs)
    n_streams = max(len(r) for r in refs) if refs else 1
    streams = [[r[i] if i < len(r) else r[0] for r in refs] for i in range(n_streams)]
    scores, signatures = {}, {}
    for order in orders:
        bleu = BLEU(tokenize=tokenize, max_ngram_order=order)
        scores[f"bleu{order}"] = bleu.corpus_score(list(hypotheses), streams).score
        # sacreBLEU's signature does not show the n-gram order, so it is added here
        signatures[f"bleu{order}"] = f"{bleu.get_signature()}|max_ngram_order:{order}"
    return scores, signatures


def distinct_n(texts: Sequence[str], n: int, tokenize: str = "13a", lowercase: bool = False) -> float:
    """Distinct-n of a set of generated texts (Li et al. 2016, "A Diversity-Promoting Objective
    Function for Neural Conversation Models"): the number of distinct n-grams divided by the
    total number of n-grams, counted over all texts together (n-grams never span two texts).

    Tokens: each text is split by sacreBLEU's tokenizer (``13a`` by default: punctuation
    separated from words, as BLEU sees it), then on whitespace; no lowercasing unless asked.

    Returns:
        the ratio on a 0-100 scale (``100 * distinct / total``); 0 when there is no n-gram.
    """
    from sacrebleu.metrics import BLEU

    tokenizer = BLEU(tokenize=tokenize).tokenizer  # the callable BLEU itself tokenizes with
    seen, total = set(), 0
    for text in texts:
        tokens = tokenizer(text.lower() if lowercase else text).split()
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return 100.0 * len(seen) / total if total else 0.0

