"""Metric adapters against hand-checkable values."""

import pytest

from s2s_tasks.metrics import rouge_scores, sacrebleu_scores, split_sentences


def test_bleu_perfect_and_zero_and_signature():
    scores, signatures = sacrebleu_scores(["the cat sat on the mat today"], ["the cat sat on the mat today"])
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)
    assert "nrefs:1" in signatures["bleu"] and "tok:13a" in signatures["bleu"]
    scores, _ = sacrebleu_scores(["xyz uvw"], ["the cat sat on the mat today"])
    assert scores["bleu"] < 1.0


def test_bleu_multiple_references_take_the_best():
    one, _ = sacrebleu_scores(["a cat sat on the mat ."], ["the cat sat on the mat ."])
    two, signatures = sacrebleu_scores(["a cat sat on the mat ."], [["the cat sat on the mat .", "a cat sat on the mat ."]])
    assert two["bleu"] > one["bleu"] and two["bleu"] == pytest.approx(100.0)
    assert "nrefs:2" in signatures["bleu"]


def test_rouge_with_stemming_and_best_reference():
    scores = rouge_scores(["the meetings were moved"], [["lunch cancelled", "the meeting was moved"]])
    # stemming maps meetings->meet, moved->move: unigrams the, meet, move match (3 of 4 each way)
    assert scores["rouge1"] == pytest.approx(75.0)
    assert set(scores) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}


def test_rouge_lsum_uses_sentence_split():
    assert split_sentences("First one. Second one!\nThird") == ["First one.", "Second one!", "Third"]
    hyp = "b c. a b."
    ref = "a b. b c."
    scores = rouge_scores([hyp], [ref])
    assert scores["rougeLsum"] == pytest.approx(100.0)
    assert scores["rougeL"] < 100.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        sacrebleu_scores(["a", "b"], ["a"])


def test_distinct_n_hand_computed():
    from s2s_tasks.metrics import distinct_n

    # 13a tokens: "Hello , hello world !" and "hello world"
    texts = ["Hello, hello world!", "hello world"]
    assert distinct_n(texts, 1) == pytest.approx(100 * 5 / 7)  # Hello , hello world !
    assert distinct_n(texts, 2) == pytest.approx(100 * 4 / 5)  # "hello world" twice; no bigram spans two texts
    assert distinct_n(texts, 1, lowercase=True) == pytest.approx(100 * 4 / 7)
    assert distinct_n(["a a a a"], 1) == pytest.approx(25.0)
    assert distinct_n([], 1) == 0.0 and distinct_n(["one"], 2) == 0.0


def test_sentence_bleu_means_follow_nltk_method7_by_hand():
    import math

    from s2s_tasks.metrics import sentence_bleu_n_means

    # word for word: every precision 1; method 5 starts its chain of neighbour means from p1 + 1,
    # so p1 = (2 + 1 + 1) / 3 and p2 = (4/3 + 1 + 1) / 3: the papers' scale goes past 100
    scores = sentence_bleu_n_means(["thank you , Dana ."], ["thank you , Dana ."])
    assert scores["sentence_bleu1"] == pytest.approx(100 * 4 / 3)
    assert scores["sentence_bleu2"] == pytest.approx(100 * math.sqrt(4 / 3 * 10 / 9))
    # 4 of 6 reference tokens, all matching: the same precisions, brevity penalty exp(1 - 6/4)
    scores = sentence_bleu_n_means(["a b c d"], ["a b c d e f"])
    assert scores["sentence_bleu1"] == pytest.approx(100 * math.exp(-0.5) * 4 / 3)
    assert scores["sentence_bleu2"] == pytest.approx(100 * math.exp(-0.5) * math.sqrt(4 / 3 * 10 / 9))
    # a mean over responses; an empty response scores 0; the best of several references counts
    scores = sentence_bleu_n_means(["a b c d", ""], [["u v w x y z", "a b c d e f"], "a b"])
    assert scores["sentence_bleu1"] == pytest.approx(100 * math.exp(-0.5) * 4 / 3 / 2)
    assert sentence_bleu_n_means([], []) == {"sentence_bleu1": 0.0, "sentence_bleu2": 0.0}


def test_bleu_n_orders_and_brevity_penalty():
    import math

    from s2s_tasks.metrics import bleu_n_scores

    scores, signatures = bleu_n_scores(["the cat sat"], ["the cat sat on the mat"])
    # every 1- and 2-gram matches; brevity penalty exp(1 - 6/3)
    assert scores["bleu1"] == pytest.approx(100 * math.exp(-1))
    assert scores["bleu2"] == pytest.approx(100 * math.exp(-1))
    assert scores["len_ratio"] == pytest.approx(0.5)
    assert "max_ngram_order:1" in signatures["bleu1"] and "tok:13a" in signatures["bleu1"]
    scores, _ = bleu_n_scores(["the mat sat"], ["the cat sat"])
    assert scores["bleu1"] == pytest.approx(100 * 2 / 3)  # 2 of 3 unigrams, no brevity penalty
    assert scores["len_ratio"] == pytest.approx(1.0)
    assert scores["bleu2"] < scores["bleu1"]
    # the closest reference's length counts: 4 hypothesis tokens against 5 (not 2)
    scores, _ = bleu_n_scores(["a b c d"], [["a b", "a b c d e"]])
    assert scores["len_ratio"] == pytest.approx(4 / 5)


@pytest.mark.parametrize("score", ["sacrebleu", "bleu_n"])
def test_tokenized_text_gives_one_actionable_message_not_sacrebleus(score, caplog, monkeypatch):
    """sacreBLEU prints "you forgot to detokenize ... use the force parameter" for 100 hypotheses
    ending in " ." on every call, whatever the tokenizer. With ``none`` (the user says the text is
    tokenized) nothing is printed; with ``13a`` one message per process names the setting to change.
    The scores are sacreBLEU's either way."""
    import logging

    from sacrebleu.metrics import BLEU

    from s2s_tasks import metrics

    monkeypatch.setattr(metrics, "_TOKENIZED_TEXT_WARNED", set())
    hyps = [f"the cat sat on mat {i} ." for i in range(120)]
    refs = [f"the cat sat on the mat {i} ." for i in range(120)]

    def run(tokenize):
        if score == "sacrebleu":
            return metrics.sacrebleu_scores(hyps, refs, tokenize=tokenize)[0]["bleu"]
        return metrics.bleu_n_scores(hyps, refs, orders=(2,), tokenize=tokenize)[0]["bleu2"]

    caplog.set_level(logging.WARNING)
    for tokenize, expected_messages in (("none", 0), ("13a", 1), ("13a", 0)):
        caplog.clear()
        value = run(tokenize)
        order = 4 if score == "sacrebleu" else 2
        expected = BLEU(tokenize=tokenize, max_ngram_order=order, force=True).corpus_score(hyps, [refs]).score
        assert value == pytest.approx(expected)
        messages = [r.getMessage() for r in caplog.records]
        assert not any("forgot to detokenize" in m or "tokenized period ('.')" in m for m in messages), messages
        ours = [m for m in messages if "--model.bleu_tokenize none" in m]
        assert len(ours) == expected_messages, (tokenize, messages)
    assert metrics._TOKENIZED_TEXT_WARNED == {"13a"}
