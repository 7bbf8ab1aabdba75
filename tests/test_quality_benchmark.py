"""benchmarks/quality.py --seeds: the seeds' best checkpoints are validated as one ensemble
where the task's models can be averaged, and NER's runs are reported without one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
