"""Which settings a run takes from ``--ckpt_path``'s hyperparameters and which from its own command
line: what the command line sets wins, even a value equal to the config's default."""

import logging

import yaml

from s2s_tasks.cli import _merge_checkpoint_hparams, explicit_keys, main
from s2s_tasks.config_errors import config_files


def test_explicit_keys_of_flags_config_files_and_group_files(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"generation": {"beam_size": 4}}, "trainer": {"max_epochs": 2}}))
    nested = tmp_path / "nested.yaml"
    nested.write_text(yaml.safe_dump({"predict": {"data": {"max_source_tokens": 64}}}))
    group = tmp_path / "model.yaml"
    group.write_text(yaml.safe_dump({"class_path": "ignored.Here", "init_args": {"rnn_cell": "gru"}}))
    data_file = tmp_path / "train.jsonl"
    data_file.write_text('{"source": "a", "target": "b"}\n')
    keys = explicit_keys([
        "predict", "--task", "translation", "--model.generation.min_length=10", "--model.init_args.dropout", "0.3",
        "-c", str(config), "--config", str(nested), "--data.train_file", str(data_file),
        "--model.val_generation", "{strategy: beam, beam_size: 2}", "--save_attention", "--trainer.max_steps", "5",
    ])
    assert keys == {
        "model.generation.min_length", "model.dropout", "model.generation.beam_size", "data.max_source_tokens",
        "data.train_file", "model.val_generation.strategy", "model.val_generation.beam_size",
    }
    # a file given to a whole group: its keys (a class_path sets the group as a whole)
    assert explicit_keys(["fit", "--model", str(group)]) == {"model"}
    group.write_text(yaml.safe_dump({"rnn_cell": "gru", "attention": "bahdanau"}))
    assert explicit_keys(["fit", "--model", str(group)]) == {"model.rnn_cell", "model.attention"}
    # an inline mapping longer than a file name can be is read as a mapping, not looked up as a file
    long_mapping = "{" + ", ".join(f"key_{i}: {i}" for i in range(60)) + "}"
    assert len(explicit_keys(["fit", "--data", long_mapping])) == 60
    assert config_files(["fit", "--config", "{data: " + long_mapping + "}", "-c", str(config)]) == [str(config)]


def test_checkpoint_fills_only_what_the_run_did_not_set(caplog):
    defaults = {"dropout": 0.1, "learning_rate": 0.001, "d_model": 256, "generation": {"min_length": 0, "beam_size": 4}}
    stored = {"dropout": 0.3, "learning_rate": 0.01, "d_model": 64, "generation": {"min_length": 5, "beam_size": 2}}

    def merged(current, explicit):
        current = {**current, "generation": dict(current["generation"])}
        _merge_checkpoint_hparams(current, defaults, stored, explicit=frozenset(explicit))
        return current

    assert merged(defaults, ()) == stored  # nothing set: all the checkpoint's
    # set on the command line to the default's value: kept (this used to be replaced by the checkpoint's)
    run = merged(defaults, {"model.dropout", "model.generation.min_length"})
    assert run["dropout"] == 0.1 and run["generation"] == {"min_length": 0, "beam_size": 2}
    assert run["learning_rate"] == 0.01
    # a value different from the default is kept without being named explicitly (a Python caller's config)
    assert merged({**defaults, "learning_rate": 0.5}, ())["learning_rate"] == 0.5
    # a whole group named: everything under it is the run's
    assert merged(defaults, {"model.generation"})["generation"] == defaults["generation"]
    # the weights' shape always comes from the checkpoint, and a value set for it is reported
    with caplog.at_level(logging.WARNING, logger="s2s_tasks.cli"):
        assert merged(defaults, {"model.d_model"})["d_model"] == 64
    assert "model.d_model=256 ignored: the checkpoint was trained with 64" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="s2s_tasks.cli"):
        merged(defaults, {"model.generation.beam_size"})
    assert caplog.text == ""


def test_a_flag_equal_to_the_default_wins_over_the_checkpoint(tiny_checkpoint, tmp_path):
    """The tiny checkpoint decodes with generation.max_length 8; configs/translation.yaml says 128.
    ``--model.generation.max_length 128`` (the default's value) at predict time must give 128."""
    ckpt = tiny_checkpoint("translation")
    predict_file = tmp_path / "input.txt"
    predict_file.write_text("one short input\n", encoding="utf-8")

    def predict(*extra):
        return main([
            "predict", "--ckpt_path", ckpt, "--data.predict_file", str(predict_file),
            "--predictions.output_file", str(tmp_path / "out.jsonl"), "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", "false", "--data.cache_dir", str(tmp_path / "hf-cache"), *extra,
        ]).model.hparams

    def max_length(settings):
        return settings["max_length"] if isinstance(settings, dict) else settings.max_length

    assert max_length(predict().generation) == 8  # not set: the checkpoint's
    assert max_length(predict("--model.generation.max_length", "128").generation) == 128
    config = tmp_path / "decode.yaml"
    config.write_text(yaml.safe_dump({"model": {"generation": {"max_length": 128}}}))
    hparams = predict("--config", str(config))
    assert max_length(hparams.generation) == 128
    assert max_length(hparams.val_generation) == 8  # the file does not name it: the checkpoint's
    # an inline mapping for the group sets the keys it names; the others stay the checkpoint's
    hparams = predict("--model.generation", "{max_length: 128}")
    assert max_length(hparams.generation) == 128 and max_length(hparams.val_generation) == 8
    hparams = predict("--model.generation", "{min_length: 0}")
    assert max_length(hparams.generation) == 8


def test_a_checkpoint_older_than_a_weight_setting_loads_with_its_default(tiny_checkpoint, tmp_path, caplog):
    """A checkpoint trained before ``model.char_cnn`` existed does not record it. A run that sets it
    (here a flag; in practice the QA preset, which now adds the features) must still load the
    checkpoint as one without character features: it failed with missing ``features`` weights."""
    import torch

    from s2s_tasks.cli import with_predating_defaults
    from s2s_tasks.tasks.classification.model import ClassificationModule

    checkpoint = torch.load(tiny_checkpoint("classification"), map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["char_cnn"] == 0
    del checkpoint["hyper_parameters"]["char_cnn"]
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    with caplog.at_level(logging.WARNING, logger="s2s_tasks.cli"):
        cli = main([
            "validate", "--task", "classification", "--ckpt_path", str(older), "--model.char_cnn", "8",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
            "--data.cache_dir", str(tmp_path / "hf-cache"),
        ])
    assert cli.model.hparams.char_cnn == 0
    assert "model.char_cnn=8 ignored: the checkpoint was trained with 0" in caplog.text
    # only keys that shape the weights are filled in, and only the ones the checkpoint lacks
    filled = with_predating_defaults({"d_model": 64}, ClassificationModule)
    assert filled["d_model"] == 64 and filled["char_cnn"] == 0 and "learning_rate" not in filled
    assert with_predating_defaults({}, ClassificationModule) == {}
