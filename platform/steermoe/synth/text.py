"""Text pools for the synthetic suites: natural sentences, vocabulary frames and templates.

* ``fortune``: sentences (and pairs of consecutive sentences) from Debian's ``fortunes``
  databases, never the offensive ``off/`` folder, minus files of jokes about groups, code or
  chat logs, filtered to plain speakable English (letters and basic punctuation, 8-35 words,
  no acronyms, no blocked words).
* ``vocab``: carrier frames ("She underlined the word {w} twice.") filled with words from
  ``wordfreq``'s top list that also occur in lower case in the fortunes text (so they are real
  words rather than names or tokens), widening the vocabulary.
* ``template``: numbers, years, dates, names, times and digit strings.

Splits are disjoint by construction: a fortune text, a vocabulary frame or a template id is
assigned to exactly one split by a seeded hash (:func:`assign_splits`).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from evaluators.audio_qa import NUMBER_WORDS

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Whole files left out: jokes about groups, code, chat logs, ASCII art, nonsense.
FORTUNE_EXCLUDE = (
    "ascii-art",
    "debian",
    "drugs",
    "ethnic",
    "linux",
    "linuxcookie",
    "men-women",
    "perl",
    "politics",
    "translate-me",
    "zippy",
    "startrek",
    "knghtbrd",
)
# Minimal content blocklist (whole words, lower case) applied to every generated text.
BLOCKLIST = frozenset(
    [
        "fuck",
        "fucking",
        "fucked",
        "fucker",
        "shit",
        "shitty",
        "bitch",
        "bastard",
        "cunt",
        "dick",
        "cock",
        "pussy",
        "twat",
        "whore",
        "slut",
        "asshole",
        "arse",
        "nigger",
        "nigga",
        "fag",
        "faggot",
        "retard",
        "retarded",
        "rape",
        "raped",
        "rapist",
        "kike",
        "spic",
        "chink",
        "dyke",
        "tranny",
        "porn",
        "porno",
        "sex",
        "sexy",
        "sexual",
        "penis",
        "vagina",
        "orgasm",
        "masturbate",
        "nazi",
        "hitler",
        "suicide",
        "kill",
        "killed",
        "killing",
        "murder",
        "murdered",
        "drunk",
        "cocaine",
        "heroin",
        "marijuana",
        "damn",
        "damned",
        "hell",
        "god",
        "jesus",
        "christ",
        "bloody",
        "crap",
        "piss",
        "pissed",
        "tits",
        "boobs",
        "naked",
        "nude",
        "breasts",
        "erection",
        "viagra",
        "gay",
        "lesbian",
        "whores",
        "bitches",
        "negro",
        "jew",
        "jews",
        "muslim",
        "muslims",
    ]
)
SPLITS = ("train", "validation", "test")

_ALLOWED = re.compile(r"^[A-Za-z][A-Za-z ,.'!?;\-]*[.!?]$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@dataclass(frozen=True)
class Utterance:
    """A text to speak, the key that decides its split, and where it came from."""

    text: str
    key: str
    source: str  # fortune | vocab | template


def stable_unit(*parts: object) -> float:
    """Deterministic number in [0, 1) from the parts (sha1; independent of PYTHONHASHSEED)."""
    digest = hashlib.sha1(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(
    keys: Sequence[str], *, seed: int, fractions: tuple[float, float] = (0.08, 0.08)
) -> dict[str, str]:
    """Map each distinct key to ``train``/``validation``/``test``.

    Keys are ordered by a seeded hash; the first ``fractions[0]`` go to validation, the next
    ``fractions[1]`` to test (at least one each when there are >= 3 keys), the rest to train.
    """
    distinct = sorted(set(keys), key=lambda k: stable_unit(seed, "split", k))
    n = len(distinct)
    n_val = max(1, round(n * fractions[0])) if n >= 3 else 0
    n_test = max(1, round(n * fractions[1])) if n >= 3 else 0
    out = {}
    for i, key in enumerate(distinct):
        out[key] = "validation" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters and inner apostrophes)."""
    return re.findall(r"[a-z]+(?:'[a-z]+)*", text.lower())


def is_clean(text: str) -> bool:
    """No blocked word."""
    return not any(w in BLOCKLIST or w.split("'")[0] in BLOCKLIST for w in words(text))


# --------------------------------------------------------------------------- fortunes


def _fortune_files(folder: Path, exclude: Sequence[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.suffix and p.name not in exclude and p.name != "off"
    )


@lru_cache(maxsize=4)
def fortune_sentences(
    folder: str = str(FORTUNES_DIR),
    exclude: tuple[str, ...] = FORTUNE_EXCLUDE,
    min_words: int = 8,
    max_words: int = 35,
) -> tuple[str, ...]:
    """Speakable sentences and sentence pairs from the fortunes databases, sorted, distinct."""
    out: set[str] = set()
    for path in _fortune_files(Path(folder), exclude):
        raw = path.read_text(encoding="utf-8", errors="replace")
        for fortune in re.split(r"^%\s*$", raw, flags=re.M):
            lines = [ln for ln in fortune.splitlines() if ln.strip()]
            lines = [ln for ln in lines if not re.match(r"^\s*--", ln) and "\t\t" not in ln]
            if not lines or any(ln.startswith((" ", "\t")) for ln in lines):
                continue  # verse, dialogue and quoted code are indented; keep plain prose
            body = " ".join(" ".join(lines).split()).replace(" -- ", ", ").replace('"', "")
            sentences = [s.strip() for s in _SENTENCE_END.split(body) if s.strip()]
            units = sentences + [f"{a} {b}" for a, b in itertools.pairwise(sentences)]
            for unit in units:
                if _speakable(unit, min_words, max_words):
                    out.add(unit)
    return tuple(sorted(out))


def _speakable(text: str, min_words: int, max_words: int) -> bool:
    if not _ALLOWED.match(text) or not min_words <= len(text.split()) <= max_words:
        return False
    if re.search(r"[A-Z]{2,}|[a-z][A-Z]|\.\.|--|:", text):
        return False  # acronyms, camelCase, ellipses, "Speaker: ..." and Q:/A: jokes
    for prev, word in itertools.pairwise(text.split()):
        # "bought Hopefully": a line break without punctuation (verse, lists), not a name.
        if word[0].isupper() and prev[-1].isalpha() and word.lower().strip(".,!?;'") in _common():
            return False
    return is_clean(text)


@lru_cache(maxsize=1)
def _common() -> frozenset[str]:
    import wordfreq  # heavy (its word lists): only text building needs it

    return frozenset(wordfreq.top_n_list("en", 1500)) - {"i", "i'm", "i'll", "i've", "i'd"}


# --------------------------------------------------------------------------- vocabulary

VOCAB_FRAMES = (
    "She underlined the word {a} twice in her notebook.",
    "The next word on the spelling list is {a}.",
    "Can you use the word {a} in a sentence?",
    "He looked up {a} in the dictionary before dinner.",
    "The three words for today are {a}, {b} and {c}.",
    "Please write down {a}, then {b}, and finally {c}.",
    "My teacher said that {a} is one of her favourite words.",
    "The crossword answer was {a}, not {b}.",
    "I keep confusing the words {a} and {b}.",
    "In the story, the word {a} appears on almost every page.",
    "The card in the box simply said {a}.",
    "Our word game started with {a} and ended with {b}.",
    "Say {a} slowly, and then say {b} quickly.",
    "The label on the jar read {a} in large letters.",
    "Nobody at the table knew what {a} meant.",
    "The last clue in the puzzle was {a}.",
    "Write {a} at the top of the page and {b} at the bottom.",
    "The word {a} rhymes with almost nothing.",
    "The list on the fridge said {a}, {b}, {c} and {d}.",
    "Her favourite word this week is {a}.",
    "The sign above the door said {a}.",
    "During the lesson we practised {a}, {b} and {c}.",
    "The answer to the riddle was {a}.",
    "The old book had {a} written in the margin.",
)


@lru_cache(maxsize=4)
def vocabulary(
    top_n: int = 40_000, skip_top: int = 300, folder: str = str(FORTUNES_DIR)
) -> tuple[str, ...]:
    """Clean words from ``wordfreq``'s English top list that also occur in lower case in
    the fortunes text; ordered by frequency."""
    import wordfreq  # heavy (its word lists): only text building needs it

    seen: set[str] = set()
    for path in _fortune_files(Path(folder), FORTUNE_EXCLUDE):
        seen.update(
            re.findall(r"\b[a-z]{3,}\b", path.read_text(encoding="utf-8", errors="replace"))
        )
    out = []
    for w in wordfreq.top_n_list("en", top_n)[skip_top:]:
        if re.fullmatch(r"[a-z]{3,14}", w) and w in seen and w not in BLOCKLIST:
            out.append(w)
    return tuple(out)


# --------------------------------------------------------------------------- templates

FIRST_NAMES = [
    "Alice",
    "Amelia",
    "Anna",
    "Arthur",
    "Benjamin",
    "Charlotte",
    "Chloe",
    "Daniel",
    "David",
    "Edward",
    "Eleanor",
    "Emily",
    "Emma",
    "Ethan",
    "Felix",
    "George",
    "Grace",
    "Hannah",
    "Harry",
    "Isaac",
    "Isabel",
    "Jack",
    "Jacob",
    "James",
    "Julia",
    "Laura",
    "Leo",
    "Lily",
    "Lucas",
    "Lucy",
    "Maria",
    "Martin",
    "Mia",
    "Noah",
    "Oliver",
    "Olivia",
    "Oscar",
    "Paul",
    "Peter",
    "Rachel",
    "Rose",
    "Ruby",
    "Samuel",
    "Sarah",
    "Sofia",
    "Thomas",
    "Victor",
    "William",
    "Zoe",
    "Priya",
    "Ahmed",
    "Mei",
    "Kenji",
    "Fatima",
    "Carlos",
    "Ingrid",
    "Pablo",
    "Aisha",
    "Omar",
    "Nina",
    "Hugo",
    "Elena",
    "Marco",
]
SURNAMES = [
    "Anderson",
    "Baker",
    "Bennett",
    "Brooks",
    "Campbell",
    "Carter",
    "Clarke",
    "Cooper",
    "Davies",
    "Edwards",
    "Evans",
    "Fisher",
    "Foster",
    "Garcia",
    "Gray",
    "Green",
    "Hall",
    "Harris",
    "Hughes",
    "Jackson",
    "Johnson",
    "Kelly",
    "King",
    "Lewis",
    "Martin",
    "Mitchell",
    "Moore",
    "Morgan",
    "Murphy",
    "Nelson",
    "Parker",
    "Patel",
    "Phillips",
    "Price",
    "Reed",
    "Roberts",
    "Robinson",
    "Russell",
    "Scott",
    "Shaw",
    "Taylor",
    "Thompson",
    "Turner",
    "Walker",
    "Ward",
    "Watson",
    "White",
    "Wilson",
    "Wood",
    "Young",
]
CITIES = [
    "London",
    "Paris",
    "Berlin",
    "Madrid",
    "Rome",
    "Vienna",
    "Prague",
    "Dublin",
    "Lisbon",
    "Oslo",
    "Stockholm",
    "Helsinki",
    "Warsaw",
    "Athens",
    "Cairo",
    "Nairobi",
    "Tokyo",
    "Seoul",
    "Beijing",
    "Mumbai",
    "Delhi",
    "Sydney",
    "Melbourne",
    "Toronto",
    "Vancouver",
    "Chicago",
    "Boston",
    "Seattle",
    "Denver",
    "Houston",
    "Miami",
    "Atlanta",
    "Dallas",
    "Phoenix",
    "Montreal",
    "Edinburgh",
    "Glasgow",
    "Manchester",
    "Amsterdam",
    "Brussels",
    "Zurich",
    "Geneva",
    "Munich",
    "Hamburg",
    "Barcelona",
    "Florence",
    "Venice",
    "Naples",
    "Istanbul",
    "Lima",
    "Santiago",
    "Bogota",
    "Havana",
    "Singapore",
    "Bangkok",
    "Manila",
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DIGIT_WORDS = NUMBER_WORDS[:10]
ORDINALS = {1: "1st", 2: "2nd", 3: "3rd", 21: "21st", 22: "22nd", 23: "23rd", 31: "31st"}

TEMPLATES: dict[str, str] = {
    "num-tickets": "We sold {n} tickets for the concert on {day}.",
    "num-price": "The new bicycle costs {n} dollars at the shop on the corner.",
    "num-pages": "The report on my desk has {n} pages and three appendices.",
    "num-distance": "It is about {n} kilometres from {city} to the coast.",
    "num-people": "Roughly {n} people came to the meeting in {city} last week.",
    "num-steps": "{name} walked {n} steps before breakfast this morning.",
    "num-room": "Please go to room {n} on the second floor.",
    "num-bus": "The number {small} bus leaves every {small2} minutes.",
    "year-born": "{name} was born in {year} in a small town near {city}.",
    "year-built": "The old bridge in {city} was built in {year}.",
    "year-moved": "We moved to {city} in {year} and never looked back.",
    "date-meeting": "The meeting has been moved to the {ord} of {month}.",
    "date-birthday": "{name}'s birthday is on the {ord} of {month}.",
    "date-deadline": "The deadline for the application is {month} {dnum}, {year}.",
    "date-trip": "Our trip to {city} starts on {day}, the {ord} of {month}.",
    "date-day": "The library is closed every {day} in {month}.",
    "name-call": "Could you ask {name} {surname} to call me back this afternoon?",
    "name-meet": "I met {name} {surname} at the station in {city}.",
    "name-letter": "The letter was signed by {name} {surname} from the office in {city}.",
    "name-team": "{name} and {name2} are leading the new project together.",
    "name-book": "The book was written by {name} {surname} and published in {year}.",
    "time-train": "The train to {city} leaves at {hour} o'clock on {day}.",
    "time-dinner": "Dinner is at half past {hourw}, so please do not be late.",
    "time-shop": "The shop opens at {hour} in the morning and closes at {hour2} at night.",
    "digits-code": "The code for the side door is {digits}.",
    "digits-phone": "You can reach me on {digits} after six.",
    "digits-order": "Your order number is {digits}, please keep it safe.",
    "digits-pin": "My new account number ends in {digits}.",
    "mix-flight": "Flight {small} to {city} departs from gate {small2} at {hour} o'clock.",
    "mix-score": "The final score was {small} to {small2} after extra time.",
    "mix-temp": "It was {small} degrees in {city} on the {ord} of {month}.",
    "mix-recipe": "Add {small} cups of flour and {small2} eggs, then bake for {n2} minutes.",
}


def fill_template(template: str, rng: random.Random) -> str:
    """Fill a template's slots with random numbers, dates, names, cities and digits."""
    hour_words = NUMBER_WORDS[1:13]
    dnum = rng.randint(1, 28)
    values = {
        "n": str(rng.choice([rng.randint(11, 99), rng.randint(100, 999), rng.randint(1000, 9999)])),
        "n2": str(rng.randint(15, 60)),
        "small": str(rng.randint(2, 12)),
        "small2": str(rng.randint(2, 20)),
        "year": str(rng.randint(1890, 2024)),
        "month": rng.choice(MONTHS),
        "day": rng.choice(DAYS),
        "dnum": str(dnum),
        "ord": ORDINALS.get(dnum, f"{dnum}th"),
        "city": rng.choice(CITIES),
        "name": rng.choice(FIRST_NAMES),
        "name2": rng.choice(FIRST_NAMES),
        "surname": rng.choice(SURNAMES),
        "hour": str(rng.randint(1, 12)),
        "hour2": str(rng.randint(5, 11)),
        "hourw": rng.choice(hour_words),
        "digits": " ".join(rng.choice(DIGIT_WORDS) for _ in range(rng.randint(4, 8))),
    }
    return template.format(**values)


def short_text(rng: random.Random, words: Sequence[str]) -> tuple[str, str]:
    """One very short utterance, as in spoken digits and commands (0.3-2 s of speech).

    Returns:
        (kind, text): ``digits`` ("Seven." / "Three one four."), ``word`` (one vocabulary
        word), ``name`` or ``date``.
    """
    kind = rng.choices(["digits", "word", "name", "date"], weights=[0.5, 0.2, 0.15, 0.15])[0]
    if kind == "digits":
        n = rng.choice([1, 1, 1, 2, 3, 4])
        text = " ".join(rng.choice(DIGIT_WORDS) for _ in range(n))
    elif kind == "word" and words:
        text = rng.choice(list(words))
    elif kind == "name":
        text = f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
        return kind, text + "."
    else:
        kind = "date"
        text = f"{rng.choice(MONTHS)} {rng.randint(1, 28)}"
        return kind, text + "."
    return kind, text[0].upper() + text[1:] + "."


# --------------------------------------------------------------------------- the pool


@dataclass(frozen=True)
class AsrTextPlan:
    """Texts of one split, in order."""

    split: str
    utterances: tuple[Utterance, ...]


def asr_texts(
    counts: dict[str, int],
    *,
    seed: int,
    mix: tuple[float, float, float] = (0.7, 0.15, 0.15),
    fractions: tuple[float, float] = (0.08, 0.08),
    short_share: float = 0.0,
    max_words: int = 35,
) -> dict[str, list[Utterance]]:
    """Texts for each split: ``mix`` = shares of fortune, vocab-frame and template texts.

    Fortune texts are used without repetition while the split's pool lasts (then cycled);
    vocabulary words are drawn without repetition to maximise distinct words.

    Args:
        short_share: share of very short utterances (1-4 digits, a single word, a name or a
            date; see :func:`short_text`) taken before the ``mix`` shares.
        max_words: longest fortune text in words.
    """
    fortunes = list(fortune_sentences(max_words=max(max_words, 8)))
    vocab = list(vocabulary())
    fortune_split = assign_splits(fortunes, seed=seed, fractions=fractions)
    frame_split = assign_splits(
        [str(i) for i in range(len(VOCAB_FRAMES))], seed=seed, fractions=(0.17, 0.17)
    )
    template_split = assign_splits(sorted(TEMPLATES), seed=seed, fractions=(0.13, 0.13))
    out: dict[str, list[Utterance]] = {}
    for split in SPLITS:
        n = counts.get(split, 0)
        rng = random.Random(f"{seed}:asr-text:{split}")
        pool = [t for t in fortunes if fortune_split[t] == split]
        rng.shuffle(pool)
        frames = [int(k) for k, s in frame_split.items() if s == split]
        temps = sorted(k for k, s in template_split.items() if s == split)
        words_left = list(vocab)
        rng.shuffle(words_left)
        n_short = round(n * short_share)
        n -= n_short
        n_vocab = round(n * mix[1]) if frames and vocab else 0
        n_temp = round(n * mix[2]) if temps else 0
        n_fortune = n - n_vocab - n_temp if pool else 0
        n_temp = n - n_vocab - n_fortune if temps else n_temp
        rows: list[Utterance] = []
        for i in range(n_fortune):
            text = pool[i % len(pool)]
            rows.append(Utterance(text, f"fortune:{text}", "fortune"))
        w = 0
        for i in range(n_vocab):
            fid = frames[i % len(frames)]
            frame = VOCAB_FRAMES[fid]
            k = len(re.findall(r"\{[a-d]\}", frame))
            chosen = [words_left[(w + j) % len(words_left)] for j in range(k)]
            w += k
            text = frame.format(**dict(zip("abcd", chosen)))
            rows.append(Utterance(text, f"vocab:{fid}", "vocab"))
        for i in range(n_temp):
            tid = temps[i % len(temps)]
            rows.append(
                Utterance(fill_template(TEMPLATES[tid], rng), f"template:{tid}", "template")
            )
        for _ in range(n_short):
            kind, spoken = short_text(rng, words_left)
            rows.append(Utterance(spoken, f"short:{kind}:{spoken}", "short"))
        rng.shuffle(rows)
        out[split] = rows
    return out
