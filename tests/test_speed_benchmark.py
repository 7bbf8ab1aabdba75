"""benchmarks/speed.py runs end to end at tiny sizes (ours only, no transformers needed): the
timings, the fused-loss and logits-loss training steps with either AdamW and either kind of linear
layer, and the per-cell memory probes; benchmarks/linear_kernels.py and attention_kernels.py run too."""

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


@pytest.mark.parametrize("loss,optimizer,linear", [("fused", "fused", "onednn"), ("logits", "default", "mkl")])
def test_speed_benchmark_runs_and_measures_memory_per_cell(tmp_path, loss, optimizer, linear):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(SPEED), *TINY, "--ours_loss", loss, "--ours_adamw", optimizer,
                           "--ours_linear", linear, "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["args"]["ours_loss"] == loss and result["args"]["ours_adamw"] == optimizer
    assert result["args"]["ours_linear"] == linear
    for part in ("transformer", "rnn"):
        for kind in ("train_fp32", "greedy"):
            cell = result[part][kind]["ours"]
            assert cell["tokens_per_s_median"] > 0
            # measured in a fresh process (a number, not the None of a failed probe)
            assert isinstance(cell["peak_memory_mib"], float) and cell["peak_memory_mib"] >= 0
    assert "memory probe" not in proc.stdout  # no probe failed


def test_linear_kernels_benchmark_runs_and_checks_every_variant(tmp_path):
    from s2s_tasks.nn import packed_linear

    if not packed_linear._ops_available():
        pytest.skip("this PyTorch build has no oneDNN linear ops")
    out = tmp_path / "kernels.json"
    script = SPEED.parent / "linear_kernels.py"
    proc = subprocess.run([sys.executable, str(script), "--threads", "1", "--repeats", "1", "--rows", "4",
                           "--train_rows", "8", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["kind"], r["rows"]) for r in rows} == {("forward", 4), ("train", 8)}
    assert len(rows) == 2 * 5 and all(r["mkl_us"] > 0 and r["onednn_us"] > 0 for r in rows)
    assert all(r["packed_us"] > 0 for r in rows if r["kind"] == "forward")


def test_attention_kernels_benchmark_runs_both_paths_and_records_the_threshold(tmp_path):
    from s2s_tasks.nn import attention

    out = tmp_path / "attention.json"
    script = SPEED.parent / "attention_kernels.py"
    proc = subprocess.run([sys.executable, str(script), "--threads", "1", "--repeats", "1", "--d_model", "16",
                           "--heads", "2", "--keys", "8", "--rows", "2", "--queries", "1", "4", "--budget", "0.001",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(r["rows"], r["queries"]) for r in result["results"]] == [(2, 1), (2, 4)]
    assert all(r["sdpa_us"] > 0 and r["explicit_us"] > 0 for r in result["results"])
    assert result["explicit_max_queries"] == attention.EXPLICIT_MAX_QUERIES


def test_decode_paths_benchmark_switches_each_speedup_and_keeps_the_tokens(tmp_path):
    out = tmp_path / "paths.json"
    script = SPEED.parent / "decode_paths.py"
    # 300 tokens: four chunks of 64 a beam, enough for beam 4's chunked candidate selection
    proc = subprocess.run([sys.executable, str(script), "--threads", "1", "--repeats", "1", "--json", str(out),
                           "--d_model", "16", "--layers", "1", "--heads", "2", "--ffn", "32", "--vocab", "300",
                           "--batch", "3", "--src_len", "5", "--tgt_len", "4"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert set(results) == {f"{arch}/{search}" for arch in ("transformer", "rnn") for search in ("greedy", "beam4")}
    for row in results.values():
        assert set(row["median_seconds"]) == {"plain", "packed", "reorder", "select", "all",
                                              "no_packed", "no_reorder", "no_select"}
        assert set(row["all_over_all_but"]) == {"packed", "reorder", "select"}
        assert row["same_tokens"] is True
