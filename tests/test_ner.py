"""NER: record validation, the two input forms, subword alignment, the text-to-text format,
entity-level metrics, prediction records, learning on the sample data and the CRF through the CLI."""

import json
import logging
import random

import pytest
import pytorch_lightning as pl
import torch
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2, Entities

from helpers import validate_fit_validate, write_jsonl

from s2s_tasks.cli import main
from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID, train_tokenizer
from s2s_tasks.metrics import entity_scores
from s2s_tasks.registry import get_task
from s2s_tasks.tasks.ner.data import NERDataModule, NERExample, join_tokens, split_words
from s2s_tasks.tasks.ner.format import NO_ENTITIES, parse_entities, render_entities, spans_to_tags, tags_to_spans
from s2s_tasks.tasks.ner.model import NERModule, word_end_positions

pytestmark = pytest.mark.usefixtures("single_thread")

LABELS = ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
GOOD = {"tokens": ["Anna", "Brandt", "visited", "Port", "Alden", "."], "tags": ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]}


def datamodule(tmp_path, train, validation=None, **kwargs):
    files = {"train_file": write_jsonl(tmp_path / "train.jsonl", train)}
    if validation is not None:
        files["validation_file"] = write_jsonl(tmp_path / "validation.jsonl", validation)
    return NERDataModule(**files, cache_dir=str(tmp_path / "cache"), **kwargs)


def is_valid_bio(tags):
    return all(not t.startswith("I-") or (i > 0 and tags[i - 1][2:] == t[2:]) for i, t in enumerate(tags))


# ----------------------------------------------------------------------------- reading records
@pytest.mark.parametrize("bad, match", [
    ({"tokens": ["a", "b"], "tags": ["O", "O", "O"]}, r"line 2, field 'tags' \(data.tags_column\): 3 tags for 2 tokens; give exactly one tag per token"),
    ({"tokens": ["a", "b"], "tags": ["O", "S-PER"]}, r"line 2, field 'tags'.*tag 1 is 'S-PER', not an IOB2 tag; use IOB2 tags.*convert IOBES"),
    ({"tokens": "a b", "tags": ["O", "O"]}, r"line 2, field 'tokens' \(data.tokens_column\): expected a list of tokens.*data.text_column"),
    ({"tokens": ["a", "b c"], "tags": ["O", "O"]}, r"line 2, field 'tokens'.*token 1 is 'b c'.*without whitespace; split it"),
    ({"tokens": ["a"], "tags": "O"}, r"line 2, field 'tags'.*expected a list of IOB2 tags"),
    ({"tokens": ["a"], "tags": [3]}, r"line 2, field 'tags'.*integer 3.*ClassLabel.*'B-PER'"),
])
def test_bad_records_name_record_field_and_fix(tmp_path, bad, match):
    data = datamodule(tmp_path, [GOOD, bad])
    with pytest.raises(ValueError, match=match):
        data.examples("train")


def test_skips_empty_converts_iob1_and_orders_labels(tmp_path, caplog):
    records = [GOOD, {"tokens": [], "tags": []}, {"tokens": ["in", "Oltan", "Kesland"], "tags": ["O", "I-LOC", "I-LOC"]},
               {"tokens": ["Mara", "Dorn"], "tags": ["I-PER", "B-PER"]}]
    data = datamodule(tmp_path, records)
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        examples, numbers = data.examples("train")
    assert numbers == [1, 3, 4]
    assert examples[1].tags == ["O", "B-LOC", "I-LOC"] and examples[2].tags == ["B-PER", "B-PER"]
    assert "skipped 1 of 4 records: no tokens" in caplog.text
    assert "2 of 3 records had I-X tags that start an entity (IOB1 style); read as B-X" in caplog.text
    assert data.label_names == LABELS
    assert examples[0].text == "Anna Brandt visited Port Alden ." and examples[0].offsets[3] == (20, 24)
    assert data.target_text(examples[0]) == "Anna Brandt [PER] ; Port Alden [LOC]"


def test_unknown_validation_tag_and_missing_columns(tmp_path):
    data = datamodule(tmp_path, [GOOD], [{"tokens": ["x"], "tags": ["B-ORG"]}])
    with pytest.raises(ValueError, match=r"line 1: label 'B-ORG' is not in the label set"):
        data.examples("validation")
    data = datamodule(tmp_path, [{"words": ["a"], "labels": ["O"]}])
    with pytest.raises(ValueError, match=r"neither column 'tokens' \(data.tokens_column\) nor 'text'.*Set data.tokens_column"):
        data.examples("train")


def test_integer_tags_use_the_classlabel_names(tmp_path):
    import datasets

    features = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
    })
    datasets.Dataset.from_dict({"tokens": [["Anna", "Dorn", "spoke"]], "tags": [[1, 2, 0]]}, features=features).to_parquet(str(tmp_path / "t.parquet"))
    data = NERDataModule(train_file=str(tmp_path / "t.parquet"), cache_dir=str(tmp_path / "cache"))
    assert data.examples("train")[0][0].tags == ["B-PER", "I-PER", "O"]


def test_raw_text_with_character_offsets(tmp_path):
    text = "Yesterday  Anna Brandt flew to Port Alden, then to U.S. HQ."
    # [30, 41) has a leading space (trimmed); [51, 55) is a list instead of a dict
    entities = [{"start": 11, "end": 22, "label": "PER"}, {"start": 30, "end": 41, "label": "LOC"}, [51, 55, "LOC"]]
    data = datamodule(tmp_path, [{"text": text, "entities": entities}, {"text": "  ", "entities": []},
                                 {"text": "Nothing here.", "entities": []}])
    examples, numbers = data.examples("train")
    assert numbers == [1, 3]
    example = examples[0]
    assert example.words == ["Yesterday", "Anna", "Brandt", "flew", "to", "Port", "Alden", ",", "then", "to", "U", ".", "S", ".", "HQ", "."]
    assert example.tags == ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "O", "O", "B-LOC", "I-LOC", "I-LOC", "I-LOC", "O", "O"]
    assert [text[s:e] for s, e in example.offsets[:3]] == ["Yesterday", "Anna", "Brandt"]
    assert examples[1].tags == ["O", "O", "O"]


@pytest.mark.parametrize("entities, match", [
    ([{"start": 12, "end": 16, "label": "LOC"}], r"line 1, field 'entities' \(data.entities_column\): entity 0 \[12, 16\) 'LOC' = 'ondo' starts inside the word 'London' at \[11, 17\).*Fix the offsets"),
    ([{"start": 11, "end": 14, "label": "LOC"}], r"entity 0 \[11, 14\) 'LOC' = 'Lon' ends inside the word 'London'"),
    ([{"start": 0, "end": 5, "label": "PER"}, {"start": 0, "end": 10, "label": "PER"}], r"entities 0 and 1 overlap"),
    ([{"start": 3, "end": 99, "label": "PER"}], r"entity 0 has start=3, end=99, outside the text of 17 characters; give offsets with 0 <= start < end <= the text.s length"),
    ([{"start": 0, "end": 5, "label": "a b"}], r"entity 0 has label 'a b'"),
    ([{"begin": 0, "stop": 5}], r"entity 0 has start=None"),
    (None, r"expected a list of entities.*give \[\] for a text without entities"),
])
def test_raw_text_errors(tmp_path, entities, match):
    data = datamodule(tmp_path, [{"text": "Anna Dorn: London", "entities": entities}])
    with pytest.raises(ValueError, match=match):
        data.examples("train")


def test_predict_inputs(tmp_path):
    lines = tmp_path / "in.txt"
    lines.write_text("Anna  Dorn met U.S. officials\n", encoding="utf-8")
    data = datamodule(tmp_path, [GOOD], predict_file=str(lines))
    (example,), _ = data.examples("predict")
    assert example.words == ["Anna", "Dorn", "met", "U.S.", "officials"] and example.tags is None
    assert example.offsets[1] == (6, 10) and data.display_source(example) == "Anna  Dorn met U.S. officials"
    for record in ({"tokens": ["U.S.", "talks"]}, {"text": "U.S. talks"}):
        data = datamodule(tmp_path, [GOOD], predict_file=write_jsonl(tmp_path / "p.jsonl", [record]))
        (example,), _ = data.examples("predict")
        assert example.words == (["U.S.", "talks"] if "tokens" in record else ["U", ".", "S", ".", "talks"])


# ----------------------------------------------------------------------------- encoder features
def test_first_subword_alignment_and_truncation(tmp_path, caplog):
    words = ["Anna", "Brandtovich", "visited", "Port", "Alden", "yesterday", "."]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"]
    text, offsets = join_tokens(words)
    example = NERExample(words, tags, offsets, text)
    tokenizer = train_tokenizer(["Anna visited Port Alden ."] * 20, vocab_size=60)
    data = datamodule(tmp_path, [GOOD])
    assert data.label_names == LABELS
    (feature,) = data.encode_examples([example], tokenizer, True, "test data")
    ids = feature["src_ids"]
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    encoding = tokenizer.encode_batch([words], is_pretokenized=True, add_special_tokens=False)[0]
    assert len(ids) == len(encoding.ids) + 2 > len(words) + 2  # words are split into several subwords
    for w, position in enumerate(feature["word_starts"]):
        assert encoding.word_ids[position - 1] == w and (position == 1 or encoding.word_ids[position - 2] != w)
        assert tokenizer.id_to_token(ids[position]).startswith("\u2581")  # a word's first subword
    assert feature["tags"] == [LABELS.index(t) for t in tags]

    limit = feature["word_starts"][4] + 1  # room for <s> and the subwords before word 4's first one
    data = datamodule(tmp_path, [GOOD], max_source_tokens=limit)
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        (cut,) = data.encode_examples([example], tokenizer, True, "test data")
    assert len(cut["src_ids"]) == limit and cut["word_starts"] == feature["word_starts"][:4] and len(cut["tags"]) == 4
    assert "test data: 1 of 1 sentences truncated to data.max_source_tokens" in caplog.text and "3 words" in caplog.text

    # the cut words are predicted O, and their gold entity still counts against recall
    model = tiny_model()
    starts = torch.tensor([cut["word_starts"]])
    logits = torch.full((1, 4, 5), -10.0)
    for i, tag in enumerate(tags[:4]):
        logits[0, i, LABELS.index(tag)] = 10.0
    from s2s_tasks.tasks.ner.model import TagScores

    predicted = model.head_predict(TagScores(logits, starts >= 0), {"example": [example], "word_starts": starts})
    assert predicted == [["B-PER", "I-PER", "O", "B-LOC", "O", "O", "O"]]
    scores, _ = model.compute_metrics(predicted, [tags])
    assert scores["precision"] == 50.0 and scores["recall"] == 50.0


# ----------------------------------------------------------------------------- text-to-text format
ROUND_TRIP = [
    (["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."], ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]),
    (["Paris", "Hilton", "flew", "to", "Paris", "and", "Paris", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "B-LOC", "O"]),
    (["Brandt", "Brandt", "Kessler", "Brandt"], ["B-PER", "B-PER", "I-PER", "B-ORG"]),  # adjacent entities, repeated words
    (["U.S.", "(", "NYSE", ")", ";", "[", "Acme", "]", "Corp.", "'s", "chief"], ["B-LOC", "O", "B-ORG", "O", "O", "O", "B-ORG", "O", "B-ORG", "O", "O"]),
    (["no", "entities", "here", "[NONE]"], ["O", "O", "O", "O"]),
    (["A", ";", "B"], ["B-X", "I-X", "I-X"]),
]


@pytest.mark.parametrize("words, tags", ROUND_TRIP)
def test_render_parse_round_trip(words, tags):
    spans = tags_to_spans(tags)
    text = render_entities(words, spans)
    assert parse_entities(text, words, ["PER", "LOC", "ORG", "MISC", "X"]) == spans
    assert spans_to_tags(parse_entities(text, words), len(words)) == tags


def test_render_form_and_robust_parsing():
    words = ["Anna", "Dorn", "met", "Mara", "in", "Port", "Alden", "and", "Anna", "Dorn", "."]
    assert render_entities(words, []) == NO_ENTITIES == "[NONE]"
    assert parse_entities(NO_ENTITIES, words, ["PER"]) == []
    assert render_entities(words, [(5, 7, "LOC"), (0, 2, "PER")]) == "Anna Dorn [PER] ; Port Alden [LOC]"
    types = ["PER", "LOC"]
    # unknown type, words not in the sentence, and a piece with no words are dropped
    assert parse_entities("Anna Dorn [PER] ; Mara [ORG] ; Boris [PER] ; [LOC] ; Port Alden [LOC]", words, types) == [(0, 2, "PER"), (5, 7, "LOC")]
    # a repeated mention is searched after the previous match; with no later match, anywhere free
    assert parse_entities("Port Alden [LOC] ; Anna Dorn [PER]", words, types) == [(5, 7, "LOC"), (8, 10, "PER")]
    assert parse_entities("Port Alden [LOC] ; Mara [PER]", words, types) == [(3, 4, "PER"), (5, 7, "LOC")]
    # lowercased output (data.lowercase) and missing separators still parse; overlaps are never produced
    assert parse_entities("anna dorn [per] port alden [loc] Dorn [PER] Dorn [PER] Dorn [PER]", words, types) == [
        (0, 2, "PER"), (5, 7, "LOC"), (9, 10, "PER")]
    assert parse_entities("garbage without markers", words, types) == []


def test_strict_decoding_matches_seqeval():
    rng = random.Random(0)
    tag_set = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(300):
        tags = [rng.choice(tag_set) for _ in range(rng.randint(1, 8))]
        expected = sorted((start, end, label) for _, label, start, end in
                          (e.to_tuple() for e in Entities([tags], IOB2).entities[0]))
        assert tags_to_spans(tags) == expected, tags


# ----------------------------------------------------------------------------- metrics
def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "O"]]
    # PER exact, LOC with the wrong type, ORG missed, a spurious MISC: 1 correct of 3 predicted, of 3 gold
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "O", "B-MISC"]]
    assert entity_scores(pred, gold) == pytest.approx({"precision": 100 / 3, "recall": 100 / 3, "f1": 100 / 3})
    # entity-level, not token-level: a boundary error scores zero although 3 of 4 tags are right
    assert entity_scores([["B-PER", "O", "O", "O"]], [["B-PER", "I-PER", "O", "O"]])["f1"] == 0.0
    # strict IOB2: an entity that starts with I- is no entity
    assert entity_scores([["I-PER", "I-PER"]], [["B-PER", "I-PER"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert entity_scores([["B-PER", "I-PER", "B-PER"]], [["B-PER", "I-PER", "B-PER"]])["f1"] == 100.0
    scores = entity_scores([["B-PER", "O"], ["O"]], [["B-PER", "O"], ["B-LOC"]])
    assert scores["precision"] == 100.0 and scores["recall"] == 50.0 and scores["f1"] == pytest.approx(200 / 3)
    # the same numbers as seqeval's own strict-mode functions, on random tag sequences
    rng = random.Random(1)
    tag_set = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [[rng.choice(tag_set) for _ in range(6)] for _ in range(50)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tag_set) for t in row] for row in gold]
    kwargs = dict(mode="strict", scheme=IOB2, zero_division=0)
    assert entity_scores(pred, gold) == pytest.approx({
        "precision": 100 * precision_score(gold, pred, **kwargs), "recall": 100 * recall_score(gold, pred, **kwargs),
        "f1": 100 * f1_score(gold, pred, **kwargs)})
    with pytest.raises(ValueError, match="sentence 0: 1 predicted tags but 2 gold tags"):
        entity_scores([["O"]], [["O", "O"]])


# ----------------------------------------------------------------------------- model
def tiny_model(**kwargs):
    model = NERModule(vocab_size=60, num_labels=len(LABELS), d_model=16, ffn_dim=16, num_heads=2, num_encoder_layers=1, **kwargs)
    model.set_label_names(LABELS)
    return model


def test_prediction_record_character_offsets_and_generated_text():
    text = "Yesterday  Anna Brandt flew to Port Alden, then home."
    words, offsets = split_words(text)
    example = NERExample(words, None, offsets, text)
    model = tiny_model()
    tags = ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "O", "O", "O"]
    record = model.prediction_record(tags, {"example": [example]}, 0)
    assert record == {"tags": tags, "entities": [
        {"text": "Anna Brandt", "label": "PER", "start_word": 1, "end_word": 3, "start_char": 11, "end_char": 22},
        {"text": "Port Alden", "label": "LOC", "start_word": 5, "end_word": 7, "start_char": 31, "end_char": 41},
    ]}
    for entity in record["entities"]:
        assert text[entity["start_char"]:entity["end_char"]] == entity["text"]
    # generated text is read back into tags over the same words
    assert model.parse_generated(["Port Alden [LOC] ; Anna Brandt [PER] ; home [ORG]"], {"example": [example]}) == [tags]


def test_word_end_positions():
    # row 0: "<s> a a b c c c d </s> <pad>"; row 1: "<s> e f f </s>" with a third word that has
    # no subwords (it shares f's start); row 2: "<s> g h </s>", h cut by truncation
    starts = torch.tensor([[1, 3, 4, 7], [1, 2, 2, -100], [1, 2, -100, -100]])
    mask = torch.tensor([[1] * 9 + [0], [1] * 5 + [0] * 5, [1] * 4 + [0] * 6], dtype=torch.bool)
    assert word_end_positions(starts, mask).tolist() == [[2, 3, 6, 7], [1, 2, 3, 0], [1, 2, 0, 0]]


@pytest.mark.parametrize("word_states", ["first", "first_last"])
def test_crf_head_loss_and_constrained_predictions(word_states):
    model = tiny_model(crf=True, word_states=word_states)
    model.eval()
    assert not model.task_head["crf"].allowed.all()  # BIO constraints set from the tag names
    ids = torch.randint(4, 60, (2, 9))
    batch = {"src_ids": ids, "src_mask": torch.ones_like(ids, dtype=torch.bool),
             "word_starts": torch.tensor([[1, 2, 4, 5, 7], [1, 3, -100, -100, -100]]),
             "tags": torch.tensor([[2, 4, 0, 1, 3], [0, 0, -100, -100, -100]]),
             "example": [NERExample(["w"] * 5, None, [], ""), NERExample(["w"] * 2, None, [], "")]}
    enc_out = model.encode(batch)
    outputs = model.head_forward(batch, enc_out)
    assert outputs.logits.shape == (2, 5, 5)
    # the head reads the first subword's state (and with first_last the last subword's too)
    features = enc_out.states[[0, 0, 0, 0, 0, 1, 1]][torch.arange(7), torch.tensor([1, 2, 4, 5, 7, 1, 3])]
    if word_states == "first_last":
        ends = enc_out.states[[0, 0, 0, 0, 0, 1, 1]][torch.arange(7), torch.tensor([1, 3, 4, 6, 7, 2, 7])]
        features = torch.cat([features, ends], dim=-1)
    expected = model.task_head["out"](features)
    assert torch.allclose(outputs.logits[outputs.mask], expected, atol=1e-6)
    loss, count = model.head_loss(outputs, batch)
    assert count == 7 and torch.isfinite(loss) and loss > 0
    with torch.no_grad():
        outputs.logits[..., LABELS.index("I-PER")] += 100.0
    predicted = model.head_predict(outputs, batch)
    assert [len(p) for p in predicted] == [5, 2] and all(is_valid_bio(p) for p in predicted)
    with pytest.raises(ValueError, match="num_labels"):
        NERModule(vocab_size=60, num_labels=1, d_model=16, ffn_dim=16, num_heads=2, num_encoder_layers=1)
    with pytest.raises(ValueError, match="model.crf applies with model.head: encoder only"):
        NERModule(vocab_size=60, num_labels=5, head="generate", crf=True)
    with pytest.raises(ValueError, match="model.word_states must be one of"):
        NERModule(vocab_size=60, num_labels=5, word_states="last")


# ----------------------------------------------------------------------------- learning and the CLI
def test_tiny_tagger_learns_the_sample_data(tmp_path):
    pl.seed_everything(0)
    module_class, datamodule_class = get_task("ner").classes()
    data = datamodule_class(tokenizer_vocab_size=500, max_tokens=1024, cache_dir=str(tmp_path / "cache"))
    model = module_class(
        vocab_size=data.vocab_size, pad_id=data.pad_id, num_labels=data.num_labels, d_model=64, ffn_dim=128,
        num_heads=2, num_encoder_layers=1, dropout=0.0, head_dropout=0.0, learning_rate=3e-3, warmup_steps=20,
        log_examples=0,
    )
    before, after = validate_fit_validate(
        model, data, tmp_path, max_steps=150, limit_val_batches=4, max_epochs=10, check_val_every_n_epoch=10
    )
    assert after["val/f1"] > before["val/f1"] + 40 and after["val/f1"] > 60, (before, after)
    assert after["val/loss"] < 0.5 * before["val/loss"]


def test_crf_through_the_cli_predicts_valid_bio_from_the_checkpoint(tmp_path):
    common = ["--task", "ner", "--trainer.default_root_dir", str(tmp_path), "--data.cache_dir", str(tmp_path / "hf")]
    main(["fit", *common, "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--model.crf", "true",
          "--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2", "--model.num_encoder_layers", "1",
          "--model.warmup_steps", "2", "--data.tokenizer_vocab_size", "300", "--trainer.max_epochs", "1",
          "--trainer.limit_train_batches", "0.1", "--trainer.limit_val_batches", "0.25", "--trainer.enable_progress_bar", "false"])
    (ckpt,) = (tmp_path / "logs").rglob("last.ckpt")
    inputs = tmp_path / "in.jsonl"
    texts = ["Anna Brandt said on Monday that Port Alden Bank would cut 20 jobs.", "Rain delayed play in Oltan ."]
    write_jsonl(inputs, [{"text": t} for t in texts])
    output = tmp_path / "predictions.jsonl"
    cli = main(["predict", "--ckpt_path", str(ckpt), "--data.predict_file", str(inputs), "--predictions.output_file", str(output),
                "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", "--data.cache_dir", str(tmp_path / "hf"),
                "--trainer.enable_progress_bar", "false"])
    assert cli.model.hparams.crf and not cli.model.task_head["crf"].allowed.all()
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["source"] for r in records] == texts
    for record in records:
        assert is_valid_bio(record["tags"])
        for entity in record["entities"]:
            assert record["source"][entity["start_char"]:entity["end_char"]] == entity["text"]
