"""Attention maps and training curves: PNG files of the expected size, from the rendering
functions, from the callbacks during a tiny `fit` (Transformer and RNN), and from
`predict --predictions.save_attention true`."""

from __future__ import annotations

import csv
import json
import logging
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from s2s_tasks import plots
from s2s_tasks.cli import main
from s2s_tasks.insight import AttentionMaps, attention_maps, check_attention_choice, select_attention
from s2s_tasks.nn import build_seq2seq
from s2s_tasks.registry import config_dir

pytestmark = pytest.mark.usefixtures("single_thread")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TINY = [
    "--model.d_model", "32", "--model.ffn_dim", "64", "--model.num_heads", "2",
    "--model.num_encoder_layers", "1", "--model.num_decoder_layers", "1",
    "--model.generation.max_length", "8", "--model.val_generation.max_length", "8",
    "--model.generation.beam_size", "2", "--model.warmup_steps", "2",
    "--data.tokenizer_vocab_size", "300", "--data.max_tokens", "1024",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]


def png_size(path: Path):
    """(width, height) of a PNG file, read from its IHDR chunk after checking the signature."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def write_metrics_csv(path: Path) -> None:
    """A metrics.csv as Lightning's CSVLogger writes it: sparse rows, one per logging call."""
    columns = ["epoch", "lr-AdamW/pg1", "lr-AdamW/pg2", "step", "train/loss", "train/nll", "val/bleu",
               "val/beam_bleu", "val/loss", "val/ppl", "test/bleu"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for step in range(0, 40, 2):
            writer.writerow({"epoch": step // 20, "step": step, "lr-AdamW/pg1": 1e-3, "lr-AdamW/pg2": 1e-3,
                             "train/loss": 5 - step / 10, "train/nll": 4.5 - step / 10})
            if step % 20 == 18:
                writer.writerow({"epoch": step // 20, "step": step, "val/bleu": step, "val/beam_bleu": step + 1,
                                 "val/loss": 3.0, "val/ppl": 20.0})


# ------------------------------------------------------------------------------------- rendering
def test_attention_heatmap_is_a_png_of_the_requested_size(tmp_path):
    weights = torch.softmax(torch.randn(5, 7), dim=-1)
    source = ["▁The", "▁cat", "$x$", "▁sat", ".", "</s>", "▁"]  # "$" must not start mathtext
    target = ["▁Die", "▁Katze", "▁saß", ".", "</s>"]
    image = plots.attention_heatmap(weights, source, target, tmp_path / "sized.png", title="test", size=(640, 480))
    assert png_size(tmp_path / "sized.png") == (640, 480)
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8

    plots.attention_heatmap(weights.numpy(), source, target, tmp_path / "deep" / "default.png")
    assert png_size(tmp_path / "deep" / "default.png") == plots.heatmap_size(source, target)
    with pytest.raises(ValueError, match="do not match 5 target x 6 source"):
        plots.attention_heatmap(weights, source[:6], target)


def test_training_curves_png_has_one_panel_per_metric_family(tmp_path):
    metrics = tmp_path / "metrics.csv"
    write_metrics_csv(metrics)
    panels = plots.training_curves(metrics, tmp_path / "curves.png")
    # val/loss joins the training losses, val/beam_bleu its metric, test/* is no curve
    assert panels == ["loss", "learning rate", "val/bleu", "val/ppl"]
    assert png_size(tmp_path / "curves.png") == plots.curves_size(4) == (3 * 420, 2 * 300)
    plots.training_curves(metrics, tmp_path / "small.png", size=(800, 500))
    assert png_size(tmp_path / "small.png") == (800, 500)

    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step,test/bleu\n0,10,5.0\n")
    with pytest.raises(ValueError, match="no training or validation metrics"):
        plots.training_curves(empty, tmp_path / "none.png")
    with pytest.raises(FileNotFoundError):
        plots.training_curves(tmp_path / "missing.csv", tmp_path / "none.png")


# ------------------------------------------------------------------------------------- attention weights
def tiny_network(architecture: str, layers: int = 2):
    torch.manual_seed(0)
    return build_seq2seq(vocab_size=40, pad_id=0, architecture=architecture, d_model=16, num_encoder_layers=1,
                         num_decoder_layers=layers, num_heads=4, ffn_dim=32, dropout=0.0).eval()


@torch.no_grad()
def test_decoders_return_every_layer_and_head_of_their_attention():
    src = torch.randint(4, 40, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    tgt_in = torch.randint(4, 40, (2, 5))
    transformer = tiny_network("transformer")
    enc_out = transformer.encode(src, mask)
    logits, every = transformer.decoder(tgt_in, enc_out, return_attention="all")
    assert every.shape == (2, 2, 4, 5, 6)  # (B, L, H, T, S)
    _, last_mean = transformer.decoder(tgt_in, enc_out, return_attention=True)
    torch.testing.assert_close(every[:, -1].mean(dim=1), last_mean)
    torch.testing.assert_close(logits, transformer.decoder(tgt_in, enc_out))
    assert float(every[1, ..., 4:].abs().sum()) == 0.0  # padding gets no attention

    rnn = tiny_network("rnn", layers=1)
    enc_out = rnn.encode(src, mask)
    _, every = rnn.decoder(tgt_in, enc_out, return_attention="all")
    _, single = rnn.decoder(tgt_in, enc_out, return_attention=True)
    assert every.shape == (2, 1, 1, 5, 6)
    torch.testing.assert_close(every[:, 0, 0], single)
    with pytest.raises(ValueError, match="return_attention must be"):
        rnn.decoder(tgt_in, enc_out, return_attention="last")


class Vocabulary:
    """The tokenizer method attention maps need."""

    def id_to_token(self, token_id: int) -> str:
        return f"t{token_id}"


def test_layer_and_head_selection_change_the_map(tmp_path):
    network = tiny_network("transformer")
    src = torch.randint(4, 40, (1, 6))
    mask = torch.ones(1, 6, dtype=torch.bool)
    outputs = [[5, 6, 7]]

    def draw(layer, head):
        (amap,) = attention_maps(network, Vocabulary(), src, mask, outputs, [1], layer, head)
        assert amap.weights.shape == (4, 6) and amap.target_tokens == ["t5", "t6", "t7", "</s>"]
        torch.testing.assert_close(amap.weights.sum(-1), torch.ones(4))
        path = tmp_path / f"layer{layer}-head{head}.png"
        return plots.attention_heatmap(amap.weights, amap.source_tokens, amap.target_tokens, path), amap.weights

    images = {(layer, head): draw(layer, head) for layer, head in [(None, None), (0, None), (None, 0), (None, 1)]}
    assert not np.array_equal(images[None, None][0], images[0, None][0])  # another layer
    assert not np.array_equal(images[None, 0][0], images[None, 1][0])  # another head
    torch.testing.assert_close(images[None, None][1], (images[None, 0][1] + images[None, 1][1] + draw(None, 2)[1]
                                                       + draw(None, 3)[1]) / 4)  # the default is the head mean
    every = torch.rand(2, 3, 4, 5, 6)
    torch.testing.assert_close(select_attention(every, -2, 3), every[:, 1, 3])
    with pytest.raises(ValueError, match="AttentionMaps init_args.head=4: .* 4 heads"):
        check_attention_choice(network.decoder, None, 4, "AttentionMaps init_args.layer", "AttentionMaps init_args.head")
    with pytest.raises(ValueError, match="RNN decoder has one attention"):
        check_attention_choice(tiny_network("rnn", 1).decoder, 1, None, "layer", "head")


def test_attention_maps_without_a_logger_or_with_bad_settings_do_nothing_or_say_why(caplog):
    callback = AttentionMaps()
    with caplog.at_level(logging.INFO, logger="s2s_tasks"):
        assert callback.output_directory(SimpleNamespace(loggers=[])) is None
    assert "no logger (trainer.logger: false)" in caplog.text
    assert AttentionMaps(output_dir="maps").output_directory(SimpleNamespace(loggers=[])) == Path("maps")
    with pytest.raises(ValueError, match="num_examples must be >= 1"):
        AttentionMaps(num_examples=0)


# ------------------------------------------------------------------------------------- through the CLI
def common(tmp_path: Path, task: str = "translation"):
    return ["--task", task, "--trainer.default_root_dir", str(tmp_path), "--data.cache_dir", str(tmp_path / "hf-cache"),
            *TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.log_every_n_steps", "1"]


def test_fit_draws_attention_maps_and_curves_and_predict_saves_attention(tmp_path):
    """The default logger writes metrics.csv and TensorBoard events (scalars and the attention
    images) into the run's one log directory."""
    main(["fit", *common(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--model.num_decoder_layers", "2"])
    (run,) = (tmp_path / "logs" / "translation").glob("version_*")
    maps = sorted((run / "attention").glob("*.png"))
    assert [p.name for p in maps] == [f"epoch0_example{i}.png" for i in range(4)]  # configs/translation.yaml: 4 examples
    for path in maps:
        width, height = png_size(path)
        assert width >= plots.HEATMAP_MIN_PX[0] and height >= plots.HEATMAP_MIN_PX[1]
    assert png_size(run / "curves.png")[0] == 3 * plots.CURVES_PANEL_PX[0]
    assert (run / "metrics.csv").is_file()
    events = b"".join(path.read_bytes() for path in run.glob("events.out.tfevents.*"))
    for tag in (b"attention/example0", b"train/loss", b"lr-AdamW", b"val/bleu"):  # images, losses, rate, metrics
        assert tag in events, tag

    inputs = ["a first input line", "the second one", "third"]
    predict_file = tmp_path / "input.txt"
    predict_file.write_text("\n".join(inputs) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "predictions.jsonl"
    main(["predict", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--data.predict_file", str(predict_file),
          "--predictions.output_file", str(output), "--save_attention",  # short for --predictions.save_attention true
          "--predictions.attention_layer", "0", "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
          "--data.cache_dir", str(tmp_path / "hf-cache")])
    assert len(output.read_text().splitlines()) == 3
    pngs = sorted((tmp_path / "out" / "predictions_attention").glob("*.png"))
    assert [p.name for p in pngs] == ["record1.png", "record2.png", "record3.png"]
    assert all(png_size(p)[0] >= plots.HEATMAP_MIN_PX[0] for p in pngs)


def test_rnn_attention_maps_during_fit(tmp_path):
    config = str(config_dir() / "model" / "lstm-bahdanau.yaml")
    main(["fit", *common(tmp_path), "--model", config, "--model.d_model", "32", "--model.embedding_dim", "32",
          "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.callbacks+=s2s_tasks.insight.AttentionMaps",
          "--trainer.callbacks.num_examples", "2", "--trainer.callbacks.output_dir", str(tmp_path / "maps")])
    # the callback of configs/translation.yaml, and the one added with its own output_dir
    (run,) = (tmp_path / "logs" / "translation").glob("version_*")
    assert len(list((run / "attention").glob("epoch0_example*.png"))) == 4
    drawn = sorted(p.name for p in (tmp_path / "maps").glob("*.png"))
    assert drawn == ["epoch0_example0.png", "epoch0_example1.png"]
    png_size(tmp_path / "maps" / drawn[0])


def test_encoder_head_model_without_logger_does_not_crash(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="s2s_tasks"):
        main(["fit", *common(tmp_path, "classification"), "--trainer.logger", "false",
              "--trainer.callbacks+=s2s_tasks.insight.AttentionMaps"])
        assert "AttentionMaps does nothing: model.head is encoder" in caplog.text
        assert "TrainingCurvesPlot: no training curves are plotted: the run has no CSVLogger" in caplog.text
        inputs = tmp_path / "input.txt"
        inputs.write_text("a fine film\nawful\n", encoding="utf-8")
        output = tmp_path / "predictions.jsonl"
        main(["predict", "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt"), "--data.predict_file", str(inputs),
              "--predictions.output_file", str(output), "--predictions.save_attention", "true",
              "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
              "--data.cache_dir", str(tmp_path / "hf-cache")])
    assert "predictions.save_attention: no attention maps are written: model.head is encoder" in caplog.text
    assert [json.loads(line)["index"] for line in output.read_text().splitlines()] == [1, 2]
    assert not list(tmp_path.rglob("*.png"))


def test_training_curves_plot_of_a_run_stopped_by_an_error(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    from s2s_tasks.insight import TrainingCurvesPlot

    logger = CSVLogger(str(tmp_path), name="run")
    for step in range(5):
        logger.log_metrics({"train/loss": 5.0 - step}, step=step)  # still buffered: the callback saves them
    trainer = SimpleNamespace(is_global_zero=True, state=SimpleNamespace(fn="fit"), loggers=[logger])
    TrainingCurvesPlot().on_exception(trainer, None, RuntimeError("the run stopped"))
    assert png_size(Path(logger.log_dir) / "curves.png") == plots.curves_size(1)


def test_save_attention_is_a_predict_option(tmp_path):
    with pytest.raises(ValueError, match="--save_attention applies to s2s-tasks predict only"):
        main(["fit", *common(tmp_path), "--trainer.logger", "false", "--save_attention"])
