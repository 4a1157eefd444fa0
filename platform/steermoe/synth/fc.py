"""Spoken function-calling items: a tool catalogue, request clauses and their answer keys.

Each clause template (``"set a timer for {m} minutes"``) yields the spoken words, the
canonical call and the BFCL answer key (acceptable values per argument; ``""`` = may be
omitted). Items combine clauses into the four BFCL categories:

* ``simple``: one tool offered, one call.
* ``multiple``: 2-4 tools offered, one call.
* ``parallel``: two calls (two clauses joined: "... and then ..."), 2-4 tools offered.
* ``irrelevance``: the request needs a tool that is not offered, or none at all -> ``[]``.

Clause templates are split-disjoint (see :func:`steermoe.synth.text.assign_splits`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from steermoe.synth.text import CITIES, FIRST_NAMES


def _tool(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


UNIT = {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"}
TOOLS: dict[str, dict] = {
    t["function"]["name"]: t
    for t in [
        _tool(
            "get_weather",
            "Get the weather forecast for a city",
            {
                "location": {"type": "string", "description": "City name"},
                "day": {"type": "string", "enum": ["today", "tomorrow"], "default": "today"},
                "unit": UNIT,
            },
            ["location"],
        ),
        _tool(
            "set_timer",
            "Start a countdown timer",
            {
                "minutes": {"type": "integer", "description": "Duration in minutes"},
                "label": {"type": "string", "description": "What the timer is for"},
            },
            ["minutes"],
        ),
        _tool(
            "set_alarm",
            "Set an alarm",
            {
                "time": {"type": "string", "description": "24-hour time HH:MM"},
                "repeat": {
                    "type": "string",
                    "enum": ["once", "daily", "weekdays"],
                    "default": "once",
                },
            },
            ["time"],
        ),
        _tool(
            "convert_units",
            "Convert a quantity between units",
            {
                "value": {"type": "number"},
                "from_unit": {"type": "string", "description": "Unit name, plural, e.g. miles"},
                "to_unit": {"type": "string", "description": "Unit name, plural, e.g. kilometers"},
            },
            ["value", "from_unit", "to_unit"],
        ),
        _tool(
            "create_event",
            "Add an event to the calendar",
            {
                "title": {"type": "string"},
                "day": {"type": "string", "description": "Weekday, e.g. Monday"},
                "time": {"type": "string", "description": "24-hour time HH:MM"},
            },
            ["title", "day"],
        ),
        _tool(
            "play_music",
            "Play music by artist, song or genre",
            {
                "query": {"type": "string", "description": "Artist, song or genre"},
                "shuffle": {"type": "boolean", "default": False},
            },
            ["query"],
        ),
        _tool(
            "send_message",
            "Send a text message to a contact",
            {
                "recipient": {"type": "string", "description": "Contact name"},
                "text": {"type": "string", "description": "Message body"},
            },
            ["recipient", "text"],
        ),
        _tool(
            "set_thermostat",
            "Set the heating target temperature",
            {"temperature": {"type": "number"}, "unit": UNIT, "room": {"type": "string"}},
            ["temperature"],
        ),
        _tool(
            "control_lights",
            "Turn the lights in a room on or off",
            {
                "room": {"type": "string"},
                "state": {"type": "string", "enum": ["on", "off"]},
                "brightness": {"type": "integer", "description": "Percent, 0-100"},
            },
            ["room", "state"],
        ),
        _tool(
            "add_to_shopping_list",
            "Add an item to the shopping list",
            {"item": {"type": "string"}, "quantity": {"type": "integer", "default": 1}},
            ["item"],
        ),
        _tool(
            "get_directions",
            "Get directions to a place",
            {
                "destination": {"type": "string"},
                "mode": {
                    "type": "string",
                    "enum": ["driving", "walking", "transit", "cycling"],
                    "default": "driving",
                },
            },
            ["destination"],
        ),
        _tool("call_contact", "Phone a contact", {"name": {"type": "string"}}, ["name"]),
    ]
}

ROOMS = ("kitchen", "bedroom", "living room", "bathroom", "office", "garage", "hallway")
GENRES = (
    "jazz",
    "classical music",
    "rock",
    "the Beatles",
    "Mozart",
    "reggae",
    "blues",
    "country music",
    "Taylor Swift",
    "piano music",
)
ITEMS = (
    "milk",
    "bread",
    "eggs",
    "apples",
    "coffee",
    "rice",
    "tomatoes",
    "butter",
    "cheese",
    "bananas",
    "onions",
    "orange juice",
)
MESSAGES = (
    "I am running late",
    "see you at the station",
    "dinner is ready",
    "call me when you land",
    "the meeting is cancelled",
    "happy birthday",
    "I left the keys on the table",
    "can you pick up some bread",
)
EVENTS = (
    "dentist appointment",
    "team meeting",
    "lunch with Sam",
    "yoga class",
    "piano lesson",
    "project review",
    "haircut",
    "parents evening",
)
UNITS = (
    ("miles", "kilometers"),
    ("kilometers", "miles"),
    ("pounds", "kilograms"),
    ("kilograms", "pounds"),
    ("inches", "centimeters"),
    ("liters", "gallons"),
    ("feet", "meters"),
    ("ounces", "grams"),
)
PLACES = (
    "the airport",
    "the train station",
    "the nearest pharmacy",
    "the city museum",
    "the beach",
    "the hospital",
    "the stadium",
    "the post office",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
IRRELEVANT = (
    "Tell me a joke about penguins.",
    "Who wrote the play Hamlet?",
    "What is the capital of Australia?",
    "How tall is Mount Everest?",
    "Book me a table for two at an Italian restaurant.",
    "Order a taxi to the office.",
    "What is the square root of one hundred and forty four?",
    "Translate good morning into French.",
    "How do I make a paper airplane?",
    "Recommend a good science fiction novel.",
    "What is the meaning of the word serendipity?",
    "Read me today's top news headlines.",
    "Buy two tickets for the football match on Saturday.",
    "How many legs does a spider have?",
)


@dataclass(frozen=True)
class Clause:
    """One spoken request clause (lower-case imperative) and its call."""

    text: str
    call: dict[str, Any]  # {"name", "arguments"} canonical values
    expected: dict[str, Any]  # {"name", "arguments": {param: [acceptable values]}}


def _hhmm(h: int, m: int) -> tuple[str, str]:
    minutes = f":{m:02d}" if m else ""
    spoken = f"{(h - 1) % 12 + 1}{minutes} {'a.m.' if h < 12 else 'p.m.'}"
    return spoken, f"{h:02d}:{m:02d}"


def _call(name: str, args: dict[str, Any], optional: dict[str, list[Any]] | None = None) -> tuple:
    """Canonical call plus the answer key: given args are required as given; every other
    schema parameter not given may be omitted (or equal its listed acceptable values)."""
    props = TOOLS[name]["function"]["parameters"]["properties"]
    expected: dict[str, list[Any]] = {}
    for param in props:
        if param in args:
            value = args[param]
            expected[param] = [value, *(optional or {}).get(param, [])]
        else:
            default = props[param].get("default")
            expected[param] = ["", default] if default is not None else [""]
    return {"name": name, "arguments": args}, {"name": name, "arguments": expected}


Template = Callable[[random.Random], Clause]


def _t_weather(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        city = rng.choice(CITIES)
        args: dict[str, Any] = {"location": city}
        if style == 0:
            text = f"what's the weather like in {city}"
        elif style == 1:
            args["day"] = "tomorrow"
            text = f"tell me tomorrow's weather forecast for {city}"
        elif style == 2:
            args["unit"] = rng.choice(["celsius", "fahrenheit"])
            text = f"check the temperature in {city} in {args['unit']}"
        else:
            text = f"is it going to rain in {city} today"
            args["day"] = "today"
        call, exp = _call("get_weather", args)
        return Clause(text, call, exp)

    return make


def _t_timer(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        m = rng.choice([1, 2, 3, 5, 10, 12, 15, 20, 25, 30, 45, 90])
        args: dict[str, Any] = {"minutes": m}
        if style == 0:
            text = f"set a timer for {m} minutes"
        elif style == 1:
            label = rng.choice(["pasta", "the oven", "laundry", "tea", "homework"])
            args["label"] = label
            text = f"start a {m} minute timer for {label}"
        else:
            text = f"remind me in {m} minutes with a timer"
        call, exp = _call("set_timer", args)
        return Clause(text, call, exp)

    return make


def _t_alarm(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        h, m = rng.randint(5, 21), rng.choice([0, 0, 15, 30, 45])
        spoken, hhmm = _hhmm(h, m)
        args: dict[str, Any] = {"time": hhmm}
        if style == 0:
            text = f"wake me up at {spoken}"
        elif style == 1:
            args["repeat"] = rng.choice(["daily", "weekdays"])
            text = f"set an alarm for {spoken} {'every day' if args['repeat'] == 'daily' else 'on weekdays'}"
        else:
            text = f"set an alarm for {spoken}"
        call, exp = _call("set_alarm", args)
        return Clause(text, call, exp)

    return make


def _t_convert(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        value = rng.choice([2, 3, 5, 10, 12, 20, 26, 42, 100, 2.5, 7.5])
        src, dst = rng.choice(UNITS)
        args = {"value": value, "from_unit": src, "to_unit": dst}
        text = (
            f"convert {value} {src} to {dst}" if style == 0 else f"how many {dst} is {value} {src}"
        )
        call, exp = _call("convert_units", args)
        return Clause(text, call, exp)

    return make


def _t_event(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        title, day = rng.choice(EVENTS), rng.choice(DAYS)
        args: dict[str, Any] = {"title": title, "day": day}
        if style == 0:
            spoken, hhmm = _hhmm(rng.randint(8, 18), rng.choice([0, 30]))
            args["time"] = hhmm
            text = f"add {title} to my calendar on {day} at {spoken}"
        else:
            text = f"put a {title} in my calendar for {day}"
        call, exp = _call("create_event", args)
        return Clause(text, call, exp)

    return make


def _t_music(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        query = rng.choice(GENRES)
        args: dict[str, Any] = {"query": query}
        if style == 0:
            text = f"play some {query}"
        elif style == 1:
            args["shuffle"] = True
            text = f"shuffle songs by {query}" if query[0].isupper() else f"shuffle some {query}"
        else:
            text = f"put on {query} for me"
        call, exp = _call("play_music", args)
        return Clause(text, call, exp)

    return make


def _t_message(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        who, what = rng.choice(FIRST_NAMES), rng.choice(MESSAGES)
        args = {"recipient": who, "text": what}
        text = f"send a message to {who} saying {what}" if style == 0 else f"text {who} that {what}"
        call, exp = _call("send_message", args)
        return Clause(text, call, exp)

    return make


def _t_thermostat(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        temp = rng.choice([18, 19, 20, 21, 22, 23, 68, 70, 72])
        args: dict[str, Any] = {"temperature": temp}
        if style == 0:
            text = f"set the heating to {temp} degrees"
        else:
            room = rng.choice(ROOMS)
            args["room"] = room
            text = f"make the {room} {temp} degrees"
        call, exp = _call("set_thermostat", args)
        return Clause(text, call, exp)

    return make


def _t_lights(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        room, state = rng.choice(ROOMS), rng.choice(["on", "off"])
        args: dict[str, Any] = {"room": room, "state": state}
        if style == 0:
            text = f"turn {state} the lights in the {room}"
        else:
            args.update(state="on", brightness=rng.choice([10, 20, 30, 50, 70, 80]))
            text = f"dim the {room} lights to {args['brightness']} percent"
        call, exp = _call("control_lights", args)
        return Clause(text, call, exp)

    return make


def _t_shopping(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        item = rng.choice(ITEMS)
        args: dict[str, Any] = {"item": item}
        if style == 0:
            text = f"add {item} to my shopping list"
        else:
            args["quantity"] = rng.randint(2, 6)
            text = f"put {args['quantity']} {item} on the shopping list"
        call, exp = _call("add_to_shopping_list", args)
        return Clause(text, call, exp)

    return make


def _t_directions(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        place = rng.choice(PLACES)
        dest = place.removeprefix("the ")
        args: dict[str, Any] = {"destination": dest}
        if style == 0:
            text = f"how do I get to {place}"
        else:
            args["mode"] = rng.choice(["walking", "cycling", "transit"])
            how = {"walking": "on foot", "cycling": "by bike", "transit": "by bus"}[args["mode"]]
            text = f"give me directions to {place} {how}"
        call, exp = _call("get_directions", args, optional={"destination": [place]})
        return Clause(text, call, exp)

    return make


def _t_call(style: int) -> Template:
    def make(rng: random.Random) -> Clause:
        who = rng.choice(FIRST_NAMES)
        text = f"call {who}" if style == 0 else f"give {who} a ring"
        call, exp = _call("call_contact", {"name": who})
        return Clause(text, call, exp)

    return make


def _t_weather_pair(rng: random.Random) -> tuple[Clause, Clause]:
    a, b = rng.sample(CITIES, 2)
    ca, ea = _call("get_weather", {"location": a})
    cb, eb = _call("get_weather", {"location": b})
    return Clause(f"what's the weather in {a} and in {b}", ca, ea), Clause("", cb, eb)


# template id -> maker; ids name the split unit ("tool:style").
CLAUSES: dict[str, Template] = {
    **{f"get_weather:{s}": _t_weather(s) for s in range(4)},
    **{f"set_timer:{s}": _t_timer(s) for s in range(3)},
    **{f"set_alarm:{s}": _t_alarm(s) for s in range(3)},
    **{f"convert_units:{s}": _t_convert(s) for s in range(2)},
    **{f"create_event:{s}": _t_event(s) for s in range(2)},
    **{f"play_music:{s}": _t_music(s) for s in range(3)},
    **{f"send_message:{s}": _t_message(s) for s in range(2)},
    **{f"set_thermostat:{s}": _t_thermostat(s) for s in range(2)},
    **{f"control_lights:{s}": _t_lights(s) for s in range(2)},
    **{f"add_to_shopping_list:{s}": _t_shopping(s) for s in range(2)},
    **{f"get_directions:{s}": _t_directions(s) for s in range(2)},
    **{f"call_contact:{s}": _t_call(s) for s in range(2)},
}
PAIR_KEY = "get_weather:pair"  # one clause asking for two cities -> two calls
CHITCHAT_KEYS = tuple(f"chitchat:{i}" for i in range(len(IRRELEVANT)))
SINGLE_FRAMES = ("{c}.", "Please {c}.", "Could you {c}?", "Hey, {c}.", "I need you to {c}.")
PAIR_FRAMES = ("{a} and {b}.", "Please {a}, and then {b}.", "{a}, and also {b}.")


@dataclass(frozen=True)
class FcItem:
    """One spoken request with the tools offered and the expected calls."""

    category: str
    keys: tuple[str, ...]  # clause template ids used (split units)
    text: str
    tools: tuple[str, ...]  # names of the offered tools, in prompt order
    calls: tuple[dict[str, Any], ...]
    expected: tuple[dict[str, Any], ...]


def _sentence(frame: str, **parts: str) -> str:
    text = frame.format(**parts)
    return text[0].upper() + text[1:]


def _offer(rng: random.Random, needed: list[str], extra: int, exclude: set[str]) -> tuple:
    pool = [n for n in TOOLS if n not in needed and n not in exclude]
    tools = needed + rng.sample(pool, extra)
    rng.shuffle(tools)
    return tuple(tools)


def fc_item(category: str, keys: list[str], rng: random.Random) -> FcItem:
    """Build one item of ``category`` from template ids: one clause id, two for ``parallel``
    (or :data:`PAIR_KEY`), a clause id or a ``chitchat:<i>`` id for ``irrelevance``."""
    clauses = [CLAUSES[k](rng) for k in keys if k in CLAUSES]
    first = clauses[0] if clauses else None
    if category in ("simple", "multiple") and first is None:
        raise ValueError(f"{category} needs a clause template id, got {keys}")
    if category == "simple":
        text = _sentence(rng.choice(SINGLE_FRAMES), c=first.text)
        tools = (first.call["name"],)
    elif category == "multiple":
        text = _sentence(rng.choice(SINGLE_FRAMES), c=first.text)
        tools = _offer(rng, [first.call["name"]], rng.randint(1, 3), set())
    elif category == "parallel":
        if keys[0] == PAIR_KEY:
            a, b = _t_weather_pair(rng)
            clauses = [a, b]
            text = _sentence("{c}?", c=a.text)
        else:
            first, second = clauses[0], clauses[1]
            text = _sentence(rng.choice(PAIR_FRAMES), a=first.text, b=second.text)
        needed = list(dict.fromkeys(c.call["name"] for c in clauses))
        tools = _offer(rng, needed, rng.randint(0, 2), set())
    elif category == "irrelevance":
        if first is not None:
            text = _sentence(rng.choice(SINGLE_FRAMES), c=first.text)
            tools = _offer(rng, [], rng.randint(1, 4), {first.call["name"]})
        else:  # "chitchat:<i>"
            text = IRRELEVANT[int(keys[0].split(":")[1])]
            tools = _offer(rng, [], rng.randint(1, 4), set())
        return FcItem(category, tuple(keys), text, tools, (), ())
    else:
        raise ValueError(f"unknown fc category {category!r}")
    return FcItem(
        category,
        tuple(keys),
        text,
        tools,
        tuple(c.call for c in clauses),
        tuple(c.expected for c in clauses),
    )
