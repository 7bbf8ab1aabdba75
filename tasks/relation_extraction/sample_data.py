"""Embedded sample data for the relation extraction task: short synthetic sentences with a marked
head and tail nominal and a directed relation between them in SemEval-2010 Task 8 naming.

Nothing here is copied from a corpus; every sentence is generated from the word lists below with
``random.Random(seed)``, so the same seed always gives the same files byte for byte. Run
``python tasks/relation_extraction/sample_data.py [--out DIR] [--seed N]`` to regenerate them.

Generative process
------------------
A **relation clause** links two nominals of a relation type by a connecting phrase; each type
has phrases for both argument orders, e.g. for ``Cause-Effect``:

* ``the storm caused the flood``: the cause comes first, so with the head (``e1``) on
  ``storm`` and the tail (``e2``) on ``flood`` the label is ``Cause-Effect(e1,e2)``;
* ``the flood was caused by the storm``: the effect comes first: ``Cause-Effect(e2,e1)``.

As in SemEval, ``e1`` is always the nominal that comes first in the text, and the direction
says which of the two plays the first role of the relation (Cause, Component, Member,
Content). The types are ``Cause-Effect``, ``Component-Whole``, ``Member-Collection`` and
``Content-Container``; each draws its nominals from its own word lists. An **unrelated
clause** links two nominals of any lists by a neutral phrase (``the storm was far from the
jar``).

A sentence is one clause, or two joined by ``while`` / ``, and`` / ``; later``. The marked pair
is the pair of one clause (its label is that clause's relation, ``Other`` for an unrelated
clause) or, in a two-clause sentence, one nominal from each clause (``Other``). So the label
depends on which words connect the two *marked* nominals: a model must read the markers, not
just spot a relation phrase somewhere in the sentence.

Each record is ``{"text", "head": {"text", "start", "end"}, "tail": {...}, "relation"}`` with
character offsets (end exclusive). Sizes: train 4000, validation 200, test 200 records, plus 20
records without ``relation`` in ``predict.jsonl``; no text occurs twice across all of them.
About 20% of the labels are ``Other``; the eight directed relations share the rest evenly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from s2s_tasks.data import sample_files

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SIZES = {"train": 4000, "validation": 200, "test": 200}
N_PREDICT = 20
NO_RELATION = "Other"

#: relation type -> (first-role nominals, second-role nominals, phrases with the first role
#: first ("X ... Y"), phrases with the second role first ("Y ... X"))
RELATIONS: Dict[str, Tuple[List[str], List[str], List[str], List[str]]] = {
    "Cause-Effect": (
        ["storm", "fire", "virus", "earthquake", "explosion", "drought", "short circuit", "gas leak", "heavy rain", "infection"],
        ["flood", "damage", "fever", "power cut", "panic", "famine", "delay", "crack", "smoke", "injury"],
        ["caused", "led to", "triggered", "resulted in", "brought about"],
        ["was caused by", "came from", "was triggered by", "followed", "resulted from"],
    ),
    "Component-Whole": (
        ["engine", "wheel", "keyboard", "handle", "screen", "roof", "blade", "lens", "battery", "chapter"],
        ["car", "bicycle", "laptop", "door", "phone", "house", "knife", "camera", "drone", "book"],
        ["is part of", "belongs inside", "was fitted to", "is a piece of", "sits inside"],
        ["has", "contains", "was built around", "includes", "comes with"],
    ),
    "Member-Collection": (
        ["player", "singer", "soldier", "student", "tree", "ship", "bird", "star", "dancer", "senator"],
        ["team", "choir", "army", "class", "forest", "fleet", "flock", "galaxy", "troupe", "committee"],
        ["joined", "is a member of", "left", "belongs to", "was part of"],
        ["welcomed", "lost", "includes", "gathered around", "chose"],
    ),
    "Content-Container": (
        ["coins", "letters", "apples", "water", "tea", "shoes", "tools", "cookies", "seeds", "pills"],
        ["jar", "box", "basket", "bottle", "cup", "bag", "drawer", "tin", "crate", "envelope"],
        ["were kept in", "were stored in", "sat inside", "were hidden in", "filled"],
        ["held", "was full of", "contained", "was packed with", "kept"],
    ),
}
UNRELATED = ["was far from", "was mentioned with", "was seen near", "looked like", "was compared to", "was older than"]
JOINERS = [" while ", ", and ", "; later "]
ADJECTIVES = ["", "", "", "old ", "big ", "small ", "new ", "red "]
ALL_NOMINALS = sorted({n for first, second, _, _ in RELATIONS.values() for n in first + second})

Clause = Tuple[str, Tuple[int, int], Tuple[int, int], str]  # text, first span, second span, label


def relation_clause(rng: random.Random) -> Clause:
    """``the X <phrase> the Y`` with its label: ``Type(e1,e2)`` when X plays the first role."""
    name = rng.choice(sorted(RELATIONS))
    firsts, seconds, forward, backward = RELATIONS[name]
    role_first, role_second = rng.choice(firsts), rng.choice(seconds)
    if rng.random() < 0.5:
        left, right, phrase, label = role_first, role_second, rng.choice(forward), f"{name}(e1,e2)"
    else:
        left, right, phrase, label = role_second, role_first, rng.choice(backward), f"{name}(e2,e1)"
    return place(left, right, phrase, rng) + (label,)


def unrelated_clause(rng: random.Random) -> Clause:
    left, right = rng.sample(ALL_NOMINALS, 2)
    return place(left, right, rng.choice(UNRELATED), rng) + (NO_RELATION,)


def place(left: str, right: str, phrase: str, rng: random.Random) -> Tuple[str, Tuple[int, int], Tuple[int, int]]:
    """``the [adj] left phrase the [adj] right`` and the character spans of ``left`` and ``right``."""
    prefix = f"the {rng.choice(ADJECTIVES)}"
    middle = f" {phrase} the {rng.choice(ADJECTIVES)}"
    start_left = len(prefix)
    start_right = start_left + len(left) + len(middle)
    text = prefix + left + middle + right
    return text, (start_left, start_left + len(left)), (start_right, start_right + len(right))


def shifted(span: Tuple[int, int], offset: int) -> Tuple[int, int]:
    return span[0] + offset, span[1] + offset


def make_record(rng: random.Random) -> Dict[str, Any]:
    """One sentence with its marked pair (see the module docstring)."""
    clause = relation_clause(rng) if rng.random() < 0.85 else unrelated_clause(rng)
    if rng.random() < 0.5:
        text, first, second, label = clause
    else:
        other = relation_clause(rng) if rng.random() < 0.7 else unrelated_clause(rng)
        left, right = (clause, other) if rng.random() < 0.5 else (other, clause)
        joiner = rng.choice(JOINERS)
        offset = len(left[0]) + len(joiner)
        text = left[0] + joiner + right[0]
        if rng.random() < 0.8:  # the pair of one clause
            shift = 0 if left is clause else offset
            first, second, label = shifted(clause[1], shift), shifted(clause[2], shift), clause[3]
        else:  # one nominal from each clause: unrelated
            first, second, label = rng.choice(left[1:3]), shifted(rng.choice(right[1:3]), offset), NO_RELATION
    text = text[0].upper() + text[1:] + " ."
    head, tail = ({"text": text[a:b], "start": a, "end": b} for a, b in (first, second))
    return {"text": text, "head": head, "tail": tail, "relation": label}


def generate(seed: int, n: int) -> List[Dict[str, Any]]:
    """``n`` records with distinct texts; ``Other`` is kept at about a fifth."""
    rng = random.Random(seed)
    seen, out, others = set(), [], 0
    while len(out) < n:
        record = make_record(rng)
        is_other = record["relation"] == NO_RELATION
        if record["text"] in seen or (is_other and others > 0.2 * len(out) + 2):
            continue
        seen.add(record["text"])
        others += is_other
        out.append(record)
    return out


def make_splits(seed: int = 0) -> Dict[str, List[Dict[str, Any]]]:
    """Train / validation / test records; no text in two splits."""
    return sample_files.make_splits(generate, SIZES, seed)


def predict_records(seed: int = 0) -> List[Dict[str, Any]]:
    """20 records without ``relation`` whose texts occur in none of the splits."""
    records = generate(seed, sum(SIZES.values()) + N_PREDICT)[-N_PREDICT:]
    return [{key: value for key, value in record.items() if key != "relation"} for record in records]


def write(directory, seed: int = 0) -> None:
    """Write train/validation/test.jsonl and predict.jsonl into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, records in {**make_splits(seed), "predict": predict_records(seed)}.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main(argv: Optional[List[str]] = None) -> None:
    sample_files.command_line(__doc__.splitlines()[0], SAMPLE_DIR, write, argv)


if __name__ == "__main__":
    main()
