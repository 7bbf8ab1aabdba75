"""Thin adapters over the reference implementations of the metrics users compare across papers.

* BLEU and chrF: sacreBLEU (Post 2018) on detokenized text; the signature is returned so it can
  be logged next to the score.
* ROUGE-1/2/L/Lsum: Google's ``rouge-score`` with Porter stemming. ``rougeLsum`` needs one
  sentence per line; rouge-score would split with nltk (a download that fails offline), so
  :func:`split_sentences` does it here.
* BLEU-1/2 (dialogue): sacreBLEU corpus BLEU with ``max_ngram_order`` 1 or 2; and the mean of
  smoothed sentence-level BLEU-1/2 with nltk, the score most dialogue papers report under that name.
* Distinct-1/2 (Li et al. 2016): distinct n-grams over all n-grams of all responses, computed
  here on sacreBLEU's ``13a`` tokens (the tokens BLEU sees).
* Classification accuracy and macro-F1: torchmetrics.
* NER: entity-level precision/recall/F1 with seqeval (strict IOB2), never token-level.
* Extractive QA: SQuAD v1.1 exact match and F1 with torchmetrics (official normalisation).
* Relation extraction: micro-F1 over the relations other than the no-relation label, and the
  official SemEval-2010 Task 8 macro-F1 (our port of the task's Perl scorer: no library has it).

All scores are on a 0-100 scale.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, Iterable, List, Sequence, Tuple, Union

References = Union[Sequence[str], Sequence[Sequence[str]]]


def _reference_lists(references: References) -> List[List[str]]:
    """Normalise references to one list of alternatives per hypothesis."""
    return [[r] if isinstance(r, str) else list(r) for r in references]


def _check_lengths(hypotheses: Sequence[str], references: List[List[str]]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if any(len(r) == 0 for r in references):
        raise ValueError("every hypothesis needs at least one reference")


#: the tokenizers for which the "text looks tokenized" message was given (once per process)
_TOKENIZED_TEXT_WARNED: set = set()


def _bleu(hypotheses: Sequence[str], tokenize: str, **kwargs: Any) -> Any:
    """A sacreBLEU ``BLEU`` that does not print sacreBLEU's "you forgot to detokenize" message on
    every call. That message fires for 100 hypotheses ending in " ." whatever the tokenizer, and
    tells the user to pass ``force``, which they cannot. Instead: nothing for ``tokenize="none"``
    (the user has said the text is tokenized), and for another tokenizer one message per process
    naming the setting to change."""
    from sacrebleu.metrics import BLEU

    if tokenize != "none" and tokenize not in _TOKENIZED_TEXT_WARNED:
        tokenized = sum(1 for h in hypotheses if h.endswith(" ."))
        if tokenized >= 100:  # sacreBLEU's own threshold
            _TOKENIZED_TEXT_WARNED.add(tokenize)
            logging.getLogger(__name__).warning(
                "%d of %d hypotheses end in a tokenized period (' .'): the text looks tokenized already, "
                "and BLEU's %s tokenizer splits it again. If the data is tokenized (e.g. Multi30k's "
                "*_lc_tok columns, DailyDialog), set --model.bleu_tokenize none to score its own tokens.",
                tokenized, len(hypotheses), tokenize,
            )
    return BLEU(tokenize=tokenize, force=True, **kwargs)


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
    from sacrebleu.metrics import CHRF

    refs = _reference_lists(references)
    _check_lengths(hypotheses, refs)
    # sacreBLEU wants one stream per reference position; pad ragged lists with the first reference
    # which leaves BLEU's max-count clipping and closest-length choice unchanged.
    n_streams = max(len(r) for r in refs) if refs else 1
    streams = [[r[i] if i < len(r) else r[0] for r in refs] for i in range(n_streams)]
    bleu = _bleu(hypotheses, tokenize, lowercase=lowercase)
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
        ``({"bleu1": ..., "bleu2": ..., "len_ratio": ...}, {"bleu1": signature, ...})``: BLEU on a
        0-100 scale; ``len_ratio`` is the hypotheses' length over the references' (BLEU's tokens,
        the closest reference of each; sacreBLEU's ``ratio``). Below 1 the brevity penalty
        ``exp(1 - 1 / len_ratio)`` scales every BLEU-n: 0.37 at a ratio of 0.5.
    """
    refs = _reference_lists(references)
    _check_lengths(hypotheses, refs)
    n_streams = max(len(r) for r in refs) if refs else 1
    streams = [[r[i] if i < len(r) else r[0] for r in refs] for i in range(n_streams)]
    scores, signatures = {}, {}
    for order in orders:
        bleu = _bleu(hypotheses, tokenize, max_ngram_order=order)
        result = bleu.corpus_score(list(hypotheses), streams)
        scores[f"bleu{order}"] = result.score
        # sacreBLEU's signature does not show the n-gram order, so it is added here
        signatures[f"bleu{order}"] = f"{bleu.get_signature()}|max_ngram_order:{order}"
        scores["len_ratio"] = result.sys_len / result.ref_len if result.ref_len else 0.0
    return scores, signatures


def sentence_bleu_n_means(
    hypotheses: Sequence[str], references: References, orders: Iterable[int] = (1, 2), tokenize: str = "13a"
) -> Dict[str, float]:
    """Mean over the responses of each one's smoothed sentence-level BLEU-n: the "BLEU-1/2" of
    most open-domain dialogue papers on DailyDialog (PLATO, Bao et al. 2020, whose evaluation
    script computes it so), which is a different and usually much higher number than corpus BLEU-n
    (:func:`bleu_n_scores`) on the same outputs.

    Each score is nltk's ``sentence_bleu`` with weights ``1/n`` on the 1..n-gram precisions of
    a 4-slot weight vector (``[0.5, 0.5, 0, 0]`` for BLEU-2, as PLATO's script passes them) and
    smoothing method 7 of Chen and Cherry (2014), against all references of the response; an
    empty response scores 0. nltk is the reference implementation those papers ran (and a
    dependency of ``rouge-score``). Tokens: sacreBLEU's ``tokenize`` tokenizer, then whitespace,
    as for :func:`bleu_n_scores`; case-sensitive.

    Not a 0-100 scale: method 7 includes method 5, which replaces each precision by the mean of
    it and its neighbouring orders' and starts that chain from ``p1 + 1``, so a response equal to
    its reference scores 133.3 as BLEU-1 (``(2 + 1 + 1) / 3``) and 121.7 as BLEU-2
    (``sqrt(4/3 * 10/9)``). It is kept as nltk computes it because that is the number the papers
    print (the PVGRU authors measured it about 20 points above their own BLEU implementation).

    Returns:
        ``{"sentence_bleu1": ..., "sentence_bleu2": ...}`` (times 100); 0 without responses.
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from sacrebleu.metrics import BLEU

    refs = _reference_lists(references)
    _check_lengths(hypotheses, refs)
    tokenizer = BLEU(tokenize=tokenize).tokenizer
    smoothing = SmoothingFunction().method7
    ref_tokens = [[tokenizer(r).split() for r in alternatives] for alternatives in refs]
    hyp_tokens = [tokenizer(h).split() for h in hypotheses]
    scores = {}
    for order in orders:
        weights = [1.0 / order] * order + [0.0] * max(0, 4 - order)
        total = sum(
            sentence_bleu(alternatives, hyp, weights=weights, smoothing_function=smoothing) if hyp else 0.0
            for hyp, alternatives in zip(hyp_tokens, ref_tokens)
        )
        scores[f"sentence_bleu{order}"] = 100.0 * total / len(hyp_tokens) if hyp_tokens else 0.0
    return scores


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



def classification_scores(predictions: Sequence[int], targets: Sequence[int], num_classes: int) -> Dict[str, float]:
    """Accuracy (micro) and macro-averaged F1 with torchmetrics, on a 0-100 scale.

    Args:
        predictions, targets: class ids in ``[0, num_classes)``; a prediction of ``-1`` (e.g. a
            generated label that is not in the label set) counts as wrong for every class.
        num_classes: size of the label set; macro-F1 averages F1 over all of its classes
            (a class absent from both predictions and targets scores 0, as in scikit-learn).
    """
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    # an extra class stands for "invalid": never a target, so it only costs precision/recall
    preds = torch.tensor([p if 0 <= p < num_classes else num_classes for p in predictions], dtype=torch.long)
    target = torch.tensor(list(targets), dtype=torch.long)
    classes = num_classes + 1
    accuracy = multiclass_accuracy(preds, target, num_classes=classes, average="micro")
    per_class = multiclass_f1_score(preds, target, num_classes=classes, average="none", zero_division=0)
    return {"accuracy": 100.0 * float(accuracy), "macro_f1": 100.0 * float(per_class[:num_classes].mean())}


def multilabel_scores(predictions: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], num_labels: int) -> Dict[str, float]:
    """Multi-label scores with torchmetrics, on a 0-100 scale: ``accuracy`` (subset accuracy:
    the predicted label set equals the gold set), ``micro_f1`` (over all label decisions) and
    ``macro_f1`` (F1 per label, averaged over the label set).

    Args:
        predictions, targets: per example, 0/1 indicators over the ``num_labels`` labels.
    """
    import torch
    from torchmetrics.functional.classification import multilabel_exact_match, multilabel_f1_score

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    preds = torch.tensor([list(p) for p in predictions], dtype=torch.long).view(-1, num_labels)
    target = torch.tensor([list(t) for t in targets], dtype=torch.long).view(-1, num_labels)
    return {
        "accuracy": 100.0 * float(multilabel_exact_match(preds, target, num_labels=num_labels)),
        "micro_f1": 100.0 * float(multilabel_f1_score(preds, target, num_labels=num_labels, average="micro", zero_division=0)),
        "macro_f1": 100.0 * float(multilabel_f1_score(preds, target, num_labels=num_labels, average="macro", zero_division=0)),
    }


_DIRECTED_LABEL = re.compile(r"^(?P<name>.+)\((?:e1,e2|e2,e1)\)$")


def semeval2010_task8_macro_f1(predictions: Sequence[str], golds: Sequence[str], no_relation: str = "Other") -> float:
    """The official score of SemEval-2010 Task 8 (Hendrickx et al. 2010), as computed by its
    scorer ``semeval2010_task8_scorer-v1.2.pl``: "(9+1)-way evaluation with directionality taken
    into account", macro-averaged F1 excluding Other, on a 0-100 scale.

    Labels are compared by relation type (``Cause-Effect(e1,e2)`` -> ``Cause-Effect``), but only an
    exact match (type and direction) is correct. For each type ``t`` that occurs in ``golds``
    (other than ``no_relation``):

    * ``correct_t``: predictions equal to the gold label, gold of type ``t``;
    * ``P_t = correct_t / (proposed_t + wrongdir_t)``, where ``proposed_t`` counts predictions of
      type ``t`` whose gold has another type or is exact, and ``wrongdir_t`` predictions of type
      ``t`` with gold of type ``t`` in the other direction (so every prediction of type ``t``
      is in the denominator); ``P_t = 0`` when ``proposed_t = 0``;
    * ``R_t = correct_t / gold_t``; ``F1_t = 2 P_t R_t / (P_t + R_t)`` (0 when both are 0).

    The score is the plain mean of ``F1_t`` over those types (not the F1 of the mean P and R).
    A prediction of a type absent from ``golds`` is wrong and enters no type's precision (as in
    the scorer). 0.0 when ``golds`` has no type besides ``no_relation``.
    """

    def kind(label: str) -> str:
        match = _DIRECTED_LABEL.match(label)
        return match.group("name") if match else label

    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold labels")
    correct: Dict[str, int] = {}
    proposed: Dict[str, int] = {}
    wrong_direction: Dict[str, int] = {}
    actual: Dict[str, int] = {}
    for prediction, gold in zip(predictions, golds):
        predicted_kind, gold_kind = kind(prediction), kind(gold)
        actual[gold_kind] = actual.get(gold_kind, 0) + 1
        if prediction == gold:
            correct[gold_kind] = correct.get(gold_kind, 0) + 1
            proposed[predicted_kind] = proposed.get(predicted_kind, 0) + 1
        elif predicted_kind == gold_kind:
            wrong_direction[gold_kind] = wrong_direction.get(gold_kind, 0) + 1
        else:
            proposed[predicted_kind] = proposed.get(predicted_kind, 0) + 1
    f1s = []
    for name in actual:
        if name == kind(no_relation):
            continue
        hits = correct.get(name, 0)
        guessed = proposed.get(name, 0)
        precision = hits / (guessed + wrong_direction.get(name, 0)) if guessed else 0.0
        recall = hits / actual[name]
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return 100.0 * sum(f1s) / len(f1s) if f1s else 0.0


def relation_scores(
    predictions: Sequence[Union[str, None]], golds: Sequence[str], no_relation: str = "Other",
    labels: Union[Sequence[str], None] = None,
) -> Dict[str, float]:
    """Relation extraction scores from label strings, on a 0-100 scale.

    * ``micro_precision``, ``micro_recall``, ``micro_f1``: micro-averaged over every label except
      ``no_relation`` (directed labels, exact match; the TACRED convention, Zhang et al. 2017):
      ``correct`` = predictions equal to a gold label that is not ``no_relation``, divided by the
      predictions that are not ``no_relation`` (P) and by the golds that are not (R).
    * ``semeval_macro_f1``: :func:`semeval2010_task8_macro_f1`, only when every label other than
      ``no_relation`` looks like ``Name(e1,e2)`` or ``Name(e2,e1)`` (SemEval-2010 Task 8 naming).

    Args:
        predictions: predicted labels; ``None`` (e.g. a generated text that is no label) counts
            as ``no_relation``, as the SemEval scorer counts a skipped example.
        golds: gold labels.
        no_relation: the label meaning "no relation" (``Other`` in SemEval, ``no_relation`` in TACRED).
        labels: the label inventory that decides whether the SemEval score applies (default:
            the labels in ``predictions`` and ``golds``), so it is reported for every evaluation
            or never.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold labels")
    predicted = [no_relation if p is None else p for p in predictions]
    correct = sum(p == g and g != no_relation for p, g in zip(predicted, golds))
    proposed = sum(p != no_relation for p in predicted)
    actual = sum(g != no_relation for g in golds)
    precision = 100.0 * correct / proposed if proposed else 0.0
    recall = 100.0 * correct / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    scores = {"micro_precision": precision, "micro_recall": recall, "micro_f1": f1}
    inventory = {label for label in (labels if labels is not None else [*predicted, *golds]) if label != no_relation}
    if inventory and all(_DIRECTED_LABEL.match(label) for label in inventory):
        scores["semeval_macro_f1"] = semeval2010_task8_macro_f1(predicted, golds, no_relation)
    return scores


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> Dict[str, float]:
    """SQuAD v1.1 exact match and F1 (Rajpurkar et al. 2016) with torchmetrics' ``squad``, which
    follows the official v1.1 evaluation script: answers are normalised (lowercased, punctuation
    and the articles a/an/the removed, whitespace collapsed), F1 is over the bags of normalised
    words, and each prediction scores its best match over all reference answers.

    One edge case differs from the v1.1 script: when a prediction and a reference both normalise
    to nothing (e.g. ``"the"`` and ``"."``), torchmetrics gives F1 1 where v1.1 gives 0 (EM is 1 in both).

    Args:
        predictions: ``N`` answer texts.
        references: ``N`` lists of reference answer texts (any count each, at least one).

    Returns:
        ``{"exact_match": ..., "f1": ...}`` on a 0-100 scale, averaged over the ``N`` questions.
    """
    from torchmetrics.functional.text import squad

    refs = _reference_lists(references)
    _check_lengths(predictions, refs)
    if not refs:
        raise ValueError("squad_scores needs at least one prediction")
    preds = [{"prediction_text": p or "", "id": str(i)} for i, p in enumerate(predictions)]
    target = [{"answers": {"text": r, "answer_start": [0] * len(r)}, "id": str(i)} for i, r in enumerate(refs)]
    scores = squad(preds, target)
    return {"exact_match": float(scores["exact_match"]), "f1": float(scores["f1"])}


def entity_scores(predictions: Sequence[Sequence[str]], targets: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Entity-level precision, recall and F1 (micro-averaged over entities) with seqeval in
    strict IOB2 mode (CoNLL-2003's definition: an entity counts only with exact boundaries and
    type; an ``I-X`` that does not continue ``B-X``/``I-X`` starts no entity). Never token-level.

    One call of the function behind seqeval's ``precision_score`` / ``recall_score`` /
    ``f1_score(mode="strict", scheme=IOB2)`` gives all three (tests/test_ner.py compares them).

    Args:
        predictions, targets: one IOB2 tag sequence per sentence, pairwise of equal length.

    Returns:
        ``{"precision": ..., "recall": ..., "f1": ...}`` on a 0-100 scale (0 where undefined).
    """
    from seqeval.metrics.v1 import precision_recall_fscore_support
    from seqeval.scheme import IOB2

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predicted sentences but {len(targets)} gold sentences")
    for i, (p, t) in enumerate(zip(predictions, targets)):
        if len(p) != len(t):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags but {len(t)} gold tags")
    y_pred, y_true = [list(p) for p in predictions], [list(t) for t in targets]
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="micro", zero_division=0, scheme=IOB2
    )
    return {"precision": 100.0 * float(precision), "recall": 100.0 * float(recall), "f1": 100.0 * float(f1)}
