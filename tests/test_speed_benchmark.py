"""benchmarks/speed.py runs end to end at tiny sizes (ours only, no transformers needed): the
timings, the fused-loss and logits-loss training steps with either AdamW and the per-cell memory probes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
TINY = ["--no_hf", "--parts", "1,2", "--only", "train_fp32", "--only", "greedy", "--repeats", "1", "--threads", "1",
        "--d_model", "16", "--layers", "1", "--heads", "2", "--ffn", "32", "--vocab", "64", "--batch", "2",
        "--src_len", "6", "--tgt_len", "5", "--data", ""]


@pytest.mark.parametrize("loss,optimizer", [("fused", "fused"), ("logits", "default")])
def test_speed_benchmark_runs_and_measures_memory_per_cell(tmp_path, loss, optimizer):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(SPEED), *TINY, "--ours_loss", loss, "--ours_adamw", optimizer,
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["args"]["ours_loss"] == loss and result["args"]["ours_adamw"] == optimizer
    for part in ("transformer", "rnn"):
        for kind in ("train_fp32", "greedy"):
            cell = result[part][kind]["ours"]
            assert cell["tokens_per_s_median"] > 0
            # measured in a fresh process (a number, not the None of a failed probe)
            assert isinstance(cell["peak_memory_mib"], float) and cell["peak_memory_mib"] >= 0
    assert "memory probe" not in proc.stdout  # no probe failed
