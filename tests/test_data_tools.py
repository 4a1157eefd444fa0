"""Tool rendering for prompts and the canonical call text."""

from __future__ import annotations

import json

from steermoe.data.tools import calls_to_text, render_tools, tool_instruction
from steermoe.synth.fc import TOOLS


def test_render_tools_is_compact_and_complete():
    text = render_tools([TOOLS["get_weather"], TOOLS["set_timer"]])
    lines = text.splitlines()
    assert lines[0] == "Tools:"
    assert lines[1].startswith(
        '- get_weather(location: string, day?: "today"|"tomorrow" = "today", '
        'unit?: "celsius"|"fahrenheit") - Get the weather forecast for a city.'
    )
    assert "label?: string" in lines[2]
    assert render_tools([]) == "Tools: none"


def test_render_arbitrary_schema():
    tool = {
        "type": "function",
        "function": {
            "name": "book",
            "description": "Book   a\nflight.",
            "parameters": {
                "type": "object",
                "properties": {
                    "legs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                            "required": ["from"],
                        },
                    },
                    "seats": {"type": ["integer", "null"]},
                    "cabin": {"anyOf": [{"const": "eco"}, {"type": "string"}]},
                    "meta": {},
                },
                "required": ["legs"],
            },
        },
    }
    line = render_tools([tool]).splitlines()[1]
    assert line == (
        "- book(legs: array[{from: string, to?: string}], seats?: int|null, "
        'cabin?: "eco"|string, meta?: any) - Book a flight.'
    )
    assert tool_instruction([tool]).startswith("Tools:\n- book(")
    assert "JSON list" in tool_instruction([tool])


def test_calls_to_text():
    assert calls_to_text([]) == "[]"
    calls = [{"name": "set_timer", "arguments": {"minutes": 5}}]
    assert calls_to_text(calls) == '[{"name":"set_timer","arguments":{"minutes":5}}]'
    openai = [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "set_timer", "arguments": '{"minutes": 5}'},
        }
    ]
    assert calls_to_text(openai) == calls_to_text(calls)
    assert json.loads(calls_to_text(calls)) == calls
