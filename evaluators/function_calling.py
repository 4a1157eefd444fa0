"""Function-calling scoring with the Berkeley Function Calling Leaderboard's AST rules.

Per example (README: Manifest format, ``expected_calls``): the called function's name must
match; every parameter the schema requires must be present; a parameter outside the schema
or the answer key is an error; a parameter in the answer key may be omitted only when ``""``
is among its acceptable values; each value must have the schema's JSON type (an int is
accepted where a number is expected; nothing else is coerced and a bool is not an int) and
equal one of the acceptable values, strings compared after lower-casing and deleting the
characters ``" ,./-_*^"``, lists element-wise with the same rules. Several expected calls
match the produced calls in any order (a one-to-one assignment, found exactly rather than
greedily as BFCL does, so it never fails where BFCL passes). With no expected call
(irrelevance) the example passes only when no call is produced; undecodable output counts as
no call there, as in BFCL.

An expected dict value may be written in BFCL's nested form, where each key maps to a
list of acceptable values (``""`` = may be omitted), or as a plain dict compared strictly.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from evaluators.call_parser import Call, CallParseError, parse_calls

__all__ = ["HIGHER_IS_BETTER", "PRIMARY", "check", "infer_category", "parse_calls", "score"]

PRIMARY = "accuracy"
HIGHER_IS_BETTER = True

_PUNCTUATION = re.compile(r"[ \,\.\/\-\_\*\^]")
_TYPES = {
    "integer": "integer",
    "int": "integer",
    "number": "number",
    "float": "number",
    "double": "number",
    "string": "string",
    "str": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "object": "object",
    "dict": "object",
    "null": "null",
    "any": "any",
}
_VALUE_ERRORS = {
    "string": "value_error:string",
    "array": "value_error:list/tuple",
    "object": "value_error:dict_value",
}


def _standardize(text: str) -> str:
    """BFCL's string standardisation: drop `` ,./-_*^`` and lower-case."""
    return _PUNCTUATION.sub("", text).lower()


def _types(schema: dict[str, Any]) -> list[str]:
    """Returns the canonical JSON types a schema allows (``["any"]`` when untyped)."""
    declared = schema.get("type", "any")
    names = declared if isinstance(declared, list) else [declared]
    unknown = [t for t in names if t not in _TYPES]
    if unknown:
        raise ValueError(f"unsupported schema type(s) {unknown}")
    return [_TYPES[t] for t in names]


def _is_type(value: Any, kind: str) -> bool:
    """Checks ``value`` against one canonical JSON type, without looking inside it."""
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = {"string": str, "boolean": bool, "array": list, "object": dict}
    if kind in checks:
        return isinstance(value, checks[kind])
    return value is None if kind == "null" else kind == "any"


def _type_error(value: Any, schema: dict[str, Any]) -> str:
    """Returns ``"type_error:simple"``/``"type_error:nested"`` or ``""`` when well typed."""
    kinds = [k for k in _types(schema) if _is_type(value, k)]
    if not kinds:
        return "type_error:simple"
    if (
        "array" in kinds
        and "items" in schema
        and any(_type_error(item, schema["items"]) for item in value)
    ):
        return "type_error:nested"
    if "object" in kinds and "properties" in schema:
        props = schema["properties"]
        if any(_type_error(v, props[k]) for k, v in value.items() if k in props):
            return "type_error:nested"
    return ""


def _matches(value: Any, expected: Any) -> bool:
    """Compares a value with one acceptable value under BFCL's rules."""
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    if isinstance(expected, (int, float)):
        return isinstance(value, (int, float)) and float(value) == float(expected)
    if isinstance(expected, str):
        return isinstance(value, str) and _standardize(value) == _standardize(expected)
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(value, list)
            and len(value) == len(expected)
            and all(_matches(v, e) for v, e in zip(value, expected))
        )
    if isinstance(expected, dict):
        return isinstance(value, dict) and (
            _matches_dict_strict(value, expected) or _matches_dict_nested(value, expected)
        )
    return value is None and expected is None


def _matches_dict_strict(value: dict, expected: dict) -> bool:
    """A plain expected dict: same keys, matching values."""
    return value.keys() == expected.keys() and all(_matches(value[k], expected[k]) for k in value)


def _matches_dict_nested(value: dict, expected: dict) -> bool:
    """BFCL's nested form: each expected key lists acceptable values, ``""`` = omittable."""
    if not all(isinstance(v, list) for v in expected.values()) or value.keys() - expected.keys():
        return False
    return all(
        any(_matches(value[k], a) for a in options) if k in value else "" in options
        for k, options in expected.items()
    )


def _verdict(error_type: str = "", *errors: str) -> dict[str, Any]:
    """Builds the per-example verdict ``{valid, error, error_type}``."""
    return {"valid": not error_type, "error": list(errors), "error_type": error_type}


def _check_call(call: Call, expected: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Checks one produced call against one expected call (BFCL's simple checker)."""
    name, args, answer = expected["name"], call["arguments"], expected["arguments"]
    if call["name"] != name:
        return _verdict(
            "simple_function_checker:wrong_func_name",
            f"Function name {call['name']!r} does not match the expected {name!r}.",
        )
    props = schema.get("properties", {})
    for param in schema.get("required", []):
        if param not in args:
            return _verdict(
                "simple_function_checker:missing_required", f"Missing required parameter {param!r}."
            )
    for param, value in args.items():
        if param not in props or param not in answer:
            where = "the schema" if param not in props else "the answer key"
            return _verdict(
                "simple_function_checker:unexpected_param",
                f"Unexpected parameter {param!r}: not in {where}.",
            )
        type_error = _type_error(value, props[param])
        if type_error:
            return _verdict(
                type_error,
                f"Parameter {param!r}: {value!r} is not of type {props[param].get('type')}.",
            )
        options = answer[param]
        if not isinstance(options, list):
            raise ValueError(f"answer key for {name}.{param} must be a list, got {options!r}")
        if not any(_matches(value, option) for option in options):
            kind = _types(props[param])[0]
            return _verdict(
                _VALUE_ERRORS.get(kind, "value_error:others"),
                f"Parameter {param!r}: {value!r} is not one of {options!r}.",
            )
    for param, options in answer.items():
        if param not in args and "" not in options:
            return _verdict(
                "simple_function_checker:missing_optional",
                f"Optional parameter {param!r} omitted but the answer key requires it.",
            )
    return _verdict()


def _schemas(tools: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Maps function name to its parameters schema (OpenAI or bare function specs)."""
    out = {}
    for tool in tools:
        fn = tool.get("function", tool)
        out[fn["name"]] = fn.get("parameters") or {}
    return out


def _unmatched(ok: list[list[bool]]) -> list[int]:
    """Rows left unmatched by a maximum one-to-one matching (Kuhn's algorithm)."""
    owner = [-1] * (len(ok[0]) if ok else 0)

    def augment(row: int, seen: set[int]) -> bool:
        for col, fits in enumerate(ok[row]):
            if fits and col not in seen:
                seen.add(col)
                if owner[col] < 0 or augment(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    return [row for row in range(len(ok)) if not augment(row, set())]


def check(
    prediction: str | list[Call],
    expected: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """Checks one model output against the answer key.

    Args:
        prediction: Raw model text, or an already-parsed list of ``{"name", "arguments"}``.
        expected: Expected calls ``{"name", "arguments": {param: [acceptable values]}}``;
            empty when no function should be called.
        tools: OpenAI-style tool specs ``{"type": "function", "function": {...}}``.

    Returns:
        ``{"valid": bool, "error": [messages], "error_type": str}`` (``""`` when valid).

    Raises:
        ValueError: When an expected function has no schema in ``tools``.
    """
    try:
        calls = parse_calls(prediction)
    except CallParseError as err:
        if not expected:
            return _verdict()
        return _verdict("ast_decoder:decoder_failed", f"Cannot decode the output: {err}")
    if not expected:
        if calls:
            names = [c["name"] for c in calls]
            return _verdict("irrelevance:called_function", f"Called {names}; expected no call.")
        return _verdict()
    schemas = _schemas(tools)
    missing = [e["name"] for e in expected if e["name"] not in schemas]
    if missing:
        raise ValueError(f"expected function(s) {missing} have no schema in tools")
    if len(expected) == 1:
        if len(calls) != 1:
            checker = "simple" if len(schemas) <= 1 else "multiple"
            return _verdict(
                f"{checker}_function_checker:wrong_count", f"Expected 1 call, got {len(calls)}."
            )
        return _check_call(calls[0], expected[0], schemas[expected[0]["name"]])
    if len(calls) != len(expected):
        return _verdict(
            "parallel_function_checker_no_order:wrong_count",
            f"Expected {len(expected)} calls, got {len(calls)}.",
        )
    verdicts = [[_check_call(c, e, schemas[e["name"]]) for c in calls] for e in expected]
    unmatched = _unmatched([[v["valid"] for v in row] for row in verdicts])
    if not unmatched:
        return _verdict()
    first = unmatched[0]
    same_name = [v for v in verdicts[first] if not v["error_type"].endswith("wrong_func_name")]
    details = same_name[0]["error"] if same_name else []
    return _verdict(
        "parallel_function_checker_no_order:cannot_find_match",
        f"No produced call matches expected call {first} ({expected[first]['name']!r}).",
        *details,
    )


def infer_category(expected: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> str:
    """Returns BFCL's category: irrelevance, parallel, multiple or simple."""
    if not expected:
        return "irrelevance"
    if len(expected) > 1:
        return "parallel"
    return "multiple" if len(tools) > 1 else "simple"


def score(
    predictions: Sequence[str | list[Call]],
    expected_list: Sequence[Sequence[dict[str, Any]]],
    tools_list: Sequence[Sequence[dict[str, Any]]],
    categories: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Scores model outputs against answer keys.

    Args:
        predictions: Raw model outputs (or parsed call lists), one per example.
        expected_list: Per example, the expected calls (see ``check``).
        tools_list: Per example, the tool specs offered to the model.
        categories: Per example, a category name; ``None`` (or a ``None`` entry) infers it
            with ``infer_category``.

    Returns:
        ``accuracy``, ``accuracy_<category>`` for each category present, ``num_samples``
        and ``error_types`` (error type -> count over failed examples).

    Raises:
        ValueError: On length mismatches or no examples.
    """
    n = len(predictions)
    cats = [None] * n if categories is None else list(categories)
    lengths = {
        "predictions": n,
        "expected_list": len(expected_list),
        "tools_list": len(tools_list),
        "categories": len(cats),
    }
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")
    if n == 0:
        raise ValueError("no examples to score")
    cats = [c or infer_category(e, t) for c, e, t in zip(cats, expected_list, tools_list)]
    verdicts = [check(p, e, t) for p, e, t in zip(predictions, expected_list, tools_list)]
    result: dict[str, Any] = {"accuracy": sum(v["valid"] for v in verdicts) / n, "num_samples": n}
    for cat in sorted(set(cats)):
        valid = [v["valid"] for v, c in zip(verdicts, cats) if c == cat]
        result[f"accuracy_{cat}"] = sum(valid) / len(valid)
    result["error_types"] = dict(Counter(v["error_type"] for v in verdicts if not v["valid"]))
    return result
