"""Embedded sample data for the classification task: short synthetic product reviews labelled
``negative``, ``neutral`` or ``positive``.

Nothing here is copied from a corpus; every review is generated from the word lists below with
``random.Random(seed)``, so the same seed always gives the same files byte for byte. Run
``python tasks/classification/sample_data.py [--out DIR] [--seed N]`` to regenerate them.

Generative process
------------------
A review has one to three clauses about a product, joined by ``and``, ``,`` or ``but``:

* an **opinion** clause, ``the battery is really great``: an aspect, a copula, an optional
  intensifier and an adjective of polarity +1 or -1; a negation (``is not``, ``was never``)
  flips the polarity;
* a **fact** clause with no polarity, ``it arrived on monday``.

The label is the polarity of the review: with ``but`` the clause after it decides (``the
screen is great but the battery is awful`` is negative); otherwise the sum of the clause
polarities decides (positive > 0, negative < 0, neutral = 0, e.g. only facts, or one good and
one bad point joined by ``and``). A model must therefore read negations and the word ``but``,
not just count adjectives.

Sizes: train 4000, validation 200, test 200 reviews, plus 20 unlabelled reviews in
``predict.txt``; no review occurs twice across all of them. Labels are roughly balanced.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from s2s_tasks.data import sample_files

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SIZES = {"train": 4000, "validation": 200, "test": 200}
N_PREDICT = 20
LABELS = ("negative", "neutral", "positive")

PRODUCTS = ["phone", "laptop", "camera", "blender", "kettle", "headset", "tablet", "printer", "watch", "speaker",
            "router", "monitor", "keyboard", "vacuum", "toaster", "drone"]
ASPECTS = ["battery", "screen", "sound", "price", "design", "build", "software", "delivery", "manual", "charger",
           "case", "display", "support", "packaging", "button", "strap"]
POSITIVE = ["great", "excellent", "good", "solid", "lovely", "superb", "reliable", "fantastic", "decent", "brilliant"]
NEGATIVE = ["awful", "poor", "bad", "flimsy", "terrible", "weak", "disappointing", "cheap", "useless", "horrible"]
INTENSIFIERS = ["", "", "", "really ", "very ", "quite ", "truly ", "rather "]
COPULAS = [("is", "is not"), ("was", "was not"), ("seems", "does not seem"), ("feels", "never feels")]
FACTS = [
    "it arrived on {day}", "i bought it for my {person}", "it came in a {colour} box", "i have used it for {n} weeks",
    "the {product} replaced my old one", "i ordered it on {day}", "it ships with a {colour} cable",
    "my {person} picked the {colour} one",
]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PEOPLE = ["sister", "brother", "mother", "father", "friend", "office", "son", "daughter"]
COLOURS = ["black", "white", "blue", "red", "grey", "green"]


def opinion(rng: random.Random) -> Tuple[str, int]:
    polarity = rng.choice((1, -1))
    adjective = rng.choice(POSITIVE if polarity > 0 else NEGATIVE)
    copula, negated = rng.choice(COPULAS)
    if rng.random() < 0.3:
        copula, polarity = negated, -polarity
    aspect = rng.choice(ASPECTS)
    return f"the {aspect} {copula} {rng.choice(INTENSIFIERS)}{adjective}", polarity


def fact(rng: random.Random) -> Tuple[str, int]:
    text = rng.choice(FACTS).format(
        day=rng.choice(DAYS), person=rng.choice(PEOPLE), colour=rng.choice(COLOURS),
        n=rng.randint(2, 9), product=rng.choice(PRODUCTS),
    )
    return text, 0


def make_review(rng: random.Random) -> Tuple[str, str]:
    n = rng.choice((1, 2, 2, 3))
    clauses = [opinion(rng) if rng.random() < 0.75 else fact(rng) for _ in range(n)]
    joiners = [rng.choice((" and ", ", ", " but ")) for _ in range(n - 1)]
    text = f"my new {rng.choice(PRODUCTS)} : " + clauses[0][0]
    decided = None
    for joiner, (clause, polarity) in zip(joiners, clauses[1:]):
        text += joiner + clause
        if joiner == " but " and polarity != 0:
            decided = polarity
    score = decided if decided is not None else sum(p for _, p in clauses)
    label = LABELS[1 + (score > 0) - (score < 0)]
    return text + " .", label


def generate(seed: int, n: int) -> List[Dict[str, str]]:
    """``n`` distinct reviews ``{"text", "label"}``; neutral ones are kept at about a third."""
    rng = random.Random(seed)
    seen, out = set(), []
    counts = dict.fromkeys(LABELS, 0)
    while len(out) < n:
        text, label = make_review(rng)
        if text in seen or counts[label] > len(out) / 3 + 5:
            continue
        seen.add(text)
        counts[label] += 1
        out.append({"text": text, "label": label})
    return out


def make_splits(seed: int = 0) -> Dict[str, List[Dict[str, str]]]:
    """Train / validation / test records ``{"text", "label"}``; no text in two splits."""
    return sample_files.make_splits(generate, SIZES, seed)


def predict_lines(seed: int = 0) -> List[str]:
    """20 reviews that occur in none of the splits."""
    return sample_files.predict_lines(generate, SIZES, N_PREDICT, seed, line=lambda record: record["text"])


def write(directory, seed: int = 0) -> None:
    """Write train/validation/test.jsonl and predict.txt into ``directory``."""
    sample_files.write_files(directory, make_splits(seed), predict_lines(seed))


def main(argv: Optional[List[str]] = None) -> None:
    sample_files.command_line(__doc__.splitlines()[0], SAMPLE_DIR, write, argv)


if __name__ == "__main__":
    main()
