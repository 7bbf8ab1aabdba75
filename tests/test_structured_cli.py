"""Smoke runs of the structured-prediction tasks (classification, NER, QA, relation extraction)
through the `s2s-tasks` entry point, with both heads: fit, validate and test from the checkpoint,
predict with nothing but the checkpoint. All inside tmp_path."""

import json
from pathlib import Path

import pytest
import torch

from s2s_tasks.checkpoint import read_checkpoint_extras
from s2s_tasks.cli import main
from s2s_tasks.registry import TASKS, config_dir

#: the validation metric of each structured task (the first is the checkpoint monitor)
MAIN_METRIC = {"classification": "accuracy", "ner": "f1", "qa": "f1", "relation_extraction": "micro_f1"}
TASK_DIR = Path(__file__).resolve().parent.parent / "tasks"

TINY = [
    "--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2",
    "--model.num_encoder_layers", "1", "--model.num_decoder_layers", "1",
    "--model.generation.max_length", "12", "--model.val_generation.max_length", "12",
    "--model.warmup_steps", "2", "--model.log_examples", "1",
    "--data.tokenizer_vocab_size", "300", "--data.max_tokens", "2048",
]


def predict_input(task: str) -> Path:
    sample = TASK_DIR / task / "sample"
    return sample / "predict.txt" if (sample / "predict.txt").is_file() else sample / "predict.jsonl"


@pytest.mark.parametrize("head", ["encoder", "generate"])
@pytest.mark.parametrize("task", list(MAIN_METRIC))
def test_fit_test_predict_both_heads(task, head, tmp_path, capsys):
    assert task in TASKS and (config_dir() / f"{task}.yaml").is_file()
    common = [
        "--task", task, "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--data.cache_dir", str(tmp_path / "hf-cache"),
        "--data.eval_max_tokens", "512",
    ]
    metric = MAIN_METRIC[task]
    cli = main(["fit", *common, *TINY, "--model.head", head, "--trainer.max_epochs", "1",
                "--trainer.limit_train_batches", "0.05", "--trainer.limit_val_batches", "0.25"])
    assert cli.datamodule.hparams.head == head  # linked from model.head
    assert {f"val/{metric}", "val/loss"} <= set(cli.trainer.callback_metrics)
    assert ("val/ppl" in cli.trainer.callback_metrics) == (head == "generate")
    (ckpt,) = (tmp_path / "logs").rglob("last.ckpt")
    extras = read_checkpoint_extras(str(ckpt))
    assert extras["task"] == task
    labels = extras["label_maps"].get("labels", [])
    assert labels == cli.model.label_names and (task == "qa" or len(labels) >= 2)
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["head"] == head
    assert "[val epoch 0" in capsys.readouterr().out

    # the head and the sizes come from the checkpoint; data.head follows model.head
    validated = main(["validate", *common, "--ckpt_path", str(ckpt), "--trainer.limit_val_batches", "0.25"])
    assert validated.model.hparams.head == head and validated.datamodule.hparams.head == head
    assert f"val/{metric}" in validated.trainer.callback_metrics
    tested = main(["test", *common, "--ckpt_path", str(ckpt), "--trainer.limit_test_batches", "0.25"])
    assert f"test/{metric}" in tested.trainer.callback_metrics

    inputs = predict_input(task)
    n_inputs = len(inputs.read_text(encoding="utf-8").splitlines())
    output_file = tmp_path / "predictions.jsonl"
    main(["predict", "--ckpt_path", str(ckpt), "--data.predict_file", str(inputs),
          "--predictions.output_file", str(output_file), "--trainer.default_root_dir", str(tmp_path),
          "--trainer.logger", "false", "--data.cache_dir", str(tmp_path / "hf-cache")])
    records = [json.loads(line) for line in output_file.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in records] == list(range(1, n_inputs + 1))  # one record per input, input order
    assert all("source" in r for r in records)
    if head == "generate":
        assert all(isinstance(r["generated"], str) for r in records)


@pytest.mark.parametrize("task", list(MAIN_METRIC))
def test_encoder_heads_run_on_the_rnn_encoder(task, tmp_path):
    """The heads read any shared encoder: here the bidirectional LSTM of the lstm-bahdanau preset."""
    cli = main([
        "fit", "--task", task, "--model", str(config_dir() / "model" / "lstm-bahdanau.yaml"),
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.callbacks", "[]", "--data.cache_dir", str(tmp_path / "hf-cache"),
        "--model.d_model", "32", "--model.embedding_dim", "32", "--model.num_encoder_layers", "1",
        "--data.tokenizer_vocab_size", "300", "--data.max_tokens", "2048", "--data.eval_max_tokens", "512",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "0.05", "--trainer.limit_val_batches", "0.25",
    ])
    assert cli.model.hparams.architecture == "rnn" and cli.model.hparams.head == "encoder"
    assert type(cli.model.encoder).__name__ == "RNNEncoder"
    assert f"val/{MAIN_METRIC[task]}" in cli.trainer.callback_metrics
