#!/usr/bin/env python3
"""The training and evaluation data of edge-reason's adapter and switcher, made here.

Everything is generated from templates with a seeded RNG (no downloads), so the same
command always writes the same files:

    python3 train/data.py --out train/data [--seed 0]

It writes two sets, each as train/val/test JSON lines:

- ``math_{split}.jsonl``: multi-step arithmetic word problems with exact integer
  answers, 1 to 4 operations (``difficulty``), each with a short correct solution in
  the runtime's output format::

      <think>
      Start: 12.
      He buys 30 more apples: 12 + 30 = 42.
      </think>

      Final answer: 42

  Seven training templates, each with several phrasings per operation; the solution
  copies each step's sentence before doing its operation. Two templates
  (``HELD_OUT_MATH``) never appear in train or val: their problems are
  in test only, flagged ``held_out``, to show the adapter did not memorize phrasing.
- ``switch_{split}.jsonl``: mixed prompts labelled ``reason`` or ``chat`` by source,
  as the method does: multi-step arithmetic and multi-hop logic (orderings,
  who-is-where after several moves) are ``reason``; greetings, simple facts, short
  instructions, one-step arithmetic and one-fact lookups are ``chat``. Both labels
  hold numbers and both hold non-math prompts, so "has numbers" does not predict the
  label. One logic template is held out the same way.

And ``switch_paraphrase_{train,val,test}.jsonl``, from their own RNGs (so the files
above do not change): the same two labels in short, casual forms no switch template
uses (a whole multi-step problem in one sentence, "How many?" questions, chat-style
facts, sums and requests). Train and val hold one set of such templates
(SHORT_TEMPLATES), test another (PARAPHRASE_TEMPLATES, all held out), so the test
measures whether the switcher learned what needs reasoning or its templates' wording.

Each line: ``{"id", "set", "split", "family", "template", "difficulty", "held_out",
"label", "prompt", "answer", "solution"}`` (``solution`` is null where none is
needed: chat prompts have no reference reply).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

NAMES = [
    "Tom", "Ann", "Sara", "Ben", "Mia", "Leo", "Nora", "Omar", "Ivy", "Raj",
    "Lucy", "Sam", "Kai", "Zoe", "Eli", "Maya", "Finn", "Ada", "Hugo", "Lena",
]
PRONOUN = {n: ("she" if n in {"Ann", "Sara", "Mia", "Nora", "Ivy", "Lucy", "Zoe", "Maya", "Ada", "Lena"} else "he") for n in NAMES}
ROOMS = ["kitchen", "garden", "hall", "bedroom", "office", "garage", "attic", "bathroom"]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# ----------------------------------------------------------------------------- math

class Chain:
    """A quantity changed step by step; keeps the story and the worked solution.

    The worked solution copies each sentence of the story, then does its operation:
    ``She sells 5 muffins: 14 - 5 = 9.`` Copying is what a small model does well, and
    deciding the operation from the copied sentence is what carries over to phrasing it
    has not seen (the held-out templates).
    """

    def __init__(self, value: int, opening: str, start: str | None = None):
        self.value = value
        self.story = [opening]
        self.work = [f"Start: {start or value}."]

    def apply(self, op: str, n: int, story: str) -> None:
        v = self.value
        if op == "+":
            new = v + n
        elif op == "-":
            new = v - n
        elif op == "*":
            new = v * n
        else:
            assert v % n == 0
            new = v // n
        self.story.append(story)
        self.work.append(f"{story.rstrip('.')}: {worked(v, op, n)}.")
        self.value = new


def worked(v: int, op: str, n: int) -> str:
    """One operation written in steps a 135M model can compute: tens before units.

    `49 + 35 = 79 + 5 = 84`, `84 - 35 = 54 - 5 = 49`, `48 x 4 = 40 x 4 + 8 x 4 = 160 + 32 = 192`,
    `192 / 4 = 160 / 4 + 32 / 4 = 40 + 8 = 48`; single-digit cases stay one step.
    """
    if op in "+-":
        tens, units = n - n % 10, n % 10
        if v < 10 or tens == 0 or units == 0:
            return f"{v} {op} {n} = {v + n if op == '+' else v - n}"
        mid = v + tens if op == "+" else v - tens
        end = mid + units if op == "+" else mid - units
        return f"{v} {op} {n} = {mid} {op} {units} = {end}"
    if op == "*":
        tens, units = v - v % 10, v % 10
        if tens == 0 or units == 0:
            return f"{v} x {n} = {v * n}"
        return f"{v} x {n} = {tens} x {n} + {units} x {n} = {tens * n} + {units * n} = {v * n}"
    big = (v // (10 * n)) * 10 * n  # the largest multiple of 10n in v
    if big == 0 or big == v:
        return f"{v} / {n} = {v // n}"
    return f"{v} / {n} = {big} / {n} + {v - big} / {n} = {big // n} + {(v - big) // n} = {v // n}"


def pick_op(rng: random.Random, v: int, allowed: str) -> tuple[str, int] | None:
    """An operation on value v that keeps it a positive integer below 1000."""
    for _ in range(50):
        op = rng.choice(allowed)
        if op == "+":
            n = rng.randint(2, 60)
        elif op == "-":
            if v < 3:
                continue
            n = rng.randint(1, min(v - 1, 60))
        elif op == "*":
            n = rng.randint(2, 5)
            if v * n >= 1000:
                continue
        else:
            divisors = [d for d in range(2, 10) if v % d == 0 and v // d >= 1]
            if not divisors:
                continue
            n = rng.choice(divisors)
        return op, n
    return None


THINGS = ["apples", "marbles", "stickers", "cards", "pencils", "shells", "stamps", "coins", "beads", "toy cars"]


def person(rng):
    """A name, its pronouns (he, him, his, himself) and a friend's name."""
    name = rng.choice(NAMES)
    she = PRONOUN[name] == "she"
    pronouns = ("she", "her", "her", "herself") if she else ("he", "him", "his", "himself")
    friend = rng.choice([n for n in NAMES if n != name])
    return name, pronouns, friend


def math_owner(rng, steps):
    name, (he, him, his, self_), friend = person(rng)
    H = cap(he)
    thing = rng.choice(THINGS)
    v = rng.randint(5, 80)
    opening = rng.choice([f"{name} has {v} {thing}.", f"{name} owns {v} {thing}.", f"There are {v} {thing} in {name}'s bag."])
    texts = {
        "+": [lambda n: f"{H} finds {n} more.", lambda n: f"{H} buys {n} more {thing}.", lambda n: f"{friend} gives {him} {n} {thing}.",
              lambda n: f"{H} gets {n} more as a gift.", lambda n: f"{H} wins {n} {thing} in a game."],
        "-": [lambda n: f"{H} gives {n} to {friend}.", lambda n: f"{H} loses {n} of them.", lambda n: f"{H} sells {n} {thing}.",
              lambda n: f"{friend} takes {n} of them.", lambda n: f"{H} uses {n} {thing}."],
        "*": [lambda n: f"Then the number of {thing} {he} has becomes {n} times as large.", lambda n: f"Later {he} has {n} times as many {thing} as before."],
        "/": [lambda n: f"{H} splits them into {n} equal piles and keeps one pile.",
              lambda n: f"{H} shares them equally among {n} people, {self_} included, and keeps {his} share."],
    }
    questions = [f"How many {thing} does {name} have now?", f"How many {thing} does {name} have in the end?"]
    return chain_problem(rng, Chain(v, opening), steps, texts, rng.choice(questions))


def math_money(rng, steps):
    name, (he, him, his, _), friend = person(rng)
    H = cap(he)
    v = rng.randint(10, 200)
    opening = rng.choice([f"{name} has ${v}.", f"{name} saved ${v}.", f"There is ${v} in {name}'s wallet."])
    item = rng.choice(["a book", "lunch", "a ticket", "a game", "a toy", "a hat"])
    texts = {
        "+": [lambda n: f"{H} earns ${n} more.", lambda n: f"{friend} gives {him} ${n}.", lambda n: f"{H} is paid ${n} for chores.", lambda n: f"{H} finds ${n}."],
        "-": [lambda n: f"{H} spends ${n} on {item}.", lambda n: f"{H} pays ${n} for {item}.", lambda n: f"{H} gives ${n} to {friend}.", lambda n: f"{H} loses ${n}."],
        "*": [lambda n: f"A lucky bet makes the money {n} times as much."],
        "/": [lambda n: f"{H} splits the money into {n} equal parts and keeps one part."],
    }
    questions = [f"How many dollars does {name} have now?", f"How much money does {name} have left, in dollars?"]
    return chain_problem(rng, Chain(v, opening), steps, texts, rng.choice(questions))


def math_vehicle(rng, steps):
    vehicle = rng.choice(["bus", "train", "boat", "tram"])
    v = rng.randint(10, 60)
    opening = rng.choice([f"A {vehicle} leaves the station with {v} passengers.", f"There are {v} people on a {vehicle}."])
    texts = {
        "+": [lambda n: f"At the next stop, {n} people get on.", lambda n: f"{cap(str(n))} passengers board.", lambda n: f"Then {n} more people climb aboard."],
        "-": [lambda n: f"At the next stop, {n} people get off.", lambda n: f"{cap(str(n))} passengers leave.", lambda n: f"Then {n} people step off."],
    }
    questions = [f"How many passengers are on the {vehicle} now?", f"How many people are on the {vehicle} at the end?"]
    return chain_problem(rng, Chain(v, opening), steps, texts, rng.choice(questions))


GROUPS = [  # (opening with {a} groups of {b}, the things)
    ("A library has {a} shelves with {b} books on each shelf.", "books"),
    ("A farmer has {a} pens with {b} sheep in each pen.", "sheep"),
    ("A teacher has {a} boxes of {b} crayons.", "crayons"),
    ("A store has {a} packs of {b} batteries.", "batteries"),
    ("A school has {a} classes of {b} students.", "students"),
    ("A garden has {a} rows of {b} tulips.", "tulips"),
]


def math_groups(rng, steps):
    form, thing = rng.choice(GROUPS)
    a, b = rng.randint(2, 9), rng.randint(3, 12)
    v = a * b
    texts = {
        "+": [lambda n: f"Then {n} more {thing} are added.", lambda n: f"{cap(str(n))} new {thing} arrive."],
        "-": [lambda n: f"Then {n} {thing} are taken away.", lambda n: f"{cap(str(n))} of the {thing} are removed."],
        "*": [lambda n: f"Then the number of {thing} becomes {n} times as large."],
    }
    c = Chain(v, form.format(a=a, b=b), f"{a} x {b} = {v}")
    steps = max(steps - 1, 0)  # the opening multiplication is one step
    return chain_problem(rng, c, steps, texts, rng.choice([f"How many {thing} are there now?", f"How many {thing} are there in the end?"]))


def math_store(rng, steps):
    item = rng.choice(["shirts", "bottles", "lamps", "chairs", "bags", "hats"])
    v = rng.randint(20, 150)
    opening = rng.choice([f"A shop has {v} {item} in stock.", f"A warehouse holds {v} {item}."])
    texts = {
        "+": [lambda n: f"It receives a delivery of {n} {item}.", lambda n: f"Customers return {n} {item}.", lambda n: f"The owner orders {n} more."],
        "-": [lambda n: f"It sells {n} {item}.", lambda n: f"{cap(str(n))} {item} are sold in the morning.", lambda n: f"{cap(str(n))} are damaged and thrown away."],
    }
    return chain_problem(rng, Chain(v, opening), steps, texts, f"How many {item} are there now?")


def math_score(rng, steps):
    name, (he, _, his, _), _ = person(rng)
    H = cap(he)
    v = rng.randint(5, 90)
    texts = {
        "+": [lambda n: f"{H} scores {n} more points.", lambda n: f"{H} earns a bonus of {n} points."],
        "-": [lambda n: f"{H} loses {n} points.", lambda n: f"A penalty takes away {n} points."],
        "*": [lambda n: f"A power-up multiplies {his} points by {n}."],
    }
    return chain_problem(rng, Chain(v, f"{name} has {v} points in a game."), steps, texts, f"How many points does {name} have now?")


def math_jar(rng, steps):
    name = rng.choice(NAMES)
    thing = rng.choice(["candies", "cookies", "buttons", "coins"])
    v = rng.randint(8, 90)
    texts = {
        "+": [lambda n: f"{name} puts in {n} more.", lambda n: f"Mom adds {n} {thing}."],
        "-": [lambda n: f"The kids eat {n} {thing}." if thing in {"candies", "cookies"} else f"The kids take {n} {thing}.",
              lambda n: f"{name} takes out {n}."],
        "/": [lambda n: f"The {thing} are shared equally among {n} jars, and one jar is kept."],
    }
    return chain_problem(rng, Chain(v, f"A jar holds {v} {thing}."), steps, texts, f"How many {thing} are in the jar now?")


def math_bakery(rng, steps):  # held out
    trays, per = rng.randint(2, 8), rng.randint(4, 12)
    v = trays * per
    c = Chain(v, f"A baker bakes {trays} trays of {per} muffins.", f"{trays} x {per} = {v}")
    texts = {
        "+": [lambda n: f"She bakes {n} more muffins."],
        "-": [lambda n: f"She sells {n} muffins."],
    }
    steps = max(steps - 1, 0)
    return chain_problem(rng, c, steps, texts, "How many muffins does she have now?")


def math_tank(rng, steps):  # held out
    v = rng.randint(20, 300)
    texts = {
        "+": [lambda n: f"A pipe adds {n} liters."],
        "-": [lambda n: f"The garden uses {n} liters."],
        "*": [lambda n: f"The water is then poured into a tank {n} times as full."],
    }
    return chain_problem(rng, Chain(v, f"A water tank holds {v} liters."), steps, texts, "How many liters are in the tank now?")


def rewrite_steps(solution: str, step) -> str:
    """The worked solution with the bare `Start: N.` dropped and each step line
    (`sentence: arithmetic.`) replaced by `step(sentence, arithmetic)`."""
    think, rest = solution.split("</think>", 1)
    lines = []
    for line in think.split("\n"):
        if re.fullmatch(r"Start: -?\d+\.", line):
            continue
        if "=" in line and ": " in line:
            line = step(*line.rsplit(": ", 1))
        lines.append(line)
    return "\n".join(lines) + "</think>" + rest


def compact_solution(solution: str) -> str:
    """The worked solution without the copied story: each step's sentence and the bare
    `Start: N.` go, its arithmetic stays (`She sells 5 muffins: 14 - 5 = 9.` -> `14 - 5 = 9.`).
    About 40% fewer thinking tokens; what a stated budget of 64 or less is trained to
    (train/sft.py --budget-buckets)."""
    return rewrite_steps(solution, lambda sentence, work: work)


def tight_arithmetic(work: str, ops: str = "-+/=x") -> str:
    """`14 - 5 = 9.` -> `14-5=9`: the tokenizer spends a token on each space before a
    number, so the same arithmetic costs about a third fewer tokens without them. (`x` is
    the only letter in the generated arithmetic: it is the multiplication sign.)"""
    return re.sub(rf" ?([{re.escape(ops)}]) ?", r"\1", work).removesuffix(".")


def tight_solution(solution: str) -> str:
    """The worked solution with every sentence kept and its arithmetic without spaces
    (`She sells 5 muffins: 14 - 5 = 9.` -> `She sells 5 muffins: 14-5=9`), the bare
    `Start: N.` dropped: about 23% fewer thinking tokens than the full form (58 against
    75 on the test split), the story the model keeps its place by still copied
    (train/sft.py --short-form tight)."""
    return rewrite_steps(solution, lambda sentence, work: f"{sentence}: {tight_arithmetic(work)}")


def keyed_solution(solution: str, words: int = 2) -> str:
    """The worked solution in fewer tokens, each step still keyed to its sentence: the
    bare `Start: N.` goes, each step keeps the first `words` words of its sentence as a
    place marker, and its arithmetic loses the spaces (the tokenizer spends a token on
    each space before a number): `She sells 5 muffins: 14 - 5 = 9.` -> `She sells: 14-5=9`.
    About 40% fewer thinking tokens than the full form (46 against 75 on the test split),
    as many as `compact_solution` spends (train/sft.py --short-form keyed)."""

    def step(sentence, work):
        # (Spaces kept around `x`, as in the measured keyed run.)
        return " ".join(sentence.split()[:words]) + ": " + tight_arithmetic(work, ops="-+/=")

    return rewrite_steps(solution, step)


def chain_problem(rng, c, steps, texts, question):
    """`texts`: for each allowed operation, phrasings of one step (n -> sentence)."""
    for _ in range(steps):
        choice = pick_op(rng, c.value, "".join(texts))
        if choice is None:
            return None
        op, n = choice
        c.apply(op, n, rng.choice(texts[op])(n))
    prompt = " ".join(c.story + [question])
    think = "\n".join(c.work)
    solution = f"<think>\n{think}\n</think>\n\nFinal answer: {c.value}"
    return prompt, str(c.value), solution


MATH_TEMPLATES = {
    "owner": math_owner,
    "money": math_money,
    "vehicle": math_vehicle,
    "groups": math_groups,
    "store": math_store,
    "score": math_score,
    "jar": math_jar,
    "bakery": math_bakery,
    "tank": math_tank,
}
HELD_OUT_MATH = {"bakery", "tank"}


# ----------------------------------------------------------------------------- logic

def logic_ordering(rng, hops):
    people = rng.sample(NAMES, hops + 2)
    adj, sup_hi, sup_lo = rng.choice([("taller", "tallest", "shortest"), ("older", "oldest", "youngest"), ("faster", "fastest", "slowest")])
    facts = [f"{people[i]} is {adj} than {people[i + 1]}." for i in range(len(people) - 1)]
    order = list(facts)
    rng.shuffle(order)
    ask_top = rng.random() < 0.5
    answer = people[0] if ask_top else people[-1]
    question = f"Who is the {sup_hi if ask_top else sup_lo}?"
    chain = " > ".join(people)
    think = f"Put them in order from the {sup_hi} to the {sup_lo}: {chain}.\nThe {sup_hi if ask_top else sup_lo} is {answer}."
    return " ".join(order + [question]), answer, f"<think>\n{think}\n</think>\n\nFinal answer: {answer}"


def logic_rooms(rng, hops):
    people = rng.sample(NAMES, 2)
    where = {p: rng.choice(ROOMS) for p in people}
    story = [f"{p} is in the {where[p]}." for p in people]
    work = []
    target = people[0]
    for _ in range(hops + 1):
        p = rng.choice(people)
        room = rng.choice([r for r in ROOMS if r != where[p]])
        story.append(f"{p} moves to the {room}.")
        where[p] = room
        if p == target:
            work.append(f"{target} moves to the {room}.")
    question = f"Where is {target} now?"
    work.append(f"So {target} is in the {where[target]}.")
    answer = where[target]
    return " ".join(story + [question]), answer, "<think>\n" + "\n".join(work) + f"\n</think>\n\nFinal answer: {answer}"


def logic_follow(rng, hops):  # held out: who holds the ball after several passes
    people = rng.sample(NAMES, 4)
    holder = people[0]
    story = [f"{holder} has the ball."]
    work = [f"{holder} starts with the ball."]
    for _ in range(hops + 1):
        to = rng.choice([p for p in people if p != holder])
        story.append(f"{holder} passes it to {to}.")
        work.append(f"{holder} -> {to}.")
        holder = to
    return " ".join(story + ["Who has the ball now?"]), holder, "<think>\n" + "\n".join(work) + f"\n</think>\n\nFinal answer: {holder}"


LOGIC_TEMPLATES = {"ordering": logic_ordering, "rooms": logic_rooms, "follow": logic_follow}
HELD_OUT_LOGIC = {"follow"}


# ----------------------------------------------------------------------------- easy

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
    "Canada": "Ottawa", "Germany": "Berlin", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Greece": "Athens", "Ireland": "Dublin", "Portugal": "Lisbon", "Poland": "Warsaw", "Chile": "Santiago",
    "Austria": "Vienna", "Sweden": "Stockholm", "Finland": "Helsinki", "Cuba": "Havana", "Thailand": "Bangkok",
}
# Simple facts, some with numbers in the answer or the question.
FACTS = [
    ("How many legs does a dog have?", "4"), ("How many days are in a week?", "7"),
    ("How many months are in a year?", "12"), ("What color is a banana?", "yellow"),
    ("What do bees make?", "honey"), ("What is the largest planet in our solar system?", "Jupiter"),
    ("What is frozen water called?", "ice"), ("How many hours are in a day?", "24"),
    ("What animal says moo?", "cow"), ("What is the opposite of hot?", "cold"),
    ("Which season comes after winter?", "spring"), ("What color is the sky on a clear day?", "blue"),
    ("How many sides does a triangle have?", "3"), ("What gas do plants take in?", "carbon dioxide"),
    ("In which year did World War II end?", "1945"), ("How many minutes are in an hour?", "60"),
    ("What is the boiling point of water in Celsius?", "100"), ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("What is the chemical symbol for gold?", "Au"), ("How many continents are there?", "7"),
]
GREETINGS = [
    "Hi!", "Hello there.", "Good morning!", "Hey, how are you?", "Thanks for your help!",
    "Good night.", "Nice to meet you.", "What's up?", "Hello! Who are you?", "Thank you so much.",
    "Good evening!", "How is your day going?", "Hey there, friend.", "Bye for now!", "Hi, can you help me?",
    "Hello, 2 quick questions coming up.", "Have a great weekend!", "Happy new year!",
]
TOPICS = [
    "rain", "the sea", "a cat", "autumn", "coffee", "the moon", "friendship", "a city at night",
    "the 4 seasons", "a train ride", "snow", "a library", "music", "a garden in May", "the stars", "bread",
]
WORDS = ["happy", "big", "fast", "cold", "smart", "quiet", "bright", "old", "small", "kind", "angry", "easy"]


def easy_greeting(rng):
    return rng.choice(GREETINGS), None


def easy_fact(rng):
    if rng.random() < 0.5:
        return rng.choice(FACTS)
    country = rng.choice(list(CAPITALS))
    form = rng.choice(["What is the capital of {c}?", "Which city is the capital of {c}?", "Name the capital of {c}."])
    return form.format(c=country), CAPITALS[country]


def easy_instruction(rng):
    topic, word = rng.choice(TOPICS), rng.choice(WORDS)
    forms = [
        f"Write a two-line poem about {topic}.", f"Give me a synonym for \"{word}\".",
        f"Write one sentence about {topic}.", f"Spell the word \"{word}\" backwards.",
        f"Give me an antonym of \"{word}\".", f"Suggest a title for a story about {topic}.",
        f"Describe {topic} in 3 words.", f"Translate \"{word}\" into French.",
        f"Write a haiku about {topic}.", f"Use the word \"{word}\" in a sentence.",
    ]
    return rng.choice(forms), None


def easy_arithmetic(rng):
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op = rng.choice(["+", "-", "times"])
    if op == "+":
        return rng.choice([f"What is {a} + {b}?", f"Add {a} and {b}."]), str(a + b)
    if op == "-":
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", str(a - b)
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return f"What is {a} times {b}?", str(a * b)


def easy_one_step_story(rng):
    name = rng.choice(NAMES)
    thing = rng.choice(["apples", "pens", "books", "coins"])
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have?", str(a + b)


def easy_lookup(rng):
    people = rng.sample(NAMES, 2)
    rooms = rng.sample(ROOMS, 2)
    return f"{people[0]} is in the {rooms[0]}. {people[1]} is in the {rooms[1]}. Where is {people[0]}?", rooms[0]


EASY_TEMPLATES = {
    "greeting": easy_greeting,
    "fact": easy_fact,
    "instruction": easy_instruction,
    "arithmetic_1step": easy_arithmetic,
    "story_1step": easy_one_step_story,
    "lookup_1fact": easy_lookup,
}


# ----------------------------------------------------------------------------- paraphrases

def two_step_story(rng, forms):
    """One of `forms` (`{n}` has `{a}` `{t}`, gains `{b}`, loses `{c}`) filled in, and its answer;
    half of the last steps small."""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(5, 60), rng.randint(2, 40)
    c = rng.randint(1, 9) if rng.random() < 0.5 else rng.randint(1, a + b - 1)
    return rng.choice(forms).format(n=name, t=thing, a=a, b=b, c=c), str(a + b - c)


def para_compact_story(rng):
    return two_step_story(rng, [
        "{n} has {a} {t}, buys {b} and gives {c} away. How many?",
        "{n} had {a} {t}, got {b} more, then lost {c}. How many are left?",
        "I have {a} {t}; I get {b} more and give {c} to a friend. How many do I have now?",
        "{a} {t}, plus {b}, minus {c}: how many is that?",
        "{n} starts with {a} {t}, finds {b}, and trades away {c}. What's the count now?",
    ])


def para_rate(rng):
    name = rng.choice(NAMES)
    per, days, spent = rng.randint(3, 20), rng.randint(2, 9), rng.randint(1, 20)
    form = rng.choice([
        "If {n} saves {p} dollars a day for {d} days and then spends {s}, how much is left?",
        "{n} reads {p} pages a day for {d} days, then skips back {s} pages. What page is {n} on?",
        "A pump fills a tank with {p} liters a minute for {d} minutes, and {s} liters leak out. How many liters are in the tank?",
    ])
    return form.format(n=name, p=per, d=days, s=min(spent, per * days - 1)), str(per * days - min(spent, per * days - 1))


def para_chain_ops(rng):
    a, b, c = rng.randint(2, 30), rng.randint(2, 30), rng.randint(2, 5)
    form = rng.choice([
        "Start with {a}, add {b}, then multiply by {c}. What do you get?",
        "Take {a}, add {b}, and multiply the sum by {c}. Result?",
        "What is ({a} + {b}) x {c}?",
        "Double-check this for me: {a} plus {b}, all times {c}. What is it?",
    ])
    return form.format(a=a, b=b, c=c), str((a + b) * c)


def para_ordering(rng):
    a, b, c = rng.sample(NAMES, 3)
    adj, hi, lo = rng.choice([("taller", "tallest", "shortest"), ("older", "oldest", "youngest")])
    if rng.random() < 0.5:
        return f"{a} is {adj} than {b} and {b} is {adj} than {c}; who is the {lo}?", c
    return f"{c} is not as {adj[:-2]} as {b}, and {b} is not as {adj[:-2]} as {a}. Who's the {hi}?", a


def para_passes(rng):
    a, b, c, d = rng.sample(NAMES, 4)
    return f"{a} throws the ball to {b}, who throws it to {c}, who throws it to {d}. Who has it?", d


def para_chat_fact(rng):
    country = rng.choice(list(CAPITALS))
    form = rng.choice([
        "quick q: capital of {c}?", "what's the capital city of {c}", "Do you know the capital of {c}?",
        "{c}'s capital is which city?", "Capital of {c}, please.",
    ])
    return form.format(c=country), CAPITALS[country]


def para_chat_sum(rng):
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    form = rng.choice([
        ("what's {a} plus {b}", a + b), ("{a} + {b} = ?", a + b), ("Quick: {a} plus {b}?", a + b),
        ("{n} has {a} {t} and buys {b}. How many?", a + b), ("Add up {a} and {b} for me.", a + b),
    ])
    return form[0].format(a=a, b=b, n=name, t=thing), str(form[1])


def para_chat_request(rng):
    topic, word = rng.choice(TOPICS), rng.choice(WORDS)
    form = rng.choice([
        f"Can you write a short poem about {topic}?", f"Tell me a fun fact about {topic}.",
        f"What's another word for \"{word}\"?", f"Say something nice about {topic}.",
        f"Could you describe {topic} for a child?", f"Give me 3 words that rhyme with \"{word}\".",
    ])
    return form, None


def para_chat_greeting(rng):
    return rng.choice([
        "yo", "hey!! how's it going", "good afternoon :)", "thanks a lot, that helped", "morning!",
        "hi there, I have 1 question", "cheers, bye", "hello hello", "ok thanks", "how are you today?",
    ]), None


PARAPHRASE_TEMPLATES = {
    "reason": {"compact_story": para_compact_story, "rate": para_rate, "chain_ops": para_chain_ops,
               "ordering_one_sentence": para_ordering, "passes_one_sentence": para_passes},
    "chat": {"fact_casual": para_chat_fact, "sum_casual": para_chat_sum, "request": para_chat_request,
             "greeting_casual": para_chat_greeting},
}


# Short forms for training (switch_paraphrase_{train,val}): the same kinds of prompt as
# the paraphrase test set, in other words, so that set still measures new phrasing.
def short_story(rng):
    return two_step_story(rng, [
        "{n} has {a} {t}, finds {b}, then drops {c}. How many?",
        "{n} owns {a} {t}, wins {b} and trades {c} away. How many now?",
        "{n} had {a} {t}. After buying {b} and losing {c}, how many does {n} have?",
        "{a} {t} in a bag; add {b}, remove {c}. How many now?",
        "{n}: {a} {t}, then +{b}, then -{c}. Total?",
        "There were {a} {t}; {b} came and {c} went. How many are there?",
        "Got {a} {t}, bought {b} more, sold {c}. How many left?",
    ])


def short_calc(rng):
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    c = rng.randint(1, a * b - 1)
    form = rng.choice([
        ("Compute {a} times {b}, then subtract {c}.", a * b - c),
        ("Multiply {a} by {b} and add {c}.", a * b + c),
        ("What is {a} x {b} - {c}?", a * b - c),
        ("{a} times {b}, plus {c}, equals what?", a * b + c),
    ])
    return form[0].format(a=a, b=b, c=c), str(form[1])


def short_rate(rng):
    per, days, off = rng.randint(3, 20), rng.randint(2, 9), rng.randint(1, 20)
    off = min(off, per * days - 1)
    form = rng.choice([
        "A shop sells {p} cups a day. How many cups in {d} days if {s} are returned?",
        "{p} eggs a box, {d} boxes, {s} broken. How many good eggs?",
        "A bus carries {p} people per trip and makes {d} trips; {s} people rode twice. How many different riders?",
    ])
    return form.format(p=per, d=days, s=off), str(per * days - off)


def short_order(rng):
    a, b, c = rng.sample(NAMES, 3)
    if rng.random() < 0.5:
        return f"{a} is shorter than {b}, who is shorter than {c}. Who is tallest?", c
    return f"{a} finished before {b}; {b} finished before {c}. Who finished last?", c


def short_handoff(rng):
    a, b, c, d = rng.sample(NAMES, 4)
    if rng.random() < 0.5:
        return f"{a} gives the key to {b}, then {b} gives it to {c}. Who holds the key?", c
    return f"The note goes from {a} to {b} to {c} to {d}. Who has it last?", d


def short_capital(rng):
    country = rng.choice(list(CAPITALS))
    form = rng.choice(["capital of {c}?", "Tell me {c}'s capital.", "{c} capital city?", "which city is {c}'s capital"])
    return form.format(c=country), CAPITALS[country]


def short_sum(rng):
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(1, 9)
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    hi, lo = max(a, b, c + 1), min(a, b)
    form = rng.choice([
        ("{a}+{b}?", a + b), ("how much is {a} plus {b}", a + b), ("{n} has {a} {t} and finds {b}. Total?", a + b),
        ("{hi} minus {lo}?", hi - lo), ("{n} had {hi} {t} and lost {lo}. How many now?", hi - lo),
        ("{n} has {hi} {t} and drops {c}. How many?", hi - c), ("{n} owns {a} {t} and wins {b}. How many now?", a + b),
    ])
    return form[0].format(a=a, b=b, c=c, hi=hi, lo=lo, n=name, t=thing), str(form[1])


def short_request(rng):
    topic, word = rng.choice(TOPICS), rng.choice(WORDS)
    form = rng.choice([
        f"write me a limerick about {topic}", f"any tips for enjoying {topic}?", f"describe {topic} in a sentence",
        f"list 3 things about {topic}", f"what rhymes with \"{word}\"?", f"is \"{word}\" an adjective?",
    ])
    return form, None


def short_greeting(rng):
    return rng.choice([
        "sup", "hiya!", "thx", "good day to you", "heyyy", "hello friend!", "see you later", "what's new?",
        "many thanks", "hey, good morning", "hi :)", "you there?",
    ]), None


SHORT_TEMPLATES = {
    "reason": {"short_story": short_story, "short_calc": short_calc, "short_rate": short_rate,
               "short_order": short_order, "short_handoff": short_handoff},
    "chat": {"short_capital": short_capital, "short_sum": short_sum, "short_request": short_request,
             "short_greeting": short_greeting},
}


def make_paraphrases(rng, per_label, templates_by_label=None, split_name="test"):
    """`per_label` prompts of each label, round robin over that label's templates
    (PARAPHRASE_TEMPLATES unless given)."""
    rows = []
    for label, templates in (templates_by_label or PARAPHRASE_TEMPLATES).items():
        seen, names, tries = set(), list(templates), 0
        while len(seen) < per_label and tries < 100 * per_label:
            name = names[tries % len(names)]
            tries += 1
            prompt, answer = templates[name](rng)
            if prompt in seen:
                continue
            seen.add(prompt)
            family = "arithmetic" if answer and answer.isdigit() else ("logic" if label == "reason" else "easy")
            held_out = split_name == "test"
            rows.append(row("switch_paraphrase", family, name, 2 if label == "reason" else 1, held_out, label, prompt, answer, None))
    for i, r in enumerate(rows):
        r["split"], r["id"] = split_name, f"switch_paraphrase-{split_name}-{i:05d}"
    return rows


# ----------------------------------------------------------------------------- sets

def make_math(rng, n_per_template, n_held_out):
    rows = []
    for name, make in MATH_TEMPLATES.items():
        seen = set()
        while len(seen) < (n_held_out if name in HELD_OUT_MATH else n_per_template):
            difficulty = rng.randint(1, 4)
            out = make(rng, difficulty)
            if out is None or out[0] in seen:
                continue
            seen.add(out[0])
            prompt, answer, solution = out
            rows.append(row("math", "arithmetic", name, difficulty, name in HELD_OUT_MATH, "reason" if difficulty >= 2 else "chat", prompt, answer, solution))
    return rows


def make_switch(rng, math_rows, n_per_template, n_held_out):
    rows = []
    # reason: multi-step arithmetic (from the math set) and multi-hop logic.
    hard_math = [r for r in math_rows if r["difficulty"] >= 2]
    for r in rng.sample(hard_math, min(len(hard_math), 2 * n_per_template)):
        rows.append({**r, "set": "switch"})
    for name, make in LOGIC_TEMPLATES.items():
        seen = set()
        while len(seen) < (n_held_out if name in HELD_OUT_LOGIC else n_per_template):
            hops = rng.randint(2, 4)
            prompt, answer, solution = make(rng, hops)
            if prompt in seen:
                continue
            seen.add(prompt)
            rows.append(row("switch", "logic", name, hops, name in HELD_OUT_LOGIC, "reason", prompt, answer, solution))
    # chat: easy prompts, with and without numbers.
    for name, make in EASY_TEMPLATES.items():
        seen = set()
        want = n_per_template if name != "greeting" else len(GREETINGS)
        tries = 0
        while len(seen) < want and tries < 50 * want:
            tries += 1
            prompt, answer = make(rng)
            if prompt in seen:
                continue
            seen.add(prompt)
            family = "arithmetic" if name in {"arithmetic_1step", "story_1step"} else "easy"
            rows.append(row("switch", family, name, 1, False, "chat", prompt, answer, None))
    return rows


def row(set_, family, template, difficulty, held_out, label, prompt, answer, solution):
    return {
        "set": set_, "family": family, "template": template, "difficulty": difficulty,
        "held_out": held_out, "label": label, "prompt": prompt, "answer": answer, "solution": solution,
    }


def split(rng, rows, fractions=(0.8, 0.1, 0.1)):
    """Held-out templates go to test whole; the rest is split train/val/test."""
    out = {"train": [], "val": [], "test": []}
    pool = [r for r in rows if not r["held_out"]]
    rng.shuffle(pool)
    n = len(pool)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    out["train"], out["val"], out["test"] = pool[:a], pool[a:b], pool[b:]
    out["test"] += [r for r in rows if r["held_out"]]
    for name, part in out.items():
        for i, r in enumerate(part):
            r["split"] = name
            r["id"] = f"{r['set']}-{name}-{i:05d}"
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--math-per-template", type=int, default=450)
    ap.add_argument("--switch-per-template", type=int, default=250)
    ap.add_argument("--held-out-per-template", type=int, default=150)
    ap.add_argument("--paraphrases-per-label", type=int, default=100)
    ap.add_argument("--short-per-label", type=int, default=250)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    math_rows = make_math(rng, args.math_per_template, args.held_out_per_template)
    # Disjoint by prompt: the switcher's reason prompts come from the math set's own split.
    math_split = split(rng, math_rows)
    switch_rows = make_switch(rng, math_split["train"] + math_split["val"], args.switch_per_template, args.held_out_per_template // 2)
    switch_split = split(rng, [dict(r, held_out=r["held_out"] and r["family"] == "logic") for r in switch_rows])
    keys = ["id", "set", "split", "family", "template", "difficulty", "held_out", "label", "prompt", "answer", "solution"]
    counts = {}
    for set_name, parts in [("math", math_split), ("switch", switch_split)]:
        for part, rows in parts.items():
            path = args.out / f"{set_name}_{part}.jsonl"
            with path.open("w") as f:
                for r in rows:
                    f.write(json.dumps({k: r[k] for k in keys}) + "\n")
            counts[path.name] = len(rows)
    # Their own RNGs, after the rest: adding them changed none of the files above.
    short = make_paraphrases(random.Random(args.seed + 2), args.short_per_label, SHORT_TEMPLATES, "train")
    random.Random(args.seed + 3).shuffle(short)
    n_val = len(short) // 8
    paraphrase = {
        "train": short[n_val:],
        "val": short[:n_val],
        "test": make_paraphrases(random.Random(args.seed + 1), args.paraphrases_per_label),
    }
    for part, rows in paraphrase.items():
        path = args.out / f"switch_paraphrase_{part}.jsonl"
        with path.open("w") as f:
            for i, r in enumerate(rows):
                r["split"], r["id"] = part, f"switch_paraphrase-{part}-{i:05d}"
                f.write(json.dumps({k: r[k] for k in keys}) + "\n")
        counts[path.name] = len(rows)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
