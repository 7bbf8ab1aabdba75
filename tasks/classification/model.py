"""Classification head: pooled encoder states -> label (or the label generated as text)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from s2s_tasks.metrics import classification_scores
from s2s_tasks.nn.pooling import SequencePooling
from s2s_tasks.structured_module import StructuredModule


class ClassificationModule(StructuredModule):
    """Single-label text classifier.

    Encoder head: ``pooling`` over the encoder states, dropout, and a linear layer to
    ``num_labels`` logits, trained with (optionally class-weighted) cross-entropy. Generate
    head: the label name is generated; a generated text that is not a label counts as wrong.

    Metrics (0-100): ``accuracy`` and ``macro_f1`` (F1 averaged over the label set with equal
    weight per class; torchmetrics).

    Args:
        pooling: ``mean``, ``max``, ``first`` (the ``<s>`` state) or ``attention``
            (see :class:`~s2s_tasks.nn.pooling.SequencePooling`).
        class_weights: ``null`` (none), ``balanced`` (``n / (k * n_c)`` from the training
            labels, as scikit-learn's) or one weight per label in the order of the label set.
        **kwargs: see :class:`~s2s_tasks.structured_module.StructuredModule`.
    """

    task_name = "classification"

    def __init__(self, pooling: str = "mean", class_weights: Optional[Union[str, List[float]]] = None, **kwargs: Any) -> None:
        if isinstance(class_weights, str) and class_weights != "balanced":
            raise ValueError(f"model.class_weights must be null, 'balanced' or a list of floats, got {class_weights!r}")
        super().__init__(**kwargs)

    def build_head(self, input_size: int) -> nn.Module:
        num_labels = self.hparams.num_labels
        if num_labels < 2:
            raise ValueError(f"classification needs at least 2 labels (model.num_labels, linked from the data), got {num_labels}")
        weights = self.hparams.class_weights
        if isinstance(weights, list) and len(weights) != num_labels:
            raise ValueError(f"model.class_weights has {len(weights)} weights but there are {num_labels} labels")
        head = nn.ModuleDict({
            "pool": SequencePooling(self.hparams.pooling, input_size),
            "dropout": nn.Dropout(self.hparams.head_dropout),
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
                counts[self.label_names.index(example.label)] += 1
            self.class_weight.copy_(counts.sum() / (len(counts) * counts.clamp(min=1)))

    def head_forward(self, batch: Dict[str, Any], enc_out) -> torch.Tensor:
        head = self.task_head
        return head["out"](head["dropout"](head["pool"](enc_out.states, enc_out.mask)))

    def head_loss(self, logits: torch.Tensor, batch: Dict[str, Any]) -> Tuple[torch.Tensor, int]:
        weighted = self.hparams.class_weights is not None
        loss = F.cross_entropy(logits.float(), batch["label"], weight=self.class_weight if weighted else None, reduction="sum")
        return loss, int(batch["label"].numel())

    def head_predict(self, logits: torch.Tensor, batch: Dict[str, Any]) -> List[str]:
        return [self.label_names[i] for i in logits.argmax(-1).tolist()]

    def parse_generated(self, texts: List[str], batch: Dict[str, Any]) -> List[Optional[str]]:
        known = set(self.label_names)
        return [t.strip() if t.strip() in known else None for t in texts]

    def compute_metrics(self, predictions: Sequence[Optional[str]], golds: Sequence[str]) -> Tuple[Dict[str, float], Dict[str, str]]:
        ids = {label: i for i, label in enumerate(self.label_names)}
        scores = classification_scores([ids.get(p, -1) for p in predictions], [ids[g] for g in golds], len(ids))
        return scores, {}

    def prediction_record(self, prediction: Any, batch: Dict[str, Any], i: int, outputs: Any = None) -> Dict[str, Any]:
        record: Dict[str, Any] = {"label": prediction}
        if outputs is not None:
            probabilities = outputs[i].float().softmax(-1).tolist()
            record["probabilities"] = {label: round(p, 6) for label, p in zip(self.label_names, probabilities)}
        return record
