"""LightningModule of the tasks that predict structure from text (classification, NER, extractive
QA, relation extraction), with two interchangeable heads:

* ``head: encoder`` -- the shared encoder (``model.architecture``: Transformer or RNN) and a task
  head over its states;
* ``head: generate`` -- the shared encoder-decoder, text-to-text: the data module renders the gold
  structure as target text and :meth:`StructuredModule.parse_generated` reads generated text back
  into the same structure, so both heads are scored by the same :meth:`compute_metrics`.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from s2s_tasks.checkpoint import EXTRAS_KEY
from s2s_tasks.data.structured import HEADS
from s2s_tasks.nn.seq2seq import build_encoder
from s2s_tasks.nn.types import EncoderOutput
from s2s_tasks.seq2seq_module import Seq2SeqModule

Row = Tuple[Any, Any, Any]  # (key, prediction, gold)


class StructuredModule(Seq2SeqModule):
    """Base of the structured-prediction tasks; subclasses implement the head hooks
    (:meth:`build_head`, :meth:`head_forward`, :meth:`head_loss`, :meth:`head_predict`),
    :meth:`parse_generated` and :meth:`compute_metrics`.

    Args:
        head: ``encoder`` (encoder + task head; the decoder options are unused) or ``generate``
            (encoder-decoder, text-to-text; decoding follows ``model.generation`` /
            ``model.val_generation``).
        num_labels: size of the label inventory, linked from the data module.
        head_dropout: dropout on the features the head's output layer reads.
        **kwargs: network, optimisation and decoding arguments of
            :class:`~s2s_tasks.seq2seq_module.Seq2SeqModule`.
    """

    def __init__(self, head: str = "encoder", num_labels: int = 0, head_dropout: float = 0.1, **kwargs: Any) -> None:
        if head not in HEADS:
            raise ValueError(f"model.head must be one of {list(HEADS)}, got {head!r}")
        if head == "encoder":
            for key in ("copy_attention", "coverage_attention"):
                if kwargs.get(key):
                    raise ValueError(f"model.{key} needs a decoder; it applies with model.head: generate only "
                                     f"(set --model.head generate, or drop --model.{key})")
            if kwargs.get("coverage_loss_weight", 0.0) > 0:
                raise ValueError("model.coverage_loss_weight needs a decoder; it applies with model.head: generate only "
                                 "(set --model.head generate, or set --model.coverage_loss_weight 0)")
        super().__init__(**kwargs)  # save_hyperparameters there records head, num_labels, head_dropout too
        self.label_names: List[str] = []

    @property
    def generates(self) -> bool:
        return self.hparams.head == "generate"

    @property
    def reports_perplexity(self) -> bool:  # type: ignore[override]
        return self.generates

    def build_network(self, network_args: Dict[str, Any]) -> None:
        if self.generates:
            super().build_network(network_args)
            return
        if self.hparams.get("pretrained"):
            from s2s_tasks.nn.pretrained import PretrainedEncoder

            self.encoder = PretrainedEncoder(self.hparams.pretrained, self.hparams.vocab_size)
        else:
            encoder_keys = inspect.signature(build_encoder).parameters
            self.encoder = build_encoder(**{k: v for k, v in network_args.items() if k in encoder_keys})
        self.task_head = self.build_head(self.encoder.output_size)

    # ----------------------------------------------------------------------------- task hooks
    def build_head(self, input_size: int) -> nn.Module:
        """The head over encoder states of size ``input_size``."""
        raise NotImplementedError

    def head_forward(self, batch: Dict[str, Any], enc_out: EncoderOutput) -> Any:
        """Head outputs (e.g. logits) for a batch."""
        raise NotImplementedError

    def head_loss(self, outputs: Any, batch: Dict[str, Any]) -> Tuple[torch.Tensor, int]:
        """(summed loss, number of items it sums over) for a labelled batch."""
        raise NotImplementedError

    def head_predict(self, outputs: Any, batch: Dict[str, Any]) -> List[Any]:
        """One prediction per batch row, in the same form as the data module's ``gold``."""
        raise NotImplementedError

    def parse_generated(self, texts: List[str], batch: Dict[str, Any]) -> List[Any]:
        """Generated texts -> predictions in the form of ``gold`` (unparseable text -> an empty/invalid prediction)."""
        raise NotImplementedError

    def compute_metrics(self, predictions: Sequence[Any], golds: Sequence[Any]) -> Tuple[Dict[str, float], Dict[str, str]]:
        raise NotImplementedError

    def prediction_record(self, prediction: Any, batch: Dict[str, Any], i: int, outputs: Any = None) -> Dict[str, Any]:
        """The fields written to the predictions file for row ``i`` (besides index and source);
        ``outputs`` are the head's outputs for the batch (``None`` in generate mode)."""
        return {"prediction": prediction}

    # ----------------------------------------------------------------------------- training and evaluation
    def encode(self, batch: Dict[str, Any]) -> EncoderOutput:
        return self.encoder(batch["src_ids"], batch["src_mask"])

    def training_losses(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """``loss`` (mean over the items the head scores) and ``tokens`` (how many items);
        with ``head: generate`` the per-token losses of :class:`Seq2SeqModule`."""
        if self.generates:
            return super().training_losses(batch)
        loss_sum, count = self.head_loss(self.head_forward(batch, self.encode(batch)), batch)
        return {"loss": loss_sum / max(count, 1), "tokens": torch.tensor(max(count, 1))}

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.generates:
            return super().training_step(batch, batch_idx)
        losses = self.training_losses(batch)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=int(losses["tokens"]))
        return losses["loss"]

    def _eval_step(self, batch: Dict[str, Any], stage: str) -> None:
        if self.generates:
            super()._eval_step(batch, stage)
            return
        outputs = self.head_forward(batch, self.encode(batch))
        loss_sum, count = self.head_loss(outputs, batch)
        self._eval_nll.setdefault(stage, []).append((self.batch_key(batch), float(loss_sum), float(count)))
        rows = zip(self.row_keys(batch), self.head_predict(outputs, batch), batch["gold"])
        self._eval_outputs.setdefault(stage, []).extend(rows)

    def eval_rows(self, batch: Dict[str, Any], texts: List[List[str]]) -> List[Row]:
        predictions = self.parse_generated([t[0] for t in texts], batch)
        return list(zip(self.row_keys(batch), predictions, batch["gold"]))

    def format_example(self, row: Row) -> str:
        key, prediction, gold = row
        return f"  #{key} pred: {prediction!r}\n  #{key} gold: {gold!r}"

    @torch.no_grad()
    def predict_step(self, batch: Dict[str, Any], batch_idx: int) -> List[Dict[str, Any]]:
        outputs = None
        if self.generates:
            texts, _ = self.decode(batch, self.generation)
            predictions = self.parse_generated([t[0] for t in texts], batch)
        else:
            outputs = self.head_forward(batch, self.encode(batch))
            predictions = self.head_predict(outputs, batch)
        records = []
        for i, (index, source) in enumerate(zip(batch["index"].tolist(), batch["source"])):
            record = {"index": index, "source": source}
            record.update(self.prediction_record(predictions[i], batch, i, outputs))
            if self.generates:
                record["generated"] = texts[i][0]
            records.append(record)
        return records

    def merge_prediction_records(self, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """All ranks' predict records -> one per input in input order (DDP duplicates dropped)."""
        return [record for _, record in sorted({r["index"]: r for r in records}.items())]

    # ----------------------------------------------------------------------------- labels
    def argmax_labels(self, logits: torch.Tensor) -> List[str]:
        """``logits (B, num_labels)`` -> the most likely label name of each row."""
        return [self.label_names[i] for i in logits.argmax(-1).tolist()]

    def parse_labels(self, texts: List[str]) -> List[Optional[str]]:
        """Generated texts -> the label each names exactly (spaces around ignored), else ``None``."""
        known = set(self.label_names)
        return [t.strip() if t.strip() in known else None for t in texts]

    def label_probabilities(self, logits: torch.Tensor) -> Dict[str, float]:
        """``logits (num_labels,)`` -> ``{label: softmax probability}`` (6 decimals)."""
        return {label: round(p, 6) for label, p in zip(self.label_names, logits.float().softmax(-1).tolist())}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "label_names"):
            self.label_names = list(datamodule.label_names)

    def label_maps(self) -> Dict[str, List[str]]:
        return {"labels": list(self.label_names)}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        stored = list((checkpoint[EXTRAS_KEY].get("label_maps") or {}).get("labels") or [])
        if self.label_names and stored and self.label_names != stored:
            raise ValueError(
                f"the checkpoint's labels {stored} differ from the data module's {self.label_names}; "
                "leave data.labels unset to use the checkpoint's"
            )
        self.label_names = stored
