"""Entities as word spans, IOB2 tags, and the text form used by the ``generate`` head.

A span is ``(start_word, end_word, label)`` with ``end_word`` exclusive.

IOB2 decoding is *strict*, the same as seqeval's ``mode="strict", scheme=IOB2``: an entity is a
``B-X`` followed by any number of ``I-X``; an ``I-X`` that does not continue a ``B-X``/``I-X`` of
the same type starts nothing (it is ignored), so the entities written to prediction files are
exactly the ones the metric counts.

Text form (``generate`` head): the entities in sentence order, each as its words followed by
its type in brackets, separated by `` ; ``::

    EU [ORG] ; German [MISC] ; British [MISC]

and :data:`NO_ENTITIES` (``[NONE]``) for a sentence without entities. ``[NONE]`` cannot be
mistaken for an entity because an entity always has words before its bracketed type.
:func:`parse_entities` reads generated text back into spans: each ``words [TYPE]`` piece is looked
up in the sentence left to right, starting after the previous match (falling back to anywhere
free, then to a case-insensitive match); pieces with an unknown type, no words or no match are
dropped. Known ambiguity: an entity whose words also occur as non-entity text between the
previous entity and itself is matched at that earlier occurrence.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Sequence, Tuple

Span = Tuple[int, int, str]

#: the target text of a sentence without entities
NO_ENTITIES = "[NONE]"
#: between two entities in the target text
SEPARATOR = " ; "
_MARKER = re.compile(r"\[([^\[\]\s]+)\]")


def tags_to_spans(tags: Sequence[str]) -> List[Span]:
    """Strict IOB2 decoding (as seqeval's strict mode): ``B-X I-X* -> (start, end, X)``."""
    spans: List[Span] = []
    start, label = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        if label is not None and tag != f"I-{label}":
            spans.append((start, i, label))
            start, label = None, None
        if tag.startswith("B-"):
            start, label = i, tag[2:]
    return spans


def spans_to_tags(spans: Iterable[Span], length: int) -> List[str]:
    """IOB2 tags of ``length`` words with the given (non-overlapping) spans."""
    tags = ["O"] * length
    for start, end, label in spans:
        if not 0 <= start < end <= length:
            raise ValueError(f"span ({start}, {end}, {label!r}) is outside a sentence of {length} words")
        if any(tag != "O" for tag in tags[start:end]):
            raise ValueError(f"span ({start}, {end}, {label!r}) overlaps another span")
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
    return tags


def render_entities(words: Sequence[str], spans: Sequence[Span]) -> str:
    """The target text of a sentence's entities (sentence order)."""
    pieces = [f"{' '.join(words[start:end])} [{label}]" for start, end, label in sorted(spans)]
    return SEPARATOR.join(pieces) if pieces else NO_ENTITIES


def split_pieces(text: str, entity_types: Optional[Iterable[str]] = None) -> List[Tuple[List[str], str]]:
    """``words [TYPE] ; ...`` -> ``[(words, TYPE), ...]``; types are matched case-insensitively
    against ``entity_types`` (when given) and pieces with an unknown type or no words are dropped."""
    known = None if entity_types is None else {t.casefold(): t for t in entity_types}
    pieces, position = [], 0
    for match in _MARKER.finditer(text):
        chunk = text[position : match.start()].strip()
        position = match.end()
        separator = SEPARATOR.strip()
        if chunk.startswith(separator):
            chunk = chunk[len(separator) :].strip()
        label = match.group(1) if known is None else known.get(match.group(1).casefold())
        if chunk and label is not None:
            pieces.append((chunk.split(), label))
    return pieces


def _find(words: Sequence[str], piece: Sequence[str], begin: int, taken: List[bool], fold: bool) -> Optional[int]:
    size = len(piece)
    if fold:
        words, piece = [w.casefold() for w in words], [w.casefold() for w in piece]
    for start in range(begin, len(words) - size + 1):
        if list(words[start : start + size]) == list(piece) and not any(taken[start : start + size]):
            return start
    return None


def parse_entities(text: str, words: Sequence[str], entity_types: Optional[Iterable[str]] = None) -> List[Span]:
    """Generated text -> non-overlapping spans over ``words``, sorted (see the module docstring).

    Args:
        text: generated text in the :func:`render_entities` form.
        words: the sentence's words.
        entity_types: the entity types to accept (``None``: any bracketed type).
    """
    taken = [False] * len(words)
    spans: List[Span] = []
    cursor = 0
    for piece, label in split_pieces(text, entity_types):
        for fold, begin in ((False, cursor), (True, cursor), (False, 0), (True, 0)):
            start = _find(words, piece, begin, taken, fold)
            if start is not None:
                break
        if start is None:
            continue
        end = start + len(piece)
        spans.append((start, end, label))
        taken[start:end] = [True] * len(piece)
        cursor = end
    return sorted(spans)
