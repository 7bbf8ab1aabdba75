"""Classification: record checks, label inventory, pooling, class weights, metrics, and a tiny
model that learns the embedded sample."""

import logging

import pytest
import pytorch_lightning as pl
import torch

from helpers import quiet_trainer, validate_fit_validate, write_jsonl

from s2s_tasks.metrics import classification_scores
from s2s_tasks.nn.pooling import SequencePooling
from s2s_tasks.registry import get_task

ClassificationModule, ClassificationDataModule = get_task("classification").classes()


def make_data(tmp_path, train, validation=None, **kwargs):
    files = {"train_file": write_jsonl(tmp_path / "train.jsonl", train)}
    if validation is not None:
        files["validation_file"] = write_jsonl(tmp_path / "validation.jsonl", validation)
    return ClassificationDataModule(**files, tokenizer_vocab_size=100, min_frequency=1, cache_dir=str(tmp_path / "cache"), **kwargs)


TRAIN = [{"text": f"good film {i}", "label": "pos"} for i in range(4)] + [{"text": f"bad film {i}", "label": "neg"} for i in range(4)]


def test_labels_come_from_training_data_sorted_and_reach_the_batches(tmp_path):
    data = make_data(tmp_path, TRAIN + [{"text": "so so", "label": 3}], validation=TRAIN[:3])
    assert data.label_names == ["3", "neg", "pos"]  # integers are used as their decimal strings
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    assert batch["label"].tolist() == [2, 2, 2] and batch["gold"] == ["pos", "pos", "pos"]
    assert (batch["src_ids"][:, 0] == 2).all()  # <s> first: what pooling "first" reads


@pytest.mark.parametrize(
    "record, message",
    [
        ({"text": ["a", "list"], "label": "pos"}, "line 9, field 'text' (data.text_column): expected text, got list"),
        ({"text": "fine", "label": ""}, "line 9, field 'label' (data.label_column): expected a label"),
        ({"text": "fine", "label": None}, "line 9, field 'label' (data.label_column)"),
    ],
)
def test_bad_records_name_the_record_field_and_key(tmp_path, record, message):
    data = make_data(tmp_path, TRAIN + [record])
    with pytest.raises(ValueError, match="train data .*train.jsonl") as info:
        data.label_names
    assert message in str(info.value)


def test_missing_column_lists_the_columns_and_key(tmp_path):
    data = make_data(tmp_path, [{"sentence": "x", "label": "a"}, {"sentence": "y", "label": "b"}])
    with pytest.raises(ValueError, match=r"column 'text' not found; the data has columns \['sentence', 'label'\]. Set data.text_column"):
        data.label_names


def test_unseen_validation_label_is_an_error_naming_data_labels(tmp_path):
    data = make_data(tmp_path, TRAIN, validation=[{"text": "meh", "label": "neutral"}])
    with pytest.raises(ValueError, match=r"validation data .*line 1: label 'neutral' is not in the label set \['neg', 'pos'\].*data.labels"):
        data.setup("fit")
    # listing it in data.labels makes it valid (a label may be absent from training)
    data = make_data(tmp_path, TRAIN, validation=[{"text": "meh", "label": "neutral"}], labels=["neg", "neutral", "pos"])
    data.setup("fit")
    assert data.num_labels == 3


def test_empty_texts_are_skipped_and_counted(tmp_path, caplog):
    data = make_data(tmp_path, TRAIN + [{"text": "  ", "label": "pos"}, {"text": None, "label": "neg"}])
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        examples, numbers = data.examples("train")
    assert len(examples) == 8 and numbers == list(range(1, 9))
    assert "skipped 2 of 10 records: empty or whitespace-only text" in caplog.text


def test_pooling_ignores_padding():
    states = torch.tensor([[[1.0, 5.0], [3.0, -1.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert SequencePooling("mean", 2)(states, mask).tolist() == [[2.0, 2.0]]
    assert SequencePooling("max", 2)(states, mask).tolist() == [[3.0, 5.0]]
    assert SequencePooling("first", 2)(states, mask).tolist() == [[1.0, 5.0]]
    attention = SequencePooling("attention", 2)
    pooled = attention(states, mask)
    assert pooled.shape == (1, 2) and pooled.max() <= 5.0  # a convex mix of the two real states only
    with pytest.raises(ValueError, match="model.pooling must be one of"):
        SequencePooling("median", 2)


def test_classification_scores_hand_computed():
    # gold: 0 0 1 1 2 ; predicted: 0 1 1 1 -1 (an invalid generated label)
    scores = classification_scores([0, 1, 1, 1, -1], [0, 0, 1, 1, 2], num_classes=3)
    assert scores["accuracy"] == pytest.approx(60.0)
    # F1 per class: 0 -> P 1, R .5 -> 2/3 ; 1 -> P 2/3, R 1 -> .8 ; 2 -> 0
    assert scores["macro_f1"] == pytest.approx(100 * (2 / 3 + 0.8 + 0) / 3, abs=1e-4)


def test_balanced_class_weights_and_invalid_options(tmp_path):
    data = make_data(tmp_path, TRAIN + [{"text": "bad again", "label": "neg"}, {"text": "bad still", "label": "neg"}])
    model = ClassificationModule(vocab_size=data.vocab_size, num_labels=data.num_labels, d_model=16, ffn_dim=32,
                                 num_heads=2, num_encoder_layers=1, class_weights="balanced")
    quiet_trainer(tmp_path, max_steps=1).fit(model, datamodule=data)
    # 6 neg, 4 pos: n / (k n_c)
    assert model.class_weight.tolist() == pytest.approx([10 / 12, 10 / 8])
    with pytest.raises(ValueError, match="model.class_weights has 3 weights but there are 2 labels"):
        ClassificationModule(vocab_size=50, num_labels=2, class_weights=[1.0, 2.0, 3.0], d_model=16, num_heads=2)
    with pytest.raises(ValueError, match="model.copy_attention needs a decoder"):
        ClassificationModule(vocab_size=50, num_labels=2, copy_attention=True, d_model=16, num_heads=2)


def test_generated_labels_are_parsed_against_the_label_set():
    model = ClassificationModule(vocab_size=50, num_labels=2, head="generate", d_model=16, ffn_dim=32, num_heads=2,
                                 num_encoder_layers=1, num_decoder_layers=1)
    model.label_names = ["neg", "pos"]
    assert model.parse_generated([" pos", "neutral", "neg"], {}) == ["pos", None, "neg"]
    scores, _ = model.compute_metrics(["pos", None, "neg"], ["pos", "neg", "neg"])
    assert scores["accuracy"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("architecture, pooling", [("transformer", "mean"), ("rnn", "max")])
def test_tiny_model_learns_the_sample(tmp_path, architecture, pooling):
    pl.seed_everything(0)
    data = ClassificationDataModule(tokenizer_vocab_size=400, max_tokens=1024, cache_dir=str(tmp_path / "cache"))
    model = ClassificationModule(
        vocab_size=data.vocab_size, num_labels=data.num_labels, architecture=architecture, pooling=pooling,
        d_model=64, ffn_dim=128, num_heads=2, num_encoder_layers=1, dropout=0.0, learning_rate=3e-3,
        warmup_steps=20, log_examples=0,
    )
    before, after = validate_fit_validate(model, data, tmp_path, max_steps=400, max_epochs=100, check_val_every_n_epoch=100)
    assert after["val/accuracy"] > before["val/accuracy"] + 20, (before, after)
    assert after["val/macro_f1"] > before["val/macro_f1"] + 20, (before, after)
    assert after["val/loss"] < before["val/loss"]


def multilabel_records(n, seed):
    """Texts that mention some of three topics; the labels are exactly the topics mentioned."""
    import random

    rng = random.Random(seed)
    words = {"sport": ["match", "goal", "team"], "music": ["song", "band", "album"], "food": ["pizza", "bread", "soup"]}
    filler = ["today", "we", "talked", "about", "the", "new", "and", "old", "a", "great"]
    records = []
    for _ in range(n):
        topics = sorted(t for t in words if rng.random() < 0.4)
        tokens = [rng.choice(filler) for _ in range(6)] + [rng.choice(words[t]) for t in topics]
        rng.shuffle(tokens)
        records.append({"text": " ".join(tokens), "label": topics})
    return records


def test_multi_label_data_model_metrics_and_cli(tmp_path):
    from s2s_tasks.cli import main
    from s2s_tasks.metrics import multilabel_scores

    # subset accuracy 2/3; micro: TP 3, FP 1, FN 1 -> 75; per label F1: a 1, b 2/3 (TP1 FP0 FN1), c 0 (FP1)
    scores = multilabel_scores([[1, 1, 0], [1, 0, 1], [0, 0, 0]], [[1, 1, 0], [1, 1, 0], [0, 0, 0]], 3)
    assert scores["accuracy"] == pytest.approx(200 / 3, abs=1e-4)
    assert scores["micro_f1"] == pytest.approx(75.0)
    assert scores["macro_f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3, abs=1e-4)

    train = write_jsonl(tmp_path / "train.jsonl", multilabel_records(600, 0))
    validation = write_jsonl(tmp_path / "validation.jsonl", multilabel_records(100, 1))
    common = ["--task", "classification", "--data.train_file", train, "--data.validation_file", validation,
              "--data.multi_label", "true", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
              "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false", "--data.cache_dir", str(tmp_path / "c"),
              "--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2", "--model.num_encoder_layers", "1",
              "--model.dropout", "0", "--model.learning_rate", "0.005", "--model.warmup_steps", "10",
              "--data.tokenizer_vocab_size", "100", "--data.max_tokens", "512"]
    cli = main(["fit", *common, "--trainer.max_epochs", "12"])
    assert cli.model.hparams.multi_label and cli.datamodule.label_names == ["food", "music", "sport"]
    metrics = cli.trainer.callback_metrics
    assert float(metrics["val/micro_f1"]) > 90 and float(metrics["val/accuracy"]) > 70, metrics
    batch = next(iter(cli.datamodule.val_dataloader()))
    assert batch["label"].shape[1] == 3 and set(batch["label"].unique().tolist()) <= {0, 1}
    # the generate head renders label sets and parses them back
    cli.datamodule.hparams.head = "generate"
    example = cli.datamodule.examples("validation")[0][0]
    rendered = cli.datamodule.target_text(example)
    assert rendered == (" ; ".join(example.label) or "[NONE]")
    model = ClassificationModule(vocab_size=50, num_labels=3, multi_label=True, head="generate", d_model=16, ffn_dim=32,
                                 num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
    model.label_names = ["food", "music", "sport"]
    assert model.parse_generated(["sport ; food", "[NONE]", "jazz ; music"], {}) == [("food", "sport"), (), ("music",)]
