"""``--preset real``: a partial config layered between a task's default config and the user's
``--config`` files and flags."""

import pytest
import yaml

from s2s_tasks.cli import main
from s2s_tasks.registry import TASKS, config_dir, get_task, merge_configs

REAL = sorted(p.stem for p in (config_dir() / "presets" / "real").glob("*.yaml"))


def _leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _printed_config(capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_every_single_task_has_a_real_preset():
    assert REAL == sorted(t for t in TASKS if t != "multitask")


@pytest.mark.parametrize("task", REAL)
def test_real_preset_overrides_the_default_and_flags_override_it(task, capsys, tmp_path):
    preset = yaml.safe_load((config_dir() / "presets" / "real" / f"{task}.yaml").read_text())
    config = _printed_config(capsys, ["fit", "--task", task, "--preset", "real"])
    default = yaml.safe_load((config_dir() / f"{task}.yaml").read_text())
    appended = []
    for path, value in _leaves(preset):
        node = config
        if path[-1].endswith("+"):  # appended to the default config's list
            appended.append((path, value))
            continue
        for key in path:
            node = node[key]
        assert node == value, f"{task}: {'.'.join(path)}"
    for path, value in appended:
        node, base = config, default
        for key in (*path[:-1], path[-1][:-1]):
            node, base = node[key], base.get(key, {}) if isinstance(base, dict) else {}
        assert len(node) == len(base or []) + len(value), f"{task}: {'.'.join(path)}"
        if path[-1] == "callbacks+":
            for printed, wanted in zip(node[len(base or []):], value):
                assert printed["class_path"] == wanted["class_path"]
                assert printed["init_args"].items() >= wanted.get("init_args", {}).items()
    # a flag still wins over the preset, and the default config's keys the preset leaves alone stay
    config = _printed_config(capsys, ["fit", "--task", task, "--preset", "real", "--model.dropout", "0.25"])
    assert config["model"]["dropout"] == 0.25
    added = [cb["class_path"] for cb in preset.get("trainer", {}).get("callbacks+", [])]
    assert [cb["class_path"] for cb in config["trainer"]["callbacks"]] == [cb["class_path"] for cb in default["trainer"]["callbacks"]] + added
    assert config["trainer"]["callbacks"][0]["init_args"]["monitor"] == default["trainer"]["callbacks"][0]["init_args"]["monitor"]


def test_qa_preset_adds_an_ema_of_the_weights_to_the_default_callbacks(capsys):
    config = _printed_config(capsys, ["fit", "--task", "qa", "--preset", "real"])
    callbacks = config["trainer"]["callbacks"]
    assert callbacks[-1]["class_path"].endswith("EMAWeightAveraging")
    assert callbacks[-1]["init_args"]["decay"] == 0.995
    assert sum(cb["class_path"].endswith("ModelCheckpoint") for cb in callbacks) == 3
    # the command line still replaces the merged list
    config = _printed_config(capsys, ["fit", "--task", "qa", "--preset", "real", "--trainer.callbacks", "[]"])
    assert config["trainer"]["callbacks"] in ([], None)


def test_a_plus_key_appends_to_the_default_list_and_a_plain_key_replaces_it():
    base = {"trainer": {"callbacks": [{"class_path": "A"}], "max_epochs": 3}, "model": {"d_model": 128}}
    merged = merge_configs(base, {"trainer": {"callbacks+": [{"class_path": "B"}], "max_epochs": 5}})
    assert merged == {"trainer": {"callbacks": [{"class_path": "A"}, {"class_path": "B"}], "max_epochs": 5},
                      "model": {"d_model": 128}}
    assert base["trainer"]["callbacks"] == [{"class_path": "A"}]  # the base is not changed
    assert merge_configs(base, {"trainer": {"callbacks": [{"class_path": "B"}]}})["trainer"]["callbacks"] == [{"class_path": "B"}]
    # one item without a list, and a list the base does not have
    assert merge_configs({}, {"trainer": {"callbacks+": {"class_path": "B"}}}) == {"trainer": {"callbacks": [{"class_path": "B"}]}}
    with pytest.raises(ValueError, match=r"model\.d_model\+: appends to a list, but model\.d_model is 128"):
        merge_configs(base, {"model": {"d_model+": [1]}})


def test_unknown_preset_names_the_available_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--task", "ner", "--preset", "huge"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--preset huge" in err and "presets of ner: real" in err


@pytest.mark.parametrize("task", REAL)
def test_real_preset_trains_a_step_on_the_sample(task, tmp_path):
    """The preset's models (full size) build and run a training and a validation step."""
    cli = main([
        "fit", "--task", task, "--preset", "real",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
        "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
        "--trainer.fast_dev_run", "1", "--data.cache_dir", str(tmp_path / "cache"),
        "--model.val_generation.max_length", "8",
    ])
    assert cli.trainer.global_step == 1
    assert any(k.startswith("val/") for k in cli.trainer.callback_metrics)
    # with --ckpt_path the CLI reads the defaults again (jsonargparse's get_defaults), which must
    # take the preset's dataclass-typed keys (model.generation) as the fit did
    checkpoint = tmp_path / "preset.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    cli = main([
        "validate", "--task", task, "--preset", "real", "--ckpt_path", str(checkpoint),
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.limit_val_batches", "1", "--data.cache_dir", str(tmp_path / "cache"),
        "--model.val_generation.max_length", "8",
    ])
    assert cli.model.hparams.d_model == yaml.safe_load((config_dir() / "presets" / "real" / f"{task}.yaml").read_text())["model"]["d_model"]
    assert any(k.startswith("val/") for k in cli.trainer.callback_metrics)


def test_qa_preset_checkpoints_hold_the_averaged_weights(tmp_path):
    """With the preset's EMAWeightAveraging, a checkpoint's state_dict is the average (what test and
    predict load) and the raw weights travel beside it for resuming."""
    import torch

    common = ["--task", "qa", "--preset", "real", "--trainer.default_root_dir", str(tmp_path),
              "--trainer.logger", "false", "--data.cache_dir", str(tmp_path / "cache"),
              "--model.d_model", "32", "--model.embedding_dim", "32", "--data.tokenizer_vocab_size", "300"]
    # validated (and checkpointed) after step 2, while training goes on
    cli = main(["fit", *common, "--trainer.max_steps", "3", "--trainer.val_check_interval", "2",
                "--trainer.limit_val_batches", "1"])
    assert cli.trainer.global_step == 3
    best = cli.trainer.checkpoint_callback.best_model_path
    assert "step2" in best
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    assert set(checkpoint["state_dict"]) == set(checkpoint["current_model_state"])
    assert any(not torch.equal(checkpoint["state_dict"][k], checkpoint["current_model_state"][k]) for k in checkpoint["state_dict"])
    cli = main(["test", *common, "--ckpt_path", best, "--trainer.limit_test_batches", "1"])
    assert not any(type(cb).__name__ == "EMAWeightAveraging" for cb in cli.trainer.callbacks)  # fit only
    loaded = cli.model.state_dict()
    assert all(torch.equal(loaded[k], value) for k, value in checkpoint["state_dict"].items())
    assert any(k.startswith("test/") for k in cli.trainer.callback_metrics)


def test_default_config_with_a_preset_is_the_config_the_cli_runs_with(capsys):
    merged = get_task("dialogue").default_config("real")
    config = _printed_config(capsys, ["fit", "--task", "dialogue", "--preset", "real"])
    for path, value in _leaves(merged["model"]):
        node = config["model"]
        for key in path:
            node = node[key]
        assert node == value, path
    assert merged["data"]["max_tokens"] == config["data"]["max_tokens"] == 4096  # the preset's, not the base's 2048
