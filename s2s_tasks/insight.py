"""Callbacks that show what a model learns: attention maps and training curves.

* :class:`AttentionMaps` -- every N epochs, source x target heatmaps of the decoder's attention
  for a few fixed validation examples, as PNG files and TensorBoard images.
* :class:`TrainingCurvesPlot` -- at the end of ``fit``, a PNG of the CSVLogger's metrics
  (losses, learning rate, validation metrics).
* :class:`PredictionAttention` -- the maps of ``predict`` outputs, one per input record
  (``--predictions.save_attention true``, see :class:`~s2s_tasks.callbacks.PredictionWriter`).

An attention map is read from one teacher-forced pass of the decoder over a generated output
(``return_attention="all"``, see :meth:`s2s_tasks.nn.decoders.Decoder.forward`): row ``t`` is the
attention over the source while the decoder produced output token ``t``. The rendering itself is
in :mod:`s2s_tasks.plots`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from s2s_tasks.data.tokenizer import BOS_ID, EOS, EOS_ID, PAD_ID, encode_batch
from s2s_tasks.nn.decoders import Decoder, RNNDecoder, TransformerDecoder
from s2s_tasks.nn.seq2seq import Seq2Seq

log = logging.getLogger(__name__)

RNN_ATTENTION_NAMES = {
    "bahdanau": "Bahdanau (additive) attention",
    "luong_dot": "Luong dot attention",
    "luong_general": "Luong general attention",
    "luong_concat": "Luong concat attention",
}


@dataclasses.dataclass
class AttentionMap:
    """One example's attention: ``weights (T, S)`` (float32, CPU) over its real source tokens,
    one row per output token (the last is ``</s>``: the step that ended the output, or would
    have when the output was cut at the length limit)."""

    weights: Tensor
    source_tokens: List[str]
    target_tokens: List[str]
    record: int  # the example's record number in its file (1-based)


# ------------------------------------------------------------------------------------- computing the maps
def decoder_network(module: pl.LightningModule) -> Optional[Seq2Seq]:
    """The encoder-decoder of a generating model (a :class:`~s2s_tasks.seq2seq_module.Seq2SeqModule`,
    a structured task with ``head: generate``); ``None`` for encoder-head and multi-task models."""
    network = getattr(module, "model", None)
    return network if isinstance(network, Seq2Seq) else None


def no_decoder_reason(module: pl.LightningModule) -> str:
    """Why :func:`decoder_network` found nothing, for the info message."""
    if getattr(module, "task_name", "") == "multitask":
        return "a multi-task model (attention maps are drawn for single-task models only)"
    hparams = getattr(module, "hparams", None) or {}
    if hparams.get("head") == "encoder":
        return "model.head is encoder: a task head on the encoder has no attention over the source (model.head generate has)"
    return f"{type(module).__name__} has no encoder-decoder"


def check_attention_choice(decoder: Decoder, layer: Optional[int], head: Optional[int], layer_key: str, head_key: str) -> None:
    """Raise a ValueError naming the config keys (``layer_key``, ``head_key``) when ``layer`` or
    ``head`` do not fit ``decoder``."""
    if isinstance(decoder, TransformerDecoder):
        layers, heads = len(decoder.layers), decoder.layers[0].cross_attn.num_heads
        if layer is not None and not -layers <= layer < layers:
            raise ValueError(f"{layer_key}={layer}: the decoder has {layers} layers; set {layer_key} to 0..{layers - 1} "
                             "(negative counts from the last) or null for the last layer")
        if head is not None and not 0 <= head < heads:
            raise ValueError(f"{head_key}={head}: the decoder's cross-attention has {heads} heads; set {head_key} to "
                             f"0..{heads - 1} or null for the mean over heads")
    elif layer not in (None, 0, -1) or head not in (None, 0):
        raise ValueError(f"{layer_key}={layer}, {head_key}={head}: an RNN decoder has one attention, with no layers or "
                         f"heads to choose; leave {layer_key} and {head_key} unset (null)")


def attention_description(decoder: Decoder, layer: Optional[int], head: Optional[int]) -> str:
    """What a map shows, for its title, e.g. ``cross-attention layer=1 of 2, mean of 4 heads``."""
    if isinstance(decoder, TransformerDecoder):
        layers, heads = len(decoder.layers), decoder.layers[0].cross_attn.num_heads
        chosen = layers - 1 if layer is None else layer % layers
        which = f"mean of {heads} heads" if head is None else f"head={head} of {heads}"
        return f"cross-attention layer={chosen} of {layers}, {which}"
    if isinstance(decoder, RNNDecoder):
        return RNN_ATTENTION_NAMES.get(decoder.attention_type, f"{decoder.attention_type} attention")
    return "attention"


def select_attention(weights: Tensor, layer: Optional[int], head: Optional[int]) -> Tensor:
    """``(B, L, H, T, S)`` -> ``(B, T, S)``: layer ``layer`` (default the last), head ``head``
    (default the mean over heads)."""
    chosen = weights[:, -1 if layer is None else layer]
    return chosen.mean(dim=1) if head is None else chosen[:, head]


def greedy_outputs(module: pl.LightningModule, network: Seq2Seq, src_ids: Tensor, src_mask: Tensor) -> List[List[int]]:
    """Greedy decoding of a batch (the length limits of ``model.val_generation``): token ids of
    each output, without ``<s>`` and ``</s>``."""
    from s2s_tasks.generation import GenerationConfig, generate

    config = getattr(module, "val_generation", None) or GenerationConfig()
    config = dataclasses.replace(config, strategy="greedy", n_best=1)
    output = generate(network.decoder, network.encode(src_ids, src_mask), bos_id=BOS_ID, eos_id=EOS_ID, config=config)
    return [list(hypotheses[0]) for hypotheses in output.tokens]


@torch.no_grad()
def attention_maps(
    network: Seq2Seq,
    tokenizer: Any,
    src_ids: Tensor,
    src_mask: Tensor,
    outputs: Sequence[Sequence[int]],
    records: Sequence[int],
    layer: Optional[int] = None,
    head: Optional[int] = None,
) -> List[AttentionMap]:
    """The decoder's attention while it produces ``outputs``, one map per batch row.

    Args:
        src_ids, src_mask: ``(B, S)`` source batch.
        outputs: per row the output token ids (no ``<s>``/``</s>``); the decoder is teacher-forced
            on ``<s> output`` and row ``t`` of a map is the step that produced token ``t``.
        records: per row its record number (kept on the map).
        layer, head: Transformer cross-attention to show (default: last layer, mean over heads).
    """
    rows = [[BOS_ID, *ids] for ids in outputs]
    tgt_in = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long, device=src_ids.device)
    for i, row in enumerate(rows):
        tgt_in[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    _, weights = network.decoder(tgt_in, network.encode(src_ids, src_mask), return_attention="all")  # (B, L, H, T, S)
    chosen = select_attention(weights, layer, head).float().cpu()  # (B, T, S)
    src_ids, src_mask = src_ids.cpu(), src_mask.cpu()
    maps = []
    for i, row in enumerate(rows):
        positions = src_mask[i].nonzero().squeeze(-1)
        source = [tokenizer.id_to_token(t) or f"#{t}" for t in src_ids[i, positions].tolist()]
        target = [tokenizer.id_to_token(t) or f"#{t}" for t in row[1:]] + [EOS]
        maps.append(AttentionMap(chosen[i, : len(row)][:, positions].contiguous(), source, target, int(records[i])))
    return maps


def _on_device(batch: Dict[str, Any], device: torch.device) -> tuple:
    return batch["src_ids"].to(device), batch["src_mask"].to(device)


def _tensorboard_writers(trainer: pl.Trainer) -> List[Any]:
    """The SummaryWriters of the trainer's TensorBoard loggers."""
    from pytorch_lightning.loggers import TensorBoardLogger

    from s2s_tasks.loggers import CSVAndTensorBoardLogger

    writers = [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
    writers += [logger.tensorboard for logger in trainer.loggers
                if isinstance(logger, CSVAndTensorBoardLogger) and logger.tensorboard is not None]
    return writers


class _Evaluating:
    """Runs the network in eval mode (no dropout) and puts back its mode afterwards."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.network, self.was_training = network, network.training

    def __enter__(self) -> None:
        self.network.eval()

    def __exit__(self, *exc: Any) -> None:
        self.network.train(self.was_training)


# ------------------------------------------------------------------------------------- callbacks
class AttentionMaps(Callback):
    """Attention heatmaps of a few fixed validation examples, every ``every_n_epochs`` epochs.

    After validation (rank 0, not during the sanity check), the first ``num_examples`` examples
    of the validation file (always the same ones) are decoded greedily and the decoder's
    attention over the source while producing that output is drawn, source subwords on the x
    axis, output subwords on the y axis: Bahdanau or Luong attention for an RNN decoder; for a
    Transformer the cross-attention of decoder layer ``layer`` (default the last), head ``head``
    (default the mean over heads). Files: ``<output_dir>/epoch{E}_example{I}.png``; with a
    TensorBoardLogger also the images ``attention/example{I}``.

    Only models that generate have such attention: for an encoder-head model (``model.head:
    encoder``) or a multi-task model the callback says so once and does nothing.

    Args:
        num_examples: how many validation examples to draw.
        every_n_epochs: draw after the validation of every this many epochs (``validate`` always draws).
        layer: Transformer decoder layer whose cross-attention is drawn (0-based, negative from the
            end); default the last. Unset for RNN decoders.
        head: Transformer head to draw; default the mean over heads. Unset for RNN decoders.
        output_dir: where to write; default ``<log dir>/attention``. Without a logger
            (``trainer.logger: false``) and without ``output_dir`` nothing is written.
    """

    def __init__(
        self,
        num_examples: int = 4,
        every_n_epochs: int = 1,
        layer: Optional[int] = None,
        head: Optional[int] = None,
        output_dir: Optional[str] = None,
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"AttentionMaps num_examples must be >= 1, got {num_examples} (trainer.callbacks: its init_args.num_examples)")
        if every_n_epochs < 1:
            raise ValueError(f"AttentionMaps every_n_epochs must be >= 1, got {every_n_epochs} "
                             "(trainer.callbacks: its init_args.every_n_epochs; remove the callback to draw none)")
        self.num_examples = num_examples
        self.every_n_epochs = every_n_epochs
        self.layer = layer
        self.head = head
        self.output_dir = output_dir
        self._network: Optional[Seq2Seq] = None
        self._examples: Optional[Dict[str, Any]] = None
        self._told: set = set()

    def _say_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._told:
            self._told.add(key)
            log.info(message, *args)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._examples = None
        self._network = decoder_network(pl_module)
        if self._network is None:
            if trainer.is_global_zero:
                self._say_once("no decoder", "AttentionMaps does nothing: %s", no_decoder_reason(pl_module))
            return
        check_attention_choice(self._network.decoder, self.layer, self.head,
                               "AttentionMaps init_args.layer", "AttentionMaps init_args.head")

    def output_directory(self, trainer: pl.Trainer) -> Optional[Path]:
        """``output_dir``, else ``<log dir>/attention``; ``None`` without a logger."""
        if self.output_dir:
            return Path(self.output_dir)
        if not trainer.loggers:
            self._say_once("no logger", "AttentionMaps: no logger (trainer.logger: false), so no attention maps are "
                           "written; set the callback's init_args.output_dir to write them anyway")
            return None
        # the logger's own directory: Trainer.log_dir broadcasts from rank 0, a collective that
        # only rank 0 would reach here
        return Path(trainer.loggers[0].log_dir or trainer.default_root_dir) / "attention"

    def fixed_examples(self, trainer: pl.Trainer) -> Optional[Dict[str, Any]]:
        """A batch of the first ``num_examples`` validation examples (made once)."""
        if self._examples is None:
            from s2s_tasks.data.datamodule import Seq2SeqCollator

            datamodule = trainer.datamodule
            if datamodule is None or not hasattr(datamodule, "encode_split") or not datamodule.has_split("validation"):
                self._say_once("no data", "AttentionMaps: no validation data to draw attention maps from")
                return None
            split = datamodule.encode_split("validation")
            if len(split) == 0:
                return None
            self._examples = Seq2SeqCollator(split, PAD_ID)(list(range(min(self.num_examples, len(split)))))
        return self._examples

    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking or not trainer.is_global_zero or self._network is None:
            return False
        fitting = trainer.state.fn == "fit"
        return not fitting or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        directory = self.output_directory(trainer)
        batch = self.fixed_examples(trainer) if directory is not None else None
        if batch is None:
            return
        self.draw(trainer, pl_module, batch, directory)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Dict[str, Any], directory: Path) -> List[Path]:
        """Decode ``batch``, draw its maps into ``directory`` (and TensorBoard); returns the files."""
        from s2s_tasks.plots import attention_heatmap

        network = self._network
        assert network is not None
        src_ids, src_mask = _on_device(batch, pl_module.device)
        with _Evaluating(network), torch.no_grad():
            outputs = greedy_outputs(pl_module, network, src_ids, src_mask)
            maps = attention_maps(network, pl_module.tokenizer, src_ids, src_mask, outputs, batch["index"].tolist(),
                                  self.layer, self.head)
        epoch = trainer.current_epoch
        what = attention_description(network.decoder, self.layer, self.head)
        writers = _tensorboard_writers(trainer)
        paths = []
        for i, amap in enumerate(maps):
            path = directory / f"epoch{epoch}_example{i}.png"
            title = f"epoch {epoch}, example {i} (record {amap.record}): {what}"
            image = attention_heatmap(amap.weights, amap.source_tokens, amap.target_tokens, path, title=title)
            for writer in writers:
                writer.add_image(f"attention/example{i}", image, global_step=trainer.global_step, dataformats="HWC")
            paths.append(path)
        log.info("AttentionMaps: %d attention maps of epoch %d in %s", len(paths), epoch, directory)
        return paths


class TrainingCurvesPlot(Callback):
    """At the end of ``fit`` (rank 0), plot the CSVLogger's ``metrics.csv`` to ``<log dir>/<filename>``:
    one panel for the losses (training and validation), one for the learning rate (with a
    LearningRateMonitor) and one per validation metric, optimizer step on the x axis (see
    :func:`s2s_tasks.plots.training_curves`). A run stopped by an error (a NaN loss, Ctrl-C) is
    plotted too, up to where it stopped. Without a CSVLogger it says why and plots nothing.

    Args:
        filename: the PNG's name in the CSVLogger's log directory.
    """

    def __init__(self, filename: str = "curves.png") -> None:
        if not filename or Path(filename).name != filename:
            raise ValueError(f"TrainingCurvesPlot filename must be a file name without folders, got {filename!r} "
                             "(trainer.callbacks: its init_args.filename)")
        self.filename = filename

    def plot(self, trainer: pl.Trainer) -> Optional[Path]:
        """Write the plot; returns its path, or ``None`` (with an info message) when there is nothing to plot."""
        from pytorch_lightning.loggers import CSVLogger

        from s2s_tasks.plots import training_curves

        csv_logger = next((logger for logger in trainer.loggers if isinstance(logger, CSVLogger)), None)
        if csv_logger is None:
            log.info("TrainingCurvesPlot: no training curves are plotted: the run has no CSVLogger (trainer.logger is "
                     "%s) to read metrics.csv from", "false" if not trainer.loggers else "another logger")
            return None
        csv_logger.save()  # write the metrics still buffered
        metrics = Path(csv_logger.log_dir) / "metrics.csv"
        target = Path(csv_logger.log_dir) / self.filename
        try:
            panels = training_curves(metrics, target, title=f"{csv_logger.name} version {csv_logger.version}")
        except (FileNotFoundError, ValueError) as err:
            log.info("TrainingCurvesPlot: no training curves are plotted: %s", err)
            return None
        log.info("Training curves (%s) in %s", ", ".join(panels), target)
        return target

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.plot(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        try:
            self.plot(trainer)
        except Exception as err:  # the run's own error is the one to report
            log.warning("TrainingCurvesPlot: could not plot the stopped run: %s", err)


class PredictionAttention:
    """Attention maps of ``predict`` outputs: ``<directory>/record{N}.png`` per input record
    (N is its record number, as in the predictions file), made by teacher-forcing the decoder on
    the written prediction (re-tokenized: the best hypothesis of ``model.generation``).

    Build it with :meth:`for_module`, which gives ``None`` (and says why) for a model without a
    decoder.
    """

    def __init__(self, module: pl.LightningModule, network: Seq2Seq, directory: Path,
                 layer: Optional[int] = None, head: Optional[int] = None) -> None:
        self.module, self.network, self.directory = module, network, directory
        self.layer, self.head = layer, head
        self.description = attention_description(network.decoder, layer, head)
        self.written = 0

    @classmethod
    def for_module(cls, module: pl.LightningModule, directory: Path, layer: Optional[int] = None,
                   head: Optional[int] = None) -> Optional["PredictionAttention"]:
        network = decoder_network(module)
        if network is None:
            log.info("predictions.save_attention: no attention maps are written: %s", no_decoder_reason(module))
            return None
        check_attention_choice(network.decoder, layer, head, "predictions.attention_layer", "predictions.attention_head")
        return cls(module, network, directory, layer, head)

    @staticmethod
    def output_text(record: Dict[str, Any]) -> Optional[str]:
        """The generated text of a predictions record (structured tasks keep it as ``generated``)."""
        for key in ("generated", "prediction"):
            if isinstance(record.get(key), str):
                return record[key]
        return None

    def write(self, batch: Dict[str, Any], records: List[Dict[str, Any]]) -> List[Path]:
        """Draw the maps of one predict batch and its output ``records``."""
        from s2s_tasks.plots import attention_heatmap

        texts = {record["index"]: self.output_text(record) for record in records}
        numbers = batch["index"].tolist()
        rows = [i for i, number in enumerate(numbers) if texts.get(number) is not None]
        if not rows:
            return []
        outputs = encode_batch(self.module.tokenizer, [texts[numbers[i]] for i in rows])
        keep = torch.tensor(rows, dtype=torch.long)
        src_ids, src_mask = _on_device({"src_ids": batch["src_ids"][keep], "src_mask": batch["src_mask"][keep]},
                                       self.module.device)
        with _Evaluating(self.network), torch.no_grad():
            maps = attention_maps(self.network, self.module.tokenizer, src_ids, src_mask, outputs,
                                  [numbers[i] for i in rows], self.layer, self.head)
        paths = []
        for amap in maps:
            path = self.directory / f"record{amap.record}.png"
            attention_heatmap(amap.weights, amap.source_tokens, amap.target_tokens, path,
                              title=f"record {amap.record}: {self.description}")
            paths.append(path)
        self.written += len(paths)
        return paths
