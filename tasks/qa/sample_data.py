"""Embedded sample data for extractive question answering: synthetic paragraphs of facts about
invented people, with one question each, in SQuAD v1.1 format.

Nothing here is copied from a corpus; every paragraph and question is generated from the word
lists below with ``random.Random(seed)``, so the same seed always gives the same files byte for
byte. Run ``python tasks/qa/sample_data.py [--out DIR] [--seed N]`` to regenerate them.

Generative process
------------------
A paragraph is about one to three people (distinct full names, distinct first names). It
states facts of several kinds, each kind at most once, one sentence per fact, each fact about
one of the people, the sentences grouped person by person (the words in braces are slots):

* ``{name} was born in {city} in {year} .``, ``In {year} , {name} moved to {city} .``,
  ``{name} studied {subject} at the university of {city} .``, ``{name} visited {country} in {year} .``
  (three kinds with a city and three with a year: the verb decides);
* ``{name} works as a {job} at {company} .``, ``{name} founded {company} , which makes {product} .``;
* hobby, pet (animal and name), instrument and band, favourite dish, colour of the car.

No value occurs twice in a paragraph, and the years of a person's moves, studies and trips come
18 to 40 years after the birth. The question asks about one slot of one fact, in one of two
wordings, e.g. ``In which city was Mara Quint born ?`` -> ``Lisbon``, ``Who founded Velto Labs
?`` -> the founder's name (which also occurs in the person's other sentences; ``answer_start``
points at the founding sentence, as SQuAD annotators point at the sentence that answers). A
paragraph has several facts of the same type (cities, years, names), so the answer can only be
found by reading the question.

Most paragraphs (short) have three to five facts about one or two people (about 20-60 tokens).
A fifth (long) have nine to eleven facts about two or three people, plus three to five sentences
without an answer (``Neighbours often ask {name} for advice .``): about 100-150 tokens, so
many are longer than one input of ``configs/qa.yaml`` (``data.max_source_tokens: 128``) and the
sample exercises the windows over long contexts.

Records: ``{"id", "context", "question", "answers": {"text": [...], "answer_start": [...]}}``.
Training records have one answer; validation and test records have one to three (as SQuAD's dev
set), the extra ones being the same span or the span with the word before it (``in 1984``).
Punctuation is written as separate words, so every answer starts and ends at a word boundary.

Sizes: train 4000, validation 200, test 200 questions, plus 20 ``{"id", "context",
"question"}`` records without answers in ``predict.jsonl``; no (context, question) pair occurs
twice across all of them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from string import Formatter
from typing import Any, Dict, List, Optional, Tuple

from s2s_tasks.data import sample_files

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SIZES = {"train": 4000, "validation": 200, "test": 200}
N_PREDICT = 20
#: share of long paragraphs (windowed by configs/qa.yaml)
LONG_SHARE = 0.2
#: (people, kinds of facts, filler sentences) of short and long paragraphs: (low, high) ranges
SHORT, LONG = ((1, 2), (3, 5), (0, 0)), ((2, 3), (9, 11), (3, 5))

FIRST_NAMES = ["Mara", "Tomas", "Ilse", "Kofi", "Anya", "Ravi", "Lena", "Oskar", "Yuki", "Dario", "Freya", "Hamid",
               "Nadia", "Pavel", "Selma", "Bruno", "Aiko", "Emeka", "Greta", "Joaquin", "Liv", "Marek", "Noor",
               "Priya", "Rune", "Sofia", "Tariq", "Vera", "Wendel", "Zora"]
LAST_NAMES = ["Quint", "Ardel", "Brisk", "Corvan", "Dunmore", "Elling", "Fairweather", "Gostin", "Halvorsen",
              "Ivers", "Jankowski", "Kettleby", "Lindqvist", "Moravec", "Nakamura", "Okonkwo", "Pellegrini",
              "Ramsay", "Sandoval", "Thorne", "Umber", "Valdez", "Whitlock", "Yilmaz", "Zeller"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Kyoto", "Porto", "Tallinn", "Dakar", "Quito", "Perth", "Bergen",
          "Tunis", "Krakow", "Hanoi", "Seville", "Ghent", "Dublin", "Cusco", "Malmo", "Lagos", "Turin", "Zurich",
          "Riga", "Manila", "Accra", "Bilbao", "Graz", "Leeds", "Osaka", "Split"]
COUNTRIES = ["Chile", "Norway", "Kenya", "Japan", "Portugal", "Canada", "Egypt", "Iceland", "Vietnam", "Morocco",
             "Peru", "Finland", "Ghana", "Greece", "Mexico", "Nepal"]
JOBS = ["painter", "nurse", "pilot", "baker", "lawyer", "teacher", "chemist", "carpenter", "journalist", "surgeon",
        "librarian", "photographer", "plumber", "translator", "gardener", "dentist", "architect", "tailor",
        "mechanic", "engineer"]
COMPANY_STEMS = ["Velto", "Norvex", "Kalder", "Brightwell", "Ostara", "Quillon", "Tarn", "Marlow", "Ferro",
                 "Halcyon", "Junip", "Corbel", "Lumina", "Pexa", "Stoke", "Vanta"]
COMPANY_KINDS = ["Labs", "Works", "Systems", "Foods", "Motors", "Studio", "Textiles", "Robotics"]
PRODUCTS = ["electric bikes", "garden tools", "board games", "solar lamps", "running shoes", "paper cups",
            "hearing aids", "wooden toys", "ski boots", "rain jackets", "desk chairs", "water filters",
            "guitar strings", "baby food", "fishing boats", "tea kettles"]
HOBBIES = ["chess", "sailing", "rock climbing", "pottery", "bird watching", "cycling", "knitting", "fencing",
           "gardening", "table tennis", "baking bread", "kayaking", "painting murals", "astronomy"]
SUBJECTS = ["history", "physics", "medicine", "economics", "biology", "philosophy", "mathematics", "geology",
            "music", "law", "linguistics", "chemistry"]
ANIMALS = ["dog", "cat", "parrot", "rabbit", "tortoise", "horse", "goat", "hamster"]
PET_NAMES = ["Biscuit", "Pepper", "Ziggy", "Mochi", "Rufus", "Clover", "Noodle", "Juniper", "Waffles", "Pickle"]
INSTRUMENTS = ["violin", "cello", "trumpet", "piano", "flute", "drums", "harp", "saxophone", "accordion"]
BANDS = ["The Velvet Owls", "The Paper Kites", "The Iron Gulls", "The Quiet Foxes", "The Amber Waves",
         "The Northern Lamps", "The Salt Crows"]
DISHES = ["lentil soup", "fish pie", "mushroom risotto", "apple strudel", "chicken curry", "bean stew",
          "pumpkin ravioli", "beef tacos", "potato dumplings"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "silver", "orange"]

#: fact kind -> sentence template
TEMPLATES = {
    "birth": "{name} was born in {city} in {year} .",
    "study": "{name} studied {subject} at the university of {city} .",
    "job": "{name} works as {article} {job} at {company} .",
    "move": "In {year} , {name} moved to {city} .",
    "founding": "{name} founded {company} , which makes {product} .",
    "trip": "{name} visited {country} in {year} .",
    "hobby": "{name} enjoys {hobby} at the weekend .",
    "pet": "{name} has a {animal} called {pet} .",
    "music": "{name} plays the {instrument} in a band called {band} .",
    "dish": "The favourite dish of {name} is {dish} .",
    "car": "{name} drives a {colour} car .",
}
#: slot -> (the word list it draws from, or None for years)
SLOT_VALUES = {
    "city": CITIES, "country": COUNTRIES, "job": JOBS, "product": PRODUCTS, "hobby": HOBBIES, "subject": SUBJECTS,
    "animal": ANIMALS, "pet": PET_NAMES, "instrument": INSTRUMENTS, "band": BANDS, "dish": DISHES, "colour": COLOURS,
}
#: (fact kind, slot asked for) -> question templates (the slots of the fact fill them)
QUESTIONS = {
    ("birth", "city"): ["Where was {name} born ?", "In which city was {name} born ?"],
    ("birth", "year"): ["When was {name} born ?", "In what year was {name} born ?"],
    ("study", "subject"): ["What did {name} study ?", "Which subject did {name} study ?"],
    ("study", "city"): ["Where did {name} study ?", "In which city did {name} go to university ?"],
    ("job", "job"): ["What does {name} do for a living ?", "What is the job of {name} ?"],
    ("job", "company"): ["Which company does {name} work for ?", "Where does {name} work ?"],
    ("move", "city"): ["Where did {name} move to ?", "To which city did {name} move ?"],
    ("move", "year"): ["When did {name} move to {city} ?", "In what year did {name} move ?"],
    ("founding", "name"): ["Who founded {company} ?", "Who is the founder of {company} ?"],
    ("founding", "company"): ["Which company did {name} found ?", "What is the name of the company {name} founded ?"],
    ("founding", "product"): ["What does {company} make ?", "What does the company of {name} make ?"],
    ("trip", "country"): ["Which country did {name} visit in {year} ?", "Where did {name} travel in {year} ?"],
    ("trip", "year"): ["When did {name} visit {country} ?", "In what year did {name} go to {country} ?"],
    ("hobby", "hobby"): ["What does {name} enjoy at the weekend ?", "What is the hobby of {name} ?"],
    ("pet", "animal"): ["What kind of animal does {name} have ?", "What animal is {pet} ?"],
    ("pet", "pet"): ["What is the name of the {animal} of {name} ?", "What is the pet of {name} called ?"],
    ("music", "instrument"): ["Which instrument does {name} play ?", "What does {name} play in {band} ?"],
    ("music", "band"): ["What is the band of {name} called ?", "In which band does {name} play ?"],
    ("dish", "dish"): ["What is the favourite dish of {name} ?", "What does {name} like to eat most ?"],
    ("car", "colour"): ["What colour is the car of {name} ?", "What colour car does {name} drive ?"],
}
#: sentences without an answer, which lengthen long paragraphs
FILLERS = [
    "{name} is well known in the neighbourhood .", "Friends describe {name} as patient and curious .",
    "{name} rarely talks about the past .", "Most evenings , {name} reads the local newspaper .",
    "{name} once appeared in a short documentary .", "Neighbours often ask {name} for advice .",
    "{name} keeps a diary and writes in it every day .", "{name} prefers trains to planes .",
]

Slots = Dict[str, str]


def fill(template: str, values: Slots) -> Tuple[str, Dict[str, int]]:
    """``template`` with its slots filled, and the character offset of each slot in the result."""
    text, offsets = "", {}
    for literal, field, _, _ in Formatter().parse(template):
        text += literal
        if field is not None:
            offsets[field] = len(text)
            text += values[field]
    return text, offsets


class _Pool:
    """Draws values without repeats within one paragraph."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set = set()

    def draw(self, make) -> str:
        for _ in range(10_000):
            value = make()
            if value not in self.used:
                self.used.add(value)
                return value
        raise RuntimeError("ran out of distinct values for a paragraph; lengthen the word lists")


def fact_slots(rng: random.Random, pool: _Pool, kind: str, name: str, born: int) -> Slots:
    """The slot values of one fact about ``name``, born in ``born`` (values distinct from the
    paragraph's other values; the years of later events fall in the person's adult life)."""
    slots = {"name": name}
    for field in Formatter().parse(TEMPLATES[kind]):
        slot = field[1]
        if slot in (None, "name", "article"):
            continue
        if slot == "year" and kind == "birth":
            slots[slot] = str(born)  # drawn (distinct) in make_paragraph
        elif slot == "year":
            slots[slot] = pool.draw(lambda: str(rng.randint(born + 18, born + 40)))
        elif slot == "company":
            slots[slot] = pool.draw(lambda: f"{rng.choice(COMPANY_STEMS)} {rng.choice(COMPANY_KINDS)}")
        else:
            slots[slot] = pool.draw(lambda: rng.choice(SLOT_VALUES[slot]))
    if kind == "job":
        slots["article"] = "an" if slots["job"][0] in "aeiou" else "a"
    return slots


def make_paragraph(rng: random.Random, long: bool) -> Tuple[List[Tuple[str, Slots]], List[str]]:
    """``(facts, sentences)``: the ``(kind, slots)`` of each fact and the paragraph's sentences in
    order (fillers included); ``None`` marks a filler among the facts' order."""
    (people_range, kinds_range, fillers_range) = LONG if long else SHORT
    pool = _Pool(rng)
    names, births = [], {}
    for _ in range(rng.randint(*people_range)):
        first = pool.draw(lambda: rng.choice(FIRST_NAMES))  # distinct first names too: no partial matches
        names.append(f"{first} {pool.draw(lambda: rng.choice(LAST_NAMES))}")
        births[names[-1]] = int(pool.draw(lambda: str(rng.randint(1930, 1985))))
    kinds = rng.sample(list(TEMPLATES), rng.randint(*kinds_range))
    owners = [names[i % len(names)] if i < len(names) else rng.choice(names) for i in range(len(kinds))]
    facts = [(kind, fact_slots(rng, pool, kind, owner, births[owner])) for kind, owner in zip(kinds, owners)]
    facts.sort(key=lambda fact: (names.index(fact[1]["name"]), list(TEMPLATES).index(fact[0])))  # person by person
    fillers = [filler.format(name=rng.choice(names)) for filler in rng.sample(FILLERS, rng.randint(*fillers_range))]
    return facts, fillers


def make_record(rng: random.Random, with_alternatives: bool) -> Dict[str, Any]:
    """One ``{"context", "question", "answers"}`` record (see the module docstring)."""
    facts, fillers = make_paragraph(rng, long=rng.random() < LONG_SHARE)
    items: List[Tuple[Optional[str], Slots]] = list(facts)
    for filler in fillers:  # fillers go anywhere between the facts
        items.insert(rng.randint(0, len(items)), (None, {"text": filler}))
    sentences, starts = [], []
    position = 0
    for kind, slots in items:
        text, offsets = fill(TEMPLATES[kind], slots) if kind is not None else (slots["text"], {})
        sentences.append(text)
        starts.append({field: position + offset for field, offset in offsets.items()})
        position += len(text) + 1
    context = " ".join(sentences)
    k = rng.choice([i for i, (kind, _) in enumerate(items) if kind is not None])
    kind, slots = items[k]
    slot = rng.choice([s for (f, s) in QUESTIONS if f == kind])
    question = fill(rng.choice(QUESTIONS[(kind, slot)]), slots)[0]
    answer, start = slots[slot], starts[k][slot]
    assert context[start : start + len(answer)] == answer
    texts, answer_starts = [answer], [start]
    if with_alternatives and rng.random() < 0.6:
        texts.append(answer)
        answer_starts.append(start)
        before = context[:start].split()
        if before and before[-1] in ("in", "to", "at", "the") and rng.random() < 0.7:  # with the word before
            texts.append(f"{before[-1]} {answer}")
            answer_starts.append(start - len(before[-1]) - 1)
    return {"context": context, "question": question, "answers": {"text": texts, "answer_start": answer_starts}}


def generate(seed: int, n: int) -> List[Dict[str, Any]]:
    """``n`` distinct records ``{"id", "context", "question", "answers"}``; records from position
    ``SIZES["train"]`` on (validation, test, predict) may carry alternative answers."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < n:
        record = make_record(rng, with_alternatives=len(out) >= SIZES["train"])
        key = (record["context"], record["question"])
        if key in seen:
            continue
        seen.add(key)
        out.append({"id": f"sample-{len(out):05d}", **record})
    return out


def make_splits(seed: int = 0) -> Dict[str, List[Dict[str, Any]]]:
    """Train / validation / test records; no (context, question) pair in two splits."""
    return sample_files.make_splits(generate, SIZES, seed)


def predict_records(seed: int = 0) -> List[Dict[str, Any]]:
    """20 ``{"id", "context", "question"}`` records that occur in none of the splits."""
    records = generate(seed, sum(SIZES.values()) + N_PREDICT)[-N_PREDICT:]
    return [{key: record[key] for key in ("id", "context", "question")} for record in records]


def _write_jsonl(path: Path, records: List[Dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write(directory, seed: int = 0) -> None:
    """Write train/validation/test.jsonl and predict.jsonl (QA inputs are two fields, so no
    ``predict.txt``) into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, records in make_splits(seed).items():
        _write_jsonl(out / f"{name}.jsonl", records)
    _write_jsonl(out / "predict.jsonl", predict_records(seed))


def main(argv: Optional[List[str]] = None) -> None:
    sample_files.command_line(__doc__.splitlines()[0], SAMPLE_DIR, write, argv)


if __name__ == "__main__":
    main()
