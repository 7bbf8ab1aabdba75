"""Data for relation extraction: a text, a head and a tail entity (character spans) and the
directed relation between them (or the no-relation label)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from s2s_tasks.data.records import Records
from s2s_tasks.data.schema import Field, RecordError
from s2s_tasks.data.structured import StructuredDataModule
from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID, encode_batch

#: entity markers around the head (``<e1>`` ... ``</e1>``) and the tail (``<e2>`` ... ``</e2>``): the
#: "entity markers" input of Baldini Soares et al. 2019 ("Matching the Blanks", sec. 3.2), with the
#: tag names of the SemEval-2010 Task 8 annotation
E1, E1_END, E2, E2_END = "<e1>", "</e1>", "<e2>", "</e2>"
MARKERS = (E1, E1_END, E2, E2_END)
#: the smallest ``data.max_source_tokens`` of the encoder head: ``<s>``, four markers, one token
#: of each entity, ``</s>``
MIN_ENCODER_TOKENS = 8


class RelationExample(NamedTuple):
    text: str
    head_start: int
    head_end: int  # exclusive
    tail_start: int
    tail_end: int  # exclusive
    relation: Optional[str]


def marked_text(example: RelationExample) -> str:
    """The text with ``<e1> head </e1>`` and ``<e2> tail </e2>`` inserted, each marker set off by
    one space from its neighbours (a space is added only where the text has none), e.g.
    ``"the <e1> storm </e1> caused the <e2> flood </e2> ."``."""
    text = example.text
    cuts = sorted([
        (example.head_start, 1, E1), (example.head_end, 0, E1_END),
        (example.tail_start, 1, E2), (example.tail_end, 0, E2_END),
    ])  # at a shared offset the end marker of one entity comes before the start of the other
    out, last = "", 0
    for position, _, marker in cuts:
        out += text[last:position]
        if out and not out[-1].isspace():
            out += " "
        out += marker
        if position < len(text) and not text[position].isspace():
            out += " "
        last = position
    return out + text[last:]


def text_pieces(example: RelationExample) -> Tuple[List[str], bool]:
    """The five stretches of text around the entities, stripped: ``[before, first entity,
    between, second entity, after]`` in text order, and whether the head comes first."""
    head_first = example.head_start < example.tail_start
    (a0, a1), (b0, b1) = sorted([(example.head_start, example.head_end), (example.tail_start, example.tail_end)])
    text = example.text
    pieces = [text[:a0], text[a0:a1], text[a1:b0], text[b0:b1], text[b1:]]
    return [p.strip() for p in pieces], head_first


class Fitted(NamedTuple):
    """Token ids of one encoder input (without ``<s>``/``</s>``) and where the entities start."""

    ids: List[int]
    first_pos: int  # position of the first entity's start marker in ``ids``
    second_pos: int  # position of the second entity's start marker in ``ids``
    cut: str  # "" (whole text), "end", "window", "middle" or "entities": how it was made to fit


def fit_pieces(pieces: Sequence[List[int]], markers: Sequence[int], limit: int) -> Fitted:
    """Join ``before M1 first /M1 between M2 second /M2 after`` into at most ``limit`` tokens
    without ever losing a marker.

    Args:
        pieces: token ids of ``[before, first, between, second, after]`` (see :func:`text_pieces`).
        markers: ids of the first entity's start and end marker, then the second's.
        limit: the token budget (``data.max_source_tokens - 2``: ``<s>`` and ``</s>`` come on top); at
            least 6.

    Returns:
        the ids, the two start-marker positions and how the text was cut, trying in turn:
        nothing; the end of the text (``end``, when both entities lie in the first ``limit``
        tokens); a window around both entities with the rest of the budget split between the
        text before and after them (``window``); the middle of the text between the entities
        (``middle``, when they are too far apart for one window); the ends of the entities
        themselves (``entities``, when an entity alone is longer than half the budget).
    """
    before, first, between, second, after = (list(p) for p in pieces)
    m1, m1_end, m2, m2_end = markers
    if limit < MIN_ENCODER_TOKENS - 2:
        raise ValueError(f"data.max_source_tokens must be at least {MIN_ENCODER_TOKENS} for relation extraction")

    def join(before, first, between, second, after, cut):
        ids = before + [m1] + first + [m1_end] + between + [m2] + second + [m2_end] + after
        return Fitted(ids, len(before), len(before) + len(first) + 2 + len(between), cut)

    core = len(first) + len(between) + len(second) + 4
    if len(before) + core + len(after) <= limit:
        return join(before, first, between, second, after, "")
    if len(before) + core <= limit:
        return join(before, first, between, second, after[: limit - len(before) - core], "end")
    if core <= limit:
        room = limit - core
        keep_after = min(len(after), room // 2)
        keep_before = room - keep_after  # < len(before): otherwise "end" applied
        return join(before[len(before) - keep_before :], first, between, second, after[:keep_after], "window")
    entities = len(first) + len(second) + 4
    if entities <= limit:
        room = limit - entities
        head_part = (room + 1) // 2
        tail_part = room - head_part
        return join([], first, between[:head_part] + between[len(between) - tail_part :], second, [], "middle")
    half = (limit - 4) // 2
    keep_first = min(len(first), max(half, limit - 4 - len(second)))
    keep_second = min(len(second), limit - 4 - keep_first)
    return join([], first[:keep_first], [], second[:keep_second], [], "entities")


CUT_MESSAGES = {
    "end": "cut at the end to fit data.max_source_tokens={n} tokens (both entities kept)",
    "window": "cut to a window around both entities to fit data.max_source_tokens={n} tokens",
    "middle": "lost the middle of the text between the entities to fit data.max_source_tokens={n} tokens",
    "entities": "had an entity longer than data.max_source_tokens={n} allows: entity tokens were cut",
}


class RelationExtractionDataModule(StructuredDataModule):
    """Texts (``data.text_column``) with a head and a tail entity (``data.head_column``,
    ``data.tail_column``) and the relation between them (``data.relation_column``).

    An entity is ``{"start": int, "end": int}`` (character offsets into the text, end exclusive;
    an optional ``"text"`` must equal ``text[start:end]``) or a two-item list ``[start, end]``.
    Head and tail must not overlap (nested entities are rejected: markers could not be
    placed unambiguously); records with empty text are skipped and counted. The head may come
    before or after the tail. A relation is any label; ``Name(e1,e2)`` / ``Name(e2,e1)`` labels
    (SemEval-2010 Task 8 naming: ``e1`` is the head, ``e2`` the tail) also get the official
    SemEval score. The label meaning "no relation" is ``data.no_relation_label`` (``Other``).

    Encoder head: ``<s> ... <e1> head </e1> ... <e2> tail </e2> ... </s>`` (the markers are
    special tokens of the tokenizer, never split), the label id and the positions ``e1_pos`` /
    ``e2_pos`` of ``<e1>`` and ``<e2>``. An input longer than ``data.max_source_tokens`` is cut
    so that all four markers stay (see :func:`fit_pieces`); each kind of cut is counted.
    Generate head: the marked text -> the relation label.

    Without files or a dataset it uses the embedded sample: synthetic sentences with two marked
    nominals and SemEval-style directed relations, made by ``sample_data.py``.

    Args:
        text_column, head_column, tail_column, relation_column: the columns of the record.
        no_relation_label: the label meaning "no relation"; it is excluded from the F1 scores.
            The CLI passes it on to ``model.no_relation_label`` (set it here only).
        **kwargs: see :class:`~s2s_tasks.data.structured.StructuredDataModule`.
    """

    sample_dir = Path(__file__).resolve().parent / "sample"
    special_tokens: ClassVar[Tuple[str, ...]] = MARKERS
    tensor_fields = ("label", "e1_pos", "e2_pos")
    model_links = ("no_relation_label",)  # the metrics need it too

    def __init__(
        self,
        text_column: str = "text",
        head_column: str = "head",
        tail_column: str = "tail",
        relation_column: str = "relation",
        no_relation_label: str = "Other",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # save_hyperparameters there records the arguments above too
        if not no_relation_label or not no_relation_label.strip():
            raise ValueError("data.no_relation_label must be a non-empty label, e.g. Other")
        if self.hparams.head == "encoder" and self.hparams.max_source_tokens < MIN_ENCODER_TOKENS:
            raise ValueError(
                f"data.max_source_tokens must be at least {MIN_ENCODER_TOKENS} for relation extraction "
                f"(<s>, four entity markers, the entities, </s>), got {self.hparams.max_source_tokens}"
            )

    # ----------------------------------------------------------------------------- records
    def fields(self, split: str, records: Records) -> List[Field]:
        hp = self.hparams
        fields = [Field(hp.text_column, "data.text_column", "text"),
                  Field(hp.head_column, "data.head_column", "span", "head entity"),
                  Field(hp.tail_column, "data.tail_column", "span", "tail entity")]
        if split != "predict":
            names = records.class_names(hp.relation_column)
            fields.append(Field(hp.relation_column, "data.relation_column", "label", "relation",
                                names=tuple(names) if names else None,
                                hint=f"use {hp.no_relation_label!r} (data.no_relation_label) for pairs without a relation"))
        return fields

    @staticmethod
    def _span(value: Tuple[int, int, Optional[str]], column: str, text: str) -> Tuple[int, int]:
        start, end, mention = value
        if not 0 <= start < end <= len(text):
            raise RecordError(
                column, f"span [{start}, {end}) is not a non-empty span inside the text of {len(text)} characters. "
                "Fix the offsets (end is exclusive)."
            )
        if not text[start:end].strip():
            raise RecordError(column, f"span [{start}, {end}) holds only whitespace ({text[start:end]!r}). Fix the offsets.")
        if mention is not None and mention != text[start:end]:
            raise RecordError(
                column, f"the entity text {mention!r} differs from text[{start}:{end}] = {text[start:end]!r}. "
                "Fix the offsets (character offsets, end exclusive) or the entity text."
            )
        return start, end

    def read_record(self, record: Dict[str, Any], with_gold: bool) -> RelationExample:
        hp = self.hparams
        text = record[hp.text_column]
        head = self._span(record[hp.head_column], hp.head_column, text)
        tail = self._span(record[hp.tail_column], hp.tail_column, text)
        if head[0] < tail[1] and tail[0] < head[1]:
            raise RecordError(
                hp.tail_column, f"the tail [{tail[0]}, {tail[1]}) overlaps the head [{head[0]}, {head[1]}) "
                f"({text[tail[0]:tail[1]]!r} / {text[head[0]:head[1]]!r}); nested or overlapping entities "
                "are not supported. Fix the spans or drop the record."
            )
        relation = record[hp.relation_column] if with_gold else None
        return RelationExample(text, head[0], head[1], tail[0], tail[1], relation)

    def example_labels(self, example: RelationExample) -> Iterable[str]:
        return (example.relation,) if example.relation is not None else ()

    def source_text(self, example: RelationExample) -> str:
        return marked_text(example)

    def target_text(self, example: RelationExample) -> str:
        return example.relation

    def gold(self, example: RelationExample) -> str:
        return example.relation

    # ----------------------------------------------------------------------------- encoder features
    def encode_examples(self, examples, tokenizer, with_gold: bool, origin: str) -> List[Dict[str, Any]]:
        """``<s> ... <e1> head </e1> ... <e2> tail </e2> ... </s>`` per example, fitted to
        ``data.max_source_tokens`` (see :func:`fit_pieces`).

        The five stretches of text around the markers are tokenized separately and joined with
        the marker ids: the same tokens as the marked text, without the lone ``▁`` (space)
        tokens that a space before a special token would add.
        """
        max_tokens = self.hparams.max_source_tokens
        marker_ids = [tokenizer.token_to_id(m) for m in MARKERS]
        if any(i is None for i in marker_ids):
            raise ValueError(f"the tokenizer lacks the entity markers {list(MARKERS)}; leave data.tokenizer_file unset to train one with them")
        split_pieces = [text_pieces(e) for e in examples]
        flat = encode_batch(tokenizer, [piece for pieces, _ in split_pieces for piece in pieces])
        label_ids = self.label_to_id if with_gold else {}
        cuts: Dict[str, int] = {}
        features = []
        for n, (example, (_, head_first)) in enumerate(zip(examples, split_pieces)):
            piece_ids = flat[5 * n : 5 * n + 5]
            e1, e1_end, e2, e2_end = marker_ids
            order = [e1, e1_end, e2, e2_end] if head_first else [e2, e2_end, e1, e1_end]
            fitted = fit_pieces(piece_ids, order, max_tokens - 2)
            if fitted.cut:
                cuts[fitted.cut] = cuts.get(fitted.cut, 0) + 1
            head_pos, tail_pos = (fitted.first_pos, fitted.second_pos) if head_first else (fitted.second_pos, fitted.first_pos)
            feature = {"src_ids": [BOS_ID] + fitted.ids + [EOS_ID], "example": n, "e1_pos": head_pos + 1, "e2_pos": tail_pos + 1}
            if with_gold:
                feature["label"] = label_ids[example.relation]
            features.append(feature)
        for cut, message in CUT_MESSAGES.items():
            self.report(origin, cuts.get(cut, 0), len(examples), message.format(n=max_tokens))
        return features
