"""``s2s-tasks export``: exported graphs compute what the eager model computes (onnxruntime for
ONNX, ``torch.jit.load`` for TorchScript), the ONNX greedy loop generates the eager greedy
tokens, and the command's errors are one clear paragraph with exit status 2."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from s2s_tasks.cli import main as cli_main
from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID
from s2s_tasks.export import EncoderHeadGraph, OnnxGreedyDecoder, export_checkpoint, main, viterbi_decode
from s2s_tasks.generation import greedy_search, per_example_max_lengths
from s2s_tasks.inference import Predictor

pytestmark = pytest.mark.usefixtures("single_thread")

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"
ENCODER_HEAD_CASES = [
    ("classification", ()),
    # the preset's word features: each word's first and last subword states
    ("ner", ("--model.crf", "true", "--model.word_states", "first_last")),
    # the same graph as with a CRF, less its potentials (about 15 s of exports)
    pytest.param("ner", (), marks=pytest.mark.slow),
    ("qa", ()),
    # BiDAF's attention flow and packed modeling BiLSTMs over a BiLSTM encoder (--preset real)
    # (with the inverse-count features)
    ("qa", ("--model.architecture", "rnn", "--model.reader", "attention_flow", "--model.reader_layers", "1",
            "--model.inverse_count", "true")),
    ("relation_extraction", ()),
    ("classification", ("--model.architecture", "rnn")),
    # character features: the CNN over the spellings of the batch's distinct ids
    ("relation_extraction", ("--model.char_cnn", "8")),
]
GENERATION_CASES = [
    ("translation", ()),
    ("translation", ("--model.architecture", "rnn")),
    ("translation", ("--model.architecture", "rnn", "--model.rnn_cell", "gru", "--model.attention", "luong_general")),
    # the Transformer graphs of the translation case, on a structured task's rendered targets (about 8 s)
    pytest.param("classification", ("--model.head", "generate"), marks=pytest.mark.slow),
    ("translation", ("--model.copy_attention", "true")),
]


def sample_records(task: str, count: int = 4):
    """The first records of the task's sample validation file (their gold fields are ignored)."""
    lines = (TASKS_DIR / task / "sample" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def onnx_session(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_exported(directory: Path, graph: str, inputs):
    """Outputs (numpy) of an exported graph on named torch inputs, whichever the format."""
    manifest = json.loads((directory / "export.json").read_text())
    spec = manifest["graphs"][graph]
    names = [i["name"] for i in spec["inputs"]]
    if manifest["format"] == "onnx":
        return onnx_session(directory / spec["file"]).run(None, {n: inputs[n].numpy() for n in names})
    loaded = torch.jit.load(str(directory / spec["file"]))
    with torch.no_grad():
        outputs = loaded(*(inputs[n] for n in names))
    return [o.numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("task,extra", ENCODER_HEAD_CASES)
def test_encoder_head_graphs_match_eager(tiny_checkpoint, tmp_path, task, extra, fmt):
    path = tiny_checkpoint(task, *extra)
    manifest = export_checkpoint(path, str(tmp_path), fmt)
    assert manifest["kind"] == "encoder_head" and manifest["task"] == task
    assert {"export.json", "tokenizer.json", manifest["graphs"]["model"]["file"]} <= {p.name for p in tmp_path.iterdir()}
    predictor = Predictor.from_checkpoint(path)
    model = predictor.model
    if task != "qa":  # QA has no label set
        assert json.loads((tmp_path / "labels.json").read_text()) == model.label_names
    else:  # what turns its logits into an answer
        assert (manifest["max_answer_tokens"], manifest["whole_words"]) == (model.hparams.max_answer_tokens, True)
    graph = EncoderHeadGraph(model, task)
    for batch in predictor.encode(sample_records(task)):
        with torch.no_grad():
            expected = graph(*(batch[n] for n in graph.input_names))
        exported = run_exported(tmp_path, "model", batch)
        assert len(exported) == len(expected) == len(graph.output_names)
        for name, got, want in zip(graph.output_names, exported, expected):
            assert got.shape == tuple(want.shape), name
            if want.dtype == torch.bool:
                assert (got == want.numpy()).all(), name
            else:
                finite = np.isfinite(want.numpy())
                assert (np.isfinite(got) == finite).all(), name
                np.testing.assert_allclose(got[finite], want.numpy()[finite], rtol=1e-4, atol=1e-4, err_msg=name)
        if task == "ner" and model.hparams.crf:
            emissions, mask, transitions, start, end = exported
            tags = viterbi_decode(emissions, mask, transitions, start, end)
            assert tags == model.task_head["crf"].viterbi_decode(expected[0], expected[1])


def eager_greedy(model, batch, max_length=None):
    config = model.generation
    enc_out = model.model.encode(batch["src_ids"], batch["src_mask"])
    limits = per_example_max_lengths(enc_out, config)
    if max_length is not None:
        limits = limits.clamp(max=max_length)
    output = greedy_search(model.model.decoder, enc_out, bos_id=BOS_ID, eos_id=EOS_ID, max_lengths=limits, min_length=config.min_length)
    return [hyps[0] for hyps in output.tokens]


def generation_records(task):
    if task == "classification":
        return sample_records(task, 6)
    lines = (TASKS_DIR / task / "sample" / "predict.txt").read_text(encoding="utf-8").splitlines()
    return [{"source": line} for line in lines[:6]]


@pytest.mark.parametrize("task,extra", GENERATION_CASES)
def test_onnx_greedy_loop_generates_the_eager_tokens(tiny_checkpoint, tmp_path, task, extra):
    path = tiny_checkpoint(task, *extra)
    manifest = export_checkpoint(path, str(tmp_path), "onnx")
    assert manifest["kind"] == "generation"
    assert manifest["decoder_kind"] == ("recurrent" if "rnn" in extra else "prefix")
    predictor = Predictor.from_checkpoint(path)
    decoder = OnnxGreedyDecoder(str(tmp_path))
    compared = 0
    for batch in predictor.encode(generation_records(task)):
        with torch.no_grad():
            expected = eager_greedy(predictor.model, batch)
        assert decoder.generate(batch["src_ids"].numpy(), batch["src_mask"].numpy()) == expected
        compared += len(expected)
    assert compared >= 4
    # a shorter limit is respected the same way (EOS forced after 3 tokens)
    batch = predictor.encode(generation_records(task))[0]
    with torch.no_grad():
        expected = eager_greedy(predictor.model, batch, max_length=3)
    assert decoder.generate(batch["src_ids"].numpy(), batch["src_mask"].numpy(), max_length=3) == expected


@pytest.mark.parametrize("task,extra", GENERATION_CASES[:2])
def test_torchscript_generation_graphs_match_eager(tiny_checkpoint, tmp_path, task, extra):
    path = tiny_checkpoint(task, *extra)
    manifest = export_checkpoint(path, str(tmp_path), "torchscript")
    model = Predictor.from_checkpoint(path).model
    batch = Predictor.from_checkpoint(path).encode(generation_records(task))[0]
    encoder_out = run_exported(tmp_path, "encoder", batch)
    with torch.no_grad():
        enc_out = model.model.encode(batch["src_ids"], batch["src_mask"])
        np.testing.assert_allclose(encoder_out[0], enc_out.states.numpy(), rtol=1e-4, atol=1e-5)
        rows = batch["src_ids"].size(0)
        prefix = torch.tensor([[BOS_ID, 7, 9]] * rows)
        expected = torch.log_softmax(model.model.decoder(prefix, enc_out).float(), -1)
        named = dict(zip([o["name"] for o in manifest["graphs"]["encoder"]["outputs"]], map(torch.from_numpy, encoder_out)))
        named.update(src_ids=batch["src_ids"], src_mask=batch["src_mask"])
        if manifest["decoder_kind"] == "prefix":
            got = run_exported(tmp_path, "decoder", {**named, "tgt_prefix": prefix})[0]
            np.testing.assert_allclose(got, expected[:, -1].numpy(), rtol=1e-4, atol=1e-4)
        else:
            for t in range(prefix.size(1)):  # three recurrent steps reproduce teacher forcing
                outputs = run_exported(tmp_path, "decoder", {**named, "last_tokens": prefix[:, t]})
                np.testing.assert_allclose(outputs[0], expected[:, t].numpy(), rtol=1e-4, atol=1e-4)
                named.update(zip(manifest["decoder_state"], map(torch.from_numpy, outputs[1:])))


def test_manifest_describes_the_export(tiny_checkpoint, tmp_path):
    path = tiny_checkpoint("translation")
    export_checkpoint(path, str(tmp_path), "onnx")
    manifest = json.loads((tmp_path / "export.json").read_text())
    import s2s_tasks

    assert manifest["s2s_tasks_version"] == s2s_tasks.__version__
    assert manifest["format"] == "onnx" and manifest["quantize"] is None and manifest["task"] == "translation"
    assert manifest["special_token_ids"] == {"pad": 0, "unk": 1, "bos": BOS_ID, "eos": EOS_ID}
    assert manifest["generation"]["max_length"] == 8
    encoder = manifest["graphs"]["encoder"]
    assert [i["name"] for i in encoder["inputs"]] == ["src_ids", "src_mask"]
    assert encoder["inputs"][0]["shape"] == ["batch", "src_len"] and encoder["inputs"][1]["dtype"] == "bool"
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).get_vocab_size() > 10


def test_int8_exports_stay_close(tiny_checkpoint, tmp_path):
    path = tiny_checkpoint("classification")
    predictor = Predictor.from_checkpoint(path)
    batch = predictor.encode(sample_records("classification", 8))[0]
    with torch.no_grad():
        expected = predictor.model.head_forward(batch, predictor.model.encode(batch)).numpy()
    for fmt in ("onnx", "torchscript"):
        directory = tmp_path / fmt
        manifest = export_checkpoint(path, str(directory), fmt, quantize="int8")
        assert manifest["quantize"] == "int8"
        logits = run_exported(directory, "model", batch)[0]
        assert logits.shape == expected.shape
        assert np.abs(logits - expected).max() < 0.1 * np.abs(expected).max() + 0.05, fmt
    onnx_text = (tmp_path / "onnx" / "model.onnx").read_bytes()
    assert b"DynamicQuantizeLinear" in onnx_text or b"MatMulInteger" in onnx_text
    # the greedy loop runs on a quantised generation model
    generation = tmp_path / "generation"
    export_checkpoint(tiny_checkpoint("translation"), str(generation), "onnx", quantize="int8")
    outputs = OnnxGreedyDecoder(str(generation)).generate(np.array([[BOS_ID, 20, 30, 40, EOS_ID]]))
    assert len(outputs) == 1 and len(outputs[0]) <= 8


# --------------------------------------------------------------------------------------------- command line
def test_cli_exports(tiny_checkpoint, tmp_path, capsys):
    path = tiny_checkpoint("relation_extraction")
    cli_main(["export", "--ckpt_path", path, "--format", "torchscript", "--output", str(tmp_path / "out")])
    assert (tmp_path / "out" / "model.pt").is_file()
    assert "exported the relation_extraction model (torchscript)" in capsys.readouterr().out


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--ckpt_path" in text and "--format {onnx,torchscript}" in text and "--quantize {int8}" in text


@pytest.mark.parametrize("argv,expected", [
    (["--ckpt_path", "x.ckpt", "--output", "o", "--format", "tflite"], "--format: invalid choice"),
    (["--ckpt_path", "x.ckpt", "--output", "o", "--quantize", "int4"], "--quantize: invalid choice"),
    (["--output", "o"], "--ckpt_path"),
    (["--ckpt_path", "missing.ckpt", "--output", "o"], "check --ckpt_path"),
])
def test_cli_user_errors(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_cli_refuses_a_multitask_checkpoint(tmp_path, capsys):
    checkpoint = {"hyper_parameters": {}, "state_dict": {}, "s2s_tasks": {"task": "multitask", "tokenizer": "{}"}}
    from s2s_tasks.checkpoint import EXTRAS_KEY

    checkpoint[EXTRAS_KEY] = checkpoint.pop("s2s_tasks")
    torch.save(checkpoint, tmp_path / "multi.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", str(tmp_path / "multi.ckpt"), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "multi-task checkpoint" in err and "--model.init_from" in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_output_that_is_a_file(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", tiny_checkpoint("classification"), "--output", str(tmp_path / "file")])
    assert exit_info.value.code == 2
    assert "--output" in capsys.readouterr().err
