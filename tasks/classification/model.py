"""Classification head: pooled encoder states -> label (or the label generated as text)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from s2s_tasks.metrics import classification_scores, multilabel_scores
from s2s_tasks.nn.dropout import Dropout
from s2s_tasks.nn.pooling import SequencePooling
from s2s_tasks.structured_module import StructuredModule


class ClassificationModule(StructuredModule):
    """Single-label text classifier.

    Encoder head: ``pooling`` over the encoder states, dropout, and a linear layer to
    ``num_labels`` logits, trained with (optionally class-weighted) cross-entropy. Generate
    head: the label name is generated; a generated text that is not a label counts as wrong.

    Multi-label (``multi_label``, set from ``data.multi_label``): one sigmoid per label, trained
    with binary cross-entropy (``class_weights`` weigh the positives: ``pos_weight``); a label
    is predicted when its probability exceeds ``threshold``. Generate head: the labels joined by
    ``" ; "`` (``[NONE]`` for none); unknown names are dropped.

    Metrics (0-100): ``accuracy`` and ``macro_f1`` (F1 averaged over the label set with equal
    weight per class; torchmetrics); multi-label: ``accuracy`` is subset accuracy (the whole
    label set right), plus ``micro_f1`` and ``macro_f1``.

    Args:
        pooling: ``mean``, ``max``, ``first`` (the ``<s>`` state) or ``attention``
            (see :class:`~s2s_tasks.nn.pooling.SequencePooling`).
        class_weights: ``null`` (none), ``balanced`` (``n / (k * n_c)`` from the training
            labels, as scikit-learn's; multi-label: ``n_negative / n_positive`` per label) or one
            weight per label in the order of the label set.
        multi_label: several labels per text; set from ``data.multi_label`` by the CLI.
        threshold: multi-label decision threshold on each label's probability.
        **kwargs: see :class:`~s2s_tasks.structured_module.StructuredModule`.
    """

    task_name = "classification"
    primary_metric = "accuracy"

    def __init__(
        self,
        pooling: str = "mean",
        class_weights: Optional[Union[str, List[float]]] = None,
        multi_label: bool = False,
        threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if isinstance(class_weights, str) and class_weights != "balanced":
            raise ValueError(f"model.class_weights must be null, 'balanced' or a list of floats, got {class_weights!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"model.threshold must be in (0, 1), got {threshold}")
        super().__init__(**kwargs)

    def build_head(self, input_size: int) -> nn.Module:
        num_labels = self.hparams.num_labels
        if num_labels < (1 if self.hparams.multi_label else 2):
            raise ValueError(f"classification needs at least 2 labels (model.num_labels, linked from the data), got {num_labels}")
        weights = self.hparams.class_weights
        if isinstance(weights, list) and len(weights) != num_labels:
            raise ValueError(f"model.class_weights has {len(weights)} weights but there are {num_labels} labels")
        head = nn.ModuleDict({
            "pool": SequencePooling(self.hparams.pooling, input_size),
            "dropout": Dropout(self.hparams.head_dropout),
            "out": nn.Linear(input_size, num_labels),
        })
        initial = torch.tensor(weights, dtype=torch.float) if isinstance(weights, list) else torch.ones(num_labels)
        self.register_buffer("class_weight", initial)  # saved with the weights; "balanced" is filled in setup
        return head

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.hparams.class_weights == "balanced" and not self.generates:
            examples, _ = self.trainer.datamodule.examples("train")
            counts = torch.zeros(self.hparams.num_labels)
            for example in examples:
                for label in self.trainer.datamodule.example_labels(example):
                    counts[self.label_names.index(label)] += 1
            if self.hparams.multi_label:
                self.class_weight.copy_((len(examples) - counts) / counts.clamp(min=1))
            else:
                self.class_weight.copy_(counts.sum() / (len(counts) * counts.clamp(min=1)))

    def head_forward(self, batch: Dict[str, Any], enc_out) -> torch.Tensor:
        head = self.task_head
        return head["out"](head["dropout"](head["pool"](enc_out.states, enc_out.mask)))

    def ensemble_outputs(self, outputs: List[torch.Tensor]) -> torch.Tensor:
        """Single-label: the mean softmax probabilities (as log-probabilities); multi-label: each
        label's mean sigmoid probability, returned as its logit, so the threshold applies to the mean."""
        if not self.hparams.multi_label:
            return super().ensemble_outputs(outputs)
        mean = torch.stack([x.float().sigmoid() for x in outputs]).mean(0)
        return torch.logit(mean, eps=1e-6)  # clamped to [eps, 1 - eps]: a mean of 0 or 1 stays finite

    def head_loss(self, logits: torch.Tensor, batch: Dict[str, Any]) -> Tuple[torch.Tensor, int]:
        weighted = self.hparams.class_weights is not None
        if self.hparams.multi_label:
            loss = F.binary_cross_entropy_with_logits(
                logits.float(), batch["label"].float(), pos_weight=self.class_weight if weighted else None, reduction="sum"
            )
            return loss, int(batch["label"].size(0))
        loss = F.cross_entropy(logits.float(), batch["label"], weight=self.class_weight if weighted else None, reduction="sum")
        return loss, int(batch["label"].numel())

    def head_predict(self, logits: torch.Tensor, batch: Dict[str, Any]) -> List[Any]:
        if self.hparams.multi_label:
            chosen = (logits.float().sigmoid() > self.hparams.threshold).tolist()
            return [tuple(label for label, on in zip(self.label_names, row) if on) for row in chosen]
        return self.argmax_labels(logits)

    def parse_generated(self, texts: List[str], batch: Dict[str, Any]) -> List[Any]:
        if self.hparams.multi_label:
            known = set(self.label_names)
            return [tuple(sorted({part.strip() for part in t.split(";")} & known)) for t in texts]
        return self.parse_labels(texts)

    def compute_metrics(self, predictions: Sequence[Any], golds: Sequence[Any]) -> Tuple[Dict[str, float], Dict[str, str]]:
        ids = {label: i for i, label in enumerate(self.label_names)}
        if self.hparams.multi_label:
            def indicators(labels):
                return [int(label in labels) for label in self.label_names]

            return multilabel_scores([indicators(p) for p in predictions], [indicators(g) for g in golds], len(ids)), {}
        scores = classification_scores([ids.get(p, -1) for p in predictions], [ids[g] for g in golds], len(ids))
        return scores, {}

    def prediction_record(self, prediction: Any, batch: Dict[str, Any], i: int, outputs: Any = None) -> Dict[str, Any]:
        if self.hparams.multi_label:
            record: Dict[str, Any] = {"labels": list(prediction)}
            if outputs is not None:
                probabilities = outputs[i].float().sigmoid().tolist()
                record["probabilities"] = {label: round(p, 6) for label, p in zip(self.label_names, probabilities)}
            return record
        record = {"label": prediction}
        if outputs is not None:
            record["probabilities"] = self.label_probabilities(outputs[i])
        return record
