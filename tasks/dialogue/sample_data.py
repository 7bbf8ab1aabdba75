"""Embedded sample data for the dialogue task: short templated two-party conversations and the
next turn.

Nothing here is copied from a corpus; every conversation is generated from the scripts and
word lists below with ``random.Random(seed)``, so the same seed always gives the same files
byte for byte. Run ``python tasks/dialogue/sample_data.py [--out DIR] [--seed N]`` to
regenerate them.

Generative process
------------------
1. Pick one of five **scripts**: booking a restaurant table, ordering at a cafe, buying
   clothes, small talk with a new neighbour, asking for directions. Fill its slots from the
   word lists (names, restaurants, days, times, party sizes, drinks, food, items, colours,
   sizes, cities, jobs, places).
2. Optionally (30 %) open with a greeting exchange (``Good morning.`` -> ``Good morning! How
   can I help you?``).
3. Speaker A (customer, newcomer, tourist) writes each of its turns with one of several
   paraphrase templates; speaker B (host, barista, shop assistant, neighbour, passer-by)
   answers with a **fixed function of the history**: it mirrors slot values said earlier
   (the party size, day and time of a booking, a name given four turns back), answers a
   question asked one to three turns back (the price asked with the colour), and follows
   simple rules (a restaurant closed on Mondays proposes Tuesday; purple, orange and yellow
   are sold out and replaced by a fixed colour; large groups need two tables; each place
   has its own route, walking time and, when far, a bus line; the reply to the newcomer
   depends on whether they like their job).
4. Cut the conversation before one of B's turns, chosen uniformly: the turns before it are
   the ``history`` (1 to 11 turns), B's turn is the ``response``. Histories are unique.

Records are ``{"history": [turn, ...], "response": text}``; ``predict.txt`` holds 20 further
histories, one a line, turns joined by ``" </s> "`` (the default ``data.turn_separator``).
Sizes: train 4000, validation 200, test 200 records; no history occurs twice across all files.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Dict, List, Optional

from s2s_tasks.data import sample_files

SIZES = {"train": 4000, "validation": 200, "test": 200}
N_PREDICT = 20
SEPARATOR = " </s> "
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

# ---------------------------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------------------------

NAMES = [
    "Dana", "Priya", "Marcus", "Elena", "Tom", "Aisha", "Kenji", "Sofia", "Liam", "Fatima",
    "Oscar", "Mei", "Jonas", "Grace", "Ravi", "Nora", "Diego", "Hannah", "Yusuf", "Clara",
    "Ben", "Ingrid", "Omar", "Lucia", "Felix", "Amara", "Hugo", "Zoe", "Mateo", "Leila",
]
RESTAURANTS = ["Casa Luna", "the Green Lantern", "Sakura House", "Bistro Nord", "the Little Oak",
               "Pasta Fina", "Spice Route", "the Red Kettle", "Harbour Grill", "Mama Lin's"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["noon", "1 pm", "6 pm", "6:30 pm", "7 pm", "7:30 pm", "8 pm", "8:30 pm"]
PARTY = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
LARGE_PARTY = {"seven", "eight", "nine", "ten"}
DRINKS = ["coffee", "tea", "latte", "cappuccino", "hot chocolate", "lemonade", "green tea"]
CUP_SIZES = ["small", "medium", "large"]
FOODS = ["croissant", "muffin", "bagel", "cookie", "sandwich", "slice of cake"]
# item -> price
ITEMS = {"shirt": "$25", "jacket": "$80", "scarf": "$15", "sweater": "$45", "dress": "$60",
         "hat": "$20", "coat": "$120", "skirt": "$35"}
COLORS = ["red", "blue", "green", "black", "white", "grey", "brown", "purple", "orange", "yellow"]
SOLD_OUT = {"purple": "blue", "orange": "red", "yellow": "green"}  # colour -> what is offered instead
CLOTHES_SIZES = ["small", "medium", "large", "extra large"]
CITIES = ["Lyon", "Porto", "Krakow", "Osaka", "Leeds", "Bergen", "Quebec", "Perth", "Nairobi",
          "Lima", "Seoul", "Valencia"]
JOBS = ["teacher", "nurse", "engineer", "baker", "pilot", "architect", "designer", "electrician",
        "chef", "librarian", "accountant", "firefighter"]
# place -> (turn, landmark, minutes on foot, bus line when far)
PLACES = {
    "train station": ("left", "bank", 10, None),
    "museum": ("right", "church", 15, None),
    "city library": ("left", "post office", 5, None),
    "hospital": ("right", "park", 25, "12"),
    "old harbour": ("left", "fish market", 30, "7"),
    "town hall": ("right", "bakery", 8, None),
    "football stadium": ("left", "petrol station", 35, "3"),
    "swimming pool": ("right", "school", 12, None),
    "market square": ("left", "fountain", 6, None),
    "zoo": ("right", "cinema", 40, "21"),
}
GREETINGS = {"Hi there.": "Hi!", "Hello.": "Hello!", "Good morning.": "Good morning!",
             "Good evening.": "Good evening!"}

Turns = List[str]


def _a(word: str) -> str:
    """``a word`` or ``an word``."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Scripts: A's turns are drawn from paraphrases, B's turns are a fixed function of the history
# ---------------------------------------------------------------------------------------------


def restaurant(rng: random.Random) -> Turns:
    r, n, day, time, name = rng.choice(RESTAURANTS), rng.choice(PARTY), rng.choice(DAYS), rng.choice(TIMES), rng.choice(NAMES)
    turns = [
        rng.choice(["Hi, I would like to book a table at {r}.", "Hello, can I reserve a table at {r}?",
                    "Do you have a free table at {r}?"]).format(r=r),
        f"Welcome to {r}. For how many people?",
        rng.choice(["For {n}, please.", "We are {n} people.", "A table for {n}, please."]).format(n=n),
        f"For {n} people we need to put two tables together. Which day and time?" if n in LARGE_PARTY
        else "Sure. Which day and time would you like?",
        rng.choice(["On {day} at {time}.", "{day} at {time}, if possible.", "Could we come on {day} at {time}?"]).format(day=day, time=time),
    ]
    if day == "Monday":
        day = "Tuesday"
        turns += [
            f"I am sorry, {r} is closed on Mondays. Would Tuesday at {time} work?",
            rng.choice(["Yes, Tuesday is fine.", "Tuesday works for me.", "OK, let us take Tuesday."]),
            "Good. What name should I put the booking under?",
        ]
    else:
        turns.append(f"A table for {n} on {day} at {time} is free. What name should I put it under?")
    turns += [
        rng.choice(["Under {name}, please.", "It is {name}.", "The name is {name}."]).format(name=name),
        f"Thank you, {name}. Your table for {n} at {r} is booked for {day} at {time}.",
    ]
    return turns


def cafe(rng: random.Random) -> Turns:
    size, drink, food, name = rng.choice(CUP_SIZES), rng.choice(DRINKS), rng.choice(FOODS), rng.choice(NAMES)
    wants_food = rng.random() < 0.5
    turns = [
        rng.choice(["Can I get {x}, please?", "I would like {x}.", "{X}, please."]).format(
            x=_a(f"{size} {drink}"), X=_cap(_a(f"{size} {drink}"))),
        f"{_cap(_a(f'{size} {drink}'))}, sure. Would you like anything to eat?",
    ]
    if wants_food:
        turns += [
            rng.choice(["Yes, {f}, please.", "I will also take {f}.", "Yes, I would like {f} too."]).format(f=_a(food)),
            f"{_cap(_a(f'{size} {drink}'))} and {_a(food)}, coming up. What name is the order for?",
        ]
    else:
        turns += [
            rng.choice(["No, thank you.", "No, just the drink.", "Nothing else, thanks."]),
            f"Just the {size} {drink} then. What name is the order for?",
        ]
    turns.append(rng.choice(["{name}.", "It is {name}.", "My name is {name}."]).format(name=name))
    order = f"{drink} and {food}" if wants_food else drink
    turns.append(f"Thanks, {name}. Your {order} will be ready at the counter in a few minutes.")
    return turns


def shop(rng: random.Random) -> Turns:
    item, color, size = rng.choice(list(ITEMS)), rng.choice(COLORS), rng.choice(CLOTHES_SIZES)
    price = ITEMS[item]
    asks_price = rng.random() < 0.5
    first = rng.choice(["Do you have this {item} in {color}?", "Is this {item} also available in {color}?",
                        "I am looking for {a_item} in {color}."]).format(item=item, color=color, a_item=_a(item))
    if asks_price:
        first += rng.choice([" And how much is it?", " How much does it cost?"])
    offered = SOLD_OUT.get(color, color)
    turns = [
        first,
        f"Sorry, the {item} is sold out in {color}, but we have it in {offered}. What size do you need?"
        if color in SOLD_OUT else f"Yes, we have the {item} in {color}. What size do you need?",
        rng.choice(["Size {size}, please.", "I need {a_size}.", "{Size} would be great."]).format(
            size=size, a_size=_a(size), Size=_cap(size)),
        f"Here is {_a(offered)} one in {size}. It costs {price}. Would you like to try it on?" if asks_price
        else f"Here is {_a(offered)} one in {size}. Would you like to try it on?",
    ]
    if rng.random() < 0.5:
        turns += [rng.choice(["Yes, please.", "Sure, I will try it.", "Yes, where can I do that?"]),
                  f"The fitting rooms are on the left. Tell me if the {size} does not fit."]
    else:
        turns += [rng.choice(["No, I will just take it.", "No need, I will buy it.", "No, thanks, I will take it."]),
                  f"Great. That will be {price} for the {item}. Cash or card?"]
    return turns


def small_talk(rng: random.Random) -> Turns:
    name, city, job = rng.choice(NAMES), rng.choice(CITIES), rng.choice(JOBS)
    likes = rng.random() < 0.5
    return [
        rng.choice(["Hi, I am {name}. I just moved here from {city}.",
                    "Hello! My name is {name}, I am new here. I come from {city}.",
                    "Hey, I am {name}, your new neighbour. I used to live in {city}."]).format(name=name, city=city),
        f"Nice to meet you, {name}! What brought you here from {city}?",
        rng.choice(["I got a job here as {job}.", "I started a new job as {job}.",
                    "I found work as {job} in town."]).format(job=_a(job)),
        f"{_cap(_a(job))}, how interesting! Do you like it so far?",
        rng.choice(["Yes, I love it.", "It is hard, but I like it.", "Yes, my colleagues are great."]) if likes
        else rng.choice(["Not really, it is a lot of work.", "Not yet, the hours are long.", "No, it is harder than I thought."]),
        f"Glad to hear that. If you need anything, just knock on my door, {name}." if likes
        else f"I am sorry to hear that. It gets easier, {name}. Just knock if you need anything.",
    ]


def directions(rng: random.Random) -> Turns:
    place = rng.choice(list(PLACES))
    turn, landmark, minutes, bus = PLACES[place]
    far = f"It is about {minutes} minutes on foot, so better take bus {bus}." if bus else f"It is about {minutes} minutes on foot."
    return [
        rng.choice(["Excuse me, how do I get to the {p}?", "Sorry, where is the {p}?",
                    "Could you tell me the way to the {p}?"]).format(p=place),
        f"Go straight ahead and turn {turn} at the {landmark}. The {place} is right there.",
        rng.choice(["Is it far?", "How long does it take to walk?", "Can I walk there?"]),
        far,
        rng.choice(["Thank you so much!", "Great, thanks.", "Thanks for your help."]),
        f"You are welcome. Enjoy your visit to the {place}!",
    ]


SCRIPTS: List[Callable[[random.Random], Turns]] = [restaurant, cafe, shop, small_talk, directions]


def make_dialogue(rng: random.Random) -> Dict[str, object]:
    """One record: the history up to one of B's turns and that turn as the response."""
    turns = rng.choice(SCRIPTS)(rng)
    if rng.random() < 0.3:
        greeting = rng.choice(list(GREETINGS))
        turns = [greeting, f"{GREETINGS[greeting]} How can I help you?"] + turns
    cut = rng.choice(range(1, len(turns), 2))  # B speaks at the odd positions
    return {"history": turns[:cut], "response": turns[cut]}


def generate(seed: int, n: int) -> List[Dict[str, object]]:
    """``n`` records ``{"history": [turn, ...], "response": text}`` with pairwise distinct histories."""
    rng = random.Random(seed)
    seen = set()
    out: List[Dict[str, object]] = []
    while len(out) < n:
        record = make_dialogue(rng)
        key = tuple(record["history"])
        if key in seen:
            continue
        seen.add(key)
        out.append(record)
    return out


def as_line(record: Dict[str, object]) -> str:
    """A history as one line, turns joined by the default ``data.turn_separator``."""
    return SEPARATOR.join(record["history"])


def make_splits(seed: int = 0) -> Dict[str, List[Dict[str, object]]]:
    """Train / validation / test records; no history in two splits."""
    return sample_files.make_splits(generate, SIZES, seed)


def predict_lines(seed: int = 0) -> List[str]:
    """20 histories (one string each) that occur in none of the splits (the same generator, continued)."""
    return sample_files.predict_lines(generate, SIZES, N_PREDICT, seed, line=as_line)


def write(directory, seed: int = 0) -> None:
    """Write train/validation/test.jsonl and predict.txt into ``directory``."""
    sample_files.write_files(directory, make_splits(seed), predict_lines(seed))


def main(argv: Optional[List[str]] = None) -> None:
    sample_files.command_line(__doc__.splitlines()[0], SAMPLE_DIR, write, argv)


if __name__ == "__main__":
    main()
