"""The dialogue task: history handling (list and string forms, oldest turns dropped first and
counted, turn and speaker tokens), the tokenizer's special-token check, and the metrics."""

import logging

import pytest

from helpers import write_jsonl

from s2s_tasks.data.tokenizer import EOS_ID, train_tokenizer
from s2s_tasks.tasks.dialogue.data import DialogueDataModule, fit_history, split_turns
from s2s_tasks.tasks.dialogue.model import DialogueModule

HISTORIES = [
    ["hello there", "hi , how are you", "fine thanks , and you"],
    ["where is the station", "turn left at the bank"],
    ["good morning"],
] * 10
RESPONSES = ["great to hear", "thank you", "good morning to you"] * 10


def _datamodule(tmp_path, name="train.jsonl", string_form=False, separator=" </s> ", **kwargs):
    records = [
        {"history": separator.join(h) if string_form else h, "response": r} for h, r in zip(HISTORIES, RESPONSES)
    ]
    write_jsonl(tmp_path / name, records)
    kwargs.setdefault("tokenizer_vocab_size", 150)
    return DialogueDataModule(
        train_file=str(tmp_path / name), turn_separator=separator, cache_dir=str(tmp_path / "cache"), **kwargs
    )


def _tokens(dm, ids):
    return [dm.tokenizer.id_to_token(i) for i in ids]


def test_split_turns_list_and_string_forms():
    assert split_turns(["a b ", "", "  ", "c"], " </s> ") == ["a b", "c"]
    assert split_turns("a b </s> c </s>  ", " </s> ") == ["a b", "c"]
    assert split_turns("a b</s>c", " </s> ") == ["a b", "c"]  # whitespace around the separator is optional
    assert split_turns("a b\tc", "\t") == ["a b", "c"]  # an all-whitespace separator is used as is
    assert split_turns("a || b", " || ") == ["a", "b"]
    assert split_turns(None, " </s> ") == [] and split_turns("", " </s> ") == []


def test_fit_history_drops_oldest_turns_first():
    turns, marks = [[10, 11], [12, 13, 14], [15]], [[4], [4], [4]]
    assert fit_history(turns, 100, marks) == ([4, 10, 11, 4, 12, 13, 14, 4, 15], False, False)
    assert fit_history(turns, 6, marks) == ([4, 12, 13, 14, 4, 15], True, False)
    assert fit_history(turns, 5, marks) == ([4, 15], True, False)  # a turn is kept whole or not at all
    # the newest turn alone is too long: keep its end
    assert fit_history([[10, 11], [12, 13, 14, 15]], 3, marks[:2]) == ([4, 14, 15], True, True)
    assert fit_history([[12, 13, 14, 15]], 2, [[4, 5]]) == ([4, 5], False, True)


def test_list_and_string_histories_encode_alike(tmp_path):
    listed = _datamodule(tmp_path)
    tokenizer_file = tmp_path / "tok.json"
    listed.tokenizer.save(str(tokenizer_file))
    joined = _datamodule(tmp_path, "joined.jsonl", string_form=True, tokenizer_file=str(tokenizer_file))
    a, b = listed.encode_split("train"), joined.encode_split("train")
    assert a.src_ids == b.src_ids and a.tgt_ids == b.tgt_ids
    assert a.sources[0] == HISTORIES[0] and b.sources[0] == " </s> ".join(HISTORIES[0])
    # a custom separator
    custom = _datamodule(tmp_path, "bars.jsonl", string_form=True, separator=" || ", tokenizer_file=str(tokenizer_file))
    assert custom.encode_split("train").src_ids == a.src_ids


def test_turn_tokens_are_special_and_mark_each_turn(tmp_path):
    dm = _datamodule(tmp_path)
    ids = dm.encode_split("train").src_ids[0]
    tokens = _tokens(dm, ids)
    assert tokens.count("<turn>") == 3 and tokens[0] == "<turn>" and ids[-1] == EOS_ID
    assert "<spk1>" not in tokens
    # registered as special tokens: never split, dropped when decoding
    assert dm.tokenizer.encode("a <turn> b", add_special_tokens=False).tokens.count("<turn>") == 1
    assert "<turn>" not in dm.tokenizer.decode(ids, skip_special_tokens=True)
    # the tokenizer is trained on the turns, not on the separator
    assert "/" not in dm.tokenizer.get_vocab()


def test_speaker_tokens_alternate_back_from_the_newest_turn(tmp_path):
    dm = _datamodule(tmp_path, speaker_tokens=True)
    split = dm.encode_split("train")
    for i, expected in ((0, ["<spk2>", "<spk1>", "<spk2>"]), (1, ["<spk1>", "<spk2>"]), (2, ["<spk2>"])):
        tokens = _tokens(dm, split.src_ids[i])
        assert [t for t in tokens if t.startswith("<spk")] == expected
        assert all(tokens[k + 1] in ("<spk1>", "<spk2>") for k, t in enumerate(tokens) if t == "<turn>")


def test_oldest_turns_dropped_and_counted(tmp_path, caplog):
    full = _datamodule(tmp_path)
    full_ids = full.encode_split("train").src_ids
    tokenizer_file = tmp_path / "tok.json"
    full.tokenizer.save(str(tokenizer_file))
    # room for the last two turns of the first history, but not for all three
    newest_two = full_ids[0][full_ids[0].index(full.tokenizer.token_to_id("<turn>"), 1) :]
    limit = len(newest_two)
    assert limit < len(full_ids[0])
    dm = _datamodule(tmp_path, "short.jsonl", tokenizer_file=str(tokenizer_file), max_source_tokens=limit)
    with caplog.at_level(logging.WARNING):
        split = dm.encode_split("train")
    assert split.src_ids[0] == newest_two
    lost = sum(len(a) != len(b) for a, b in zip(split.src_ids, full_ids))
    assert lost == 10  # only the three-turn histories lost a turn
    assert f"10 of 30 records lost their oldest turns to fit data.max_source_tokens={limit}" in caplog.text
    assert "kept only the end" not in caplog.text


def test_loaded_tokenizer_without_turn_tokens_is_rejected(tmp_path):
    plain = tmp_path / "plain.json"
    train_tokenizer([t for h in HISTORIES for t in h] + RESPONSES, vocab_size=100).save(str(plain))
    dm = _datamodule(tmp_path, tokenizer_file=str(plain))
    with pytest.raises(ValueError, match="data.tokenizer_file") as info:
        dm.tokenizer
    assert "<turn>" in str(info.value)


def test_predict_lines_are_string_histories(tmp_path):
    dm = _datamodule(tmp_path)
    tokenizer_file = tmp_path / "tok.json"
    dm.tokenizer.save(str(tokenizer_file))
    (tmp_path / "in.txt").write_text("hello there </s> hi , how are you\ngood morning\n", encoding="utf-8")
    pred = DialogueDataModule(predict_file=str(tmp_path / "in.txt"), tokenizer_file=str(tokenizer_file), cache_dir=str(tmp_path / "c"))
    split = pred.encode_split("predict")
    assert split.sources == ["hello there </s> hi , how are you", "good morning"]
    assert [_tokens(pred, ids).count("<turn>") for ids in split.src_ids] == [2, 1]


def test_module_metric_names_and_values():
    module = DialogueModule(vocab_size=20, d_model=16, ffn_dim=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
    hyps = ["thank you , Dana .", "thank you , Dana ."]
    scores, signatures = module.compute_metrics(hyps, [["thank you , Dana ."], ["see you , Tom ."]])
    assert set(scores) == {"bleu1", "bleu2", "len_ratio", "distinct1", "distinct2", "sentence_bleu1", "sentence_bleu2"}
    assert scores["len_ratio"] == pytest.approx(1.0)
    assert scores["distinct1"] == pytest.approx(50.0)  # 5 distinct of 10 unigrams
    assert scores["distinct2"] == pytest.approx(50.0)  # 4 distinct of 8 bigrams
    assert scores["bleu1"] == pytest.approx(80.0)  # 5 + 3 of 10 unigrams match, equal lengths
    assert "max_ngram_order:2" in signatures["bleu2"]
    # the papers' sentence-level BLEU is higher on the same replies (values: tests/test_metrics.py)
    assert scores["sentence_bleu1"] > scores["bleu1"] and "method7" in signatures["sentence_bleu"]
