"""Data for named-entity recognition: pre-split tokens with IOB2 tags, or raw text with
character-offset entities."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from s2s_tasks.data.records import Records
from s2s_tasks.data.schema import Field, RecordError
from s2s_tasks.data.structured import StructuredDataModule
from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID

from .format import render_entities, spans_to_tags, tags_to_spans

#: how raw text (``data.text_column``) is split into words
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")
#: how the lines of a ``.txt`` predict file are split into words (they are pre-tokenized)
WHITESPACE_PATTERN = re.compile(r"\S+")
#: an IOB2 tag; the type has no whitespace or brackets (brackets mark types in the generated text)
TAG_PATTERN = re.compile(r"O|[BI]-[^\s\[\]]+")
TAG_FIX = "use IOB2 tags: O, B-TYPE or I-TYPE (TYPE without spaces or brackets); convert IOBES/BILOU tags to IOB2 first"


class NERExample(NamedTuple):
    """One sentence: its words, their IOB2 tags (``None`` at predict time), each word's
    character span ``(start, end)`` (end exclusive) in ``text``, and the text itself (for
    pre-split tokens, the tokens joined by single spaces)."""

    words: List[str]
    tags: Optional[List[str]]
    offsets: List[Tuple[int, int]]
    text: str


def split_words(text: str, pattern: re.Pattern = WORD_PATTERN) -> Tuple[List[str], List[Tuple[int, int]]]:
    """Words of ``text`` and their character spans (end exclusive)."""
    matches = list(pattern.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def join_tokens(tokens: Sequence[str]) -> Tuple[str, List[Tuple[int, int]]]:
    """Tokens joined by single spaces, and each token's character span in that text."""
    offsets, position = [], 0
    for token in tokens:
        offsets.append((position, position + len(token)))
        position += len(token) + 1
    return " ".join(tokens), offsets


class NERDataModule(StructuredDataModule):
    """Sentences with named entities, in one of two input forms (chosen per file by its columns):

    * pre-split tokens (``data.tokens_column``, a list of strings) with one IOB2 tag per token
      (``data.tags_column``: ``O``, ``B-TYPE``, ``I-TYPE``; integer tags are read through the
      column's ``datasets`` ``ClassLabel`` names). Tags in IOB1 style (an ``I-X`` that starts an
      entity) are converted to IOB2 (``B-X``) and counted;
    * raw text (``data.text_column``) with a list of entities (``data.entities_column``), each
      ``{"start": int, "end": int, "label": str}`` in characters, end exclusive. The text is split
      into words with ``\\w+|[^\\w\\s]``; an entity boundary inside a word is an error.

    A file with the tokens column is read as tokens. Predict input: a ``.txt`` file (one
    sentence a line, split on whitespace) or a file with either column. Records with no tokens
    or empty text are skipped and counted.

    The label inventory is the tag set: ``O``, then ``B-``/``I-`` of every entity type of the
    training data, sorted (both prefixes of a type are in it even if one never occurs there).

    Encoder head: ``<s> subwords </s>`` (each word's subwords, cut at ``data.max_source_tokens``),
    ``word_starts`` (the position of each kept word's first subword, which carries its tag) and
    ``tags`` (tag ids of the kept words). Words cut off by truncation are counted and predicted
    ``O``; their gold entities still count in the metrics. Generate head: the words joined by
    spaces -> the entities as text (see :mod:`format`).

    Without files or a dataset it uses the embedded sample: synthetic news sentences with PER,
    ORG, LOC and MISC entities, made by ``sample_data.py``.

    Args:
        tokens_column, tags_column: the columns of the pre-split form.
        text_column, entities_column: the columns of the raw-text form.
        **kwargs: see :class:`~s2s_tasks.data.structured.StructuredDataModule`.
    """

    sample_dir = Path(__file__).resolve().parent / "sample"
    tensor_fields = ("word_starts", "tags")

    def __init__(
        self,
        tokens_column: str = "tokens",
        tags_column: str = "tags",
        text_column: str = "text",
        entities_column: str = "entities",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # save_hyperparameters there records the columns too
        # how the split being read is laid out; set by fields(), which runs before read_record()
        self._form = "tokens"
        self._converted = 0

    # ----------------------------------------------------------------------------- reading records
    def fields(self, split: str, records: Records) -> List[Field]:
        hp = self.hparams
        column_names = records.column_names
        if split == "predict" and str(hp.predict_file).lower().endswith(".txt"):
            self._form = "lines"
            return [Field("text", "data.predict_file", "text")]
        if hp.tokens_column in column_names:
            self._form = "tokens"
            fields = [Field(hp.tokens_column, "data.tokens_column", "tokens", "tokens",
                            hint="give pre-split tokens, or raw text in data.text_column with entities in data.entities_column")]
            if split != "predict":
                names = records.class_names(hp.tags_column)
                fields.append(Field(hp.tags_column, "data.tags_column", "tags", "IOB2 tags", names=tuple(names) if names else None))
            return fields
        if hp.text_column in column_names:
            self._form = "text"
            fields = [Field(hp.text_column, "data.text_column", "text")]
            if split != "predict":
                fields.append(Field(hp.entities_column, "data.entities_column", "spans", "entities"))
            return fields
        raise ValueError(
            f"{records.origin}: found neither column {hp.tokens_column!r} (data.tokens_column) nor "
            f"{hp.text_column!r} (data.text_column); the data has columns {column_names}. Set data.tokens_column "
            "and data.tags_column for pre-split tokens with IOB2 tags, or data.text_column and "
            "data.entities_column for raw text with character-offset entities."
        )

    def examples(self, split: str):
        if split in self._examples:
            return self._examples[split]
        self._converted = 0
        examples, numbers = super().examples(split)
        self.report(self._origin(split), self._converted, len(examples),
                    "records had I-X tags that start an entity (IOB1 style); read as B-X (IOB2)")
        return examples, numbers

    def read_record(self, record: Dict[str, Any], with_gold: bool) -> NERExample:
        hp = self.hparams
        if self._form == "tokens":
            tokens = record[hp.tokens_column]
            text, offsets = join_tokens(tokens)
            tags = self._check_tags(record[hp.tags_column], len(tokens)) if with_gold else None
            return NERExample(words=tokens, tags=tags, offsets=offsets, text=text)
        text = record["text" if self._form == "lines" else hp.text_column]
        words, offsets = split_words(text, WHITESPACE_PATTERN if self._form == "lines" else WORD_PATTERN)
        tags = self._entity_tags(record[hp.entities_column], text, offsets) if with_gold else None
        return NERExample(words=words, tags=tags, offsets=offsets, text=text)

    def _check_tags(self, tags: List[str], count: int) -> List[str]:
        """IOB2 tags, one per token; IOB1-style ``I-X`` that start an entity become ``B-X`` (counted)."""
        column = self.hparams.tags_column
        if len(tags) != count:
            raise RecordError(column, f"{len(tags)} tags for {count} tokens; give exactly one tag per token")
        for i, tag in enumerate(tags):
            if not TAG_PATTERN.fullmatch(tag):
                raise RecordError(column, f"tag {i} is {tag!r}, not an IOB2 tag; {TAG_FIX}")
        converted = False
        for i, tag in enumerate(tags):
            if tag.startswith("I-") and (i == 0 or tags[i - 1][2:] != tag[2:]):
                tags[i] = "B-" + tag[2:]
                converted = True
        self._converted += converted
        return tags

    def _entity_tags(self, entities: List[Tuple[int, int, str]], text: str, offsets: List[Tuple[int, int]]) -> List[str]:
        """Character-offset entities (checked by the schema) -> IOB2 tags of the words at ``offsets``."""
        column = self.hparams.entities_column
        word_at_start = {start: i for i, (start, _) in enumerate(offsets)}
        word_at_end = {end: i for i, (_, end) in enumerate(offsets)}
        spans = []
        for k, (start, end, label) in enumerate(entities):
            if end > len(text):
                raise RecordError(column, f"entity {k} has start={start}, end={end}, outside the text of {len(text)} "
                                  "characters; give offsets with 0 <= start < end <= the text's length (end is exclusive)")
            if not TAG_PATTERN.fullmatch(f"B-{label}"):
                raise RecordError(column, f"entity {k} has label {label!r}; give a type name without spaces or brackets, e.g. 'PER'")
            given = f"entity {k} [{start}, {end}) {label!r} = {text[start:end]!r}"
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if start == end:
                raise RecordError(column, f"{given} covers only whitespace; fix its offsets (end is exclusive) or drop it")
            for position, words_at, side in ((start, word_at_start, "starts"), (end, word_at_end, "ends")):
                if position not in words_at:
                    ws, we = next((s, e) for s, e in offsets if s < position < e)
                    raise RecordError(
                        column,
                        f"{given} {side} inside the word {text[ws:we]!r} at [{ws}, {we}); entity boundaries must fall "
                        "between words (raw text is split with the pattern \\w+|[^\\w\\s]). Fix the offsets (end is "
                        "exclusive), or give pre-split tokens with IOB2 tags in data.tokens_column / data.tags_column instead",
                    )
            spans.append((word_at_start[start], word_at_end[end] + 1, label, k))
        spans.sort()
        for (_, end_a, _, a), (start_b, _, _, b) in zip(spans, spans[1:]):
            if start_b < end_a:
                raise RecordError(column, f"entities {a} and {b} overlap; flat NER needs non-overlapping entities: "
                                  "keep one of them")
        return spans_to_tags([(s, e, label) for s, e, label, _ in spans], len(offsets))

    # ----------------------------------------------------------------------------- labels and text forms
    def example_labels(self, example: NERExample) -> Iterable[str]:
        return example.tags or ()

    def order_labels(self, labels: Iterable[str]) -> List[str]:
        """``O``, then ``B-``/``I-`` of every entity type, sorted."""
        types = {label[2:] for label in labels if label != "O"}
        return ["O"] + sorted(f"{prefix}-{t}" for t in types for prefix in "BI")

    def source_text(self, example: NERExample) -> str:
        return " ".join(example.words)

    def target_text(self, example: NERExample) -> str:
        return render_entities(example.words, tags_to_spans(example.tags))

    def gold(self, example: NERExample) -> List[str]:
        return list(example.tags)

    def display_source(self, example: NERExample) -> str:
        return example.text

    # ----------------------------------------------------------------------------- encoder features
    def encode_examples(self, examples: List[NERExample], tokenizer, with_gold: bool, origin: str) -> List[Dict[str, Any]]:
        limit = self.hparams.max_source_tokens - 2
        encodings = tokenizer.encode_batch([list(e.words) for e in examples], is_pretokenized=True, add_special_tokens=False)
        label_ids = self.label_to_id
        features, truncated, cut_words = [], 0, 0
        for n, (example, encoding) in enumerate(zip(examples, encodings)):
            starts = word_start_positions(encoding.word_ids, len(example.words), limit)
            kept = len(starts)
            if kept < len(example.words):
                truncated += 1
                cut_words += len(example.words) - kept
            feature = {"src_ids": [BOS_ID] + encoding.ids[:limit] + [EOS_ID], "example": n, "word_starts": starts}
            if with_gold:
                feature["tags"] = [label_ids[tag] for tag in example.tags[:kept]]
            features.append(feature)
        self.report(origin, truncated, len(examples),
                    f"sentences truncated to data.max_source_tokens={self.hparams.max_source_tokens} tokens; their last "
                    f"{cut_words} words in all are predicted O (gold entities there still count in the metrics)")
        return features


def word_start_positions(word_ids: Sequence[Optional[int]], num_words: int, limit: int) -> List[int]:
    """Position of each word's first subword in ``<s> subwords[:limit] </s>`` (hence the +1),
    for the leading words whose first subword is within ``limit``. A word without subwords
    (not produced by the project's tokenizers) takes the previous word's position (``<s>`` for
    the first word)."""
    first: List[Optional[int]] = [None] * num_words
    for position, word in enumerate(word_ids):
        if word is not None and first[word] is None:
            first[word] = position
    starts: List[int] = []
    for word in range(num_words):
        position = first[word]
        if position is None:
            starts.append(starts[-1] if starts else 0)
        elif position < limit:
            starts.append(position + 1)
        else:
            break
    return starts

