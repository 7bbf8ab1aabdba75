"""Embedded sample data for the summarization task: short synthetic office emails and their
subject lines.

Nothing here is copied from a corpus; every email is generated from the templates and word
lists below with ``random.Random(seed)``, so the same seed always gives the same files byte
for byte. Run ``python tasks/summarization/sample_data.py [--out DIR] [--seed N]`` to
regenerate them.

Generative process
------------------
1. Draw one **key fact**: an event type (20 of them: a meeting moved or cancelled, an overdue
   or paid invoice, a lunch booked or cancelled, an order shipped or delayed, a new colleague,
   a report deadline, system maintenance, a changed flight, a farewell party, a call, an
   interview, a closed office, someone out of office, an approval request, a room change, an
   expiring password) with its slots filled from word lists (names, weekdays, clock times,
   restaurants, cities, teams, topics, systems, invoice/order/room numbers).
2. Write the key sentence with one of several paraphrase templates of that event type (the
   slots appear in different places and with different wording).
3. Optionally add a detail sentence that belongs to the event but does not change the subject.
4. Add distractor sentences (small talk, other people, other days, other cities and topics);
   their slots are drawn to differ from the key fact's, so a model must find the key
   sentence rather than copy the first name or day it sees.
5. Shuffle the body sentences (the key fact can be anywhere), wrap them in an optional
   greeting and a sign-off with a sender name, and keep the email only if it has 30 to 80
   words and 3 to 6 body sentences.

The **target** is the subject line, a fixed function of the key fact alone, for example
``Meeting with Dana moved to Friday``, ``Invoice 4821 overdue`` or ``Lunch at Rosa's
cancelled`` (3 to 7 words): mostly slot values copied from the email plus a few template words.

Sizes: train 4000, validation 200, test 200 emails, plus 20 source-only emails in
``predict.txt``; no email occurs twice across all of them. Every email is a single line.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from s2s_tasks.data import sample_files

SIZES = {"train": 4000, "validation": 200, "test": 200}
N_PREDICT = 20
MIN_WORDS, MAX_WORDS = 30, 80
MIN_SENTENCES, MAX_SENTENCES = 3, 6
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

# ---------------------------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------------------------

NAMES = [
    "Dana", "Priya", "Marcus", "Elena", "Tom", "Aisha", "Kenji", "Sofia", "Liam", "Fatima",
    "Oscar", "Mei", "Jonas", "Grace", "Ravi", "Nora", "Diego", "Hannah", "Yusuf", "Clara",
    "Ben", "Ingrid", "Omar", "Lucia", "Felix", "Amara", "Hugo", "Zoe", "Mateo", "Leila",
    "Sam", "Ana", "Victor", "Chloe", "Tariq", "Eva", "Noah", "Pavel", "Julia", "Ethan",
    "Maya", "Arjun", "Lena", "Carlos", "Nina", "Owen", "Sara", "Malik", "Iris", "Theo",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
TIMES = ["9 am", "10 am", "11 am", "noon", "1 pm", "2 pm", "3 pm", "4 pm", "5 pm",
         "9:30 am", "10:30 am", "2:30 pm", "3:30 pm"]
RESTAURANTS = ["Rosa's", "the Blue Door", "Golden Wok", "Casa Verde", "Luigi's",
               "the Corner Deli", "Sakura", "the Olive Tree", "Pho House", "Bombay Garden",
               "the Green Fork", "Taco Loco", "Nick's Diner", "the Red Lantern", "Bella Napoli"]
CITIES = ["Chicago", "Denver", "Boston", "Seattle", "Austin", "Atlanta", "Toronto", "London",
          "Berlin", "Madrid", "Dublin", "Oslo", "Lisbon", "Portland", "Phoenix", "Miami",
          "Dallas", "Zurich"]
TEAMS = ["Sales", "Marketing", "Finance", "Legal", "Design", "Support", "Research",
         "Engineering", "Operations", "Data", "Security", "Product"]
TOPICS = ["Q3 budget", "hiring plan", "website redesign", "vendor contract", "travel policy",
          "pricing update", "onboarding guide", "annual review", "office move",
          "product launch", "customer survey", "safety audit", "marketing plan",
          "sales forecast", "training schedule"]
SYSTEMS = ["VPN", "email server", "payroll system", "shared drive", "wiki", "CRM",
           "build server", "phone system", "time tracker", "expense tool"]
SESSIONS = ["training", "workshop", "all-hands", "design review", "team meeting", "demo"]
FLOORS = ["second", "third", "fourth", "fifth", "sixth"]
AMOUNTS = ["$250", "$480", "$1,200", "$3,150", "$760", "$2,400", "$95", "$5,000"]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Key facts: slot sampler, subject line, paraphrase templates, detail sentences
# ---------------------------------------------------------------------------------------------

class Event:
    """One kind of key fact."""

    def __init__(self, name: str, slots: Tuple[str, ...], subject: str, templates: List[str],
                 details: List[str]):
        self.name, self.slots, self.subject = name, slots, subject
        self.templates, self.details = templates, details


SLOT_SAMPLERS: Dict[str, Callable[[random.Random], str]] = {
    "name": lambda r: r.choice(NAMES),
    "day": lambda r: r.choice(DAYS),
    "time": lambda r: r.choice(TIMES),
    "rest": lambda r: r.choice(RESTAURANTS),
    "city": lambda r: r.choice(CITIES),
    "team": lambda r: r.choice(TEAMS),
    "topic": lambda r: r.choice(TOPICS),
    "system": lambda r: r.choice(SYSTEMS),
    "session": lambda r: r.choice(SESSIONS),
    "invoice": lambda r: str(r.randint(1000, 9999)),
    "order": lambda r: str(r.randint(10000, 99999)),
    "room": lambda r: str(r.randint(101, 499)),
    "amount": lambda r: r.choice(AMOUNTS),
}

EVENTS = [
    Event("meeting_moved", ("name", "day"), "Meeting with {name} moved to {day}", [
        "I need to move our meeting with {name} to {day}.",
        "The meeting with {name} has been moved to {day}.",
        "{name} asked if we could push our meeting to {day}.",
        "Our meeting with {name} is now on {day} instead.",
        "Heads up: the meeting with {name} is rescheduled for {day}.",
    ], ["It will still be at {time}.", "Same room as before.", "Please update your calendar."]),
    Event("meeting_cancelled", ("name",), "Meeting with {name} cancelled", [
        "Our meeting with {name} is cancelled.",
        "{name} had to cancel our meeting this week.",
        "I am afraid the meeting with {name} will not happen.",
        "Please note that the meeting with {name} has been called off.",
    ], ["We will find a new date later.", "Sorry for the short notice.",
        "You can use that hour for other work."]),
    Event("invoice_overdue", ("invoice",), "Invoice {invoice} overdue", [
        "Invoice {invoice} is now overdue.",
        "We have not yet received payment for invoice {invoice}.",
        "Our records show that invoice {invoice} is past due.",
        "Payment for invoice {invoice} was due last week and is still open.",
    ], ["The amount is {amount}.", "Please pay as soon as you can.",
        "Let us know if there is a problem with it."]),
    Event("invoice_paid", ("invoice",), "Invoice {invoice} paid", [
        "Invoice {invoice} has been paid in full.",
        "We received your payment for invoice {invoice}.",
        "Payment for invoice {invoice} went through this morning.",
        "Thank you for settling invoice {invoice}.",
    ], ["The amount was {amount}.", "A receipt is attached.", "No further action is needed."]),
    Event("lunch_cancelled", ("rest",), "Lunch at {rest} cancelled", [
        "I have to cancel our lunch at {rest}.",
        "Lunch at {rest} is off, sorry.",
        "Sadly our lunch at {rest} will not work out.",
        "Something came up, so I cannot make lunch at {rest}.",
    ], ["Maybe we can try again next month.", "I already told the others.",
        "I hope you did not skip breakfast for it."]),
    Event("lunch_plan", ("rest", "day"), "Lunch at {rest} on {day}", [
        "Would you like to have lunch at {rest} on {day}?",
        "I booked a table at {rest} for lunch on {day}.",
        "Let us grab lunch at {rest} on {day}.",
        "How about lunch on {day} at {rest}?",
    ], ["We could meet there at noon.", "It is my treat this time.", "Bring {name} if you like."]),
    Event("order_shipped", ("order",), "Order {order} shipped", [
        "Your order {order} has shipped.",
        "Good news: order {order} left our warehouse today.",
        "Order {order} is on its way to you.",
        "We have sent out order {order}.",
    ], ["You will get a tracking link soon.", "Delivery usually takes three days.",
        "The box may arrive in two parts."]),
    Event("order_delayed", ("order", "day"), "Order {order} delayed until {day}", [
        "Order {order} is delayed and will arrive on {day}.",
        "Unfortunately order {order} will not ship before {day}.",
        "The supplier says order {order} is held up until {day}.",
        "We expect order {order} on {day} at the earliest.",
    ], ["We are sorry for the wait.", "The rest of your items are in stock.",
        "You can cancel at no cost."]),
    Event("welcome", ("name", "team"), "Welcome {name} to the {team} team", [
        "Please welcome {name}, who joins the {team} team today.",
        "{name} starts on the {team} team this week.",
        "I am happy to announce that {name} has joined the {team} team.",
        "Say hello to {name}, the newest member of the {team} team.",
    ], ["Coffee and cake are in the kitchen at {time}.", "The desk by the window is ready.",
        "Please help with the first few days."]),
    Event("report_due", ("topic", "day"), "{topic} report due {day}", [
        "The {topic} report is due on {day}.",
        "Please send me your part of the {topic} report by {day}.",
        "Just a reminder that the {topic} report needs to be done by {day}.",
        "We must hand in the {topic} report on {day}.",
    ], ["A short draft is fine for now.", "The template is on the shared drive.",
        "Numbers from last quarter are enough."]),
    Event("maintenance", ("system", "day"), "{system} maintenance on {day}", [
        "The {system} will be down for maintenance on {day}.",
        "IT plans to update the {system} on {day}, so expect some downtime.",
        "Please save your work: the {system} goes offline on {day} for maintenance.",
        "There is planned maintenance on the {system} on {day}.",
    ], ["The work starts at {time}.", "It should take about two hours.",
        "Call the help desk if anything breaks."]),
    Event("flight_changed", ("city", "day"), "Flight to {city} moved to {day}", [
        "My flight to {city} has been moved to {day}.",
        "The airline changed our flight to {city}, so we now leave on {day}.",
        "We will fly to {city} on {day} instead.",
        "Our trip to {city} now starts with a flight on {day}.",
    ], ["The hotel booking stays the same.", "I will send the new times later.",
        "Please adjust the car pickup."]),
    Event("farewell", ("name", "day"), "Farewell party for {name} on {day}", [
        "We are having a farewell party for {name} on {day}.",
        "{name} is leaving us, so we will have a goodbye party on {day}.",
        "Join us on {day} to say goodbye to {name}.",
        "There will be a small farewell for {name} on {day}.",
    ], ["It starts at {time} in the kitchen.", "Please sign the card at the front desk.",
        "Snacks will be provided."]),
    Event("call", ("name", "time"), "Call with {name} at {time}", [
        "Can you join a call with {name} at {time}?",
        "{name} wants to talk by phone at {time}.",
        "I set up a call with {name} for {time}.",
        "We have a quick call with {name} at {time} today.",
    ], ["The dial-in is in the invite.", "It should take half an hour.",
        "Please have the numbers ready."]),
    Event("interview", ("name", "day"), "Interview with {name} on {day}", [
        "We will interview {name} on {day}.",
        "{name} is coming in for an interview on {day}.",
        "The interview with {name} is set for {day}.",
        "Can you sit in on the interview with {name} on {day}?",
    ], ["The CV is attached.", "We need one more person on the panel.",
        "It will take about an hour."]),
    Event("office_closed", ("city", "day"), "{city} office closed on {day}", [
        "The {city} office will be closed on {day}.",
        "Nobody will be at the {city} office on {day} because of the holiday.",
        "Please note that our {city} office is shut on {day}.",
        "Our {city} office stays closed on {day} for repairs.",
    ], ["Urgent calls go to the main line.", "Please work from home that day.",
        "Normal hours resume the day after."]),
    Event("out_of_office", ("name", "day"), "{name} out of office until {day}", [
        "{name} is on vacation until {day}.",
        "{name} will be out of the office until {day}.",
        "{name} is away this week and back on {day}.",
        "Until {day}, {name} is out of the office.",
    ], ["Please send urgent questions to the team inbox.", "Email will be checked now and then.",
        "Open tasks have been handed over."]),
    Event("approval", ("topic",), "Approval needed for {topic}", [
        "I need your approval for the {topic} before we go ahead.",
        "Could you sign off on the {topic}?",
        "The {topic} is waiting for your approval.",
        "We cannot start on the {topic} until you approve it.",
    ], ["The document is attached.", "A short yes by email is enough.",
        "The deadline is close, so a quick answer helps."]),
    Event("room_change", ("session", "room"), "{session} moved to room {room}", [
        "The {session} has moved to room {room}.",
        "We will hold the {session} in room {room} instead.",
        "Note the new place for the {session}: room {room}.",
        "The {session} takes place in room {room} from now on.",
    ], ["The old room is being painted.", "The time does not change.",
        "There are more chairs in the new room."]),
    Event("password", ("system", "day"), "{system} password expires {day}", [
        "Your {system} password will expire on {day}.",
        "Please change your {system} password before {day}.",
        "The password for your {system} account runs out on {day}.",
        "On {day} your {system} password stops working unless you reset it.",
    ], ["Use at least twelve characters.", "The reset link is on the intranet.",
        "Do not share it with anyone."]),
]

# Distractor sentences: small talk and unrelated facts with their own slots.
DISTRACTORS = [
    "Hope you had a good weekend.",
    "Thanks for your help with the {topic} last week.",
    "{name} says hello, by the way.",
    "I will be in {city} on {day} for a visit.",
    "The coffee machine on the {floor} floor works again.",
    "Let me know if you have any questions.",
    "By the way, {name} is back from {city}.",
    "Did you see the notes from {day}?",
    "The {team} team did great work on the {topic}.",
    "Parking will be tight on {day} because of the repairs.",
    "I am working from home on {day}.",
    "Please remember to fill in your time sheet.",
    "My phone is acting up, so email is best.",
    "The weather in {city} has been awful.",
    "Also, {name} asked about the {topic}.",
    "The {team} team is hiring again.",
    "I still owe you a coffee.",
    "The printer on the {floor} floor is out of paper.",
    "{name} and I are still working on the {topic}.",
    "The {team} newsletter comes out on {day}.",
    "I finally finished the slides for {name}.",
    "It has been a busy week here.",
]
GREETINGS = ["Hi {rcpt},", "Hello {rcpt},", "Dear {rcpt},", "Hi all,", "Team,", "{rcpt},", ""]
SIGNOFFS = ["Thanks, {sender}", "Best, {sender}", "Cheers, {sender}", "Regards, {sender}",
            "{sender}", "Thank you, {sender}", "Best regards, {sender}"]


def _fill(template: str, slots: Dict[str, str]) -> str:
    text = template.format(**slots)
    return _cap(text)


def _fresh(rng: random.Random, kind: str, avoid: List[str]) -> str:
    """A slot value of ``kind`` different from the values in ``avoid``."""
    while True:
        value = SLOT_SAMPLERS[kind](rng) if kind in SLOT_SAMPLERS else rng.choice(FLOORS)
        if value not in avoid:
            return value


def make_email(rng: random.Random) -> Tuple[str, str]:
    """One (email, subject line) pair; may break the length limits (the caller filters)."""
    event = rng.choice(EVENTS)
    key = {kind: SLOT_SAMPLERS[kind](rng) for kind in event.slots}
    used: Dict[str, List[str]] = {kind: [value] for kind, value in key.items()}

    def slots_for(template: str, own: Dict[str, str]) -> Dict[str, str]:
        values = dict(own)
        for kind in ("name", "day", "city", "team", "topic", "floor", "time", "amount"):
            if "{" + kind + "}" in template and kind not in values:
                values[kind] = _fresh(rng, kind, used.setdefault(kind, []))
                used[kind].append(values[kind])
        return values

    body = [_fill(rng.choice(event.templates), key)]
    if rng.random() < 0.5:
        detail = rng.choice(event.details)
        body.append(_fill(detail, slots_for(detail, {})))
    n_body = rng.randint(MIN_SENTENCES, MAX_SENTENCES)
    pool = list(DISTRACTORS)
    rng.shuffle(pool)
    for template in pool[: max(0, n_body - len(body))]:
        body.append(_fill(template, slots_for(template, {})))
    rng.shuffle(body)
    greeting = rng.choice(GREETINGS)
    rcpt = _fresh(rng, "name", used.setdefault("name", []))
    sender = _fresh(rng, "name", used["name"] + [rcpt])
    signoff = rng.choice(SIGNOFFS).format(sender=sender)
    parts = ([greeting.format(rcpt=rcpt)] if greeting else []) + body + [signoff]
    subject = _cap(event.subject.format(**key))
    return " ".join(parts), subject


def generate(seed: int, n: int) -> List[Dict[str, str]]:
    """``n`` (email, subject) records with pairwise distinct emails of 30 to 80 words."""
    rng = random.Random(seed)
    seen = set()
    out: List[Dict[str, str]] = []
    while len(out) < n:
        src, tgt = make_email(rng)
        if not MIN_WORDS <= len(src.split()) <= MAX_WORDS or src in seen:
            continue
        seen.add(src)
        out.append({"source": src, "target": tgt})
    return out


def make_splits(seed: int = 0) -> Dict[str, List[Dict[str, str]]]:
    """Train / validation / test records ``{"source", "target"}``; no source in two splits."""
    return sample_files.make_splits(generate, SIZES, seed)


def predict_lines(seed: int = 0) -> List[str]:
    """20 emails that occur in none of the splits (the same generator, continued)."""
    return sample_files.predict_lines(generate, SIZES, N_PREDICT, seed)


def write(directory, seed: int = 0) -> None:
    """Write train/validation/test.jsonl and predict.txt into ``directory``."""
    sample_files.write_files(directory, make_splits(seed), predict_lines(seed))


def main(argv: Optional[List[str]] = None) -> None:
    sample_files.command_line(__doc__.splitlines()[0], SAMPLE_DIR, write, argv)


if __name__ == "__main__":
    main()
