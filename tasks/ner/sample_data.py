"""Embedded sample data for the NER task: short synthetic news sentences, pre-split into tokens,
with IOB2 tags for PER, ORG, LOC and MISC entities.

Nothing here is copied from a corpus; every name below is invented and every sentence is
generated from the templates and word lists below with ``random.Random(seed)``, so the same seed
always gives the same files byte for byte. Run ``python tasks/ner/sample_data.py [--out DIR]
[--seed N]`` to regenerate them.

Generative process
------------------
A sentence is one of the templates below with its slots filled at random:

* ``{PER}`` a person: ``First Last``, ``Last`` alone, or ``First First Last``;
* ``{ORG}`` an organisation: a place, surname or coined word followed by ``Bank``, ``Motors``,
  ``Airlines`` ..., a club (``Hollin Rovers``) or an acronym (``NTB``);
* ``{LOC}`` a place: a town (``Port Alden``, ``Lake Orin``) or a country (``Veridia``);
* ``{NAT}`` a nationality (``Veridian``) and ``{EVENT}`` an event (``Winter Cup``, ``Solmark Grand
  Prix``), both tagged MISC;
* ``{DAY}``, ``{MONTH}``, ``{NUM}``, ``{SCORE}``: capitalised or numeric words that are *not*
  entities.

The tags follow from the slots (``B-`` on an entity's first word, ``I-`` on the rest). The task
needs context, not a word list: the same word is part of different entity types in different
places (``Port Alden`` is a LOC, ``Port Alden Bank`` an ORG; ``Kessler`` a PER, ``Kessler
Motors`` an ORG; ``Veridia`` a LOC, ``Veridia Grand Prix`` a MISC), sentences start with
capitalised words that are not entities (``Police``, ``Shares``, ``Monday``), and some sentences
have no entity at all.

Sizes: train 4000, validation 200, test 200 sentences (``{"tokens": [...], "tags": [...]}``),
plus 20 unlabelled sentences in ``predict.txt`` (tokens separated by spaces); no sentence occurs
twice across all of them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from s2s_tasks.data import sample_files

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SIZES = {"train": 4000, "validation": 200, "test": 200}
N_PREDICT = 20

FIRST = ["Anna", "Boris", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Luca",
         "Mara", "Nils", "Olga", "Pavel", "Rosa", "Stefan", "Tomas", "Vera", "Yusuf", "Zora"]
LAST = ["Albers", "Brandt", "Castell", "Dorn", "Ekholm", "Ferrante", "Grobler", "Halloran", "Ivanek", "Jorgensen",
        "Kessler", "Lindqvist", "Moreau", "Novak", "Ostrowski", "Petrakis", "Quist", "Rahman", "Sorensen", "Talbot",
        "Varga", "Weller"]
TOWNS = ["Port Alden", "Varna Bay", "Kestrel", "Oldbridge", "New Tarvo", "San Feliu", "Lake Orin", "Hollin",
         "Drossel", "East Morrow", "Caldera", "Marisco"]
COUNTRIES = [("Veridia", "Veridian"), ("Solmark", "Solmarkan"), ("Brenica", "Brenican"), ("Oltan", "Oltanese"),
             ("Kesland", "Keslander"), ("Norvale", "Norvalian")]
ORG_SUFFIXES = ["Bank", "Motors", "Airlines", "Telecom", "Mining", "Insurance", "Steel", "Foods", "Energy"]
CLUB_SUFFIXES = ["Rovers", "United", "Athletic", "City"]
COINED = ["Northwind", "Velora", "Arcadis", "Tessaro", "Brightline", "Corvex"]
ACRONYMS = ["NTB", "VCB", "OMR", "KFA", "SBC", "UGC"]
BODIES = ["Football Federation", "Central Bank", "Grain Council", "Workers Union"]
EVENTS = ["Winter Cup", "Harvest Festival", "Open", "Grand Prix", "Film Week", "Trade Fair"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "March", "April", "June", "July", "September", "October", "December"]

Tokens = List[Tuple[str, str]]  # (word, tag)


def entity(text: str, label: str) -> Tokens:
    words = text.split()
    return [(w, ("B-" if i == 0 else "I-") + label) for i, w in enumerate(words)]


def person(rng: random.Random) -> Tokens:
    form = rng.random()
    if form < 0.55:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    elif form < 0.85:
        name = rng.choice(LAST)
    else:
        first, second = rng.sample(FIRST, 2)
        name = f"{first} {second} {rng.choice(LAST)}"
    return entity(name, "PER")


def place(rng: random.Random) -> str:
    return rng.choice(TOWNS) if rng.random() < 0.6 else rng.choice(COUNTRIES)[0]


def organisation(rng: random.Random) -> Tokens:
    form = rng.random()
    if form < 0.35:
        name = f"{rng.choice([place(rng), rng.choice(LAST), rng.choice(COINED)])} {rng.choice(ORG_SUFFIXES)}"
    elif form < 0.55:
        name = f"{rng.choice(TOWNS)} {rng.choice(CLUB_SUFFIXES)}"
    elif form < 0.75:
        name = f"{rng.choice(COUNTRIES)[0]} {rng.choice(BODIES)}"
    elif form < 0.9:
        name = rng.choice(ACRONYMS)
    else:
        name = rng.choice(COINED)
    return entity(name, "ORG")


def location(rng: random.Random) -> Tokens:
    return entity(place(rng), "LOC")


def nationality(rng: random.Random) -> Tokens:
    return entity(rng.choice(COUNTRIES)[1], "MISC")


def event(rng: random.Random) -> Tokens:
    event = rng.choice(EVENTS)
    name = f"{place(rng)} {event}" if event in ("Open", "Grand Prix") or rng.random() < 0.5 else event
    return entity(name, "MISC")


def plain(text: str) -> Tokens:
    return [(w, "O") for w in text.split()]


SLOTS: Dict[str, Callable[[random.Random], Tokens]] = {
    "PER": person, "ORG": organisation, "LOC": location, "NAT": nationality, "EVENT": event,
    "DAY": lambda rng: plain(rng.choice(DAYS)),
    "MONTH": lambda rng: plain(rng.choice(MONTHS)),
    "NUM": lambda rng: plain(str(rng.choice([2, 3, 4, 5, 7, 8, 10, 12, 15, 20, 25, 40, 60, 150, 300]))),
    "SCORE": lambda rng: plain(f"{rng.randint(0, 4)}-{rng.randint(0, 4)}"),
}

TEMPLATES = [
    "{PER} said on {DAY} that {ORG} would cut {NUM} jobs .",
    "{ORG} shares rose {NUM} percent in {LOC} on {DAY} .",
    "The {NAT} government said {PER} would visit {LOC} next week .",
    "{PER} , a spokesman for {ORG} , told reporters in {LOC} .",
    "{ORG} beat {ORG} {SCORE} in the {EVENT} on {DAY} .",
    "Police in {LOC} arrested {NUM} people after protests on {DAY} .",
    "{PER} won the {EVENT} after beating {PER} in the final .",
    "{NAT} officials met {ORG} executives in {LOC} to discuss trade .",
    "Shares in {ORG} fell after {PER} resigned as chairman .",
    "Talks in {LOC} ended without agreement on {DAY} , {PER} said .",
    "Prime Minister {PER} arrived in {LOC} for talks with {NAT} leaders .",
    "The {EVENT} will be held in {LOC} in {MONTH} .",
    "{ORG} said it had agreed to buy {ORG} for {NUM} million dollars .",
    "Rain delayed play in {LOC} on {DAY} .",
    "Markets were quiet on {DAY} as traders waited for news .",
    "Prices rose {NUM} percent in {MONTH} , the statistics office said .",
    "{PER} ( {LOC} ) {NUM}",
    "{PER} told {ORG} radio that {LOC} would not change its policy .",
    "A {NAT} court in {LOC} sentenced {PER} to {NUM} years in prison .",
    "{ORG} chief executive {PER} said profits would rise .",
    "In {MONTH} , {PER} moved from {ORG} to {ORG} .",
    "{PER} scored twice as {ORG} beat {ORG} {SCORE} .",
    "Flights between {LOC} and {LOC} were cancelled on {DAY} .",
    "Officials said {NUM} people were hurt in the storm .",
    "{ORG} opened a new office in {LOC} in {MONTH} .",
    "The {NAT} striker {PER} joined {ORG} on {DAY} .",
]


def make_sentence(rng: random.Random) -> Tuple[List[str], List[str]]:
    tokens: Tokens = []
    for part in rng.choice(TEMPLATES).split():
        if part.startswith("{") and part.endswith("}"):
            tokens.extend(SLOTS[part[1:-1]](rng))
        else:
            tokens.append((part, "O"))
    return [w for w, _ in tokens], [t for _, t in tokens]


def generate(seed: int, n: int) -> List[Dict[str, List[str]]]:
    """``n`` distinct sentences ``{"tokens", "tags"}``."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < n:
        tokens, tags = make_sentence(rng)
        key = " ".join(tokens)
        if key in seen:
            continue
        seen.add(key)
        out.append({"tokens": tokens, "tags": tags})
    return out


def make_splits(seed: int = 0) -> Dict[str, List[Dict[str, List[str]]]]:
    """Train / validation / test records ``{"tokens", "tags"}``; no sentence in two splits."""
    return sample_files.make_splits(generate, SIZES, seed)


def predict_lines(seed: int = 0) -> List[str]:
    """20 sentences (tokens joined by spaces) that occur in none of the splits."""
    return sample_files.predict_lines(generate, SIZES, N_PREDICT, seed, line=lambda record: " ".join(record["tokens"]))


def write(directory, seed: int = 0) -> None:
    """Write train/validation/test.jsonl and predict.txt into ``directory``."""
    sample_files.write_files(directory, make_splits(seed), predict_lines(seed))


def main(argv: Optional[List[str]] = None) -> None:
    sample_files.command_line(__doc__.splitlines()[0], SAMPLE_DIR, write, argv)


if __name__ == "__main__":
    main()
