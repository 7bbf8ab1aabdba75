"""Dynamic int8 quantisation (``s2s_tasks.quantize``, ``predict --quantize int8``)."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from s2s_tasks.cli import main
from s2s_tasks.inference import Predictor
from s2s_tasks.nn.attention import MultiHeadAttention
from s2s_tasks.nn.peft import add_lora
from s2s_tasks.quantize import Int8FusedProjection, Int8Quantization, quantize_model, quantized_linear_count

pytestmark = pytest.mark.usefixtures("single_thread")

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"


def records(task, count=12):
    lines = (TASKS_DIR / task / "sample" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def test_every_linear_layer_is_replaced(tiny_checkpoint):
    model = Predictor.from_checkpoint(tiny_checkpoint("translation")).model
    linears = sum(type(m) is nn.Linear for m in model.modules())
    attentions = sum(isinstance(m, MultiHeadAttention) for m in model.modules())
    quantize_model(model, "int8")
    assert not any(type(m) is nn.Linear for m in model.modules())
    # each fused Q/K/V projection becomes three int8 linears
    assert quantized_linear_count(model) == linears + 2 * attentions
    assert all(isinstance(m.in_proj, Int8FusedProjection) for m in model.modules() if isinstance(m, MultiHeadAttention))
    # the tied embedding keeps its float32 matrix
    assert model.model.decoder.embed.token.weight.dtype == torch.float32


def test_fused_projection_computes_each_third():
    torch.manual_seed(0)
    linear = nn.Linear(16, 48)
    fused = Int8FusedProjection(linear)
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        for rows in (slice(None), slice(0, 16), slice(16, 48)):
            expected = nn.functional.linear(x, linear.weight[rows], linear.bias[rows])
            got = fused.forward_rows(x, rows)
            assert got.shape == expected.shape
            assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    with pytest.raises(ValueError, match="whole thirds"):
        fused.forward_rows(x, slice(0, 8))


def test_quantised_classifier_agrees_with_float32(tiny_checkpoint):
    path = tiny_checkpoint("classification")
    sample = [{"text": r["text"]} for r in records("classification")]
    fp32 = Predictor.from_checkpoint(path).predict(sample)
    int8 = Predictor.from_checkpoint(path, quantize="int8").predict(sample)
    agree = sum(a["label"] == b["label"] for a, b in zip(fp32, int8))
    assert agree >= len(sample) - 1
    for a, b in zip(fp32, int8):
        for label, p in a["probabilities"].items():
            assert abs(p - b["probabilities"][label]) < 0.05


@pytest.mark.parametrize("extra", [(), ("--model.architecture", "rnn")])
def test_quantised_generation_runs(tiny_checkpoint, extra):
    path = tiny_checkpoint("translation", *extra)
    sample = [{"source": line} for line in (TASKS_DIR / "translation" / "sample" / "predict.txt").read_text().splitlines()[:4]]
    fp32 = Predictor.from_checkpoint(path).predict(sample)
    predictor = Predictor.from_checkpoint(path, quantize="int8")
    assert quantized_linear_count(predictor.model) > 0
    int8 = predictor.predict(sample)
    assert [r["index"] for r in int8] == list(range(len(sample)))
    assert all(isinstance(r["prediction"], str) for r in int8)
    # greedy scores (sums of log-probabilities) stay close
    for a, b in zip(fp32, int8):
        if a["prediction"] == b["prediction"]:
            assert abs(a["score"] - b["score"]) < 0.1 * abs(a["score"]) + 0.1


def test_lora_layers_are_merged_then_quantised(tiny_checkpoint):
    model = Predictor.from_checkpoint(tiny_checkpoint("classification")).model
    add_lora(model.encoder, rank=2, targets=["attention", "ffn"])
    for name, param in model.named_parameters():
        if name.endswith("lora_B"):
            nn.init.normal_(param, std=0.05)  # a trained update, not the identity
    src_ids = torch.randint(4, 100, (3, 7))
    src_mask = torch.ones(3, 7, dtype=torch.bool)
    with torch.no_grad():
        batch = {"src_ids": src_ids, "src_mask": src_mask}
        expected = model.head_forward(batch, model.encode(batch))
        quantize_model(model, "int8")
        got = model.head_forward(batch, model.encode(batch))
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert (got - expected).abs().max() < 0.1 * expected.abs().max() + 0.05


def test_bad_method_and_device_are_errors():
    with pytest.raises(ValueError, match="valid choices: int8"):
        quantize_model(nn.Linear(2, 2), "int4")
    with pytest.raises(ValueError, match="valid choices: int8"):
        Int8Quantization("fp8")
    model = nn.Linear(2, 2).to("meta")
    with pytest.raises(ValueError, match="on the CPU"):
        quantize_model(model, "int8")
    assert isinstance(quantize_model(nn.Sequential(nn.Linear(2, 2)), "int8")[0], DynamicLinear)


def test_predict_with_quantize_writes_predictions(tiny_checkpoint, tmp_path):
    path = tiny_checkpoint("classification")
    inputs = tmp_path / "input.txt"
    inputs.write_text("a fine film\nthe worst thing ever\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    cli = main(["predict", "--ckpt_path", path, "--data.predict_file", str(inputs), "--predictions.output_file", str(out),
                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), "--quantize", "int8"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [1, 2] and all("label" in r for r in rows)
    assert quantized_linear_count(cli.model) > 0
    (callback,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, Int8Quantization)]
    assert callback.quantized == quantized_linear_count(cli.model)


def test_quantize_is_for_predict_only(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="--quantize applies to s2s-tasks predict only"):
        main(["validate", "--ckpt_path", tiny_checkpoint("classification"), "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path), "--quantize", "int8"])


def test_predict_rejects_an_unknown_quantisation(tiny_checkpoint, tmp_path):
    with pytest.raises(Exception, match="int8"):
        main(["predict", "--ckpt_path", tiny_checkpoint("classification"), "--data.predict_file", "x.txt",
              "--quantize", "int4", "--trainer.default_root_dir", str(tmp_path)])
