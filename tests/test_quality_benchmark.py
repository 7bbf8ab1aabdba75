"""benchmarks/quality.py: with --seeds, the seeds' best checkpoints are validated as one ensemble
where the task's models can be averaged, and NER's runs are reported without one; the best
checkpoint is validated with the decoding test and predict use."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_presets import _printed_config  # the tests folder is on sys.path (pytest's default import mode)

from s2s_tasks.generation import GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402


def _fake_run(task, max_time, max_epochs, extra, workdir, decode=(), save=lambda r: None):
    seed = extra[-1]
    return {"task": task, "args": extra, "max_time": max_time, "torch_threads": 1, "untrained": {"val/f1": 1.0},
            "epochs": 2, "steps": 10, "wall_seconds": 1.0, "cpu_seconds": 1.0,
            "best_checkpoint": f"{workdir}/best-{seed}.ckpt", "best": {"val/f1": float(seed), "seconds": 1.0}}


@pytest.mark.parametrize("task", ["ner", "classification"])
def test_seeds_make_an_ensemble_only_where_models_average(task, tmp_path, monkeypatch):
    validated = []
    monkeypatch.setattr(quality, "run", _fake_run)
    monkeypatch.setattr(quality, "validate_in_new_process", lambda args: validated.append(args) or {"val/f1": 9.0})
    result = quality.run_ensemble(task, ["1", "3"], "00:00:01:00", None, [], tmp_path)
    assert result["trained"]["val/f1"] == pytest.approx(2.0)  # the members' mean
    if task == "ner":
        assert validated == [] and result["best"] == {} and "not averaged" in result["ensemble_skipped"]
    else:
        (args,) = validated
        assert args[args.index("--ckpt_path") + 1].endswith("best-1.ckpt")
        assert args[args.index("--model.ensemble") + 1] == f'["{tmp_path}/seed3/best-3.ckpt"]'
        assert result["best"] == {"val/f1": 9.0} and "ensemble_skipped" not in result


@pytest.mark.parametrize("preset", [None, "real"])
def test_the_best_checkpoint_is_validated_with_the_test_decoding(preset, capsys):
    preset_args = ["--preset", preset] if preset else []
    flags = quality.default_decoding(["--task", "dialogue", *preset_args])
    assert len(flags) == 2 * len(GenerationConfig.__dataclass_fields__)  # every field, so nothing of val_generation is left
    config = _printed_config(capsys, ["validate", "--task", "dialogue", *preset_args, *flags])
    assert config["model"]["val_generation"] == config["model"]["generation"]
    # the sample config's beam search; the real preset's nucleus sampling, seeded
    assert config["model"]["generation"]["strategy"] == ("sample" if preset else "beam")
    assert config["model"]["val_generation"]["seed"] == (1 if preset else None)


def _generation_file(tmp_path):
    path = tmp_path / "generation.yaml"
    path.write_text("model:\n  generation:\n    strategy: beam\n    beam_size: 3\n    min_length: 2\n")
    return path


@pytest.mark.parametrize("source", ["keys", "whole", "config_file", "model_file"])
def test_generation_settings_of_the_run_change_the_default_decoding(source, capsys, tmp_path):
    """Wherever the run's arguments set model.generation: single keys, the whole mapping as one
    flag, a --config file or a --model file."""
    extra = {
        "keys": ["--model.generation.beam_size", "3", "--model.generation.min_length=2"],
        "whole": ["--model.generation", '{"strategy": "beam", "beam_size": 3, "min_length": 2}'],
        "config_file": ["--config", str(_generation_file(tmp_path))],
        "model_file": ["--model", str(tmp_path / "model.yaml")],
    }[source]
    (tmp_path / "model.yaml").write_text("generation:\n  strategy: beam\n  beam_size: 3\n  min_length: 2\n")
    run = ["--task", "translation", "--preset", "real", *extra]
    flags = quality.default_decoding(run)
    config = _printed_config(capsys, ["validate", *run, *flags])
    assert config["model"]["val_generation"] == config["model"]["generation"]
    assert config["model"]["val_generation"]["beam_size"] == 3 and config["model"]["val_generation"]["min_length"] == 2


@pytest.mark.parametrize("task", ["qa", "ner", "classification", "relation_extraction"])
def test_encoder_heads_have_no_decoding_unless_they_generate(task):
    assert quality.default_decoding(["--task", task, "--preset", "real"]) == ()
    flags = quality.default_decoding(["--task", task, "--preset", "real", "--model.head", "generate"])
    assert "--model.val_generation.strategy" in flags


def test_a_preset_among_the_run_arguments_sets_the_default_decoding(tmp_path, monkeypatch):
    decodings = []
    result = {"task": "dialogue", "untrained": {}, "trained": {}, "best": {}, "wall_seconds": 1.0, "steps": 1}
    monkeypatch.setattr(quality, "run", lambda task, *args, **kwargs: decodings.append(args[4]) or result)
    for preset_args in ([], ["--preset", "real"]):
        monkeypatch.setattr(sys, "argv", ["quality.py", "--task", "dialogue", "--json", str(tmp_path / "q.json"), "--", *preset_args])
        quality.main()
    assert decodings == [quality.default_decoding(["--task", "dialogue"]),
                         quality.default_decoding(["--task", "dialogue", "--preset", "real"])]
    assert decodings[0] != decodings[1]


def test_one_seed_is_one_run_with_that_seed(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(quality, "run", lambda task, *args, **kwargs: calls.append(args) or {**_fake_run(task, *args), "trained": {}})
    monkeypatch.setattr(quality, "run_ensemble", lambda *args, **kwargs: pytest.fail("one seed is not an ensemble"))
    monkeypatch.setattr(sys, "argv", ["quality.py", "--task", "ner", "--seeds", "7", "--json", str(tmp_path / "q.json"),
                                      "--", "--trainer.max_steps", "1"])
    quality.main()
    (args,) = calls
    assert args[2] == ["--trainer.max_steps", "1", "--seed_everything", "7"]


def test_a_run_records_every_validation_of_its_fit(tmp_path, monkeypatch):
    """The per-epoch curve goes into the JSON (it used to be copied from the logs by hand)."""
    monkeypatch.setattr(quality, "validate_in_new_process", lambda args: {"val/accuracy": 50.0})
    result = quality.run("classification", "", 2, ["--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar",
                                                    "false"], tmp_path)
    curve = result["curve"]
    assert [(point["epoch"], point["step"]) for point in curve] == [(0, 2), (1, 4)]
    assert all(isinstance(point["val/accuracy"], float) and "val/loss" in point for point in curve)
    # the last validation is the run's final metrics
    assert curve[-1]["val/accuracy"] == pytest.approx(result["trained"]["val/accuracy"])
