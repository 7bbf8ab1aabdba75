"""Mixed precision on CPU through the `s2s-tasks` entry point: bf16-mixed fits, tests and predicts
(weights stay float32, the layers compute in bfloat16) for a generating task and an encoder-head
task; 16-mixed, which CPUs cannot run, becomes bf16-mixed with Lightning's warning naming both."""

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from s2s_tasks.cli import main
from s2s_tasks.registry import TASKS
from test_structured_cli import TINY, predict_input

#: CPU even where a GPU is present; no logger, progress bar or model summary
RUN = [
    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One data cache for the module: the tokenizer is trained once per task."""
    return tmp_path_factory.mktemp("hf-cache")


def record_precision(monkeypatch, module_class, methods=("training_step", "predict_step")) -> dict:
    """Wrap ``module_class``'s steps to record, per step method, whether CPU autocast was on, its
    dtype, the parameters' dtypes and the output dtypes of every ``nn.Linear`` the step ran."""
    seen = {name: set() for name in methods}
    for name in methods:
        original = getattr(module_class, name)

        def step(self, *args, _name=name, _original=original, **kwargs):
            outputs = set()
            hooks = [m.register_forward_hook(lambda m, i, out: outputs.add(out.dtype))
                     for m in self.modules() if isinstance(m, torch.nn.Linear)]
            try:
                result = _original(self, *args, **kwargs)
            finally:
                for hook in hooks:
                    hook.remove()
            params = frozenset(p.dtype for p in self.parameters())
            seen[_name].add((*cpu_autocast(), params, frozenset(outputs)))
            return result

        monkeypatch.setattr(module_class, name, step)
    return seen


def cpu_autocast() -> tuple:
    """(enabled, dtype) of CPU autocast (``torch.is_autocast_enabled(device)`` is torch >= 2.4)."""
    if hasattr(torch, "get_autocast_dtype"):
        return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()


def assert_finite(metrics: dict, *names: str) -> None:
    for name in names:
        value = float(metrics[name])
        assert math.isfinite(value), f"{name} = {value}"


@pytest.mark.parametrize("task, extra", [("translation", []), ("ner", ["--model.crf", "true"])])
def test_bf16_mixed_fits_tests_and_predicts_on_cpu(task, extra, tmp_path, cache, monkeypatch):
    module_class, _ = TASKS[task].classes()
    seen = record_precision(monkeypatch, module_class)
    common = ["--task", task, "--trainer.default_root_dir", str(tmp_path), "--data.cache_dir", str(cache),
              "--trainer.precision", "bf16-mixed", *RUN]
    fitted = main(["fit", *common, *TINY, *extra, "--trainer.max_steps", "3", "--trainer.limit_train_batches", "3",
                   "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1"])
    assert fitted.trainer.precision == "bf16-mixed" and fitted.trainer.global_step == 3
    assert_finite(fitted.trainer.callback_metrics, "train/loss", "val/loss")
    assert {p.dtype for p in fitted.model.parameters()} == {torch.float32}
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["state_dict"].values()
    assert {v.dtype for v in saved if v.is_floating_point()} == {torch.float32}

    tested = main(["test", *common, "--ckpt_path", str(ckpt), "--trainer.limit_test_batches", "1"])
    assert_finite(tested.trainer.callback_metrics, "test/loss")

    inputs = predict_input(task)
    output_file = tmp_path / "predictions.jsonl"
    main(["predict", *common, "--ckpt_path", str(ckpt), "--data.predict_file", str(inputs),
          "--predictions.output_file", str(output_file)])
    lines = output_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(inputs.read_text(encoding="utf-8").splitlines())
    assert [json.loads(line)["index"] for line in lines] == list(range(1, len(lines) + 1))

    # inside every training and predict step: autocast to bfloat16 on, float32 weights, bfloat16 matmuls
    for name, states in seen.items():
        assert states == {(True, torch.bfloat16, frozenset({torch.float32}), frozenset({torch.bfloat16}))}, name


def test_16_mixed_on_cpu_falls_back_to_bf16_mixed_with_a_warning(tmp_path, cache):
    """Lightning has no float16 autocast on CPU: it warns, naming the option and its replacement,
    and trains in bf16-mixed (with --trainer.accelerator auto on a GPU machine, 16-mixed runs as such)."""
    with warnings.catch_warnings(record=True) as caught:  # keeps the filters in force (ours included)
        fitted = main(["fit", "--task", "translation", "--trainer.default_root_dir", str(tmp_path),
                       "--data.cache_dir", str(cache), "--trainer.precision", "16-mixed", *RUN, *TINY,
                       "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"])
    messages = [str(w.message) for w in caught]
    assert any("precision='16-mixed'" in m and "not supported on CPU" in m and "bf16-mixed" in m
               for m in messages), messages
    assert fitted.trainer.precision == "bf16-mixed"
    assert_finite(fitted.trainer.callback_metrics, "train/loss")


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch, caplog):
    """Where the CPU lacks AVX512-BF16/AMX the user is told bf16 is slow there and what to set."""
    import torch

    from s2s_tasks.module import warn_if_slow_bf16

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with caplog.at_level("WARNING"):
        assert warn_if_slow_bf16("bf16-mixed", torch.device("cpu"))
    assert "--trainer.precision 32-true" in caplog.text
    assert not warn_if_slow_bf16("32-true", torch.device("cpu"))
    assert not warn_if_slow_bf16("bf16-mixed", torch.device("cuda", 0))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert not warn_if_slow_bf16("bf16-true", torch.device("cpu"))
