"""NER head: encoder states at each word's first subword -> IOB2 tags (softmax or CRF), or the
entities generated as text."""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s_tasks.data.datamodule import LABEL_PAD
from s2s_tasks.metrics import entity_scores
from s2s_tasks.nn.crf import LinearChainCRF, bio_allowed_transitions
from s2s_tasks.nn.dropout import Dropout
from s2s_tasks.structured_module import StructuredModule

from .format import parse_entities, spans_to_tags, tags_to_spans

#: how the scores are computed, logged with them
SIGNATURES = {name: "seqeval strict IOB2, entity-level, micro-averaged" for name in ("precision", "recall", "f1")}


#: ``model.word_states`` -> how many encoder states make one word's features
WORD_STATES = {"first": 1, "first_last": 2}


class TagScores(NamedTuple):
    """Head outputs: ``logits`` ``(B, W, T)`` (emission scores of the kept words) and ``mask``
    ``(B, W)`` bool (True for real words)."""

    logits: Tensor
    mask: Tensor


class NERModule(StructuredModule):
    """Named-entity tagger.

    Encoder head: the encoder state of each word's first subword, dropout, and a linear layer
    to one score per tag. With ``crf: false`` each word's tag is the argmax of a softmax trained
    with cross-entropy (the output may contain ``O -> I-X``; the metric, like seqeval's strict
    mode, ignores such an ``I-X``). With ``crf: true`` the scores are the emissions of a
    linear-chain CRF (Lafferty et al. 2001; Lample et al. 2016) trained by its negative
    log-likelihood and decoded by Viterbi under BIO constraints, so no invalid transition is
    ever output. Both losses are averaged per word. Generate head: the entities are generated as
    text (``EU [ORG] ; German [MISC]``) and parsed back into tags (see :mod:`format`).

    Metrics (0-100): entity-level ``precision``, ``recall`` and ``f1`` (seqeval, strict IOB2,
    micro-averaged over entities), never token-level.

    Args:
        crf: a CRF output layer with BIO-constrained Viterbi decoding instead of a per-word softmax.
        word_states: what represents a word: ``first`` (the encoder state at its first subword)
            or ``first_last`` (the states at its first and last subwords, concatenated: with a
            BiLSTM encoder this gives both directions a state that has read the whole word, as
            the character BiLSTM of Lample et al. 2016 does).
        **kwargs: see :class:`~s2s_tasks.structured_module.StructuredModule`.
    """

    task_name = "ner"
    primary_metric = "f1"
    #: the head's TagScores (per-word emissions; with a CRF, scores of tag sequences rather than
    #: tag probabilities) are not averaged: model.ensemble is refused for NER
    averages_ensembles = False

    def __init__(self, crf: bool = False, word_states: str = "first", **kwargs: Any) -> None:
        if crf and kwargs.get("head") == "generate":
            raise ValueError("model.crf applies with model.head: encoder only (the generate head writes the entities as text)")
        if word_states not in WORD_STATES:
            raise ValueError(f"model.word_states must be one of {list(WORD_STATES)}, got {word_states!r}")
        super().__init__(**kwargs)

    # ----------------------------------------------------------------------------- network
    def build_head(self, input_size: int) -> nn.Module:
        num_labels = self.hparams.num_labels
        if num_labels < 3:
            raise ValueError(
                f"NER needs O and the B-/I- tags of at least one entity type (model.num_labels, linked from the data), "
                f"got {num_labels}; check the tags column (data.tags_column) or data.labels"
            )
        features = input_size * WORD_STATES[self.hparams.word_states]
        head = nn.ModuleDict({"dropout": Dropout(self.hparams.head_dropout), "out": nn.Linear(features, num_labels)})
        if self.hparams.crf:
            head["crf"] = LinearChainCRF(num_labels)  # the BIO constraints are set with the tag names
        return head

    def set_label_names(self, names: Sequence[str]) -> None:
        """Set the tag inventory (and, with a CRF, its BIO transition constraints)."""
        self.label_names = list(names)
        if not self.generates and self.hparams.crf and self.label_names:
            if len(self.label_names) != self.hparams.num_labels:
                raise ValueError(f"{len(self.label_names)} tag names for model.num_labels={self.hparams.num_labels}")
            try:
                allowed = bio_allowed_transitions(self.label_names)
            except ValueError as err:
                raise ValueError(f"{err}; model.crf needs IOB2 tag names (check data.labels)") from None
            self.task_head["crf"].set_allowed(allowed)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.set_label_names(self.label_names)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.set_label_names(self.label_names)

    @property
    def entity_types(self) -> List[str]:
        return sorted({name[2:] for name in self.label_names if name != "O"})

    # ----------------------------------------------------------------------------- encoder head
    def head_forward(self, batch: Dict[str, Any], enc_out) -> TagScores:
        starts = batch["word_starts"]  # (B, W), LABEL_PAD after each row's kept words
        mask = starts != LABEL_PAD
        states = gather_positions(enc_out.states, starts.clamp(min=0))  # (B, W, D)
        if self.hparams.word_states == "first_last":
            ends = word_end_positions(starts, enc_out.mask)
            states = torch.cat([states, gather_positions(enc_out.states, ends)], dim=-1)  # (B, W, 2D)
        head = self.task_head
        return TagScores(head["out"](head["dropout"](states)), mask)

    def head_loss(self, outputs: TagScores, batch: Dict[str, Any]) -> Tuple[Tensor, int]:
        tags = batch["tags"]  # (B, W)
        count = int((tags != LABEL_PAD).sum())
        if self.hparams.crf:
            return self.task_head["crf"].nll(outputs.logits, tags, outputs.mask).sum(), count
        logits = outputs.logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tags.reshape(-1), ignore_index=LABEL_PAD, reduction="sum")
        return loss, count

    def head_predict(self, outputs: TagScores, batch: Dict[str, Any]) -> List[List[str]]:
        if self.hparams.crf:
            ids = self.task_head["crf"].viterbi_decode(outputs.logits, outputs.mask)
        else:
            lengths = outputs.mask.sum(1).tolist()
            ids = [row[:n] for row, n in zip(outputs.logits.argmax(-1).tolist(), lengths)]
        names = self.label_names
        # words cut off by truncation have no scores: they are predicted O
        return [[names[i] for i in row] + ["O"] * (len(example.words) - len(row)) for row, example in zip(ids, batch["example"])]

    # ----------------------------------------------------------------------------- generate head
    def parse_generated(self, texts: List[str], batch: Dict[str, Any]) -> List[List[str]]:
        types = self.entity_types
        predictions = []
        for text, example in zip(texts, batch["example"]):
            spans = parse_entities(text, example.words, types)
            predictions.append(spans_to_tags(spans, len(example.words)))
        return predictions

    # ----------------------------------------------------------------------------- metrics and output
    def compute_metrics(self, predictions: Sequence[List[str]], golds: Sequence[List[str]]) -> Tuple[Dict[str, float], Dict[str, str]]:
        return entity_scores(predictions, golds), dict(SIGNATURES)

    def prediction_record(self, prediction: List[str], batch: Dict[str, Any], i: int, outputs: Optional[TagScores] = None) -> Dict[str, Any]:
        """``{"tags": [...], "entities": [{"text", "label", "start_word", "end_word", "start_char",
        "end_char"}]}``: word indices (end exclusive) and character offsets (end exclusive) into
        the record's ``source``."""
        example = batch["example"][i]
        entities = []
        for start, end, label in tags_to_spans(prediction):
            start_char, end_char = example.offsets[start][0], example.offsets[end - 1][1]
            entities.append({
                "text": example.text[start_char:end_char], "label": label, "start_word": start, "end_word": end,
                "start_char": start_char, "end_char": end_char,
            })
        return {"tags": list(prediction), "entities": entities}


def gather_positions(states: Tensor, positions: Tensor) -> Tensor:
    """``states`` ``(B, S, D)`` at ``positions`` ``(B, W)`` (valid indices) -> ``(B, W, D)``."""
    return states.gather(1, positions.unsqueeze(-1).expand(-1, -1, states.size(-1)))


def word_end_positions(starts: Tensor, token_mask: Tensor) -> Tensor:
    """Position of each word's last subword, ``(B, W)``, from the positions of the words' first
    subwords ``starts`` ``(B, W)`` (LABEL_PAD after each row's kept words) in
    ``<s> subwords </s>`` with ``token_mask`` ``(B, S)``: the position before the next word's
    start, and for a row's last kept word the position before ``</s>`` (so a word cut by
    truncation ends at the last kept subword). Padding words get position 0."""
    kept = starts != LABEL_PAD
    next_starts = torch.cat([starts[:, 1:], torch.full_like(starts[:, :1], LABEL_PAD)], dim=1)
    before_eos = (token_mask.sum(1, keepdim=True) - 2).expand_as(starts)
    ends = torch.where(next_starts != LABEL_PAD, next_starts - 1, before_eos)
    # a word without subwords shares the previous word's start; never end before the start
    return torch.where(kept, torch.maximum(ends, starts), torch.zeros_like(starts))
