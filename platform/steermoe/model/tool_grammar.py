"""The tool-call grammar: answers held to the offered tools' JSON schemas while decoding.

The model answers a tool request with the canonical call list of
:func:`steermoe.data.tools.calls_to_text`::

    [{"name":"set_timer","arguments":{"minutes":5,"label":"tea"}}]

(or with one space after each ``:`` and ``,``, as ``json.dumps`` writes it: language models
trained on code favour that form).
:class:`ToolCallGrammar` says whether a text is a *viable prefix* of such a list for given
tools: the names are offered functions, the argument keys are declared properties (each at
most once, every required one before the object closes), and each value has its schema's type
(``string`` with ``enum``, ``integer``, ``number``, ``boolean``, ``null``, ``object``,
``array``; ``anyOf``/``oneOf`` and type lists by the value's first character; no schema = any
JSON value). :meth:`SteerMoEModel.generate` keeps, at each step, the most likely token whose
text keeps the answer viable, so greedy decoding under the grammar is the argmax over the
allowed tokens, and sampling draws from the renormalized allowed distribution.

Modes:
    ``list``: the answer is a call list, ``[]`` included (what the fc instruction asks for;
        evaluation uses it).
    ``required``: a list of at least one call (OpenAI ``tool_choice: "required"`` or a named
        function).
    ``auto``: free text, or, once the answer begins with ``[``, a call list as in ``list``.

The parser re-reads the text from its start (answers are short: 64-256 tokens); no state is
kept between calls, so one grammar serves every example that offers the same tools.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

Mode = Literal["list", "required", "auto"]
MODES: tuple[str, ...] = ("list", "required", "auto")
# Characters tried when looking for the allowed first characters of the next token.
ASCII = "".join(chr(c) for c in range(32, 127)) + "\t\n\r"
# Stands for every non-ASCII character (only string contents accept them).
NON_ASCII = "\u00e9"
_JSON_TYPES = ("string", "integer", "number", "boolean", "null", "object", "array")
# Characters in the order :meth:`ToolCallGrammar.completion` tries them: closers, then what
# ends a value soonest, then the rest, separators (which open more) last.
_FIRST = ']}":0'
_CLOSING_ORDER = _FIRST + "".join(c for c in ASCII if c not in _FIRST + ", \t\n\r") + ", "
_CLOSING_IN_STRING = '"' + _CLOSING_ORDER.replace('"', "")


class _Partial(Exception):
    """The text ended where more was expected: a viable prefix."""


class _Bad(Exception):
    """The text left the grammar."""


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _function(tool: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, parameters schema)`` of an OpenAI tool or a bare ``{name, parameters}``."""
    fn = tool.get("function", tool)
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a tool without a function name: {_dump(tool)[:120]}")
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(params, Mapping):
        raise ValueError(f"tool {name!r}: parameters must be a JSON schema object")
    return name, dict(params)


class ToolCallGrammar:
    """Viable prefixes of a JSON call list to ``tools`` (see the module docstring).

    Args:
        tools: OpenAI tools (``{"type": "function", "function": {...}}``) or bare
            ``{"name", "parameters"}`` dicts.
        mode: ``list``, ``required`` or ``auto``.
        max_calls: most calls in one answer (1 = no parallel calls).

    Raises:
        ValueError: no tools, duplicate names, a bad mode or ``max_calls``.
    """

    def __init__(self, tools: Iterable[Mapping[str, Any]], mode: Mode = "list", max_calls: int = 8):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if max_calls < 1:
            raise ValueError(f"max_calls must be >= 1, got {max_calls}")
        functions = [_function(t) for t in tools]
        if not functions:
            raise ValueError("a tool-call grammar needs at least one tool")
        names = [n for n, _ in functions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate tool names {dupes}")
        self.mode: Mode = mode
        self.max_calls = max_calls
        self.schemas = dict(functions)
        self._names = [_dump(n) for n in names]

    def __repr__(self) -> str:
        return f"ToolCallGrammar({sorted(self.schemas)}, mode={self.mode!r})"

    # ------------------------------------------------------------------------ queries

    def constrains(self, text: str) -> bool:
        """Whether ``text`` is held to the grammar (in ``auto`` mode: once it begins with
        ``[``, or while it is empty)."""
        return self.mode != "auto" or not text or text.startswith("[")

    def viable(self, text: str) -> bool:
        """Whether ``text`` can still grow into an answer the grammar accepts."""
        if not self.constrains(text) or not text:
            return True
        try:
            _Parser(text, self).calls()
        except _Partial:
            return True
        except _Bad:
            return False
        return True

    def closed(self, text: str) -> bool:
        """Whether ``text`` is a whole call list (decoding ends there)."""
        if not text or not self.constrains(text):
            return False
        try:
            _Parser(text, self).calls()
        except (_Partial, _Bad):
            return False
        return True

    def may_stop(self, text: str) -> bool:
        """Whether the answer may end after ``text`` (end of turn allowed)."""
        if self.mode == "auto" and not text:
            return True
        return self.closed(text) or not self.constrains(text)

    def next_chars(self, text: str) -> set[str]:
        """Characters that may follow ``text`` (``NON_ASCII`` stands for all non-ASCII)."""
        return {c for c in ASCII + NON_ASCII if self.viable(text + c)}

    def completion(self, text: str, limit: int = 512) -> str | None:
        """A short text that makes the unfinished call list ``text`` whole, or None (``text``
        is not held to the grammar, is not viable or is already whole).

        Greedy, one character at a time: inside a string its closing quote first, elsewhere
        the closers (``]``, ``}``), then the cheapest value (``0``, an empty string, the
        first matching key or name), separators last. An answer cut by the token budget or
        the repetition guard so ends as a parseable list, with what it had written kept.
        """
        if not text or not self.constrains(text) or self.closed(text) or not self.viable(text):
            return None
        out = ""
        while len(out) < limit:
            key = self._required_key(text + out)
            if key is not None:
                out += key
                continue
            order = _CLOSING_IN_STRING if _in_string(text + out) else _CLOSING_ORDER
            ch = next((c for c in order if self.viable(text + out + c)), None)
            if ch is None:
                return None
            out += ch
            if self.closed(text + out):
                return out
        return None

    def _required_key(self, text: str) -> str | None:
        """Where ``text`` can go on with a key its innermost object still requires: the
        rest of that key and its colon (else None), so a completion never adds optional
        arguments."""
        parser = _Parser(text, self)
        try:
            parser.calls()
        except _Partial:
            pass
        except _Bad:
            return None
        if not parser.objects:
            return None
        required, seen = parser.objects[-1]
        for key in sorted(required - seen):
            whole = _dump(key)
            for j in range(len(whole), -1, -1):
                if text.endswith(whole[:j]) and self.viable(text + whole[j:] + ":"):
                    return whole[j:] + ":"
        return None


class _Parser:
    """Recursive descent over one text; raises :class:`_Partial` where the text ends and
    :class:`_Bad` where it leaves the grammar."""

    def __init__(self, text: str, grammar: ToolCallGrammar) -> None:
        self.s = text
        self.i = 0
        self.g = grammar
        # (required keys, keys seen) of each object open where the text ends, innermost last.
        self.objects: list[tuple[set[str], set[str]]] = []

    # ----------------------------------------------------------------- characters

    def peek(self) -> str:
        if self.i >= len(self.s):
            raise _Partial
        return self.s[self.i]

    def take(self) -> str:
        ch = self.peek()
        self.i += 1
        return ch

    def literal(self, lit: str) -> None:
        for ch in lit:
            if self.take() != ch:
                raise _Bad

    def space(self) -> None:
        """One optional space, where ``json.dumps`` puts one (after ``:`` and ``,``)."""
        if self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def choice(self, options: list[str]) -> str:
        """One of ``options`` (literal texts), read greedily."""
        k = 0
        while True:
            whole = [o for o in options if len(o) == k]
            if self.i >= len(self.s):
                raise _Partial
            ch = self.s[self.i]
            options = [o for o in options if len(o) > k and o[k] == ch]
            if not options:
                if whole:
                    return whole[0]
                raise _Bad
            self.i += 1
            k += 1

    # ----------------------------------------------------------------- structure

    def calls(self) -> None:
        self.literal("[")
        if self.peek() == "]":
            if self.g.mode == "required":
                raise _Bad
            self.i += 1
        else:
            n = 0
            while True:
                self.call()
                n += 1
                ch = self.take()
                if ch == "]":
                    break
                if ch != "," or n >= self.g.max_calls:
                    raise _Bad
                self.space()
        if self.i != len(self.s):
            raise _Bad  # nothing follows the list

    def call(self) -> None:
        self.literal('{"name":')
        self.space()
        name = json.loads(self.choice(list(self.g._names)))
        self.literal(",")
        self.space()
        self.literal('"arguments":')
        self.space()
        self.obj(self.g.schemas[name])
        self.literal("}")

    def value(self, schema: Mapping[str, Any] | None) -> None:
        schema = schema or {}
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            self.choice([_dump(v) for v in values])
            return
        kinds = _kinds(schema)
        ch = self.peek()
        kind = {"{": "object", "[": "array", '"': "string", "t": "boolean", "f": "boolean"}.get(ch)
        if ch == "n":
            kind = "null"
        elif ch == "-" or ch.isdigit():
            kind = "number" if "number" in kinds else "integer"
        if kind is None or kind not in kinds:
            raise _Bad
        sub = kinds[kind]
        if kind == "object":
            self.obj(sub)
        elif kind == "array":
            self.array(sub)
        elif kind == "string":
            self.string()
        elif kind == "boolean":
            self.choice(["true", "false"])
        elif kind == "null":
            self.literal("null")
        else:
            self.number(integer=kind == "integer")

    def obj(self, schema: Mapping[str, Any] | None) -> None:
        schema = schema or {}
        props = schema.get("properties")
        declared = isinstance(props, Mapping)  # declared keys only; else any keys
        required = set(schema.get("required") or [])
        seen: set[str] = set()
        self.literal("{")
        self.objects.append((required, seen))
        if self.peek() == "}":
            if required:
                raise _Bad
            self.i += 1
            self.objects.pop()
            return
        while True:
            if declared:
                left = [_dump(k) for k in props if k not in seen]
                if not left:
                    raise _Bad
                key = json.loads(self.choice(left))
            else:
                key = self.string()
                if key in seen:
                    raise _Bad
            seen.add(key)
            self.literal(":")
            self.space()
            self.value(props.get(key) if declared else None)
            ch = self.take()
            if ch == "}":
                if required - seen:
                    raise _Bad
                self.objects.pop()
                return
            if ch != ",":
                raise _Bad
            self.space()

    def array(self, schema: Mapping[str, Any] | None) -> None:
        items = (schema or {}).get("items")
        self.literal("[")
        if self.peek() == "]":
            self.i += 1
            return
        while True:
            self.value(items if isinstance(items, Mapping) else None)
            ch = self.take()
            if ch == "]":
                return
            if ch != ",":
                raise _Bad
            self.space()

    def string(self) -> str:
        self.literal('"')
        out: list[str] = []
        while True:
            ch = self.take()
            if ch == '"':
                return "".join(out)
            if ch == "\\":
                esc = self.take()
                if esc == "u":
                    digits = "".join(self.take() for _ in range(4))
                    if any(d not in "0123456789abcdefABCDEF" for d in digits):
                        raise _Bad
                    out.append(chr(int(digits, 16)))
                elif esc in '"\\/bfnrt':
                    out.append(esc)
                else:
                    raise _Bad
            elif ord(ch) < 0x20:
                raise _Bad
            else:
                out.append(ch)

    def number(self, *, integer: bool) -> None:
        if self.peek() == "-":
            self.i += 1
        self.digits(leading=True)
        if integer:
            return
        if self.i < len(self.s) and self.s[self.i] == ".":
            self.i += 1
            self.digits()
        if self.i < len(self.s) and self.s[self.i] in "eE":
            self.i += 1
            if self.peek() in "+-":
                self.i += 1
            self.digits()

    def digits(self, *, leading: bool = False) -> None:
        """One or more digits (``leading``: no leading zero before more digits)."""
        first = self.take()
        if first not in "0123456789":
            raise _Bad
        if leading and first == "0":
            if self.i < len(self.s) and self.s[self.i] in "0123456789":
                raise _Bad
            return
        while self.i < len(self.s) and self.s[self.i] in "0123456789":
            self.i += 1


def _in_string(text: str) -> bool:
    """Whether JSON ``text`` ends inside a string (an odd number of unescaped quotes)."""
    inside = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif inside and ch == "\\":
            escaped = True
        elif ch == '"':
            inside = not inside
    return inside


def _kinds(schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any] | None]:
    """``{JSON type: its sub-schema}`` a value under ``schema`` may take. No type = any; two
    alternatives of one type (``anyOf``) = any value of that type."""
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list) and alternatives:
        kinds: dict[str, Mapping[str, Any] | None] = {}
        for alt in alternatives:
            for kind, sub in _kinds(alt if isinstance(alt, Mapping) else {}).items():
                kinds[kind] = sub if kind not in kinds else None
        return kinds
    declared = schema.get("type")
    if declared is None:
        return {kind: (schema if kind in ("object", "array") else None) for kind in _JSON_TYPES}
    names = [declared] if isinstance(declared, str) else list(declared)
    kinds = {str(k): schema for k in names if k in _JSON_TYPES}
    if "number" in kinds:
        kinds.setdefault("integer", schema)
    return kinds
