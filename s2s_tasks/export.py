"""``s2s-tasks export``: a checkpoint's network as ONNX or TorchScript graphs, for serving
without this package (onnxruntime, libtorch).

    s2s-tasks export --ckpt_path model.ckpt --format onnx --output exported/
    s2s-tasks export --ckpt_path model.ckpt --format torchscript --output exported/ --quantize int8

What is written to ``--output``:

* Encoder-head models (classification, NER, QA, relation extraction with ``model.head
  encoder``): ``model.onnx`` / ``model.pt``, one graph from the batch tensors the head reads to
  its outputs (:data:`HEAD_INPUTS`, :data:`HEAD_OUTPUTS`):

  ========================  ====================================================  =============================================
  task                      inputs                                                outputs
  ========================  ====================================================  =============================================
  classification            ``src_ids (B, S)`` int64, ``src_mask (B, S)`` bool   ``logits (B, K)``
  ner                       + ``word_starts (B, W)`` int64 (-100 after the words) ``emissions (B, W, T)``, ``word_mask (B, W)``
  qa                        + ``context_start (B,)``, ``context_length (B,)``     ``start_logits (B, S)``, ``end_logits (B, S)``
  relation_extraction       + ``e1_pos (B,)``, ``e2_pos (B,)``                    ``logits (B, K)``
  ========================  ====================================================  =============================================

  NER with ``model.crf true`` also outputs the CRF potentials ``crf_transitions (T, T)``,
  ``crf_start (T,)`` and ``crf_end (T,)`` (``-inf`` where BIO forbids a transition); decode
  with :func:`viterbi_decode` (numpy), which gives the tags the model's own Viterbi gives.

* Generation models (translation, summarization, dialogue, and the structured tasks with
  ``model.head generate``): ``encoder.onnx`` and ``decoder.onnx`` (``.pt``), driven by a
  decoding loop such as :class:`OnnxGreedyDecoder`. The encoder maps ``src_ids, src_mask`` to
  ``memory (B, S, D)`` (plus, for an RNN, the decoder's initial state). The decoder step is

  - Transformer (``decoder_kind: prefix``): ``tgt_prefix (B, T)`` (``<s>`` and the tokens so
    far), ``memory``, ``src_mask`` -> ``log_probs (B, V)`` of the next token. The step
    recomputes the whole prefix: a key/value-cache step would need the cache's growing
    ``(B, heads, T, D/heads)`` tensors as inputs and outputs of every layer, and the eager
    cache (:class:`~s2s_tasks.nn.attention.MultiHeadAttention`) writes into preallocated
    buffers in place, which neither exporter traces; the prefix step is the same network as
    teacher forcing, exports cleanly, and costs ``O(T^2)`` per sequence instead of ``O(T)``,
    which is small at the lengths these models generate.
  - RNN (``decoder_kind: recurrent``): the state is a few fixed-size tensors, so the step is
    the cached one: ``last_tokens (B,)``, ``memory``, ``src_mask``, the source state
    ``projected_keys`` and the recurrent state (``hidden``, ``cell`` for an LSTM,
    ``att_vector``, ``coverage`` with coverage attention) -> ``log_probs (B, V)`` and the new
    recurrent state (outputs named ``new_*``).

  With copy attention the graphs also take ``src_ids`` (the copy distribution is scattered
  onto the source ids).

* ``tokenizer.json`` (Hugging Face ``tokenizers``), ``labels.json`` (the label / tag names,
  structured tasks), and ``export.json``: the task, format, quantisation, graphs with their
  inputs and outputs (names, dtypes, axes), the special token ids, the checkpoint's greedy
  decoding limits and the s2s-tasks version.

``--quantize int8``: TorchScript graphs of the model quantised by
:func:`s2s_tasks.quantize.quantize_model` (int8 linear layers); ONNX graphs exported in float32
and then quantised by onnxruntime's dynamic quantisation (``MatMul`` weights as int8).

Multi-task checkpoints are refused (export one task: fine-tune a single-task model from it with
``--model.init_from``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
QUANTIZE_CHOICES = ("int8",)
#: the batch tensors each encoder head reads, in graph input order
HEAD_INPUTS: Dict[str, Tuple[str, ...]] = {
    "classification": ("src_ids", "src_mask"),
    "ner": ("src_ids", "src_mask", "word_starts"),
    "qa": ("src_ids", "src_mask", "context_start", "context_length"),
    "relation_extraction": ("src_ids", "src_mask", "e1_pos", "e2_pos"),
}
#: the names of each encoder head's outputs, in graph output order
HEAD_OUTPUTS: Dict[str, Tuple[str, ...]] = {
    "classification": ("logits",),
    "ner": ("emissions", "word_mask"),
    "qa": ("start_logits", "end_logits"),
    "relation_extraction": ("logits",),
}
CRF_OUTPUTS = ("crf_transitions", "crf_start", "crf_end")
#: named axes of every tensor a graph may take or give (``None``: a fixed size)
AXES: Dict[str, Tuple[Optional[str], ...]] = {
    "src_ids": ("batch", "src_len"), "src_mask": ("batch", "src_len"), "word_starts": ("batch", "words"),
    "context_start": ("batch",), "context_length": ("batch",), "e1_pos": ("batch",), "e2_pos": ("batch",),
    "logits": ("batch", None), "emissions": ("batch", "words", None), "word_mask": ("batch", "words"),
    "start_logits": ("batch", "src_len"), "end_logits": ("batch", "src_len"),
    "crf_transitions": (None, None), "crf_start": (None,), "crf_end": (None,),
    "memory": ("batch", "src_len", None), "projected_keys": ("batch", "src_len", None),
    "hidden": ("batch", None, None), "cell": ("batch", None, None), "att_vector": ("batch", None),
    "coverage": ("batch", "src_len"), "tgt_prefix": ("batch", "tgt_len"), "last_tokens": ("batch",),
    "log_probs": ("batch", None),
}


class ExportError(ValueError):
    """A checkpoint or option that cannot be exported; the message names the fix."""


# --------------------------------------------------------------------------------------------- graphs
class EncoderHeadGraph(nn.Module):
    """A structured model's encoder and task head as one function of tensors:
    ``inputs`` (:data:`HEAD_INPUTS` of the task) -> the head's outputs (:data:`HEAD_OUTPUTS`),
    plus the CRF potentials for a NER model with a CRF."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        # the LightningModule is kept outside the module tree (tracing it would read its
        # trainer); its encoder and head are the submodules whose weights the graph holds
        object.__setattr__(self, "model", model)
        self.encoder = model.encoder
        self.task_head = model.task_head
        self.input_names = HEAD_INPUTS[task]
        self.crf = model.task_head["crf"] if task == "ner" and getattr(model.hparams, "crf", False) else None
        self.output_names = HEAD_OUTPUTS[task] + (CRF_OUTPUTS if self.crf is not None else ())

    def forward(self, *inputs: Tensor) -> Tuple[Tensor, ...]:
        batch = dict(zip(self.input_names, inputs))
        outputs = self.model.head_forward(batch, self.model.encode(batch))
        outputs = tuple(outputs) if isinstance(outputs, tuple) else (outputs,)
        if self.crf is not None:
            outputs = outputs + tuple(self.crf._potentials(float("-inf")))
        return outputs


def _rnn_state_names(decoder: nn.Module) -> Tuple[str, ...]:
    names = ["hidden"] + (["cell"] if decoder.is_lstm else []) + ["att_vector"]
    return tuple(names + (["coverage"] if decoder.coverage_attention else []))


class Seq2SeqEncoderGraph(nn.Module):
    """``src_ids (B, S)``, ``src_mask (B, S)`` -> ``memory (B, S, D)``; for an RNN decoder also
    its source state ``projected_keys (B, S, *)`` and initial recurrent state (see the module docstring)."""

    def __init__(self, seq2seq: nn.Module) -> None:
        super().__init__()
        self.seq2seq = seq2seq
        self.recurrent = hasattr(seq2seq.decoder, "is_lstm")
        self.input_names: Tuple[str, ...] = ("src_ids", "src_mask")
        state = ("projected_keys", *_rnn_state_names(seq2seq.decoder)) if self.recurrent else ()
        self.output_names: Tuple[str, ...] = ("memory", *state)

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> Tuple[Tensor, ...]:
        enc_out = self.seq2seq.encode(src_ids, src_mask)
        if not self.recurrent:
            return (enc_out.states,)
        cache = self.seq2seq.decoder.init_cache(enc_out)
        state = [cache[name] for name in self.output_names[2:]]
        return (enc_out.states, cache["source"]["projected_keys"], *state)


class PrefixDecoderGraph(nn.Module):
    """Transformer decoder step: ``tgt_prefix (B, T)``, ``memory (B, S, D)``, ``src_mask (B, S)``
    [, ``src_ids (B, S)`` with copy attention] -> ``log_probs (B, V)`` (float32) of token ``T + 1``."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.input_names = ("tgt_prefix", "memory", "src_mask") + (("src_ids",) if decoder.copy_attention else ())
        self.output_names = ("log_probs",)

    def forward(self, tgt_prefix: Tensor, memory: Tensor, src_mask: Tensor, src_ids: Optional[Tensor] = None) -> Tensor:
        from s2s_tasks.nn.types import EncoderOutput

        logits = self.decoder(tgt_prefix, EncoderOutput(memory, src_mask, None, src_ids))[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)


class RecurrentDecoderGraph(nn.Module):
    """RNN decoder step: ``last_tokens (B,)``, ``memory``, ``src_mask`` [, ``src_ids``],
    ``projected_keys`` and the recurrent state -> ``log_probs (B, V)`` and the new state."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.state_names = _rnn_state_names(decoder)
        self.input_names = (("last_tokens", "memory", "src_mask") + (("src_ids",) if decoder.copy_attention else ())
                            + ("projected_keys",) + self.state_names)
        self.output_names = ("log_probs",) + tuple(f"new_{name}" for name in self.state_names)

    def forward(self, *inputs: Tensor) -> Tuple[Tensor, ...]:
        from s2s_tasks.nn.types import EncoderOutput

        named = dict(zip(self.input_names, inputs))
        enc_out = EncoderOutput(named["memory"], named["src_mask"], None, named.get("src_ids"))
        cache: Dict[str, Any] = {name: named[name] for name in self.state_names}
        cache["source"] = {"projected_keys": named["projected_keys"]}
        logits, cache = self.decoder.step(named["last_tokens"], enc_out, cache)
        return (torch.log_softmax(logits.float(), dim=-1), *(cache[name] for name in self.state_names))


# --------------------------------------------------------------------------------------------- example inputs
def _example_batch(vocab_size: int) -> Dict[str, Tensor]:
    """Batch tensors of plausible values for tracing: 2 rows (the second padded), 9 source tokens."""
    src_ids = torch.randint(4, max(vocab_size, 5), (2, 9), generator=torch.Generator().manual_seed(0))
    src_mask = torch.ones(2, 9, dtype=torch.bool)
    src_mask[1, 6:] = False
    src_ids[1, 6:] = 0
    return {
        "src_ids": src_ids, "src_mask": src_mask,
        "word_starts": torch.tensor([[1, 3, 4, 6], [1, 2, -100, -100]]),
        "context_start": torch.tensor([3, 2]), "context_length": torch.tensor([5, 3]),
        "e1_pos": torch.tensor([1, 2]), "e2_pos": torch.tensor([4, 3]),
    }


def _axes(name: str) -> Tuple[Optional[str], ...]:
    return AXES[name[len("new_"):] if name.startswith("new_") else name]


def _describe(names: Sequence[str], values: Sequence[Tensor]) -> List[Dict[str, Any]]:
    return [{"name": n, "dtype": str(v.dtype).replace("torch.", ""),
             "shape": [axis if axis is not None else int(size) for axis, size in zip(_axes(n), v.shape)]}
            for n, v in zip(names, values)]


# --------------------------------------------------------------------------------------------- writers
def _export_onnx(graph: nn.Module, inputs: Tuple[Tensor, ...], path: Path) -> None:
    """``graph`` -> ONNX with ``torch.onnx.export`` (the torch.export-based exporter, which needs
    onnxscript), every named axis dynamic."""
    names = list(graph.input_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if any(isinstance(m, nn.RNNBase) for m in graph.modules()):
            # LSTM/GRU graphs take the TorchScript-based exporter: in torch 2.13 the torch.export
            # one's ONNX translation of an LSTM step fails (and it cannot trace packed sequences,
            # which run_masked uses on CUDA); the TorchScript-based exporter maps the encoder's
            # per-direction runs and the decoder's cells to ONNX's LSTM/GRU operators
            dynamic_axes = {name: {i: axis for i, axis in enumerate(_axes(name)) if axis is not None}
                            for name in [*names, *graph.output_names]}
            torch.onnx.export(graph, inputs, str(path), dynamo=False, input_names=names, output_names=list(graph.output_names),
                              dynamic_axes=dynamic_axes, opset_version=17)
            return
        dynamic = tuple({i: torch.export.Dim.DYNAMIC for i, axis in enumerate(_axes(name)) if axis is not None} for name in names)
        if any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(graph.forward).parameters.values()):
            dynamic = (dynamic,)  # forward(*inputs): one argument holding them all
        program = torch.onnx.export(graph, inputs, dynamo=True, input_names=names, output_names=list(graph.output_names),
                                    dynamic_shapes=dynamic, verbose=False)
    program.save(str(path))


def _export_torchscript(graph: nn.Module, inputs: Tuple[Tensor, ...], path: Path) -> None:
    """``graph`` -> TorchScript by tracing (the graphs have no data-dependent control flow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints taken from shapes
        traced = torch.jit.trace(graph, inputs, check_trace=False)
        torch.jit.save(traced, str(path))


def _quantize_onnx(path: Path) -> None:
    """Dynamic int8 quantisation of an ONNX file's MatMul weights, in place (onnxruntime)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".int8.onnx")
    quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
    quantized.replace(path)


@dataclass
class _Graph:
    name: str
    module: nn.Module
    inputs: Tuple[Tensor, ...]
    extra: Dict[str, Any] = field(default_factory=dict)


def _graphs(model: nn.Module, task: str) -> Tuple[str, List[_Graph], Dict[str, Any]]:
    """(kind, graphs with example inputs, manifest fields) of a single-task model."""
    example = _example_batch(model.hparams.vocab_size)
    if not getattr(model, "generates", True):
        graph = EncoderHeadGraph(model, task)
        return "encoder_head", [_Graph("model", graph, tuple(example[n] for n in graph.input_names))], {}
    seq2seq = model.model
    encoder = Seq2SeqEncoderGraph(seq2seq)
    with torch.no_grad():
        encoded = encoder(example["src_ids"], example["src_mask"])
    named = dict(zip(encoder.output_names, encoded), src_ids=example["src_ids"], src_mask=example["src_mask"])
    if encoder.recurrent:
        decoder: nn.Module = RecurrentDecoderGraph(seq2seq.decoder)
        named["last_tokens"] = torch.tensor([1, 5])
        kind = {"decoder_kind": "recurrent", "decoder_state": list(decoder.state_names)}
    else:
        decoder = PrefixDecoderGraph(seq2seq.decoder)
        named["tgt_prefix"] = torch.tensor([[1, 5, 6], [1, 7, 8]])
        kind = {"decoder_kind": "prefix"}
    decoder_inputs = tuple(named[n] for n in decoder.input_names)
    return "generation", [_Graph("encoder", encoder, tuple(named[n] for n in encoder.input_names)),
                          _Graph("decoder", decoder, decoder_inputs)], kind


def _check_exportable(model: nn.Module, task: str, path: str) -> None:
    if task == "multitask":
        raise ExportError(
            f"{path} is a multi-task checkpoint, and export writes one task's graphs: fine-tune a single-task model "
            "from it (s2s-tasks fit --task NAME --model.init_from CHECKPOINT) and export that one (check --ckpt_path)"
        )
    if not getattr(model, "generates", True) and task not in HEAD_INPUTS:
        raise ExportError(f"the {task} model's encoder head has no export recipe (known: {', '.join(HEAD_INPUTS)})")


def export_checkpoint(ckpt_path: str, output: str, format: str = "onnx", quantize: Optional[str] = None) -> Dict[str, Any]:
    """Export a checkpoint's network (see the module docstring); returns the manifest written as
    ``export.json``.

    Raises:
        ExportError: a multi-task checkpoint, a bad ``format`` / ``quantize``, an output path that is a file.
        FileNotFoundError / ValueError: an unreadable or foreign checkpoint (from
            :meth:`~s2s_tasks.inference.Predictor.from_checkpoint`).
    """
    import s2s_tasks
    from s2s_tasks.checkpoint import read_checkpoint_extras
    from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

    if format not in FORMATS:
        raise ExportError(f"--format {format!r} is not a format; choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ExportError(f"--quantize {quantize!r} is not a quantisation; choose one of {', '.join(QUANTIZE_CHOICES)} "
                          "(or leave it out for float32)")
    directory = Path(output)
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"--output {output} is a file; pass a directory (it is created if missing)")
    extras = read_checkpoint_extras(ckpt_path)
    task = extras.get("task")
    if task == "multitask":
        _check_exportable(nn.Module(), task, ckpt_path)
    from s2s_tasks.inference import Predictor

    predictor = Predictor.from_checkpoint(ckpt_path)
    model = predictor.model.eval()
    _check_exportable(model, task, ckpt_path)
    if quantize is not None and format == "torchscript":
        from s2s_tasks.quantize import quantize_model

        model = quantize_model(model, quantize)
    kind, graphs, kind_fields = _graphs(model, task)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".onnx" if format == "onnx" else ".pt"
    described: Dict[str, Any] = {}
    for graph in graphs:
        path = directory / f"{graph.name}{suffix}"
        with torch.no_grad():
            outputs = graph.module(*graph.inputs)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            if format == "onnx":
                _export_onnx(graph.module, graph.inputs, path)
                if quantize is not None:
                    _quantize_onnx(path)
            else:
                _export_torchscript(graph.module, graph.inputs, path)
        described[graph.name] = {"file": path.name, "inputs": _describe(graph.module.input_names, graph.inputs),
                                 "outputs": _describe(graph.module.output_names, outputs)}
        log.info("wrote %s", path)
    (directory / "tokenizer.json").write_text(model.tokenizer.to_str(), encoding="utf-8")
    manifest: Dict[str, Any] = {
        "s2s_tasks_version": s2s_tasks.__version__, "torch_version": torch.__version__,
        "task": task, "kind": kind, "format": format, "quantize": quantize,
        "architecture": model.hparams.get("architecture"), "head": model.hparams.get("head"),
        "graphs": described, **kind_fields, "tokenizer": "tokenizer.json",
        "special_token_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
        "source": "src_ids are the tokenizer's ids of the source text, as s2s_tasks.inference.Predictor.encode makes them",
    }
    labels = list(getattr(model, "label_names", []) or [])
    if labels:
        (directory / "labels.json").write_text(json.dumps(labels, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        manifest["labels"] = "labels.json"
    if kind == "generation":
        config = model.generation
        manifest["generation"] = {key: getattr(config, key) for key in ("max_length", "max_length_a", "max_length_b", "min_length")}
        if config.strategy != "greedy" or config.no_repeat_ngram_size or config.repetition_penalty != 1.0:
            manifest["generation"]["note"] = (
                f"the checkpoint decodes with strategy {config.strategy!r} (no_repeat_ngram_size {config.no_repeat_ngram_size}, "
                f"repetition_penalty {config.repetition_penalty}); OnnxGreedyDecoder runs plain greedy search within these limits")
    if task == "ner" and not model.generates:
        manifest["crf"] = bool(model.hparams.crf)
    if task == "qa" and not model.generates:
        manifest["max_answer_tokens"] = model.hparams.max_answer_tokens
        manifest["whole_words"] = bool(model.hparams.get("whole_words", True))
    (directory / "export.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


# --------------------------------------------------------------------------------------------- running exported graphs
def viterbi_decode(emissions: np.ndarray, mask: np.ndarray, transitions: np.ndarray, start: np.ndarray,
                   end: np.ndarray) -> List[List[int]]:
    """The best tag sequence of each row under a linear-chain CRF (numpy; what
    :meth:`~s2s_tasks.nn.crf.LinearChainCRF.viterbi_decode` computes), for the outputs of an
    exported NER model with a CRF.

    Args:
        emissions: ``(B, W, T)`` scores; mask: ``(B, W)`` bool, True for real words.
        transitions: ``(T, T)``, ``[i, j]`` the score of tag ``j`` after tag ``i``; start, end: ``(T,)``
            (``-inf`` for forbidden transitions).

    Returns:
        ``B`` lists of tag ids, each as long as its row's real words.
    """
    emissions = emissions.astype(np.float32)
    batch, length, num_tags = emissions.shape
    identity = np.broadcast_to(np.arange(num_tags), (batch, num_tags))
    score = start[None, :] + emissions[:, 0]
    history = []
    for i in range(1, length):
        candidates = score[:, :, None] + transitions[None, :, :]  # (B, previous, next)
        pointer, best = candidates.argmax(axis=1), candidates.max(axis=1)
        real = mask[:, i][:, None]
        score = np.where(real, best + emissions[:, i], score)
        history.append(np.where(real, pointer, identity))
    last = (score + end[None, :]).argmax(axis=1)
    path = [last]
    for pointer in reversed(history):
        last = np.take_along_axis(pointer, last[:, None], axis=1)[:, 0]
        path.append(last)
    tags = np.stack(path[::-1], axis=1)
    return [row[: int(n)].tolist() for row, n in zip(tags, mask.sum(1))]


class OnnxGreedyDecoder:
    """Greedy decoding with the ONNX graphs of a generation model (onnxruntime), a reference for
    serving them without PyTorch. It reproduces :func:`s2s_tasks.generation.greedy_search` with
    the exported limits: ``max_length`` new tokens at most (``max_length_a``/``b``: per source
    length), ``min_length`` at least, then ``</s>``.

        decoder = OnnxGreedyDecoder("exported/")
        ids = decoder.generate(src_ids, src_mask)          # [[token ids], ...] without <s> / </s>

    Args:
        directory: what ``s2s-tasks export --format onnx`` wrote.
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(self, directory: str, providers: Optional[Sequence[str]] = None) -> None:
        import onnxruntime

        root = Path(directory)
        manifest_path = root / "export.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} does not exist: pass a directory written by s2s-tasks export --format onnx")
        self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if self.manifest.get("format") != "onnx" or self.manifest.get("kind") != "generation":
            raise ValueError(f"{directory} holds a {self.manifest.get('kind')} {self.manifest.get('format')} export; "
                             "OnnxGreedyDecoder needs a generation model exported with --format onnx")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        providers = list(providers or ["CPUExecutionProvider"])
        graphs = self.manifest["graphs"]
        self.encoder = onnxruntime.InferenceSession(str(root / graphs["encoder"]["file"]), options, providers=providers)
        self.decoder = onnxruntime.InferenceSession(str(root / graphs["decoder"]["file"]), options, providers=providers)
        self.decoder_inputs = [spec["name"] for spec in graphs["decoder"]["inputs"]]
        self.encoder_outputs = [spec["name"] for spec in graphs["encoder"]["outputs"]]
        ids = self.manifest["special_token_ids"]
        self.bos_id, self.eos_id = ids["bos"], ids["eos"]
        self.limits = self.manifest["generation"]

    def max_lengths(self, src_mask: np.ndarray, max_length: Optional[int] = None) -> np.ndarray:
        """``(B,)``: new tokens allowed per row (``GenerationConfig``'s ``max_length``, ``max_length_a/b``)."""
        limit = self.limits["max_length"] if max_length is None else max_length
        if self.limits["max_length_a"] > 0:
            lengths = np.floor(self.limits["max_length_a"] * src_mask.sum(1).astype(np.float64) + self.limits["max_length_b"])
            return np.clip(lengths.astype(np.int64), 0, limit)
        return np.full(src_mask.shape[0], limit, dtype=np.int64)

    def generate(self, src_ids: np.ndarray, src_mask: Optional[np.ndarray] = None,
                 max_length: Optional[int] = None) -> List[List[int]]:
        """Greedy outputs of a batch.

        Args:
            src_ids: ``(B, S)`` int64 source token ids, padded with the pad id.
            src_mask: ``(B, S)`` bool, True for real tokens (default: ``src_ids != pad``).
            max_length: override of the exported ``max_length``.

        Returns:
            ``B`` lists of generated token ids, without ``<s>`` and ``</s>``.
        """
        src_ids = np.asarray(src_ids, dtype=np.int64)
        if src_ids.ndim != 2:
            raise ValueError(f"src_ids must be (B, S), got shape {src_ids.shape}")
        src_mask = (src_ids != self.manifest["special_token_ids"]["pad"]) if src_mask is None else np.asarray(src_mask, dtype=bool)
        batch = src_ids.shape[0]
        encoded = dict(zip(self.encoder_outputs, self.encoder.run(None, {"src_ids": src_ids, "src_mask": src_mask})))
        feeds = {"memory": encoded["memory"], "src_mask": src_mask, "src_ids": src_ids}
        recurrent = self.manifest["decoder_kind"] == "recurrent"
        state_names = list(self.manifest.get("decoder_state", []))
        state = {name: encoded[name] for name in ["projected_keys", *state_names]} if recurrent else {}
        limits = self.max_lengths(src_mask, max_length)
        min_length = self.limits["min_length"]
        outputs: List[List[int]] = [[] for _ in range(batch)]
        alive = np.arange(batch)
        prefix = np.full((batch, 1), self.bos_id, dtype=np.int64)
        for step in range(int(limits.max()) + 1 if batch else 0):
            run_feeds = {**feeds, **state}
            if recurrent:
                run_feeds["last_tokens"] = prefix[:, -1]
            else:
                run_feeds["tgt_prefix"] = prefix
            results = self.decoder.run(None, {name: run_feeds[name] for name in self.decoder_inputs})
            log_probs = results[0].astype(np.float32)
            forced = step >= limits
            eos = log_probs[:, self.eos_id].copy()
            log_probs[forced] = -np.inf
            log_probs[:, self.eos_id] = np.where(forced, eos, -np.inf) if step < min_length else eos
            tokens = log_probs.argmax(axis=1)
            ended = tokens == self.eos_id
            for row, token, done in zip(alive, tokens, ended):
                if not done:
                    outputs[row].append(int(token))
            if ended.all():
                break
            keep = ~ended
            alive, limits, tokens = alive[keep], limits[keep], tokens[keep]
            feeds = {name: value[keep] for name, value in feeds.items()}
            if recurrent:
                state = {"projected_keys": state["projected_keys"][keep],
                         **{name: value[keep] for name, value in zip(state_names, results[1:])}}
            prefix = np.concatenate([prefix[keep], tokens[:, None]], axis=1)
        return outputs


# --------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2s-tasks export",
        description=(
            "Write a checkpoint's network as ONNX or TorchScript graphs, with its tokenizer (tokenizer.json), labels "
            "(labels.json) and a description of the graphs (export.json). Encoder-head models (classification, ner, "
            "qa, relation_extraction) give one graph (model.onnx / model.pt) from the batch tensors to the head's "
            "outputs (NER with a CRF: also the CRF potentials; decode with s2s_tasks.export.viterbi_decode). "
            "Generation models give an encoder graph and a decoder-step graph (encoder.onnx, decoder.onnx); "
            "s2s_tasks.export.OnnxGreedyDecoder is a greedy decoding loop over them."
        ),
        epilog="example: s2s-tasks export --ckpt_path outputs/translation/version_0/checkpoints/last.ckpt "
               "--format onnx --output exported/translation",
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by s2s-tasks fit (single-task)")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx (run with onnxruntime) or torchscript (torch.jit.load, libtorch); default: onnx")
    parser.add_argument("--output", required=True, help="the directory to write (created if missing; files in it are replaced)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                        help="int8: dynamic int8 quantisation of the linear layers (MatMul weights), for CPU inference; "
                             "default: the trained precision (float32)")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """``s2s-tasks export ...`` (``argv``: the arguments after ``export``). A user error (a bad
    option, a missing or foreign checkpoint, a multi-task checkpoint) is printed as one paragraph
    naming the option to fix, with exit status 2. Returns None (the console script passes the
    return value to ``sys.exit``); the manifest is in ``export.json``."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        manifest = export_checkpoint(args.ckpt_path, args.output, args.format, args.quantize)
    except (ExportError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError) as err:
        message = " ".join(str(err).split())
        if not isinstance(err, ExportError) and "--ckpt_path" not in message:
            message += " (check --ckpt_path)"
        sys.stderr.write(f"s2s-tasks export: error: {message}\n")
        raise SystemExit(2) from err
    files = ", ".join(graph["file"] for graph in manifest["graphs"].values())
    print(f"exported the {manifest['task']} model ({manifest['format']}{', ' + manifest['quantize'] if manifest['quantize'] else ''}) "
          f"to {args.output}: {files}, tokenizer.json, export.json")
