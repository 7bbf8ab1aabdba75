"""``model.ensemble``: other checkpoints of the task averaged with the ``--ckpt_path`` model in
validate, test and predict (encoder heads)."""

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import train_tiny_checkpoint
from s2s_tasks.cli import main
from s2s_tasks.structured_module import mean_probability_logits


def test_mean_probability_logits_is_the_log_of_the_mean_probabilities():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    expected = ((a.softmax(-1) + b.softmax(-1)) / 2).log()
    torch.testing.assert_close(mean_probability_logits([a, b]), expected)
    # one model: its own log-probabilities
    torch.testing.assert_close(mean_probability_logits([a]), a.log_softmax(-1))
    # positions masked with the dtype's lowest value stay finite and never win
    masked = a.clone()
    masked[:, 0] = torch.finfo(torch.float32).min
    out = mean_probability_logits([masked, masked, masked])
    assert torch.isfinite(out).all() and (out.argmax(-1) != 0).all()


PREDICT = str(Path(__file__).resolve().parent.parent / "tasks" / "classification" / "sample" / "predict.txt")


def _common(task, tmp_path):
    return ["--task", task, "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false",
            "--data.cache_dir", str(tmp_path / "cache"), "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def classification_members(tmp_path_factory):
    """Three tiny classification models of the sample data, different seeds, the same tokenizer."""
    root = tmp_path_factory.mktemp("members")
    return [train_tiny_checkpoint("classification", root / f"seed{seed}", "--seed_everything", str(seed), steps=6)
            for seed in (1, 2, 3)]


def test_classification_ensemble_averages_the_members_probabilities(classification_members, tmp_path):
    first, *others = classification_members
    out = tmp_path / "ensemble.jsonl"
    main(["predict", *_common("classification", tmp_path), "--ckpt_path", first,
          "--model.ensemble", json.dumps(others), "--data.predict_file", PREDICT, "--predictions.output_file", str(out)])
    ensemble = [json.loads(line) for line in out.read_text().splitlines()]
    singles = []
    for path in classification_members:
        single = tmp_path / f"single{len(singles)}.jsonl"
        main(["predict", *_common("classification", tmp_path), "--ckpt_path", path,
              "--data.predict_file", PREDICT, "--predictions.output_file", str(single)])
        singles.append([json.loads(line) for line in single.read_text().splitlines()])
    assert len(ensemble) == len(singles[0]) > 0
    differs = False
    for i, record in enumerate(ensemble):
        for label, p in record["probabilities"].items():
            mean = sum(s[i]["probabilities"][label] for s in singles) / len(singles)
            assert math.isclose(p, mean, abs_tol=2e-6), (i, label)
        assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)
        differs |= any(record["probabilities"] != s[i]["probabilities"] for s in singles)
    assert differs  # the members are different models

    # validate: the metrics of the averaged model, and its loss is the mixture's
    cli = main(["validate", *_common("classification", tmp_path), "--ckpt_path", first,
                "--model.ensemble", json.dumps(others), "--trainer.limit_val_batches", "2"])
    assert len(cli.model._ensemble_members) == 2 and "val/accuracy" in cli.trainer.callback_metrics
    assert all(not p.requires_grad for m in cli.model._ensemble_members for p in m.parameters())


def test_ensemble_is_refused_in_fit_and_for_mismatched_members(classification_members, tmp_path):
    first, second, _ = classification_members
    with pytest.raises(ValueError, match="model.ensemble averages trained models in validate, test and predict"):
        main(["fit", *_common("classification", tmp_path), "--model.ensemble", json.dumps([second]),
              "--trainer.max_steps", "1"])

    # a member whose data were encoded with other settings
    other = train_tiny_checkpoint("classification", tmp_path / "lowercase", "--data.lowercase", "true", steps=1)
    with pytest.raises(ValueError) as error:
        main(["validate", *_common("classification", tmp_path), "--ckpt_path", first,
              "--model.ensemble", json.dumps([other]), "--trainer.limit_val_batches", "1"])
    assert f"model.ensemble member {other} encodes its data differently" in str(error.value)
    assert "data.lowercase: True there, False here" in str(error.value)

    # a member of another task
    ner = train_tiny_checkpoint("ner", tmp_path / "ner", steps=1)
    with pytest.raises(ValueError, match="is a ner checkpoint, not a classification one"):
        main(["validate", *_common("classification", tmp_path), "--ckpt_path", first,
              "--model.ensemble", json.dumps([ner]), "--trainer.limit_val_batches", "1"])


def test_ensemble_needs_the_encoder_head(tmp_path):
    with pytest.raises(ValueError, match="model.ensemble averages the task heads' probabilities: it needs model.head encoder"):
        main(["validate", *_common("classification", tmp_path), "--model.head", "generate",
              "--model.ensemble", "[x.ckpt]"])


@pytest.mark.parametrize("task", ["qa", "relation_extraction"])
def test_qa_and_relation_extraction_ensembles_validate(task, tmp_path):
    members = [train_tiny_checkpoint(task, tmp_path / f"seed{seed}", "--seed_everything", str(seed), steps=2)
               for seed in (1, 2)]
    single = main(["validate", *_common(task, tmp_path), "--ckpt_path", members[0], "--trainer.limit_val_batches", "2"])
    cli = main(["validate", *_common(task, tmp_path), "--ckpt_path", members[0],
                "--model.ensemble", json.dumps(members[1:]), "--trainer.limit_val_batches", "2"])
    assert cli.trainer.callback_metrics["val/loss"] != single.trainer.callback_metrics["val/loss"]
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])


def test_ner_outputs_cannot_be_averaged(tmp_path):
    members = [train_tiny_checkpoint("ner", tmp_path / f"seed{seed}", "--seed_everything", str(seed), steps=1)
               for seed in (1, 2)]
    with pytest.raises(ValueError, match="model.ensemble is not available for task ner"):
        main(["validate", *_common("ner", tmp_path), "--ckpt_path", members[0],
              "--model.ensemble", json.dumps(members[1:]), "--trainer.limit_val_batches", "1"])


def test_multi_label_classification_averages_each_labels_sigmoid():
    from types import SimpleNamespace

    from s2s_tasks.tasks.classification.model import ClassificationModule

    a, b = torch.randn(5, 4), torch.randn(5, 4)
    stub = SimpleNamespace(hparams=SimpleNamespace(multi_label=True))
    out = ClassificationModule.ensemble_outputs(stub, [a, b])
    torch.testing.assert_close(out.sigmoid(), (a.sigmoid() + b.sigmoid()) / 2)
