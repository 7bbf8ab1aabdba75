"""benchmarks/decoding.py: the built-in strategies and decodings given with ``--variant`` all
validate the same checkpoint, and a bad variant is refused with the form it wants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DECODING = Path(__file__).resolve().parents[1] / "benchmarks" / "decoding.py"


def _run(*args: str):
    return subprocess.run([sys.executable, str(DECODING), *args], capture_output=True, text=True, timeout=600)


def test_strategies_and_variants_validate_one_checkpoint(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("dialogue")
    out = tmp_path / "decoding.json"
    proc = _run("--ckpt_path", ckpt, "--json", str(out), "--strategy", "greedy",
                "--variant", "greedy_min6=--model.val_generation.strategy greedy --model.val_generation.min_length 6",
                "--", "--trainer.enable_progress_bar", "false", "--data.cache_dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["results"]) == ["greedy", "greedy_min6"]
    assert result["decodings"]["greedy_min6"][-2:] == ["--model.val_generation.min_length", "6"]
    plain, longer = (result["results"][name]["metrics"] for name in ("greedy", "greedy_min6"))
    for metrics in (plain, longer):
        assert {"val/bleu2", "val/len_ratio", "val/distinct2"} <= set(metrics)
    # EOS is forbidden for 6 tokens, and the first steps are greedy's own: never shorter
    assert longer["val/len_ratio"] >= plain["val/len_ratio"] > 0


def test_a_variant_without_flags_is_refused():
    proc = _run("--ckpt_path", "x.ckpt", "--variant", "lonely")
    assert proc.returncode == 2
    assert "--variant wants NAME=FLAGS" in proc.stderr
