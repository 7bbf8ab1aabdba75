"""Relation extraction: record checks, entity markers and their positions (also when cut to fit),
the micro-F1 and the official SemEval-2010 Task 8 score on hand-computed cases, parsing of
generated labels, prediction records, the sample data, and a short training run that learns."""

from __future__ import annotations

import json
import logging

import pytest
import pytorch_lightning as pl
import torch

from helpers import validate_fit_validate

from s2s_tasks.data.schema import RecordError, SkipRecord
from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID, train_tokenizer
from s2s_tasks.metrics import relation_scores, semeval2010_task8_macro_f1
from s2s_tasks.tasks.relation_extraction import sample_data
from s2s_tasks.tasks.relation_extraction.data import (
    MARKERS,
    RelationExample,
    RelationExtractionDataModule,
    fit_pieces,
    marked_text,
)
from s2s_tasks.tasks.relation_extraction.model import EntityStartHead, RelationExtractionModule

pytestmark = pytest.mark.usefixtures("single_thread")

LABELS = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Other"]
TEXT = "The storm caused the flood ."  # storm = [4, 9), flood = [21, 26)


def entity(text, start, end):
    return {"text": text[start:end], "start": start, "end": end}


def record(text=TEXT, head=(4, 9), tail=(21, 26), relation="Cause-Effect(e1,e2)"):
    return {"text": text, "head": entity(text, *head), "tail": entity(text, *tail), "relation": relation}


@pytest.fixture
def data(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(record()) + "\n", encoding="utf-8")
    return RelationExtractionDataModule(train_file=str(train), labels=LABELS, cache_dir=str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tokenizer():
    texts = [marked_text(RelationExample(TEXT, 4, 9, 21, 26, None)), "the big storm was far from the old jar ."] * 20
    return train_tokenizer(texts, vocab_size=120, extra_special_tokens=MARKERS)


# ----------------------------------------------------------------------------- records
def test_read_record_parses_spans_and_relation(data):
    example = data.parse_record(record(), with_gold=True)
    assert example == RelationExample(TEXT, 4, 9, 21, 26, "Cause-Effect(e1,e2)")
    listed = {"text": TEXT, "head": [21, 26], "tail": [4, 9], "relation": " Other "}
    assert data.parse_record(listed, with_gold=True) == RelationExample(TEXT, 21, 26, 4, 9, "Other")
    assert data.parse_record({**record(), "relation": None}, with_gold=False).relation is None


@pytest.mark.parametrize("change, field, words", [
    ({"head": {"text": "storms", "start": 4, "end": 9}}, "head", ["'storms'", "'storm'", "Fix the offsets"]),
    ({"head": {"start": 4, "end": 99}}, "head", ["[4, 99)", "inside the text"]),
    ({"head": {"start": 9, "end": 4}}, "head", ["[9, 4)"]),
    ({"head": {"start": 9, "end": 10}}, "head", ["only whitespace"]),
    ({"tail": {"start": "21", "end": 26}}, "tail", ["integers", '{"start": int, "end": int}']),
    ({"tail": "flood"}, "tail", ["expected an entity span", "[start, end]"]),
    ({"tail": {"begin": 21, "end": 26}}, "tail", ["'start' and 'end'"]),
    ({"tail": {"start": 6, "end": 12}}, "tail", ["overlaps the head", "nested or overlapping"]),
    ({"relation": ""}, "relation", ["non-empty string", "'Other' (data.no_relation_label)"]),
    ({"text": 5}, "text", ["expected text"]),
])
def test_bad_records_name_the_field_and_the_fix(data, change, field, words):
    with pytest.raises(RecordError) as info:
        data.parse_record({**record(), **change}, with_gold=True)
    assert info.value.field == field
    for word in words:
        assert word in info.value.message


def test_empty_text_is_skipped(data):
    with pytest.raises(SkipRecord):
        data.parse_record({**record(), "text": "  "}, with_gold=True)


def test_file_errors_name_record_number_and_config_key(tmp_path):
    path = tmp_path / "train.jsonl"
    bad = record()
    bad["head"]["end"] = 10  # text[4:10] is "storm ", the mention says "storm"
    path.write_text("\n".join(json.dumps(r) for r in [record(), bad]) + "\n", encoding="utf-8")
    data = RelationExtractionDataModule(train_file=str(path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"line 2, field 'head' \(data.head_column\): the entity text 'storm'"):
        data.examples("train")


def test_too_small_max_source_tokens_is_rejected():
    with pytest.raises(ValueError, match="data.max_source_tokens must be at least 8"):
        RelationExtractionDataModule(max_source_tokens=7)


# ----------------------------------------------------------------------------- markers
def test_marked_text_spaces_markers_once():
    assert marked_text(RelationExample(TEXT, 4, 9, 21, 26, None)) == "The <e1> storm </e1> caused the <e2> flood </e2> ."
    # tail before head, entities touching each other and the ends of the text
    assert marked_text(RelationExample("ab(c)", 0, 1, 1, 2, None)) == "<e1> a </e1> <e2> b </e2> (c)"
    assert marked_text(RelationExample("x y", 2, 3, 0, 1, None)) == "<e2> x </e2> <e1> y </e1>"


@pytest.mark.parametrize("head, tail", [((4, 9), (21, 26)), ((21, 26), (4, 9))])
def test_encoded_positions_point_at_the_start_markers(data, tokenizer, head, tail):
    example = data.parse_record(record(head=head, tail=tail), with_gold=True)
    (feature,) = data.encode_examples([example], tokenizer, with_gold=True, origin="test")
    ids = feature["src_ids"]
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and feature["label"] == 0
    tokens = [tokenizer.id_to_token(i) for i in ids]
    assert tokens[feature["e1_pos"]] == "<e1>" and tokens[feature["e2_pos"]] == "<e2>"
    assert tokens[feature["e1_pos"] + 1] == ("▁storm" if head == (4, 9) else "▁flood")
    assert "▁" not in tokens  # no lone space tokens before the markers
    # the same tokens as the marked text, apart from those space tokens
    full = tokenizer.encode(marked_text(example), add_special_tokens=False).tokens
    assert tokens[1:-1] == [t for t in full if t != "▁"]


def test_fit_pieces_keeps_every_marker():
    before, first, between, second, after = [1, 2, 3], [10, 11], [20, 21, 22, 23], [30], [40, 41, 42]
    markers = [91, 92, 93, 94]
    pieces = [before, first, between, second, after]

    whole = fit_pieces(pieces, markers, 100)
    assert whole.ids == [1, 2, 3, 91, 10, 11, 92, 20, 21, 22, 23, 93, 30, 94, 40, 41, 42] and whole.cut == ""
    assert (whole.first_pos, whole.second_pos) == (3, 11)

    end = fit_pieces(pieces, markers, 15)
    assert end.cut == "end" and end.ids == whole.ids[:15]

    window = fit_pieces(pieces, markers, 12)  # the markers and what they enclose take 11: one token of context
    assert window.cut == "window" and window.ids == [3, 91, 10, 11, 92, 20, 21, 22, 23, 93, 30, 94]
    assert (window.first_pos, window.second_pos) == (1, 9)
    window = fit_pieces(pieces, markers, 13)
    assert window.ids == [3, 91, 10, 11, 92, 20, 21, 22, 23, 93, 30, 94, 40]

    middle = fit_pieces(pieces, markers, 9)  # entities and markers take 7: two tokens of between remain
    assert middle.cut == "middle" and middle.ids == [91, 10, 11, 92, 20, 23, 93, 30, 94]
    assert (middle.first_pos, middle.second_pos) == (0, 6)

    long_entities = fit_pieces([[], list(range(10)), [], list(range(50, 60)), []], markers, 8)
    assert long_entities.cut == "entities" and long_entities.ids == [91, 0, 1, 92, 93, 50, 51, 94]
    for fitted in (whole, end, window, middle, long_entities):
        assert all(m in fitted.ids for m in markers)
        assert fitted.ids[fitted.first_pos] == 91 and fitted.ids[fitted.second_pos] == 93


def test_cut_inputs_are_counted(data, tokenizer, caplog):
    long_text = "The " + "big " * 30 + "storm caused the flood ."
    start = long_text.index("storm")
    end_flood = long_text.index("flood")
    example = data.parse_record(record(text=long_text, head=(start, start + 5), tail=(end_flood, end_flood + 5)), with_gold=True)
    data.hparams.max_source_tokens = 12
    with caplog.at_level(logging.WARNING):
        (feature,) = data.encode_examples([example], tokenizer, with_gold=False, origin="test data")
    assert len(feature["src_ids"]) == 12 and "label" not in feature
    tokens = [tokenizer.id_to_token(i) for i in feature["src_ids"]]
    assert tokens[feature["e1_pos"]] == "<e1>" and tokens[feature["e2_pos"]] == "<e2>" and "</e2>" in tokens
    assert "test data: 1 of 1 cut to a window around both entities" in caplog.text


# ----------------------------------------------------------------------------- metrics
CE12, CE21, CW12, CW21 = "Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Component-Whole(e1,e2)", "Component-Whole(e2,e1)"


def test_micro_f1_excludes_the_no_relation_label():
    golds = [CE12, CE21, CW12, "Other", "Other"]
    preds = [CE12, CE12, "Other", CW12, "Other"]
    scores = relation_scores(preds, golds)
    # correct 1 (the first); predicted non-Other 3; gold non-Other 3
    assert scores["micro_precision"] == pytest.approx(100 / 3)
    assert scores["micro_recall"] == pytest.approx(100 / 3)
    assert scores["micro_f1"] == pytest.approx(100 / 3)
    # SemEval: CE P = 1 / (1 proposed + 1 wrong direction) = 0.5, R = 1/2 -> F1 0.5; CW F1 0 -> 25
    assert scores["semeval_macro_f1"] == pytest.approx(25.0)
    assert relation_scores(["Other"] * 2, ["Other"] * 2)["micro_f1"] == 0.0


def test_semeval_score_is_the_mean_of_per_type_f1_with_wrong_directions_in_precision():
    golds = [CE12, CE12, CE12, CW12]
    preds = [CE12, CE21, "Other", CW12]
    # CE: correct 1, proposed 1 + wrong direction 1 -> P 1/2, R 1/3, F1 0.4; CW: F1 1 -> mean 0.7
    # (the F1 of the mean P and R would be 70.59; ignoring the wrong direction in P, 75.0)
    assert semeval2010_task8_macro_f1(preds, golds) == pytest.approx(70.0)
    scores = relation_scores(preds, golds)
    assert scores["semeval_macro_f1"] == pytest.approx(70.0)
    assert scores["micro_precision"] == pytest.approx(200 / 3) and scores["micro_recall"] == pytest.approx(50.0)
    assert scores["micro_f1"] == pytest.approx(2 * (200 / 3) * 50 / (200 / 3 + 50))


def test_semeval_score_averages_over_gold_types_only():
    # a predicted type absent from the key is a wrong prediction but enters no type's precision
    assert semeval2010_task8_macro_f1([CE12, CW12], [CE12, CE21]) == pytest.approx(200 / 3)  # CE: P 1, R 1/2
    assert semeval2010_task8_macro_f1([CW12, "Other"], [CE12, "Other"]) == 0.0
    assert semeval2010_task8_macro_f1(["Other"], ["Other"]) == 0.0
    # "Other" predicted for a relation costs recall only; its own F1 is never averaged
    assert semeval2010_task8_macro_f1(["Other", CE12], [CE12, CE12]) == pytest.approx(100 * 2 * 0.5 / 1.5)


def test_unparseable_predictions_count_as_no_relation_and_semeval_needs_directed_labels():
    scores = relation_scores([None, "per:title"], ["per:title", "no_relation"], no_relation="no_relation")
    assert scores == {"micro_precision": 0.0, "micro_recall": 0.0, "micro_f1": 0.0}
    assert relation_scores([None], [CE12]) == relation_scores(["Other"], [CE12])
    assert "semeval_macro_f1" in relation_scores(["Other"], ["Other"], labels=[CE12, "Other"])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        relation_scores(["Other", "Other"], ["Other"])


# ----------------------------------------------------------------------------- model
def tiny_module(**kwargs):
    module = RelationExtractionModule(vocab_size=40, num_labels=len(LABELS), d_model=16, ffn_dim=32, num_heads=2,
                                      num_encoder_layers=1, num_decoder_layers=1, **kwargs)
    module.label_names = list(LABELS)
    return module


def test_entity_start_head_reads_the_marker_states():
    head = EntityStartHead(4, 3, pooling="none", dropout=0.0)
    states = torch.randn(2, 5, 4, requires_grad=True)
    logits = head(states, torch.ones(2, 5, dtype=torch.bool), torch.tensor([1, 0]), torch.tensor([3, 2]))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    used = states.grad.abs().sum(-1) > 0
    assert used.tolist() == [[False, True, False, True, False], [True, False, True, False, False]]
    pooled = EntityStartHead(4, 3, pooling="mean", hidden_size=6)
    assert pooled.out.in_features == 6 and pooled.hidden.in_features == 12
    with pytest.raises(ValueError, match="model.pooling"):
        tiny_module(pooling="sum")


def test_parse_generated_labels_and_metrics():
    module = tiny_module(head="generate")
    parsed = module.parse_generated([" Cause-Effect(e1,e2) ", "Cause-Effect(e1,e3)", "", "Other"], {})
    assert parsed == ["Cause-Effect(e1,e2)", None, None, "Other"]
    scores, _ = module.compute_metrics(parsed, ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Other", "Other"])
    assert scores["micro_precision"] == 100.0 and scores["micro_recall"] == 50.0 and "semeval_macro_f1" in scores


def test_prediction_record_fields():
    module = tiny_module()
    batch = {"example": [RelationExample(TEXT, 21, 26, 4, 9, None)]}
    logits = torch.tensor([[0.0, 2.0, 0.0]])
    out = module.prediction_record("Cause-Effect(e2,e1)", batch, 0, logits)
    assert out["relation"] == "Cause-Effect(e2,e1)"
    assert out["head"] == {"text": "flood", "start": 21, "end": 26} and out["tail"] == {"text": "storm", "start": 4, "end": 9}
    assert list(out["probabilities"]) == LABELS and sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "probabilities" not in module.prediction_record(None, batch, 0, None)


# ----------------------------------------------------------------------------- sample data and learning
def test_sample_data_regenerates_and_is_consistent(tmp_path):
    sample_data.write(tmp_path)
    for name in ("train", "validation", "test", "predict"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (sample_data.SAMPLE_DIR / f"{name}.jsonl").read_bytes(), (
            f"run `python tasks/relation_extraction/sample_data.py` to regenerate sample/{name}.jsonl"
        )
    records = [json.loads(line) for line in (tmp_path / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    predict = [json.loads(line) for line in (tmp_path / "predict.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 200 and len(predict) == 20 and all("relation" not in r for r in predict)
    for r in records + predict:
        for key in ("head", "tail"):
            assert r["text"][r[key]["start"] : r[key]["end"]] == r[key]["text"]
        assert r["head"]["end"] <= r["tail"]["start"]  # SemEval convention: e1 comes first


def test_tiny_model_learns_the_sample(tmp_path):
    pl.seed_everything(0)
    data = RelationExtractionDataModule(tokenizer_vocab_size=300, max_tokens=2048, cache_dir=str(tmp_path / "cache"))
    model = RelationExtractionModule(
        vocab_size=data.vocab_size, pad_id=data.pad_id, num_labels=data.num_labels, d_model=48, ffn_dim=96,
        num_heads=2, num_encoder_layers=1, dropout=0.0, head_dropout=0.0, learning_rate=3e-3, warmup_steps=20,
        log_examples=0,
    )
    before, after = validate_fit_validate(
        model, data, tmp_path, max_steps=120, max_epochs=10, limit_val_batches=1.0, check_val_every_n_epoch=10
    )
    assert after["val/micro_f1"] > max(60.0, before["val/micro_f1"] + 30), (before, after)
    assert after["val/semeval_macro_f1"] > 50.0 and after["val/loss"] < before["val/loss"]
