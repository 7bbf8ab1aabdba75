"""Bad configuration and bad checkpoints end in one paragraph `s2s-tasks: error: ...` that names the
file or key, what was expected and the fix; exit status 2; no traceback; nothing written before
(a checkpoint, a predictions file) is modified.

The console cases run through ``main()`` reading ``sys.argv``, as the console script does: a few in
their own process (exit status included), the others in one shared process (importing Lightning
and building the parser costs seconds per process).
"""

import json
import subprocess
import sys

import pytest
import torch

from s2s_tasks.cli import ConfigError, main
from test_cli import TINY

CONSOLE = "import sys; from s2s_tasks.cli import main; sys.argv = ['s2s-tasks', *sys.argv[1:]]; sys.exit(main())"

#: runs each argv of a JSON list through main() as the console script does (sys.argv, args=None)
#: and prints, for each, the exit code and what went to stderr
DRIVER = r"""
import io, json, sys, traceback
from s2s_tasks.cli import main
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    err, real = io.StringIO(), sys.stderr
    sys.stderr, sys.argv = err, ["s2s-tasks", *argv]
    try:
        code = main()
    except SystemExit as exit:
        code = exit.code
    except BaseException:
        traceback.print_exc(file=err)
        code = "exception"
    finally:
        sys.stderr = real
    results[name] = {"code": code, "stderr": err.getvalue()}
print("RESULTS " + json.dumps(results))
"""


def error_paragraph(stderr: str) -> str:
    """The error message of a failed console run, checked to be one paragraph without usage or traceback."""
    assert "Traceback" not in stderr and "usage:" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("s2s-tasks: error: ")]
    assert len(lines) == 1, stderr[-3000:]
    # the message is the last thing written: one line, so no blank line or continuation inside it
    assert stderr.rstrip("\n").endswith(lines[0]), stderr[-3000:]
    return lines[0][len("s2s-tasks: error: "):]


def console(*args: str) -> str:
    """Run the console script in its own process; returns the error paragraph (exit status 2)."""
    result = subprocess.run([sys.executable, "-c", CONSOLE, *args], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-3000:]
    return error_paragraph(result.stderr)


def snapshot(*paths):
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny classification checkpoint (one optimizer step), an input and an earlier predictions file."""
    root = tmp_path_factory.mktemp("bad-config")
    # no logger: the LearningRateMonitor of configs/classification.yaml, which needs one, is left out
    main(["fit", "--task", "classification", *TINY, "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
          "--data.cache_dir", str(root / "hf-cache"), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false"])
    ckpt = root / "checkpoints" / "last.ckpt"  # where ModelCheckpoint writes without a logger
    inputs = root / "input.txt"
    inputs.write_text("a fine film\nawful\n", encoding="utf-8")
    predictions = root / "predictions.jsonl"
    predictions.write_text('{"index": 1, "prediction": "earlier run"}\n', encoding="utf-8")
    from tokenizers import Tokenizer

    from s2s_tasks.data.tokenizer import train_tokenizer

    other = train_tokenizer(["some other text entirely"] * 20, vocab_size=60)
    other_file = root / "other-tokenizer.json"
    other.save(str(other_file))
    checkpoint = torch.load(ckpt, weights_only=True)
    # a checkpoint whose stored tokenizer is not the one its embeddings were trained with
    checkpoint["s2s_tasks"]["tokenizer"] = other.to_str()
    torch.save(checkpoint, root / "mixed.ckpt")
    assert Tokenizer.from_file(str(other_file)).get_vocab_size() != checkpoint["hyper_parameters"]["vocab_size"]
    truncated = root / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    (root / "notes.ckpt").write_text("not a checkpoint\n", encoding="utf-8")
    return {"root": root, "ckpt": ckpt, "inputs": inputs, "predictions": predictions, "other_tokenizer": other_file}


@pytest.fixture(scope="module")
def runs(trained):
    """The console cases that share one process, run once; also checks that none of them touched
    the checkpoint or the earlier predictions file."""
    root, ckpt = trained["root"], str(trained["ckpt"])
    quiet = ["--trainer.logger", "false", "--trainer.default_root_dir", str(root / "runs"), "--data.cache_dir", str(root / "hf-cache")]
    predict = ["--data.predict_file", str(trained["inputs"]), "--predictions.output_file", str(trained["predictions"])]
    (root / "unknown-key.yaml").write_text("model:\n  d_model: 32\n  d_modle: 64\n", encoding="utf-8")
    (root / "wrong-type.yaml").write_text("trainer:\n  max_epochs: many\n", encoding="utf-8")
    (root / "broken.yaml").write_text("model:\n  d_model: [32\ntrainer: {}\n", encoding="utf-8")
    (root / "poetry.yaml").write_text("task: poetry\n", encoding="utf-8")
    cases = {
        "other_task": ["test", "--task", "ner", "--ckpt_path", ckpt, *quiet],
        "other_tokenizer": ["predict", "--ckpt_path", ckpt, "--data.tokenizer_file", str(trained["other_tokenizer"]), *predict, *quiet],
        "mixed_checkpoint": ["predict", "--ckpt_path", str(root / "mixed.ckpt"), *predict, *quiet],
        "not_a_checkpoint": ["predict", "--task", "classification", "--ckpt_path", str(root / "notes.ckpt"), *predict, *quiet],
        "no_last": ["test", "--task", "classification", "--ckpt_path", "last", *quiet],
        "unknown_key_yaml": ["fit", "--task", "classification", "--config", str(root / "unknown-key.yaml"), *quiet],
        "wrong_type_flag": ["fit", "--task", "classification", "--trainer.max_epochs", "abc", *quiet],
        "wrong_type_yaml": ["fit", "--task", "classification", "--config", str(root / "wrong-type.yaml"), *quiet],
        "broken_yaml": ["fit", "--task", "classification", "--config", str(root / "broken.yaml"), *quiet],
        "unknown_task_yaml": ["fit", "--config", str(root / "poetry.yaml"), *quiet],
        "copy_attention_encoder": ["fit", "--task", "classification", "--model.head", "encoder", "--model.copy_attention", "true",
                                   "--data.tokenizer_vocab_size", "300", *quiet],
    }
    before = snapshot(trained["ckpt"], trained["predictions"])
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    assert snapshot(trained["ckpt"], trained["predictions"]) == before  # nothing written before was modified
    return json.loads(line[len("RESULTS "):])


def console_error(runs, name: str) -> str:
    assert runs[name]["code"] == 2, runs[name]["stderr"][-3000:]
    return error_paragraph(runs[name]["stderr"])


def test_checkpoint_of_another_task(runs, trained):
    message = console_error(runs, "other_task")
    assert f"checkpoint {trained['ckpt']} was trained for task 'classification', not for task 'ner'" in message
    assert "Run with --task classification, or leave --task out" in message
    with pytest.raises(ValueError, match="was trained for task 'classification', not for task 'ner'"):
        main(["validate", "--task", "ner", "--ckpt_path", str(trained["ckpt"]), "--trainer.logger", "false",
              "--trainer.default_root_dir", str(trained["root"] / "runs")])


def test_checkpoint_and_tokenizer_file_that_do_not_match(runs, trained):
    message = console_error(runs, "other_tokenizer")
    assert f"data.tokenizer_file {trained['other_tokenizer']} does not match the tokenizer stored in checkpoint {trained['ckpt']}" in message
    assert "Drop --data.tokenizer_file: the checkpoint carries its own tokenizer" in message
    # a checkpoint whose stored tokenizer is not the one of its embeddings
    message = console_error(runs, "mixed_checkpoint")
    assert "mixed.ckpt is inconsistent: its weights (encoder.embed.token.weight) are for a vocabulary of" in message
    assert "Pass a checkpoint written by s2s-tasks fit" in message
    # the checkpoint itself (or one with the same vocabulary) as the tokenizer file is fine; labels must match
    with pytest.raises(ValueError, match="data.labels \\['positive', 'negative', 'neutral'\\] differ from the labels"):
        main(["test", "--ckpt_path", str(trained["ckpt"]), "--data.tokenizer_file", str(trained["ckpt"]),
              "--data.labels", "[positive, negative, neutral]", "--trainer.logger", "false"])


def test_truncated_foreign_or_missing_checkpoint(runs, trained):
    before = snapshot(trained["ckpt"], trained["predictions"])
    # no --task: the task cannot be read from the file, and the message says why rather than asking for --task
    message = console("predict", "--ckpt_path", str(trained["root"] / "truncated.ckpt"),
                      "--data.predict_file", str(trained["inputs"]), "--predictions.output_file", str(trained["predictions"]))
    assert "truncated.ckpt could not be read as a checkpoint (its zip archive ends early" in message
    assert "the file is truncated" in message and "Pass a complete checkpoint with --ckpt_path" in message
    assert snapshot(trained["ckpt"], trained["predictions"]) == before
    message = console_error(runs, "not_a_checkpoint")
    assert "notes.ckpt could not be read as a checkpoint: it is not a PyTorch checkpoint" in message
    message = console_error(runs, "no_last")
    assert "--ckpt_path last: there is no checkpoint to test (no last*.ckpt under" in message
    assert "Train one first (s2s-tasks fit --task classification), or pass a checkpoint file" in message
    # `last` is the newest last*.ckpt of this configuration's runs
    cli = main(["validate", "--task", "classification", "--ckpt_path", "last", "--trainer.default_root_dir", str(trained["root"]),
                "--trainer.logger", "false", "--data.cache_dir", str(trained["root"] / "hf-cache"),
                "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    assert cli.config.validate.ckpt_path == str(trained["ckpt"])
    assert snapshot(trained["ckpt"], trained["predictions"]) == before


def test_unknown_key_wrong_type_and_broken_yaml(runs, trained):
    # a flag in its own process: exit status 2 and no usage dump
    message = console("fit", "--task", "classification", "--model.d_modle", "64", "--trainer.logger", "false")
    assert message.startswith("unknown option --model.d_modle for s2s-tasks fit --task classification: did you mean --model.d_model?")
    message = console_error(runs, "unknown_key_yaml")
    assert f"unknown key model.d_modle (config file {trained['root'] / 'unknown-key.yaml'})" in message
    assert "did you mean model.d_model?" in message
    message = console_error(runs, "wrong_type_flag")
    assert "trainer.max_epochs (from --trainer.max_epochs) is 'abc', expected an integer or null" in message
    message = console_error(runs, "wrong_type_yaml")
    assert f"trainer.max_epochs (from config file {trained['root'] / 'wrong-type.yaml'}) is 'many', expected an integer or null" in message
    message = console_error(runs, "broken_yaml")
    assert f"config file {trained['root'] / 'broken.yaml'} is not valid YAML:" in message and "at line 3, column" in message
    # Python callers get the exception
    with pytest.raises(ConfigError, match="model.d_model \\(from --model.d_model\\) is 'big', expected an integer"):
        main(["fit", "--task", "classification", "--model.d_model", "big"])
    with pytest.raises(ConfigError, match="unknown option --model.generation.beam_sizes .* did you mean --model.generation.beam_size\\?"):
        main(["fit", "--task", "classification", "--model.generation.beam_sizes", "3"])


def test_unknown_or_conflicting_task_in_a_config_file(runs, trained, capsys):
    message = console_error(runs, "unknown_task_yaml")
    assert message.startswith(f"unknown task 'poetry' (from the task: key of config file {trained['root'] / 'poetry.yaml'}); "
                              "choose one of: translation, summarization")
    config = trained["root"] / "ner-task.yaml"
    config.write_text("task: ner\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"two tasks are named: 'classification' \\(from --task\\) and 'ner' \\(from the task: key of config file {config}\\)"):
        main(["fit", "--task", "classification", "--config", str(config)])


def test_incompatible_options_reach_the_console_as_one_paragraph(runs):
    message = console_error(runs, "copy_attention_encoder")
    assert message.startswith("model.copy_attention needs a decoder; it applies with model.head: generate only")
