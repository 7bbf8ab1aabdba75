"""``--preset real``: a partial config layered between a task's default config and the user's
``--config`` files and flags."""

import pytest
import yaml

from s2s_tasks.cli import main
from s2s_tasks.registry import TASKS, config_dir

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
    for path, value in _leaves(preset):
        node = config
        for key in path:
            node = node[key]
        assert node == value, f"{task}: {'.'.join(path)}"
    # a flag still wins over the preset, and the default config's keys the preset leaves alone stay
    config = _printed_config(capsys, ["fit", "--task", task, "--preset", "real", "--model.dropout", "0.25"])
    assert config["model"]["dropout"] == 0.25
    default = yaml.safe_load((config_dir() / f"{task}.yaml").read_text())
    assert [cb["class_path"] for cb in config["trainer"]["callbacks"]] == [cb["class_path"] for cb in default["trainer"]["callbacks"]]
    assert config["trainer"]["callbacks"][0]["init_args"]["monitor"] == default["trainer"]["callbacks"][0]["init_args"]["monitor"]


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
