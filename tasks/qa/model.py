"""Extractive QA head: start/end pointers over the context tokens (or the answer generated as text)."""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from s2s_tasks.data.datamodule import LABEL_PAD
from s2s_tasks.metrics import squad_scores
from s2s_tasks.nn.attention_flow import AttentionFlow, MaskedLSTM
from s2s_tasks.nn.dropout import Dropout
from s2s_tasks.structured_module import StructuredModule


class QAPrediction(NamedTuple):
    """A predicted answer: its text, its ``[start_char, end_char)`` span in the context (``None``
    when unknown, e.g. a generated text that does not occur in the context) and its score
    (start logit + end logit; ``None`` for generated answers)."""

    text: str
    start_char: Optional[int]
    end_char: Optional[int]
    score: Optional[float]


#: model.reader: how the span pointers read the encoder states
READERS = ("pointer", "attention_flow")


def context_mask(batch: Dict[str, Any], length: int) -> torch.Tensor:
    """``(B, length)`` bool: True at the positions of each feature's context tokens."""
    positions = torch.arange(length, device=batch["context_start"].device)
    start = batch["context_start"][:, None]
    return (positions >= start) & (positions < start + batch["context_length"][:, None])


def exact_match(src_ids: torch.Tensor, in_question: torch.Tensor) -> torch.Tensor:
    """``(B, S)`` bool: True where a token's id also occurs at a question position of its row
    (DrQA's exact-match feature, Chen et al. 2017, sec. 3.1; with ``data.lowercase`` it is their
    lowercased match). From scratch on the 10% SQuAD re-split it took F1 after one epoch from
    10.5 to 23.2 (``--preset real``)."""
    same = src_ids[:, :, None] == src_ids[:, None, :]  # (B, S, S)
    return (same & in_question[:, None, :]).any(-1)


def inverse_count(src_ids: torch.Tensor, in_context: torch.Tensor) -> torch.Tensor:
    """``(B, S)`` float: ``log(1 + 1/C(w))`` at each context token, ``C(w)`` the number of times its
    id occurs among the context tokens of its row; 0 elsewhere. The inverse count by which
    MCTest's sliding-window baseline weights a matching word (Richardson et al. 2013, sec. 4.1;
    the SQuAD paper's sliding-window baseline too): a word that occurs once in the passage is a
    more specific anchor than one that occurs ten times."""
    same = src_ids[:, :, None] == src_ids[:, None, :]  # (B, S, S)
    count = (same & in_context[:, None, :]).sum(-1).clamp(min=1)
    return torch.log1p(1.0 / count) * in_context


def answers_cross_entropy(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``logits (B, S)``, ``positions (B, K)`` (the reference answers' positions, ``LABEL_PAD``
    after a row's last) -> the sum over rows of the mean over a row's answers of
    ``-log softmax(logits)[position]``: the cross-entropy against the answers' empirical
    distribution (an answer given twice has twice the weight)."""
    valid = positions != LABEL_PAD
    log_probs = logits.float().log_softmax(-1).gather(1, positions.clamp(min=0))  # (B, K)
    per_row = -(log_probs * valid).sum(1) / valid.sum(1).clamp(min=1)
    return per_row.sum()


def question_mask(batch: Dict[str, Any], length: int) -> torch.Tensor:
    """``(B, length)`` bool: True at the question tokens of ``<s> question <sep> context </s>``
    (positions 1 to ``context_start - 2``)."""
    positions = torch.arange(length, device=batch["context_start"].device)
    return (positions >= 1) & (positions < batch["context_start"][:, None] - 1)


def best_spans(
    start_logits: torch.Tensor, end_logits: torch.Tensor, mask: torch.Tensor, max_answer_tokens: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The highest-scoring span of each row (Seo et al. 2017, sec. 2; Devlin et al. 2019, sec. 4.2):
    ``argmax_{i <= j < i + max_answer_tokens} start_i + end_j`` over the positions where ``mask``
    is True.

    Args:
        start_logits, end_logits: ``(B, S)``.
        mask: ``(B, S)`` bool, the positions a span may start and end at (at least one per row).
        max_answer_tokens: the longest span, in tokens.

    Returns:
        ``(start, end, score)``, each ``(B,)``: inclusive token positions and the span score.
    """
    length = start_logits.size(1)
    start = start_logits.float().masked_fill(~mask, float("-inf"))
    end = end_logits.float().masked_fill(~mask, float("-inf"))
    scores = start[:, :, None] + end[:, None, :]  # (B, S, S): [b, i, j] = start_i + end_j
    ones = torch.ones(length, length, dtype=torch.bool, device=scores.device)
    band = torch.triu(ones) & ~torch.triu(ones, diagonal=max_answer_tokens)  # i <= j < i + max_answer_tokens
    flat = scores.masked_fill(~band, float("-inf")).flatten(1)
    best = flat.argmax(-1)
    return best // length, best % length, flat.gather(1, best[:, None]).squeeze(1)


def whole_word_span(text: str, start: int, end: int) -> Tuple[int, int]:
    """``text[start:end]`` widened to whole words: ``start`` moves left and ``end`` right while
    they fall between two letters or digits (``str.isalnum``).

    A subword vocabulary lets the span pointers start or end inside a word (``"rograde"`` for
    ``"retrograde"``), which SQuAD's whitespace-token F1 scores as a wrong word. Such spans were
    8 of 888 predictions on the SQuAD re-split's validation split; widening them took F1 from
    46.28 to 46.58 (none got worse), while only 63 of the training split's 27,820 reference
    answers (0.2%) begin or end inside a word. Not for text written without spaces (Chinese,
    Japanese, Thai), where a word run is a whole clause: set ``model.whole_words false`` there.
    """
    while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end


class QAModule(StructuredModule):
    """Extractive question answering.

    Encoder head, ``reader: pointer``: one linear layer maps each encoder state to a start and an
    end logit, the pointer networks of BiDAF (Seo et al. 2017) in BERT's form (Devlin et al.
    2019, sec. 4.2: ``P(start = i) = softmax_i(S . T_i)``). ``reader: attention_flow``: BiDAF's
    layers over the encoder states (Seo et al. 2017, sec. 2.4-2.6): the attention flow between
    the question and the context positions (:class:`~s2s_tasks.nn.attention_flow.AttentionFlow`)
    gives query-aware vectors ``G (B, S, 4D)``; a BiLSTM of ``model.reader_layers`` layers
    reads them, with each token's exact-match feature (:func:`exact_match`), into ``M``;
    ``start = w1 . [G; M]``, and ``end = w2 . [G; M2]`` with ``M2`` one more BiLSTM over ``M``.
    Logits are restricted to the window's context tokens and, for the loss only, position 0
    (``<s>``), the target of windows that do not hold the answer. The loss is the mean of the
    start and end cross-entropies per window. A window's
    prediction is its best span ``i <= j < i + max_answer_tokens`` by ``start_i + end_j``,
    mapped to characters of the original context; an example's answer is the best-scoring
    span over its windows.

    Generate head: the answer text is generated from ``question <sep> context`` (windows do not
    apply there); its character span is where it first occurs in the context (``null`` if nowhere).

    Metrics (0-100): ``exact_match`` and ``f1``, SQuAD v1.1's (answer normalisation: lowercase,
    no punctuation, no articles, single spaces; the best over all reference answers).

    Args:
        max_answer_tokens: the longest answer span considered, in tokens (30 in BERT's SQuAD
            recipe).
        reader: ``pointer`` (a linear layer over the encoder states, for encoders that already
            relate question and context, e.g. a Transformer) or ``attention_flow`` (BiDAF's
            attention flow and modeling layers, for a BiLSTM encoder that reads
            ``question <sep> context`` left to right and right to left only).
        reader_layers: BiLSTM layers of the attention-flow modeling layer (BiDAF: 2).
        inverse_count: attention_flow only: the modeling layer also reads each context token's
            inverse count in its window (:func:`inverse_count`) and the exact-match feature times it.
        match_inputs: the encoder also reads each context token's question-match features: its
            exact match (:func:`exact_match`), its inverse count (:func:`inverse_count`) and their
            product, projected to the embedding size and added to its token embedding (DrQA feeds
            such features to its paragraph encoder: Chen et al. 2017, sec. 3.1), so that the
            encoder's states, which the reader compares with the question, already know where
            the question's words are. Models trained from scratch (not ``model.pretrained``).
        whole_words: widen each predicted span to whole words of the context
            (:func:`whole_word_span`); set false for languages written without spaces.
        **kwargs: see :class:`~s2s_tasks.structured_module.StructuredModule`.
    """

    task_name = "qa"
    primary_metric = "f1"

    def __init__(self, max_answer_tokens: int = 30, reader: str = "pointer", reader_layers: int = 2, whole_words: bool = True,
                 inverse_count: bool = False, match_inputs: bool = False, **kwargs: Any) -> None:
        if max_answer_tokens < 1:
            raise ValueError(f"model.max_answer_tokens must be at least 1, got {max_answer_tokens}")
        if reader not in READERS:
            raise ValueError(f"model.reader must be one of {list(READERS)}, got {reader!r}")
        if reader_layers < 1:
            raise ValueError(f"model.reader_layers must be at least 1, got {reader_layers}")
        if inverse_count and reader != "attention_flow":
            raise ValueError(f"model.inverse_count feeds the attention-flow modeling layer: set model.reader "
                             f"attention_flow (got {reader!r}) or model.inverse_count false")
        if match_inputs and (kwargs.get("head", "encoder") != "encoder" or kwargs.get("pretrained")):
            raise ValueError("model.match_inputs adds features to the token embeddings of the encoder head trained from "
                             "scratch; set it false with model.head generate or model.pretrained")
        super().__init__(**kwargs)

    def build_network(self, network_args: Dict[str, Any]) -> None:
        super().build_network(network_args)
        if self.hparams.get("match_inputs"):
            self.match_embedding = nn.Linear(3, self.encoder.embed.dim)

    def input_features(self, batch: Dict[str, Any]) -> Optional[torch.Tensor]:
        """With ``model.match_inputs``: ``(B, S, E)``, the projected exact match, inverse count and
        their product of each context token (0 at the other positions)."""
        if not self.hparams.get("match_inputs"):
            return None
        ids = batch["src_ids"]
        in_context = context_mask(batch, ids.size(1))
        matches = (exact_match(ids, question_mask(batch, ids.size(1))) & in_context).float()
        weights = inverse_count(ids, in_context)
        return self.match_embedding(torch.stack([matches, weights, matches * weights], -1))

    # ----------------------------------------------------------------------------- encoder head
    def build_head(self, input_size: int) -> nn.Module:
        dropout = Dropout(self.hparams.head_dropout)
        if self.hparams.reader == "pointer":
            return nn.Sequential(dropout, nn.Linear(input_size, 2))
        flow = AttentionFlow(input_size)
        return nn.ModuleDict({
            "dropout": dropout,
            "flow": flow,
            # + 1: the exact-match feature of each context token; + 2: its inverse count, alone and times the match
            "modeling": MaskedLSTM(flow.output_size + (3 if self.hparams.inverse_count else 1), input_size, num_layers=self.hparams.reader_layers, dropout=self.hparams.head_dropout),
            "end_rnn": MaskedLSTM(input_size, input_size),
            "start": nn.Linear(flow.output_size + input_size, 1),
            "end": nn.Linear(flow.output_size + input_size, 1),
        })

    def _attention_flow_logits(self, batch: Dict[str, Any], enc_out) -> torch.Tensor:
        """BiDAF's attention flow, modeling and output layers -> ``(B, S, 2)``."""
        head, states, mask = self.task_head, enc_out.states, enc_out.mask
        length = states.size(1)
        in_question = question_mask(batch, length)
        in_context = context_mask(batch, length)
        flow = head["flow"](states, in_question, in_context)  # (B, S, 4D)
        matches = exact_match(batch["src_ids"], in_question).to(flow.dtype)[..., None]  # (B, S, 1)
        if self.hparams.inverse_count:
            weights = inverse_count(batch["src_ids"], in_context).to(flow.dtype)[..., None]
            matches = torch.cat([matches, weights, matches * weights], -1)  # (B, S, 3)
        modeled = head["modeling"](torch.cat([head["dropout"](flow), matches], -1), mask)  # (B, S, D)
        end_states = head["end_rnn"](head["dropout"](modeled), mask)  # (B, S, D)
        start = head["start"](head["dropout"](torch.cat([flow, modeled], -1)))
        end = head["end"](head["dropout"](torch.cat([flow, end_states], -1)))
        return torch.cat([start, end], -1)

    def head_forward(self, batch: Dict[str, Any], enc_out) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(start_logits, end_logits)``, each ``(B, S)`` float, masked to the context tokens and position 0."""
        if self.hparams.reader == "pointer":
            logits = self.task_head(enc_out.states).float()  # (B, S, 2)
        else:
            logits = self._attention_flow_logits(batch, enc_out).float()
        allowed = context_mask(batch, logits.size(1))
        allowed[:, 0] = True
        logits = logits.masked_fill(~allowed[:, :, None], torch.finfo(logits.dtype).min)
        return logits[..., 0], logits[..., 1]

    def head_loss(self, outputs: Tuple[torch.Tensor, torch.Tensor], batch: Dict[str, Any]) -> Tuple[torch.Tensor, int]:
        """Summed over windows: the mean of the start and end cross-entropies, each averaged over the
        reference answers when the batch has them all (``data.answer_targets all``)."""
        start_logits, end_logits = outputs
        if "start_positions" in batch:
            start = answers_cross_entropy(start_logits, batch["start_positions"])
            end = answers_cross_entropy(end_logits, batch["end_positions"])
            return (start + end) / 2, int(batch["start_positions"].size(0))
        start = F.cross_entropy(start_logits, batch["start_position"], reduction="sum")
        end = F.cross_entropy(end_logits, batch["end_position"], reduction="sum")
        return (start + end) / 2, int(batch["start_position"].numel())

    def head_predict(self, outputs: Tuple[torch.Tensor, torch.Tensor], batch: Dict[str, Any]) -> List[QAPrediction]:
        start_logits, end_logits = outputs
        mask = context_mask(batch, start_logits.size(1))
        starts, ends, scores = best_spans(start_logits, end_logits, mask, self.hparams.max_answer_tokens)
        predictions = []
        for i, (start, end, score) in enumerate(zip(starts.tolist(), ends.tolist(), scores.tolist())):
            offsets, first = batch["offsets"][i], int(batch["context_start"][i])
            start_char, end_char = offsets[start - first][0], offsets[end - first][1]
            context = batch["example"][i].context
            if self.hparams.whole_words:
                start_char, end_char = whole_word_span(context, start_char, end_char)
            text = context[start_char:end_char]
            predictions.append(QAPrediction(text, start_char, end_char, score))
        return predictions

    # ----------------------------------------------------------------------------- generate head
    def parse_generated(self, texts: List[str], batch: Dict[str, Any]) -> List[QAPrediction]:
        predictions = []
        for text, example in zip(texts, batch["example"]):
            answer = text.strip()
            found = example.context.find(answer) if answer else -1
            start, end = (found, found + len(answer)) if found >= 0 else (None, None)
            predictions.append(QAPrediction(answer, start, end, None))
        return predictions

    # ----------------------------------------------------------------------------- rows, metrics and records
    def row_keys(self, batch: Dict[str, Any]) -> List[Tuple[int, int]]:
        """(record number, window): each window of an example is a row of its own."""
        index = batch["index"].tolist()
        return list(zip(index, batch.get("window") or [0] * len(index)))

    def merge_eval_rows(self, rows: List[Tuple[Any, Any, Any]]) -> List[Tuple[int, str, List[str]]]:
        """All ranks' window rows ``((index, window), QAPrediction, gold)`` -> one row
        ``(index, answer text, gold answers)`` per example in input order: DDP duplicates of a
        window are dropped, then the best-scoring window's answer is kept."""
        windows = {key: (key, prediction, gold) for key, prediction, gold in rows}
        best: Dict[int, Tuple[int, QAPrediction, Any]] = {}
        for (index, _), prediction, gold in (windows[key] for key in sorted(windows)):
            kept = best.get(index)
            if kept is None or _score(prediction) > _score(kept[1]):  # ties: the earlier window
                best[index] = (index, prediction, gold)
        return [(index, prediction.text, gold) for index, prediction, gold in (best[i] for i in sorted(best))]

    def compute_metrics(self, predictions: Sequence[str], golds: Sequence[List[str]]) -> Tuple[Dict[str, float], Dict[str, str]]:
        return squad_scores(list(predictions), [list(g) for g in golds]), {}

    def prediction_record(self, prediction: QAPrediction, batch: Dict[str, Any], i: int, outputs: Any = None) -> Dict[str, Any]:
        example = batch["example"][i]
        record: Dict[str, Any] = {} if example.id is None else {"id": example.id}
        record.update(
            answer=prediction.text,
            start_char=prediction.start_char,
            end_char=prediction.end_char,
            score=None if prediction.score is None else round(prediction.score, 4),
        )
        return record

    def merge_prediction_records(self, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """All ranks' per-window records -> the best-scoring one per question, in input order."""
        best: Dict[int, Dict[str, Any]] = {}
        for record in records:
            kept = best.get(record["index"])
            if kept is None or _record_score(record) > _record_score(kept):
                best[record["index"]] = record
        return [best[index] for index in sorted(best)]


def _score(prediction: QAPrediction) -> float:
    return float("-inf") if prediction.score is None else prediction.score


def _record_score(record: Dict[str, Any]) -> float:
    return float("-inf") if record.get("score") is None else record["score"]
