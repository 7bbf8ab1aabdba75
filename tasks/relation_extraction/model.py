"""Relation extraction head: the encoder states at the two entity start markers (plus a pooled
context vector) -> the directed relation (or the relation generated as text)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from s2s_tasks.metrics import relation_scores
from s2s_tasks.nn.dropout import Dropout
from s2s_tasks.nn.pooling import POOLINGS, SequencePooling
from s2s_tasks.nn.types import EncoderOutput
from s2s_tasks.structured_module import StructuredModule


class EntityStartHead(nn.Module):
    """``[h(<e1>); h(<e2>); pool(h)]`` -> dropout -> (``Linear`` -> ``tanh`` -> dropout) -> ``Linear``.

    The "entity markers - entity start" representation of Baldini Soares et al. 2019 ("Matching
    the Blanks: Distributional Similarity for Relation Learning", sec. 3.3, fig. 3f): the encoder
    states of the two start markers, concatenated; a pooled context vector may be appended
    (as R-BERT, Wu & He 2019, adds the ``[CLS]`` state).

    Args:
        size: encoder state size ``D``.
        num_labels: number of relation labels ``K``.
        pooling: the context pooling (see :class:`~s2s_tasks.nn.pooling.SequencePooling`) or
            ``none`` (entity starts only, as in Baldini Soares et al.).
        hidden_size: size of a ``tanh`` hidden layer before the output layer; 0 for none.
        dropout: dropout on the concatenated features (and on the hidden layer).
    """

    def __init__(self, size: int, num_labels: int, pooling: str = "mean", hidden_size: int = 0, dropout: float = 0.1) -> None:
        super().__init__()
        self.pool = None if pooling == "none" else SequencePooling(pooling, size)
        features = size * (2 if self.pool is None else 3)
        self.dropout = Dropout(dropout)
        self.hidden = nn.Linear(features, hidden_size) if hidden_size > 0 else None
        self.out = nn.Linear(hidden_size if hidden_size > 0 else features, num_labels)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, e1_pos: torch.Tensor, e2_pos: torch.Tensor) -> torch.Tensor:
        """``states (B, S, D)``, ``mask (B, S)`` bool, ``e1_pos``/``e2_pos (B,)`` -> logits ``(B, K)``."""
        rows = torch.arange(states.size(0), device=states.device)
        parts = [states[rows, e1_pos], states[rows, e2_pos]]
        if self.pool is not None:
            parts.append(self.pool(states, mask))
        features = self.dropout(torch.cat(parts, dim=-1))
        if self.hidden is not None:
            features = self.dropout(torch.tanh(self.hidden(features)))
        return self.out(features)


class RelationExtractionModule(StructuredModule):
    """Classifier of the relation between two marked entities.

    Encoder head: :class:`EntityStartHead` over the encoder states (the data module marks the
    head with ``<e1> ... </e1>`` and the tail with ``<e2> ... </e2>``), trained with
    cross-entropy. Generate head: the relation label is generated from the marked text; a
    generated text that is not a label is written as ``relation: null`` and counted as
    ``no_relation_label`` by the metrics, as the official SemEval-2010 Task 8 scorer counts a
    skipped example ("skipped examples are equivalent to those classified as Other"): it costs
    recall, never precision.

    Metrics (0-100; see :func:`~s2s_tasks.metrics.relation_scores`): ``micro_precision``,
    ``micro_recall``, ``micro_f1`` over the directed labels other than ``no_relation_label``
    (exact match); with a label set in SemEval naming (every other label ``Name(e1,e2)`` or
    ``Name(e2,e1)``) also ``semeval_macro_f1``, the official SemEval-2010 Task 8 score.

    Args:
        pooling: context vector appended to the two marker states: ``mean``, ``max``,
            ``first`` (the ``<s>`` state), ``attention`` or ``none``.
        hidden_size: a ``tanh`` hidden layer of this size before the output layer (0: none).
        no_relation_label: the label meaning "no relation" (must equal ``data.no_relation_label``).
        **kwargs: see :class:`~s2s_tasks.structured_module.StructuredModule`.
    """

    task_name = "relation_extraction"
    primary_metric = "micro_f1"

    def __init__(self, pooling: str = "mean", hidden_size: int = 0, no_relation_label: str = "Other", **kwargs: Any) -> None:
        if pooling not in (*POOLINGS, "none"):
            raise ValueError(f"model.pooling must be one of {[*POOLINGS, 'none']}, got {pooling!r}")
        if hidden_size < 0:
            raise ValueError(f"model.hidden_size must be >= 0 (0: no hidden layer), got {hidden_size}")
        super().__init__(**kwargs)  # save_hyperparameters there records the arguments above too

    def build_head(self, input_size: int) -> nn.Module:
        num_labels = self.hparams.num_labels
        if num_labels < 2:
            raise ValueError(f"relation extraction needs at least 2 labels (model.num_labels, linked from the data), got {num_labels}")
        hp = self.hparams
        return EntityStartHead(input_size, num_labels, hp.pooling, hp.hidden_size, hp.head_dropout)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_label = getattr(getattr(datamodule, "hparams", None), "no_relation_label", None)
        if data_label is not None and data_label != self.hparams.no_relation_label:
            raise ValueError(
                f"data.no_relation_label is {data_label!r} but model.no_relation_label is "
                f"{self.hparams.no_relation_label!r}; set both to the same label"
            )

    # ----------------------------------------------------------------------------- encoder head
    def head_forward(self, batch: Dict[str, Any], enc_out: EncoderOutput) -> torch.Tensor:
        return self.task_head(enc_out.states, enc_out.mask, batch["e1_pos"], batch["e2_pos"])

    def head_loss(self, logits: torch.Tensor, batch: Dict[str, Any]) -> Tuple[torch.Tensor, int]:
        loss = F.cross_entropy(logits.float(), batch["label"], reduction="sum")
        return loss, int(batch["label"].numel())

    def head_predict(self, logits: torch.Tensor, batch: Dict[str, Any]) -> List[str]:
        return self.argmax_labels(logits)

    # ----------------------------------------------------------------------------- generate head
    def parse_generated(self, texts: List[str], batch: Dict[str, Any]) -> List[Optional[str]]:
        """A generated text is its label if it is one (surrounding spaces ignored), else ``None``."""
        return self.parse_labels(texts)

    # ----------------------------------------------------------------------------- scores and output
    def compute_metrics(self, predictions: Sequence[Optional[str]], golds: Sequence[str]) -> Tuple[Dict[str, float], Dict[str, str]]:
        scores = relation_scores(predictions, golds, no_relation=self.hparams.no_relation_label, labels=self.label_names or None)
        return scores, {}

    def prediction_record(self, prediction: Any, batch: Dict[str, Any], i: int, outputs: Any = None) -> Dict[str, Any]:
        example = batch["example"][i]
        record: Dict[str, Any] = {"relation": prediction}
        if outputs is not None:
            record["probabilities"] = self.label_probabilities(outputs[i])
        for name, start, end in (("head", example.head_start, example.head_end), ("tail", example.tail_start, example.tail_end)):
            record[name] = {"text": example.text[start:end], "start": start, "end": end}
        return record
