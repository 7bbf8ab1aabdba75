"""Smoke runs of every task through the `s2s-tasks` entry point, all inside tmp_path."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from s2s_tasks.checkpoint import read_checkpoint_extras
from s2s_tasks.cli import main
from s2s_tasks.registry import TASKS, config_dir

CONFIGS = config_dir()

TINY = [
    "--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2",
    "--model.num_encoder_layers", "1", "--model.num_decoder_layers", "1",
    "--model.generation.max_length", "12", "--model.val_generation.max_length", "12",
    "--model.warmup_steps", "2",
    "--data.tokenizer_vocab_size", "300", "--data.max_tokens", "1024",
]


#: the text-generation tasks and the metric each one's smoke test expects in validation (also as
#: val/beam_<metric>); the structured tasks have their own smoke test (test_structured_cli.py)
MAIN_METRIC = {"translation": "bleu", "summarization": "rougeL", "dialogue": "bleu2"}


def run_common(tmp_path, task):
    return [
        "--task", task,
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
        "--data.cache_dir", str(tmp_path / "hf-cache"),
    ]


@pytest.mark.parametrize("task", list(MAIN_METRIC))
def test_fit_test_predict_from_checkpoint(task, tmp_path, capsys):
    common = run_common(tmp_path, task)
    # fractions: jsonargparse reads a bare "1" for Union[int, float] as 1.0 (= 100 %)
    cli = main(["fit", *common, *TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "0.03",
                "--trainer.limit_val_batches", "0.2", "--model.beam_validation_every_n_epochs", "1",
                "--model.beam_validation_examples", "4", "--data.max_source_tokens", "200"])
    metric = MAIN_METRIC[task]
    assert {f"val/{metric}", f"val/beam_{metric}", "val/loss"} <= set(cli.trainer.callback_metrics)
    checkpoints = sorted((tmp_path / "logs").rglob("last.ckpt"))
    assert len(checkpoints) == 1
    ckpt = str(checkpoints[0])
    assert torch.load(ckpt, weights_only=True)["global_step"] == cli.trainer.global_step  # the latest weights
    extras = read_checkpoint_extras(ckpt)
    assert extras["task"] == task and '"<pad>"' in extras["tokenizer"]
    out = capsys.readouterr().out
    assert "[val epoch 0" in out and " signature: " in out
    (hparams_file,) = (tmp_path / "logs").rglob("hparams.yaml")
    assert "signature/" in hparams_file.read_text()  # metric signatures are kept with the run

    # validate/test: model sizes come from the checkpoint's hyperparameters, tokenizer from the checkpoint
    validated = main(["validate", *common, "--ckpt_path", ckpt, "--trainer.limit_val_batches", "0.2"])
    assert validated.model.hparams.d_model == 32 and f"val/{metric}" in validated.trainer.callback_metrics
    main(["test", *common, "--ckpt_path", ckpt, "--trainer.limit_test_batches", "0.5"])
    out = capsys.readouterr().out
    assert "[test epoch" in out and "test/loss" in out

    # predict needs nothing but the checkpoint; the task is even read from it
    inputs = ["first input line", "second, longer input line with more words", "third"]
    predict_file = tmp_path / "input.txt"
    predict_file.write_text("\n".join(inputs) + "\n", encoding="utf-8")
    output_file = tmp_path / "predictions.jsonl"
    predicted = main([
        "predict", "--ckpt_path", ckpt, "--data.predict_file", str(predict_file),
        "--predictions.output_file", str(output_file), "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger", "false", "--data.cache_dir", str(tmp_path / "hf-cache"),
        "--model.generation.n_best", "2",  # a flag given at predict time wins over the checkpoint's value
    ])
    records = [json.loads(line) for line in output_file.read_text(encoding="utf-8").splitlines()]
    assert [r["source"] for r in records] == inputs
    assert [r["index"] for r in records] == [1, 2, 3]
    assert all(isinstance(r["prediction"], str) for r in records)
    assert all(len(r["n_best"]) == 2 and r["n_best"][0]["text"] == r["prediction"] for r in records)
    # how text was encoded at training time is the default at predict time too
    assert predicted.datamodule.hparams.max_source_tokens == 200


@pytest.mark.parametrize("preset", ["lstm-bahdanau", "gru-luong"])
def test_rnn_presets_fit_through_the_cli(preset, tmp_path):
    cli = main([
        "fit", *run_common(tmp_path, "translation"), "--model", str(CONFIGS / "model" / f"{preset}.yaml"),
        "--model.d_model", "32", "--model.embedding_dim", "32", "--model.val_generation.max_length", "8",
        "--data.tokenizer_vocab_size", "300", "--data.max_tokens", "512",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "0.02", "--trainer.limit_val_batches", "0.2",
    ])
    assert cli.model.hparams.architecture == "rnn"
    assert cli.model.hparams.attention == ("bahdanau" if preset == "lstm-bahdanau" else "luong_general")
    assert "val/bleu" in cli.trainer.callback_metrics


def test_print_config_round_trip(tmp_path, capsys):
    args = ["fit", *run_common(tmp_path, "translation"), *TINY, "--model.dropout", "0.3"]
    with pytest.raises(SystemExit):
        main([*args, "--print_config"])
    printed = capsys.readouterr().out
    config = yaml.safe_load(printed)
    assert config["task"] == "translation" and config["model"]["dropout"] == 0.3
    assert config["model"]["d_model"] == 32  # the flag overrides configs/translation.yaml
    path = tmp_path / "config.yaml"
    path.write_text(printed)
    # no --task: it is read from the config file
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path), "--print_config"])
    assert capsys.readouterr().out == printed


def test_help_names_the_tasks_without_lightning():
    code = (
        "import sys; from s2s_tasks.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'pytorch_lightning' not in sys.modules and 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for task in TASKS:
        assert task in result.stdout


def test_unknown_or_missing_task_lists_valid_ones(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--task", "poetry"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown task 'poetry'" in err and "translation" in err
    with pytest.raises(SystemExit) as info:
        main(["fit"])
    assert info.value.code == 2 and "--task" in capsys.readouterr().err


def test_console_script_exits_zero(tmp_path):
    """The console script passes main()'s return value to sys.exit: a successful run must exit 0."""
    common = run_common(tmp_path, "dialogue")
    args = ["fit", *common, *TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    code = "import sys; from s2s_tasks.cli import main; sys.argv = ['s2s-tasks', *sys.argv[1:]]; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_console_errors_are_one_paragraph_and_verbose_shows_the_traceback(tmp_path):
    code = "import sys; from s2s_tasks.cli import main; sys.argv = ['s2s-tasks', *sys.argv[1:]]; sys.exit(main())"
    missing = str(tmp_path / "missing.jsonl")
    args = ["fit", "--task", "classification", "--data.train_file", missing, "--trainer.default_root_dir", str(tmp_path)]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"s2s-tasks: error: data.train_file: {missing} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    verbose = subprocess.run([sys.executable, "-c", code, *args, "--verbose"], capture_output=True, text=True)
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr and "FileNotFoundError" in verbose.stderr
