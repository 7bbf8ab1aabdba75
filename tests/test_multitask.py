"""Multi-task training: one shared network learns a generation, a tagging and a classification
task together; predictions are routed by task; a multi-task checkpoint fine-tunes on one task."""

import json

import os

import pytest
import pytorch_lightning as pl
import torch

from helpers import quiet_trainer, write_jsonl
from s2s_tasks.cli import main
from s2s_tasks.data.multitask import MultiTaskDataModule, task_token
from s2s_tasks.multitask_module import MultiTaskModule

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def _token_cache(tmp_path, monkeypatch):
    """Tokenized splits cached under the test's directory, not the user's cache."""
    monkeypatch.setenv("S2S_TASKS_CACHE", str(tmp_path / "token-cache"))

TINY = dict(d_model=64, ffn_dim=128, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, dropout=0.0,
            learning_rate=3e-3, warmup_steps=20)
TASKS = {"translation": {}, "ner": {}, "classification": {}}
SEED = int(os.environ.get("S2S_TEST_SEED", "0"))


def build(mode="heads", tasks=TASKS, model_tasks=None, **data_kwargs):
    data = MultiTaskDataModule(tasks=tasks, mode=mode, tokenizer_vocab_size=800, max_tokens=1024, **data_kwargs)
    model = MultiTaskModule(vocab_size=data.vocab_size, pad_id=data.pad_id, mode=mode, task_options=model_tasks,
                            task_setup=data.task_setup, **TINY)
    return data, model


def smaller(tmp_path, task, n):
    """Data settings of a task: the first ``n`` training records of its embedded sample, and its validation split."""
    from s2s_tasks.registry import get_task

    sample = get_task(task).classes()[1].sample_dir
    lines = (sample / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path / f"{task}_train.jsonl"
    path.write_text("".join(lines[:n]), encoding="utf-8")
    return {"train_file": str(path), "validation_file": str(sample / "validation.jsonl")}


def test_joint_training_learns_every_task(tmp_path):
    pl.seed_everything(SEED)
    # 4,000 translation pairs and 1,000 examples of each other task: temperature sampling (T=2)
    # gives translation, the hardest, half of the steps
    tasks = {"translation": {}, **{name: smaller(tmp_path, name, 1000) for name in ("ner", "classification")}}
    data, model = build(tasks=tasks)
    assert data.hparams.sampling == "temperature"
    # one shared encoder: the NER and classification heads read the translation model's encoder
    shared = model.shared.encoder
    assert model.task_modules["ner"].encoder is shared and model.task_modules["classification"].encoder is shared
    assert model.task_modules["translation"].model is model.shared
    trainer = quiet_trainer(tmp_path, max_steps=500, max_epochs=20, check_val_every_n_epoch=20)
    before = trainer.validate(model, datamodule=data, verbose=False)[0]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]
    # each task's metric, under its own name, well above the untrained model's
    assert after["val/translation/chrf"] > before["val/translation/chrf"] + 5, (before, after)
    assert after["val/translation/loss"] < 0.6 * before["val/translation/loss"], (before, after)
    assert after["val/ner/f1"] > before["val/ner/f1"] + 40, (before, after)
    assert after["val/classification/accuracy"] > before["val/classification/accuracy"] + 10, (before, after)
    primary = [after["val/translation/bleu"], after["val/ner/f1"], after["val/classification/accuracy"]]
    assert after["val/score"] == pytest.approx(sum(primary) / 3, abs=1e-3)


def test_batches_are_single_task_and_generating_inputs_carry_the_task_token(tmp_path):
    data, model = build()
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(model, datamodule=data)  # sets the data up
    token_ids = {name: data.tokenizer.token_to_id(task_token(name)) for name in TASKS}
    assert token_ids["translation"] is not None and token_ids["ner"] is None  # encoder heads: no prefix
    seen = set()
    for batch in data.train_dataloader():
        seen.add(batch["task"])
        first = batch["src_ids"][:, 0]
        if batch["task"] == "translation":
            assert (first == token_ids["translation"]).all() and batch["src_mask"][:, 0].all()
        else:
            if batch["task"] == "ner":
                assert "tgt_in" not in batch  # an encoder head: no decoder input
            assert not (first == token_ids["translation"]).any()
    assert seen == set(TASKS)


def test_text_to_text_mode_generates_every_task_and_losses_fall(tmp_path):
    pl.seed_everything(SEED)
    data, model = build(mode="text_to_text")
    assert data.task_setup["ner"]["head"] == "generate" and data.task_setup["classification"]["head"] == "generate"
    assert all(module.model is model.shared for module in model.task_modules.values())
    trainer = quiet_trainer(tmp_path, max_steps=150, max_epochs=20, check_val_every_n_epoch=20)
    before = trainer.validate(model, datamodule=data, verbose=False)[0]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]
    for name in TASKS:
        assert after[f"val/{name}/loss"] < 0.75 * before[f"val/{name}/loss"], (name, before, after)
    assert {"val/ner/f1", "val/classification/accuracy", "val/translation/bleu", "val/score"} <= set(after)


def test_loss_weight_scales_the_task_loss():
    data, model = build(model_tasks={"ner": {"loss_weight": 0.25}})
    data.setup("fit")
    batch = next(b for b in data.train_dataloader() if b["task"] == "ner")
    model.eval()  # no dropout: the same loss twice
    assert model.loss_weights == {"translation": 1.0, "ner": 0.25, "classification": 1.0}
    with pytest.warns(UserWarning, match="self.log"):  # no trainer attached: logging is skipped
        loss = model.training_step(batch, 0)
    assert loss.item() == pytest.approx(0.25 * model(batch)["loss"].item(), rel=1e-6)


@pytest.mark.parametrize("tasks, model_tasks, match", [
    ({"nosuch": {}}, None, "unknown task 'nosuch'"),
    ({"ner": {"max_tokens": 10}}, None, r"data.tasks.ner.max_tokens: set data.max_tokens"),
    ({"ner": {"colour": 1}}, None, r"data.tasks.ner.colour is not a data setting"),
    ({"ner": {}}, {"translation": {}}, r"model.task_options.translation: 'translation' is not one of data.tasks"),
    ({"ner": {}}, {"ner": {"d_model": 8}}, r"model.task_options.ner.d_model cannot be set per task: set model.d_model once"),
    ({"ner": {}}, {"ner": {"head": "generate"}}, r"set data.tasks.ner.head"),
    ({"ner": {}}, {"ner": {"peft": "lora"}}, r"model.task_options.ner.peft cannot be set per task: a multi-task model"),
    ({"classification": {}}, {"classification": {"ensemble": ["b.ckpt"]}},
     r"model.task_options.classification.ensemble cannot be set per task: ensembles average single-task checkpoints"),
    ({"classification": {}}, {"classification": {"word_dropout": 0.1}},
     r"model.task_options.classification.word_dropout cannot be set per task: word dropout is a single-task option"),
])
def test_bad_task_settings_name_the_key_and_fix(tasks, model_tasks, match):
    with pytest.raises(ValueError, match=match):
        build(tasks=tasks, model_tasks=model_tasks)


def cli(tmp_path, *args, logger=("--trainer.logger", "false")):
    return main([
        *args, "--task", "multitask", *logger, "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--model.d_model", "32", "--model.ffn_dim", "64",
        "--model.num_heads", "2", "--data.tokenizer_vocab_size", "1200",
    ])


def test_cli_fit_predict_routes_by_task_and_a_task_fine_tunes_from_the_checkpoint(tmp_path):
    run = cli(tmp_path, "fit", "--trainer.limit_train_batches", "30", "--trainer.max_epochs", "1",
              logger=("--trainer.logger.init_args.save_dir", str(tmp_path / "logs")))
    (ckpt,) = (str(p) for p in (tmp_path / "logs").rglob("last.ckpt"))
    multitask_f1 = float(run.trainer.callback_metrics["val/ner/f1"])
    tested = cli(tmp_path, "test", "--ckpt_path", ckpt).trainer.callback_metrics
    assert {"test/translation/bleu", "test/ner/f1", "test/classification/accuracy", "test/score"} <= set(tested)

    # predict: each record goes to the task its "task" field names; output in input order
    inputs = write_jsonl(tmp_path / "mixed.jsonl", [
        {"task": "ner", "text": "Rosa Weller scored twice as Drossel Steel beat Caldera Rovers 2-1 ."},
        {"task": "translation", "source": "The foxes were slow."},
        {"task": "classification", "text": "my new headset : the delivery feels really lovely ."},
        {"task": "translation", "source": "My woman always cleans the forest."},
    ])
    out = tmp_path / "predictions.jsonl"
    cli(tmp_path, "predict", "--ckpt_path", ckpt, "--data.predict_file", inputs, "--predictions.output_file", str(out))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task"] for r in records] == ["ner", "translation", "classification", "translation"]
    assert [r["index"] for r in records] == [1, 2, 3, 4]
    assert "entities" in records[0] and isinstance(records[1]["prediction"], str)
    assert records[2]["label"] in {"negative", "neutral", "positive"}

    # a record without a task and no data.predict_task: a clear error naming the line and the fix
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"task": "ner", "text": "A B ."}, {"text": "no task here"}])
    with pytest.raises(ValueError, match=r"line 2: the record has no 'task' field .* data.predict_task"):
        cli(tmp_path, "predict", "--ckpt_path", ckpt, "--data.predict_file", bad, "--predictions.output_file", str(out))

    # one task from the multi-task checkpoint: the same weights, tokenizer and labels give the same F1
    single = main([
        "validate", "--task", "ner", "--model.init_from", ckpt, "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "ner"),
    ])
    assert float(single.trainer.callback_metrics["val/f1"]) == pytest.approx(multitask_f1, abs=1e-6)
    assert single.model.hparams.d_model == 32  # the weight-shaping settings come from the checkpoint
    # and it trains further on that task alone
    tuned = main([
        "fit", "--task", "ner", "--model.init_from", ckpt, "--trainer.max_steps", "3", "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "ner"),
    ])
    assert tuned.trainer.global_step == 3
    # or with LoRA: the multi-task weights stay frozen, only the low-rank updates and the head learn
    lora = main([
        "fit", "--task", "ner", "--model.init_from", ckpt, "--model.peft", "lora", "--trainer.max_steps", "3",
        "--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "lora"),
    ])
    stored = torch.load(ckpt, weights_only=True)["state_dict"]
    frozen = [(name, p) for name, p in lora.model.named_parameters() if not p.requires_grad]
    assert frozen and all(torch.equal(p, stored[f"task_modules.ner.{name}"]) for name, p in frozen)
    assert any("lora" in name for name, p in lora.model.named_parameters() if p.requires_grad)


def test_two_processes_train_and_evaluate_every_task_like_one(tmp_path):
    """DDP (gloo, 2 CPU processes, unused heads allowed): fit runs, and its validation of every
    task over the whole split (ranks' batches gathered, padding duplicates dropped) equals one
    process validating the same checkpoint."""
    from test_distributed import csv_metrics, run_cli

    root = tmp_path / "two"
    tiny = ["--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2", "--model.num_encoder_layers", "1",
            "--model.num_decoder_layers", "1", "--data.tokenizer_vocab_size", "600", "--trainer.enable_progress_bar", "false"]
    run_cli(["fit", "--task", "multitask", *tiny, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4",
             "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp_find_unused_parameters_true",
             "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root / "logs")], tmp_path)
    two = csv_metrics(root / "logs")
    (ckpt,) = (root / "logs").rglob("last.ckpt")
    one = main(["validate", "--task", "multitask", "--ckpt_path", str(ckpt), *tiny, "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path / "one")]).trainer.callback_metrics
    for name in ("val/translation/loss", "val/translation/chrf", "val/ner/loss", "val/ner/f1",
                 "val/classification/accuracy", "val/score"):
        assert two[name] == pytest.approx(float(one[name]), rel=1e-6, abs=1e-6), name


def test_predict_from_a_checkpoint_takes_its_task_list(tmp_path):
    """A model trained on other tasks than configs/multitask.yaml lists predicts from --ckpt_path
    alone; a .txt file of one task goes to --data.predict_task."""
    cli(tmp_path, "fit", "--data.tasks", '{"ner": {}, "relation_extraction": {}}', "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "0", "--trainer.max_epochs", "1",
        logger=("--trainer.logger.init_args.save_dir", str(tmp_path / "logs")))
    (ckpt,) = (tmp_path / "logs").rglob("last.ckpt")
    inputs = tmp_path / "in.txt"
    inputs.write_text("Rosa Weller scored twice .\nRain delayed play in Oltan .\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    run = cli(tmp_path, "predict", "--ckpt_path", str(ckpt), "--data.predict_file", str(inputs), "--data.predict_task", "ner",
              "--predictions.output_file", str(out))
    assert list(run.model.task_modules) == ["ner", "relation_extraction"]
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["task"], r["index"]) for r in records] == [("ner", 1), ("ner", 2)]
    assert all(len(r["tags"]) == len(r["source"].split()) for r in records)
