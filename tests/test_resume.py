"""Exact resume and crash safety: a resumed run equals an uninterrupted one, a killed run resumes
with --ckpt_path last, a truncated newest checkpoint is skipped, a NaN loss stops training."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from s2s_tasks.callbacks import NonFiniteLossError, collect_rng_states, set_rng_states
from s2s_tasks.cli import main
from s2s_tasks.data.datamodule import ResumableDataLoader
from s2s_tasks.data.sampler import TokenBudgetBatchSampler
from s2s_tasks.registry import TASKS, config_dir
from s2s_tasks.seq2seq_module import Seq2SeqModule
from test_cli import TINY

#: 4 batches per epoch, no validation, no logger: only training and checkpoints
RUN = [
    "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "0", "--trainer.logger", "false",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--model.dropout", "0.3",
]


def callbacks_config(path: Path, every: int, **checkpoint_args) -> str:
    init_args = {"monitor": None, "every_n_train_steps": every, **checkpoint_args}
    # ResumeState and NonFiniteLossCheck are not listed: every model adds them (configure_callbacks)
    config = {"trainer": {"callbacks": [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": init_args},
    ]}}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path)


def common(tmp_path, cache, task="translation") -> list:
    tiny = TINY if task != "multitask" else [a for a in TINY if "generation" not in a and a != "12"]
    return ["--task", task, "--trainer.default_root_dir", str(tmp_path), "--data.cache_dir", str(cache), *tiny, *RUN]


def test_sampler_continues_an_epoch_and_reshuffles_every_epoch():
    sampler = TokenBudgetBatchSampler([3, 5, 2, 7, 4, 4, 6, 1, 3, 5] * 4, max_tokens=16, seed=3)
    sampler.sampler.set_epoch(1)  # where Lightning calls it (dataloader.batch_sampler.sampler)
    epoch1 = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) != epoch1  # every epoch has its own order
    resumed = TokenBudgetBatchSampler([3, 5, 2, 7, 4, 4, 6, 1, 3, 5] * 4, max_tokens=16, seed=3)
    resumed.load_state_dict({"epoch": 1, "batches_done": 3})
    assert list(resumed) == epoch1[3:] and len(resumed) == len(epoch1)
    assert list(resumed) == epoch1  # only the resumed iteration is shortened


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_loader_state_counts_the_batches_it_handed_out(num_workers):
    """Workers draw batches from the sampler ahead; the saved position is what training has received."""
    lengths = [3, 5, 2, 7, 4, 4, 6, 1, 3, 5] * 4

    def loader():
        return ResumableDataLoader(list(range(len(lengths))), batch_sampler=TokenBudgetBatchSampler(
            lengths, max_tokens=16, seed=3), collate_fn=list, num_workers=num_workers)

    first = loader()
    first.batch_sampler.set_epoch(1)
    epoch1 = [batch for batch in first]
    iterator = iter(first)
    taken = [next(iterator), next(iterator), next(iterator)]
    assert taken == epoch1[:3] and first.state_dict() == {"epoch": 1, "batches_done": 3}
    second = loader()
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == {"epoch": 1, "batches_done": 3}
    assert [batch for batch in second] == epoch1[3:]
    assert second.state_dict() == {"epoch": 2, "batches_done": 0}  # a finished epoch: the next one's start


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.save(collect_rng_states(), tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(again[0], expected[0]) and again[1:] == expected[1:]


@pytest.mark.parametrize("task", ["translation", "multitask"])
def test_resumed_fit_equals_uninterrupted_fit(tmp_path, caplog, task):
    """8 steps in one run; then 8 steps resumed from its checkpoints of step 6 (mid-epoch 1: the
    sampler position matters) and step 4 (end of epoch 0), with dropout (the random states matter).
    Multi-task: the task drawn for each step must continue the same way too."""
    config = callbacks_config(tmp_path / "callbacks.yaml", 2, save_top_k=-1, filename="step{step}",
                              auto_insert_metric_name=False)
    args = ["fit", *common(tmp_path / "run", tmp_path / "hf-cache", task), "--config", config, "--trainer.max_steps", "8"]
    full = main(args)
    weights = {k: v.clone() for k, v in full.model.state_dict().items()}
    loss = full.trainer.callback_metrics["train/loss"]
    for step in (6, 4):
        ckpt = tmp_path / "run" / "checkpoints" / f"step{step}.ckpt"
        assert torch.load(ckpt, weights_only=True)["global_step"] == step
        caplog.clear()
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
            warnings.simplefilter("always")
            resumed = main([*args, "--ckpt_path", str(ckpt)])
        # the train loader is resumable (Lightning does not warn), and the position it saved agrees
        # with Lightning's loop counters
        assert not [w for w in caught if "not resumable" in str(w.message)]
        messages = "\n".join(r.getMessage() for r in caplog.records)
        assert "differs from Lightning's loop counters" not in messages
        assert ("continues after its first 2 batches" in messages) == (step == 6)
        assert resumed.trainer.global_step == 8
        torch.testing.assert_close(resumed.trainer.callback_metrics["train/loss"], loss, rtol=0, atol=1e-5)
        for name, value in resumed.model.state_dict().items():
            torch.testing.assert_close(value, weights[name], rtol=0, atol=1e-5, msg=f"{name} after resuming at {step}")


def test_killed_run_resumes_from_last_and_skips_a_truncated_checkpoint(tmp_path, caplog):
    """SIGKILL mid-epoch; a half-written newer last checkpoint is reported and skipped."""
    config = callbacks_config(tmp_path / "callbacks.yaml", 2, save_top_k=0, save_last=True)
    args = ["fit", *common(tmp_path / "run", tmp_path / "hf-cache"), "--config", config]
    checkpoints = tmp_path / "run" / "checkpoints"
    last = checkpoints / "last.ckpt"
    code = "import sys; from s2s_tasks.cli import main; sys.argv = ['s2s-tasks', *sys.argv[1:]]; sys.exit(main())"
    process = subprocess.Popen([sys.executable, "-c", code, *args, "--trainer.max_steps", "100000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    saved = 0
    try:
        deadline = time.monotonic() + 90
        while saved < 5 and time.monotonic() < deadline and process.poll() is None:  # past the 2nd checkpoint
            time.sleep(0.2)
            if last.is_file():
                saved = torch.load(last, weights_only=True)["global_step"]  # written by rename: never partial
        assert process.poll() is None, process.stderr.read()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stderr.close()
    saved = torch.load(last, weights_only=True)["global_step"]
    assert saved >= 4 and saved % 2 == 0  # the kill lost at most one checkpoint interval (2 steps)

    # a newer last checkpoint cut off while being written
    truncated = checkpoints / "last-v1.ckpt"
    shutil.copyfile(last, truncated)
    with open(truncated, "r+b") as handle:
        handle.truncate(truncated.stat().st_size // 2)
    os.utime(truncated, (time.time() + 5, time.time() + 5))

    with caplog.at_level(logging.INFO):
        resumed = main([*args, "--ckpt_path", "last", "--trainer.max_steps", str(saved + 2)])
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert f"skipping {truncated}" in messages and "truncated" in messages
    assert resumed.config.fit.ckpt_path == str(last)
    assert f"continues after its first {saved % 4} batches" in messages or saved % 4 == 0
    assert resumed.trainer.global_step == saved + 2


def test_non_finite_loss_stops_with_the_step(tmp_path, monkeypatch):
    losses = Seq2SeqModule.training_losses

    def nan_at_step_3(self, batch):
        result = losses(self, batch)
        if self.trainer.global_step == 3:
            result["loss"] = result["loss"] * float("nan")
        return result

    monkeypatch.setattr(Seq2SeqModule, "training_losses", nan_at_step_3)
    with pytest.raises(NonFiniteLossError) as info:  # a ValueError: the console prints one paragraph, exit 2
        main(["fit", *common(tmp_path, tmp_path / "hf-cache"), "--trainer.max_steps", "6"])
    message = str(info.value)
    assert "loss is nan at step 3" in message
    assert "learning rate" in message and "--trainer.gradient_clip_val" in message and "bf16-mixed" in message


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_checkpoints_on_a_step_interval_and_resumes_exactly(task):
    callbacks = yaml.safe_load((config_dir() / f"{task}.yaml").read_text())["trainer"]["callbacks"]
    assert any(c.get("init_args", {}).get("every_n_train_steps") for c in callbacks)
    # last.ckpt after every validation too (the fit below checks what that does, for one task)
    last_writers = [c["init_args"] for c in callbacks if c.get("init_args", {}).get("save_last")]
    assert any(w.get("monitor", "absent") is None and not w.get("every_n_train_steps") for w in last_writers)
    assert all(w.get("enable_version_counter") is False for w in last_writers)
    module_class, _ = TASKS[task].classes()
    added = module_class.configure_callbacks(object.__new__(module_class))  # needs no state
    assert {type(c).__name__ for c in added} == {"ResumeState", "NonFiniteLossCheck"}


@pytest.mark.parametrize("task", ["classification"])
def test_last_checkpoint_holds_the_latest_validated_weights(tmp_path, task):
    """The shipped configs write last.ckpt after every validation as well as every N steps, so
    ``validate``/``predict --ckpt_path last`` after a fit read its final weights. Lightning 2.6
    writes a callback's save_last only when that callback saved a checkpoint itself: on the
    step-interval callback alone, last.ckpt kept the weights of the last multiple of N."""
    callbacks = yaml.safe_load((config_dir() / f"{task}.yaml").read_text(encoding="utf-8"))["trainer"]["callbacks"]
    checkpoints = [c for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    for callback in checkpoints:
        if "every_n_train_steps" in callback["init_args"]:
            callback["init_args"]["every_n_train_steps"] = 4  # the shipped 500, scaled to a 6-step run
    config = tmp_path / "callbacks.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": checkpoints}}), encoding="utf-8")
    cli = main(["fit", "--task", task, "--trainer.default_root_dir", str(tmp_path), "--data.cache_dir",
                str(tmp_path / "cache"), *TINY, "--config", str(config), "--trainer.logger", "false",
                "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1", "--trainer.max_epochs", "2",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    assert cli.trainer.global_step == 6
    (last,) = tmp_path.rglob("last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6
    assert not list(tmp_path.rglob("last-v*.ckpt"))  # both writers overwrite the one file
