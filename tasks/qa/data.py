"""Data for extractive question answering in SQuAD v1.1 format (Rajpurkar et al. 2016): a
context, a question, and answers given by their text and character offset in the context.

Encoder head: the question and a window of the context in one encoder input, with a segment
marker between them (as BERT's ``[SEP]``; Devlin et al. 2019, sec. 4.2)::

    <s> question tokens <sep> context tokens of the window </s>

Contexts too long for one input are split into overlapping windows (Devlin et al. 2019's
"document stride"); each window is a feature of its own, all pointing at the same example,
and the model keeps the best span over the windows (:mod:`tasks.qa.model`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from s2s_tasks.data.records import Records
from s2s_tasks.data.schema import Field, RecordError
from s2s_tasks.data.structured import StructuredDataModule
from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID, encode_batch

#: the segment marker between question and context (a special token of the tokenizer)
SEP = "<sep>"

Span = Tuple[int, int]


class QAExample(NamedTuple):
    """One question. ``answers``/``answer_starts`` are empty for prediction inputs."""

    id: Optional[str]
    question: str
    context: str
    answers: Tuple[str, ...]
    answer_starts: Tuple[int, ...]


# ----------------------------------------------------------------------------- windows and offsets
def token_char_spans(text: str, offsets: Sequence[Span]) -> List[Span]:
    """Each token's ``[start, end)`` character span in ``text`` without surrounding whitespace.

    The Metaspace pre-tokenizer folds the space before a word into the word's token (and a run
    of spaces may become a token of its own), so the tokenizer's offsets can start at a space;
    a whitespace-only token becomes the empty span at its end. Spans stay in text order.
    """
    spans = []
    for start, end in offsets:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        spans.append((start, end))
    return spans


def split_windows(n_tokens: int, window: int, doc_stride: int) -> List[Span]:
    """``(first token, length)`` of each window over ``n_tokens`` context tokens.

    The convention of BERT's ``run_squad.py`` (Devlin et al. 2019): ``doc_stride`` is the step
    between the starts of consecutive windows (not the overlap, as in Hugging Face's
    ``stride``), so consecutive windows share ``window - doc_stride`` tokens; windows start at
    ``0, doc_stride, 2 * doc_stride, ...`` until one reaches the end of the context. With
    ``doc_stride <= window`` every token is in at least one window.
    """
    if window < 1 or doc_stride < 1:
        raise ValueError(f"window ({window}) and doc_stride ({doc_stride}) must be positive")
    windows, start = [], 0
    while True:
        length = min(window, n_tokens - start)
        windows.append((start, length))
        if start + length >= n_tokens:
            return windows
        start += min(length, doc_stride)


def answer_token_span(spans: Sequence[Span], start_char: int, end_char: int) -> Optional[Span]:
    """The first and last token (inclusive) covering characters ``[start_char, end_char)``, or
    ``None`` when no token does. A token that is only partly inside the answer is included: the
    span then maps back to slightly more text than the answer (reported by the data module)."""
    ends = [end for _, end in spans]
    starts = [start for start, _ in spans]
    first = bisect_right(ends, start_char)  # first token ending after the answer starts
    last = bisect_left(starts, end_char) - 1  # last token starting before the answer ends
    while first < last and spans[first][0] == spans[first][1]:  # skip whitespace-only tokens
        first += 1
    return (first, last) if first <= last else None


#: data.answer_targets: which reference answers the span loss trains on
ANSWER_TARGETS = ("first", "all")


# ----------------------------------------------------------------------------- the data module
class QADataModule(StructuredDataModule):
    """Extractive QA records in SQuAD v1.1 format: a context (``data.context_column``), a question
    (``data.question_column``) and answers (``data.answers_column``), either SQuAD's
    ``{"text": [...], "answer_start": [...]}`` or a list of ``{"text", "answer_start"}``
    objects; ``answer_start`` is the 0-based character offset of the answer in the context.
    Records with an empty context or question are skipped and counted, and so are records
    without any answer (SQuAD 2.0's unanswerable questions). ``predict`` needs the context and
    the question only (a jsonl/csv/parquet file); an ``id`` column is copied to the predictions.

    Encoder head: ``<s> question <sep> window </s>``, the question cut to
    ``data.max_question_tokens`` and the context split into windows of at most
    ``data.max_source_tokens - len(question) - 3`` tokens that start every ``data.doc_stride``
    tokens (see :func:`split_windows`: BERT's convention, the step between window starts). The
    training target of a window is the token span of the first answer when it lies wholly
    inside the window, else position 0 (``<s>``, "no answer here", as in BERT); with
    ``data.answer_targets all``, each reference answer's span (or 0) is a target. Every feature
    keeps the character span of each of its context tokens, so a predicted token span maps back
    to characters of the original context.

    Generate head: ``question <sep> context`` -> the first answer's text; windows do not apply
    (an input longer than ``data.max_source_tokens`` is cut at its end and counted).

    Without files or a dataset it uses the embedded sample: synthetic paragraphs of facts about
    invented people with one question each, made by ``sample_data.py``.

    Args:
        context_column, question_column, answers_column: the columns of the record.
        id_column: an optional column of question ids, copied to the predictions file (ignored
            when the data has no such column).
        doc_stride: step in tokens between the starts of consecutive windows of a long context;
            at most the shortest window (``max_source_tokens - max_question_tokens - 3``).
        max_question_tokens: longer questions are cut (and counted).
        answer_targets: the span loss's targets where a question has several reference answers
            (SQuAD's development questions have three, often with different boundaries):
            ``first`` (the first answer, as in BERT's SQuAD recipe) or ``all`` (every reference
            answer: the start and end losses average the cross-entropies of the answers, so an
            answer given by two annotators counts twice; features gain ``start_positions`` and
            ``end_positions``, ``(B, K)``). Encoder head only.
        **kwargs: see :class:`~s2s_tasks.data.structured.StructuredDataModule`
            (``max_source_tokens`` is the length of a whole window input).
    """

    sample_dir = Path(__file__).resolve().parent / "sample"
    uses_labels: ClassVar[bool] = False
    special_tokens: ClassVar[Tuple[str, ...]] = (SEP,)
    tensor_fields: ClassVar[Tuple[str, ...]] = ("start_position", "end_position", "context_start", "context_length",
                                                "start_positions", "end_positions")

    def __init__(
        self,
        context_column: str = "context",
        question_column: str = "question",
        answers_column: str = "answers",
        id_column: Optional[str] = "id",
        doc_stride: int = 128,
        max_question_tokens: int = 64,
        answer_targets: str = "first",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # save_hyperparameters there records the arguments above too
        hp = self.hparams
        if answer_targets not in ANSWER_TARGETS:
            raise ValueError(f"data.answer_targets must be one of {list(ANSWER_TARGETS)}, got {answer_targets!r}")
        if answer_targets == "all" and hp.head != "encoder":
            raise ValueError("data.answer_targets all sets the targets of the span pointers (model.head encoder); the "
                             "generate head learns the first answer's text: set data.answer_targets first")
        if max_question_tokens < 1:
            raise ValueError(f"data.max_question_tokens must be at least 1, got {max_question_tokens}")
        if hp.head == "encoder":
            shortest = hp.max_source_tokens - max_question_tokens - 3
            if shortest < 1:
                raise ValueError(
                    f"data.max_source_tokens={hp.max_source_tokens} leaves no room for the context after a question of "
                    f"data.max_question_tokens={max_question_tokens} tokens and 3 special tokens; raise "
                    "data.max_source_tokens or lower data.max_question_tokens"
                )
            if not 1 <= doc_stride <= shortest:
                raise ValueError(
                    f"data.doc_stride must be between 1 and {shortest} (the shortest window: data.max_source_tokens - "
                    "data.max_question_tokens - 3) so that consecutive windows overlap or touch and every context "
                    f"token is in a window; got {doc_stride}"
                )

    # ----------------------------------------------------------------------------- records
    def fields(self, split: str, records: Records) -> List[Field]:
        hp = self.hparams
        fields = [Field(hp.context_column, "data.context_column", "text", "context"),
                  Field(hp.question_column, "data.question_column", "text", "question")]
        if split != "predict":
            fields.append(Field(hp.answers_column, "data.answers_column", "answers", "answers"))
        if hp.id_column:
            fields.append(Field(hp.id_column, "data.id_column", "id", "id", optional=True))
        return fields

    def read_record(self, record: Dict[str, Any], with_gold: bool) -> QAExample:
        hp = self.hparams
        context, question = record[hp.context_column], record[hp.question_column]
        example_id = record.get(hp.id_column) if hp.id_column else None
        if not with_gold:
            return QAExample(example_id, question, context, (), ())
        texts, starts = record[hp.answers_column]
        for k, (text, start) in enumerate(zip(texts, starts)):
            found = context[start : start + len(text)]
            if found != text:
                where = list(islice(_occurrences(context, text), 5))
                hint = f"; the text occurs at offset(s) {where}" if where else "; the text does not occur in the context"
                raise RecordError(
                    hp.answers_column,
                    f"answer {k}: the context has {found!r} at answer_start={start}, expected the answer text {text!r}{hint}. "
                    "answer_start must be the 0-based character offset of the answer in the context "
                    f"({hp.context_column!r}); fix the offset or the answer text",
                )
        return QAExample(example_id, question, context, texts, starts)

    # ----------------------------------------------------------------------------- text views
    def source_text(self, example: QAExample) -> str:
        return f"{example.question} {SEP} {example.context}"

    def target_text(self, example: QAExample) -> str:
        return example.answers[0]

    def gold(self, example: QAExample) -> List[str]:
        """All reference answers: SQuAD scores a prediction against the best-matching one."""
        return list(example.answers)

    def display_source(self, example: QAExample) -> str:
        return example.question

    def tokenizer_training_texts(self) -> Iterator[str]:
        """Each distinct context once (SQuAD asks several questions per paragraph), the questions,
        and in ``generate`` mode the target answers."""
        examples, _ = self.examples("train")
        yield from dict.fromkeys(e.context for e in examples)
        for example in examples:
            yield example.question
            if self.hparams.head == "generate":
                yield self.target_text(example)

    # ----------------------------------------------------------------------------- features
    def encode_examples(self, examples: List[QAExample], tokenizer, with_gold: bool, origin: str) -> List[Dict[str, Any]]:
        """One feature per window of each example's context.

        Feature fields: ``src_ids``; ``example`` (position in ``examples``); ``window`` (its
        number within the example); ``context_start`` (position of the window's first context
        token in ``src_ids``) and ``context_length``; ``offsets`` (the ``[start, end)``
        character span in the context of each of the window's tokens); and with gold
        ``start_position``/``end_position`` (positions in ``src_ids``, 0 when the first answer
        is not wholly inside the window); with ``data.answer_targets all`` also
        ``start_positions``/``end_positions``, the same for each reference answer.
        """
        hp = self.hparams
        sep_id = tokenizer.token_to_id(SEP)
        questions = encode_batch(tokenizer, [e.question for e in examples])
        distinct = list(dict.fromkeys(e.context for e in examples))
        encoded = {
            context: (encoding.ids, token_char_spans(context, encoding.offsets))
            for context, encoding in zip(distinct, tokenizer.encode_batch(distinct, add_special_tokens=False))
        }
        features: List[Dict[str, Any]] = []
        long_contexts = outside = unaligned = 0
        others = others_outside = 0  # data.answer_targets all: the reference answers after the first
        for n, example in enumerate(examples):
            question = questions[n][: hp.max_question_tokens]
            ids, spans = encoded[example.context]
            windows = split_windows(len(ids), hp.max_source_tokens - len(question) - 3, hp.doc_stride)
            long_contexts += len(windows) > 1
            target, targets = None, []
            if with_gold:
                if hp.answer_targets == "all":
                    targets = [answer_token_span(spans, s, s + len(t)) for t, s in zip(example.answers, example.answer_starts)]
                    others += len(targets) - 1
                    others_outside += sum(not any(_within(t, s, length) for s, length in windows) for t in targets[1:])
                start_char = example.answer_starts[0]
                end_char = start_char + len(example.answers[0])
                target = answer_token_span(spans, start_char, end_char)
                if target is not None:
                    extra = example.context[spans[target[0]][0] : start_char] + example.context[end_char : spans[target[1]][1]]
                    unaligned += any(c.isalnum() for c in extra)  # more than punctuation next to the answer
                if not any(_within(target, s, length) for s, length in windows):
                    outside += 1
            prefix = [BOS_ID] + question + [sep_id]
            offset = len(prefix)
            for w, (start, length) in enumerate(windows):
                feature = {
                    "src_ids": prefix + ids[start : start + length] + [EOS_ID],
                    "example": n,
                    "window": w,
                    "context_start": offset,
                    "context_length": length,
                    "offsets": spans[start : start + length],
                }
                if with_gold:
                    inside = _within(target, start, length)
                    feature["start_position"] = offset + target[0] - start if inside else 0
                    feature["end_position"] = offset + target[1] - start if inside else 0
                    if hp.answer_targets == "all":
                        inside_all = [_within(t, start, length) for t in targets]
                        feature["start_positions"] = [offset + t[0] - start if i else 0 for t, i in zip(targets, inside_all)]
                        feature["end_positions"] = [offset + t[1] - start if i else 0 for t, i in zip(targets, inside_all)]
                features.append(feature)
        total = len(examples)
        self.report(origin, sum(len(q) > hp.max_question_tokens for q in questions), total,
                    f"questions cut to data.max_question_tokens={hp.max_question_tokens} tokens")
        self.report(origin, long_contexts, total,
                    f"contexts do not fit one input of data.max_source_tokens={hp.max_source_tokens} tokens: split into "
                    f"windows every data.doc_stride={hp.doc_stride} tokens ({len(features)} windows in all)")
        self.report(origin, unaligned, total,
                    "answers start or end inside a word-piece token: their target covers the whole tokens, so the "
                    "predicted text of such an answer has extra letters or digits (punctuation alone is not counted)")
        self.report(origin, outside, total,
                    "answers fit no single window (trained as 'no answer' in every window); raise data.max_source_tokens "
                    "or lower data.doc_stride")
        if hp.answer_targets == "all":
            self.report(origin, others_outside, others,
                        "reference answers after the first fit no single window (data.answer_targets all trains them as "
                        "'no answer' in every window); raise data.max_source_tokens or lower data.doc_stride")
        return features


def _within(span: Optional[Tuple[int, int]], start: int, length: int) -> bool:
    """Whether a token span (``None``: no span) lies wholly inside the window ``[start, start + length)``."""
    return span is not None and start <= span[0] and span[1] < start + length


def _occurrences(text: str, part: str) -> Iterator[int]:
    start = text.find(part)
    while start >= 0:
        yield start
        start = text.find(part, start + 1)
