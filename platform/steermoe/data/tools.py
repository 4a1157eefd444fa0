"""Text forms of tools and tool calls shared by the data builder, training and serving.

``render_tools`` turns any list of OpenAI-style tool definitions into a compact prompt block;
``calls_to_text`` is the canonical model output for function calling (compact JSON list).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

# The short request of the compact tool prompt (`model.tool_prompt: compact`).
CALL_REQUEST_COMPACT = 'Reply with the calls as a JSON list of {"name", "arguments"}, or [].'
CALL_REQUEST = (
    "Answer with the tool calls that serve the spoken request, as a JSON list of "
    '{"name": ..., "arguments": {...}} objects; answer [] if no tool fits.'
)


def _type_str(schema: Mapping[str, Any] | None, depth: int = 0) -> str:
    """Compact type expression of a JSON schema: ``string``, ``"a"|"b"``, ``array[int]``..."""
    if not isinstance(schema, Mapping) or not schema:
        return "any"
    if "enum" in schema:
        return "|".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return "|".join(_type_str(s, depth) for s in schema[key])
    typ = schema.get("type")
    if isinstance(typ, list):
        return "|".join(_type_str({**schema, "type": t}, depth) for t in typ)
    if typ == "array":
        return f"array[{_type_str(schema.get('items'), depth)}]"
    if typ == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        if not props or depth >= 2:
            return "object"
        required = set(schema.get("required") or [])
        inner = ", ".join(
            f"{name}{'' if name in required else '?'}: {_type_str(sub, depth + 1)}"
            for name, sub in props.items()
        )
        return "{" + inner + "}"
    return {"integer": "int", "number": "number", "boolean": "bool", "null": "null"}.get(
        str(typ), str(typ) if typ else "any"
    )


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    # Accept both {"type": "function", "function": {...}} and a bare function definition.
    fn = tool.get("function", tool)
    if not isinstance(fn, Mapping) or not fn.get("name"):
        raise ValueError(f"tool without a function name: {tool!r:.120}")
    return fn


def render_tool(tool: Mapping[str, Any], *, descriptions: bool = True) -> str:
    """One line: ``name(req: type, opt?: type = default) - description. param: description; ...``

    ``descriptions=False`` keeps only the signature.
    """
    fn = _function(tool)
    params = fn.get("parameters") or {}
    props = params.get("properties") or {}
    required = set(params.get("required") or [])
    args, notes = [], []
    for name, schema in props.items():
        schema = schema if isinstance(schema, Mapping) else {}
        arg = f"{name}{'' if name in required else '?'}: {_type_str(schema)}"
        if "default" in schema:
            arg += f" = {json.dumps(schema['default'], ensure_ascii=False)}"
        args.append(arg)
        if schema.get("description"):
            notes.append(f"{name}: {' '.join(str(schema['description']).split())}")
    line = f"{fn['name']}({', '.join(args)})"
    if not descriptions:
        return line
    description = " ".join(str(fn.get("description") or "").split())
    if description:
        line += f" - {description.rstrip('.')}."
    if notes:
        line += " " + "; ".join(notes) + "."
    return line


def render_tools(tools: Iterable[Mapping[str, Any]], *, descriptions: bool = True) -> str:
    """Compact prompt block listing tools, one ``- name(args) - description`` line each.

    Works for any OpenAI-style tool schema (nested objects, arrays, enums, unions, defaults).
    An empty list renders as ``Tools: none``.
    """
    lines = [f"- {render_tool(t, descriptions=descriptions)}" for t in tools]
    return "Tools:\n" + "\n".join(lines) if lines else "Tools: none"


def tool_instruction(tools: Iterable[Mapping[str, Any]], *, compact: bool = False) -> str:
    """The fc instruction: rendered tools followed by the request to answer with calls.

    ``compact`` (``model.tool_prompt: compact``) lists signatures only, with a short request:
    about a third of the tokens, which is most of an fc training example's length.
    """
    if compact:
        return f"{render_tools(tools, descriptions=False)}\n{CALL_REQUEST_COMPACT}"
    return f"{render_tools(tools)}\n{CALL_REQUEST}"


def compact_instruction(instruction: str, tools: Iterable[Mapping[str, Any]] | None) -> str:
    """``instruction`` with its full tool block (if it holds one) in the compact form."""
    if not tools:
        return instruction
    tools = list(tools)
    return instruction.replace(tool_instruction(tools), tool_instruction(tools, compact=True))


def calls_to_text(calls: Iterable[Mapping[str, Any]]) -> str:
    """Canonical model output: ``[{"name":"f","arguments":{"a":1}}]`` (``[]`` for no call).

    Accepts ``{"name", "arguments"}`` dicts and OpenAI ``tool_calls`` items
    (``{"function": {"name", "arguments": "<json string>"}}``).
    """
    out = []
    for call in calls:
        fn = call.get("function", call)
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            args = json.loads(args) if args.strip() else {}
        out.append({"name": fn["name"], "arguments": dict(args)})
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))
