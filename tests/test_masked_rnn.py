"""run_masked: the fused padded-input path equals packed sequences, values and gradients."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from s2s_tasks.nn.masked_rnn import reverse_within_length, run_masked


def _batch(features: int = 6):
    torch.manual_seed(0)
    lengths = torch.tensor([7, 3, 5, 1])
    mask = torch.arange(7)[None] < lengths[:, None]
    inputs = torch.randn(4, 7, features)
    inputs[~mask] = 50.0  # padding that would show if it were read
    return inputs, mask


def test_reverse_within_length_reverses_each_row_and_keeps_padding_in_place():
    index = reverse_within_length(torch.tensor([3, 1, 4]), 4)
    assert index.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]
    assert torch.equal(index.gather(1, index), torch.arange(4).expand(3, 4))


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("layers,bidirectional", [(1, True), (2, True), (2, False)])
def test_fused_path_equals_packed_sequences_in_values_and_gradients(cell, layers, bidirectional):
    inputs, mask = _batch()
    rnn = cell(6, 5, num_layers=layers, batch_first=True, bidirectional=bidirectional).eval()
    results = []
    for packed in (True, False):
        rnn.zero_grad()
        leaf = inputs.clone().requires_grad_(True)
        outputs, hidden = run_masked(rnn, leaf, mask, packed=packed)
        (outputs.pow(2).sum() + hidden.sin().sum()).backward()
        results.append((outputs, hidden, leaf.grad, [p.grad.clone() for p in rnn.parameters()]))
    (out_p, h_p, grad_p, pgrads_p), (out_f, h_f, grad_f, pgrads_f) = results
    directions = 2 if bidirectional else 1
    assert out_f.shape == (4, 7, 5 * directions) and h_f.shape == (layers * directions, 4, 5)
    assert torch.allclose(out_f, out_p, atol=1e-5)
    assert torch.allclose(h_f, h_p, atol=1e-5)
    assert torch.allclose(grad_f, grad_p, atol=1e-4)
    assert torch.equal(grad_f[~mask], torch.zeros_like(grad_f[~mask]))  # padding is never read
    for fused, packed_grad in zip(pgrads_f, pgrads_p):
        assert torch.allclose(fused, packed_grad, atol=1e-4)
    assert torch.equal(out_f[~mask], torch.zeros_like(out_f[~mask]))


def test_between_layer_dropout_applies_in_training_only():
    inputs, mask = _batch()
    rnn = nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True, dropout=0.5)
    rnn.eval()
    evaluated = run_masked(rnn, inputs, mask, packed=False)[0]
    assert torch.allclose(evaluated, run_masked(rnn, inputs, mask, packed=True)[0], atol=1e-5)
    rnn.train()
    torch.manual_seed(1)
    trained = run_masked(rnn, inputs, mask, packed=False)[0]
    assert not torch.allclose(trained, evaluated, atol=1e-3)


def test_bf16_autocast_follows_float32():
    inputs, mask = _batch()
    rnn = nn.LSTM(6, 8, batch_first=True, bidirectional=True).eval()
    exact = run_masked(rnn, inputs, mask)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = run_masked(rnn, inputs, mask)[0]
    assert torch.allclose(low.float(), exact, atol=5e-2)
    assert torch.equal(low[~mask].float(), torch.zeros_like(exact[~mask]))


def test_empty_row_gives_zero_outputs():
    inputs, mask = _batch()
    mask[3] = False
    outputs, hidden = run_masked(nn.GRU(6, 5, batch_first=True, bidirectional=True), inputs, mask)
    assert torch.equal(outputs[3], torch.zeros(7, 10))
    assert torch.isfinite(hidden).all()


def test_lstm_with_projections_is_refused():
    inputs, mask = _batch()
    with pytest.raises(ValueError, match="proj_size"):
        run_masked(nn.LSTM(6, 5, proj_size=3, batch_first=True), inputs, mask)


def test_benchmark_runs_at_tiny_sizes(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "masked_rnn.py"
    out = tmp_path / "masked_rnn.json"
    proc = subprocess.run([sys.executable, str(script), "--threads", "1", "--repeats", "1", "--batch", "3", "--length", "6",
                           "--features", "4", "--hidden", "4", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"LSTM float32", "LSTM bf16 autocast", "GRU float32", "GRU bf16 autocast"}
    assert all(r["median_ms"]["ours"] > 0 and r["max_abs_diff_float32"] < 1e-5 for r in results.values())
