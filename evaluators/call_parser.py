"""Extracts function calls from a model's raw text (used by ``function_calling``).

Accepted forms, bare, inside ```json / ```python code fences, or surrounded by prose:

* JSON: ``{"name": ..., "arguments": {...}}`` (or ``"parameters"``), a list of those, or
  OpenAI's ``{"tool_calls": [{"function": {"name": ..., "arguments": "<json>"}}]}``.
* Python call syntax: ``f(a=1)``, ``[f(a=1), g(b="x")]`` or one call per line, parsed with
  ``ast``; argument values must be literals (never evaluated) and passed by keyword.

In prose, only ``name(key=...)`` spans count as calls (so ``f(x)`` in an explanation is
not one); a zero-argument call ``f()`` is recognised only when it is the whole block.
Text with no call returns ``[]``. Text that looks like a call but cannot be decoded (a
truncated JSON call, positional or non-literal arguments, unbalanced parentheses) raises
``CallParseError``.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

Call = dict[str, Any]

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n?(.*?)```", re.DOTALL)
_CALL_START = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\(")
_KEYWORD = re.compile(r"\b[A-Za-z_]\w*\s*=(?!=)")


class CallParseError(ValueError):
    """Raised when call-like text cannot be decoded into calls."""


def _call(name: Any, arguments: Any) -> Call:
    """Builds a call record, decoding JSON-string arguments (OpenAI style)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise CallParseError(f"arguments of {name!r} are not valid JSON: {err}") from err
    if arguments is None:
        arguments = {}
    if not isinstance(name, str) or not isinstance(arguments, dict):
        raise CallParseError(f"malformed call: name={name!r}, arguments={arguments!r}")
    return {"name": name, "arguments": arguments}


def _json_calls(obj: Any) -> list[Call] | None:
    """Returns the calls a decoded JSON value holds, or None if it is not call-shaped."""
    if isinstance(obj, list):
        calls = [_json_calls(item) for item in obj]
        if not obj or any(c is None for c in calls):
            return None
        return [call for group in calls for call in group]
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tool_calls"), list):
        return _json_calls(obj["tool_calls"]) or []
    if isinstance(obj.get("function"), dict) and "name" in obj["function"]:
        fn = obj["function"]
        return [_call(fn["name"], fn.get("arguments", fn.get("parameters")))]
    if "name" in obj and ("arguments" in obj or "parameters" in obj):
        return [_call(obj["name"], obj.get("arguments", obj.get("parameters")))]
    return None


def _literal(node: ast.AST) -> Any:
    """Evaluates a literal node, turning tuples into lists."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError) as err:
        raise CallParseError(f"non-literal argument: {ast.unparse(node)}") from err

    def untuple(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [untuple(x) for x in v]
        if isinstance(v, dict):
            return {k: untuple(x) for k, x in v.items()}
        return v

    return untuple(value)


def _ast_call(node: ast.Call) -> Call:
    """Converts an ``ast.Call`` with keyword literal arguments into a call record."""
    if node.args or any(kw.arg is None for kw in node.keywords):
        raise CallParseError(f"positional or ** arguments in {ast.unparse(node)}")
    return _call(ast.unparse(node.func), {kw.arg: _literal(kw.value) for kw in node.keywords})


def _python_calls(text: str) -> list[Call] | None:
    """Parses text made only of calls (or lists of calls); None if it is something else."""
    try:
        module = ast.parse(text.strip())
    except SyntaxError:
        return None
    nodes: list[ast.Call] = []
    for stmt in module.body:
        value = stmt.value if isinstance(stmt, ast.Expr) else None
        items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
        if not items or not all(isinstance(v, ast.Call) for v in items):
            return None
        nodes.extend(items)
    if not nodes or not all(isinstance(n.func, (ast.Name, ast.Attribute)) for n in nodes):
        return None
    return [_ast_call(n) for n in nodes]


def _closing(text: str, start: int) -> int:
    """Returns the index after the bracket that closes ``text[start]``, or -1."""
    depth, quote, i = 0, "", start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def _embedded_json(text: str) -> list[Call]:
    """Finds call-shaped JSON values inside prose."""
    decoder, calls, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i] in "{[":
            try:
                obj, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                i += 1
                continue
            found = _json_calls(obj)
            if found is not None:
                calls.extend(found)
                i = end
                continue
        i += 1
    return calls


def _embedded_python(text: str) -> list[Call]:
    """Finds call-like ``name(key=value, ...)`` spans inside prose and parses them."""
    calls, pos = [], 0
    while match := _CALL_START.search(text, pos):
        end = _closing(text, match.end() - 1)
        inner = text[match.end() : end - 1] if end > 0 else text[match.end() :]
        if not _KEYWORD.search(inner):
            pos = match.end()
            continue
        if end < 0:
            raise CallParseError(f"unbalanced parentheses after {match.group(1)!r}")
        found = _python_calls(text[match.start() : end])
        if found is None:
            raise CallParseError(f"cannot parse call: {text[match.start() : end]!r}")
        calls.extend(found)
        pos = end
    return calls


def _parse_block(text: str) -> list[Call]:
    """Parses one block of text (a fence's content, or the whole output)."""
    text = text.strip()
    if not text:
        return []
    try:
        return _json_calls(json.loads(text)) or []
    except json.JSONDecodeError:
        pass
    calls = _python_calls(text)
    if calls is not None:
        return calls
    calls = _embedded_json(text) or _embedded_python(text)
    if not calls and text[0] in "{[" and re.search(r"[\"']name[\"']\s*:", text):
        raise CallParseError(f"undecodable JSON call: {text[:80]!r}")
    return calls


def _validate(calls: list[Any]) -> list[Call]:
    """Checks and copies an already-parsed list of calls."""
    out = []
    for call in calls:
        if not isinstance(call, dict) or "name" not in call:
            raise CallParseError(f"not a call record: {call!r}")
        out.append(_call(call["name"], call.get("arguments", call.get("parameters"))))
    return out


def parse_calls(text: str | list[Call]) -> list[Call]:
    """Extracts function calls from a model's output.

    Args:
        text: Raw model output, or an already-parsed list of ``{"name", "arguments"}``.

    Returns:
        The calls in order, each ``{"name": str, "arguments": dict}``; ``[]`` when the text
        holds no call.

    Raises:
        CallParseError: When call-like text cannot be decoded.
    """
    if isinstance(text, list):
        return _validate(text)
    fences = _FENCE.findall(text)
    blocks = [body for _, body in fences] if fences else [text]
    return [call for block in blocks for call in _parse_block(block)]
