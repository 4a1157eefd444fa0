"""Function-calling scorer: BFCL AST rules, one case per error type, and output parsing."""

import pytest

from evaluators import function_calling as fc
from evaluators.call_parser import CallParseError
from evaluators.tasks import TASKS, mode_for


def _tool(name, properties, required):
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


WEATHER = _tool(
    "get_weather",
    {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    ["city"],
)
AREA = _tool(
    "circle_area",
    {
        "radius": {"type": "number"},
        "precise": {"type": "boolean"},
        "points": {"type": "array", "items": {"type": "integer"}},
        "options": {"type": "object"},
    },
    ["radius"],
)
TOOLS = [WEATHER]
WEATHER_KEY = [
    {"name": "get_weather", "arguments": {"city": ["Paris"], "days": [3], "unit": ["", "celsius"]}}
]


def _check(prediction, expected=WEATHER_KEY, tools=TOOLS):
    return fc.check(prediction, expected, tools)


def test_metadata_and_registry():
    assert fc.PRIMARY == "accuracy"
    assert fc.HIGHER_IS_BETTER is True
    assert TASKS["fc"].scorer is fc
    assert mode_for("val_fc_accuracy") == mode_for("synthetic-fc.accuracy") == "max"
    assert mode_for("val_loss") is None


def test_valid_call():
    assert _check('get_weather(city="Paris", days=3)') == {
        "valid": True,
        "error": [],
        "error_type": "",
    }


CASES = [
    # (prediction, error_type)
    ('get_forecast(city="Paris", days=3)', "simple_function_checker:wrong_func_name"),
    ("get_weather(days=3)", "simple_function_checker:missing_required"),
    ('get_weather(city="Paris", days=3, country="FR")', "simple_function_checker:unexpected_param"),
    ('get_weather(city="Paris", days="3")', "type_error:simple"),
    ('get_weather(city="Paris", days=3.0)', "type_error:simple"),  # float is not an int
    ('get_weather(city="Paris", days=True)', "type_error:simple"),  # bool is not an int
    ('get_weather(city="London", days=3)', "value_error:string"),
    ('get_weather(city="Paris", days=4)', "value_error:others"),
    ('get_weather(city="Paris")', "simple_function_checker:missing_optional"),  # days not omittable
    ('get_weather(city="Paris", days=3, unit="kelvin")', "value_error:string"),
    ('get_weather(city="Paris", days=3', "ast_decoder:decoder_failed"),
    ('{"name": "get_weather", "arguments": {"city": "Paris"', "ast_decoder:decoder_failed"),
    ("get_weather(city=Paris, days=3)", "ast_decoder:decoder_failed"),  # non-literal value
    ("I cannot check the weather.", "simple_function_checker:wrong_count"),
    ('[get_weather(city="Paris", days=3), get_weather(city="Rome", days=3)]',
     "simple_function_checker:wrong_count"),
]  # fmt: skip


@pytest.mark.parametrize(("prediction", "error_type"), CASES)
def test_error_types(prediction, error_type):
    verdict = _check(prediction)
    assert verdict["valid"] is False
    assert verdict["error_type"] == error_type
    assert verdict["error"]  # a message says why


def test_optional_omitted_allowed_when_key_has_empty_string():
    assert _check('get_weather(city="Paris", days=3)')["valid"]  # unit has "" -> omittable
    assert _check('get_weather(city="Paris", days=3, unit="Celsius")')["valid"]


def test_param_in_schema_but_not_in_answer_key_is_unexpected():
    key = [{"name": "get_weather", "arguments": {"city": ["Paris"]}}]
    assert _check('get_weather(city="Paris")', key)["valid"]  # days/unit absent from key: fine
    verdict = _check('get_weather(city="Paris", days=3)', key)
    assert verdict["error_type"] == "simple_function_checker:unexpected_param"


@pytest.mark.parametrize("city", ["paris", "PARIS", "Paris.", "pa-ris", "Pa_r i*s^", "Paris/"])
def test_string_standardisation(city):
    assert _check(f'get_weather(city="{city}", days=3)')["valid"]


def test_string_standardisation_does_not_strip_other_characters():
    assert _check('get_weather(city="Paris!", days=3)')["error_type"] == "value_error:string"


def test_acceptable_value_list():
    key = [{"name": "get_weather", "arguments": {"city": ["Paris", "Paris, France"], "days": [3]}}]
    assert _check('get_weather(city="paris france", days=3)', key)["valid"]
    assert not _check('get_weather(city="France", days=3)', key)["valid"]


AREA_KEY = [
    {
        "name": "circle_area",
        "arguments": {
            "radius": [2.0],
            "precise": ["", False],
            "points": ["", [1, 2]],
            "options": ["", {"mode": ["fast", "quick"]}],
        },
    }
]


@pytest.mark.parametrize(
    ("prediction", "error_type"),
    [
        ("circle_area(radius=2)", ""),  # int accepted for a number
        ("circle_area(radius=2.0)", ""),
        ('circle_area(radius="2")', "type_error:simple"),
        ("circle_area(radius=True)", "type_error:simple"),  # bool is not a number
        ("circle_area(radius=2, precise=0)", "type_error:simple"),  # int is not a bool
        ("circle_area(radius=2, precise=False)", ""),
        ("circle_area(radius=2, precise=True)", "value_error:others"),
        ("circle_area(radius=3)", "value_error:others"),
        ("circle_area(radius=2, points=[1, 2])", ""),
        ("circle_area(radius=2, points=(1, 2))", ""),  # tuple parsed as list
        ("circle_area(radius=2, points=[2, 1])", "value_error:list/tuple"),  # order matters
        ("circle_area(radius=2, points=[1, 2.5])", "type_error:nested"),
        ('circle_area(radius=2, options={"mode": "Fast"})', ""),  # BFCL nested dict form
        ('circle_area(radius=2, options={"mode": "slow"})', "value_error:dict_value"),
        ("circle_area(radius=2, options=[1])", "type_error:simple"),
    ],
)
def test_types_and_values(prediction, error_type):
    verdict = fc.check(prediction, AREA_KEY, [AREA])
    assert verdict["error_type"] == error_type
    assert verdict["valid"] is (error_type == "")


def test_int_answer_key_matches_float_value_for_number_param():
    key = [{"name": "circle_area", "arguments": {"radius": [2]}}]
    assert fc.check("circle_area(radius=2.0)", key, [AREA])["valid"]  # number type, 2.0 == 2


PARALLEL_KEY = [
    {"name": "get_weather", "arguments": {"city": ["Paris"], "days": [3], "unit": [""]}},
    {"name": "get_weather", "arguments": {"city": ["Rome"], "days": [1], "unit": [""]}},
    {"name": "circle_area", "arguments": {"radius": [2.0]}},
]
PARALLEL_TOOLS = [WEATHER, AREA]


@pytest.mark.parametrize(
    "prediction",
    [
        '[get_weather(city="Paris", days=3), get_weather(city="Rome", days=1), circle_area(radius=2)]',
        '[circle_area(radius=2), get_weather(city="Rome", days=1), get_weather(city="Paris", days=3)]',
        '[{"name": "get_weather", "arguments": {"city": "Rome", "days": 1}},'
        ' {"name": "circle_area", "arguments": {"radius": 2}},'
        ' {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]',
    ],
)
def test_parallel_any_order(prediction):
    assert fc.check(prediction, PARALLEL_KEY, PARALLEL_TOOLS)["valid"]


def test_parallel_wrong_count_and_no_match():
    two = '[get_weather(city="Paris", days=3), circle_area(radius=2)]'
    verdict = fc.check(two, PARALLEL_KEY, PARALLEL_TOOLS)
    assert verdict["error_type"] == "parallel_function_checker_no_order:wrong_count"
    wrong = '[get_weather(city="Paris", days=3), get_weather(city="Oslo", days=1), circle_area(radius=2)]'
    verdict = fc.check(wrong, PARALLEL_KEY, PARALLEL_TOOLS)
    assert verdict["error_type"] == "parallel_function_checker_no_order:cannot_find_match"
    # the same call may not satisfy two expected calls
    dup = '[get_weather(city="Paris", days=3), get_weather(city="Paris", days=3), circle_area(radius=2)]'
    assert not fc.check(dup, PARALLEL_KEY, PARALLEL_TOOLS)["valid"]


def test_parallel_assignment_is_not_greedy():
    # call 0 fits both expected calls, call 1 fits only the first: a greedy match of
    # expected[0] -> call 0 would strand expected[1].
    key = [
        {"name": "get_weather", "arguments": {"city": ["Paris", "Rome"], "days": [3]}},
        {"name": "get_weather", "arguments": {"city": ["Paris"], "days": [3]}},
    ]
    pred = '[get_weather(city="Paris", days=3), get_weather(city="Rome", days=3)]'
    assert fc.check(pred, key, TOOLS)["valid"]


def test_multiple_category_wrong_count():
    verdict = fc.check("No call needed.", WEATHER_KEY, [WEATHER, AREA])
    assert verdict["error_type"] == "multiple_function_checker:wrong_count"
    assert fc.check('get_weather(city="Paris", days=3)', WEATHER_KEY, [WEATHER, AREA])["valid"]


@pytest.mark.parametrize(
    ("prediction", "valid"),
    [
        ("I can't help with that; no tool fits.", True),
        ("", True),
        ("get_weather(city=Paris", True),  # undecodable output is not a call
        ('get_weather(city="Paris")', False),
        ('{"tool_calls": [{"function": {"name": "get_weather", "arguments": "{}"}}]}', False),
    ],
)
def test_irrelevance(prediction, valid):
    verdict = fc.check(prediction, [], TOOLS)
    assert verdict["valid"] is valid
    assert verdict["error_type"] == ("" if valid else "irrelevance:called_function")


def test_expected_function_without_schema_raises():
    with pytest.raises(ValueError, match="no schema"):
        fc.check("f(a=1)", [{"name": "f", "arguments": {"a": [1]}}], TOOLS)


PARSE_CASES = [
    ('get_weather(city="Paris", days=3)', [("get_weather", {"city": "Paris", "days": 3})]),
    ('{"name": "f", "arguments": {"a": 1}}', [("f", {"a": 1})]),
    ('{"name": "f", "parameters": {"a": true, "b": null}}', [("f", {"a": True, "b": None})]),
    ('[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"b": "x"}}]',
     [("f", {}), ("g", {"b": "x"})]),
    ('{"tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\\"a\\": 2}"}}]}',
     [("f", {"a": 2})]),
    ('{"tool_calls": [{"function": {"name": "f", "arguments": {"a": [1, 2]}}}]}',
     [("f", {"a": [1, 2]})]),
    ('```json\n{"name": "f", "arguments": {"a": 1}}\n```', [("f", {"a": 1})]),
    ('Sure, calling it:\n```python\nf(a=1)\ng(b=(1, 2))\n```\nDone.', [("f", {"a": 1}), ("g", {"b": [1, 2]})]),
    ('Sure! I will call [f(a=1), g(b="x")] for you.', [("f", {"a": 1}), ("g", {"b": "x"})]),
    ('Let me look: {"name": "f", "arguments": {"a": -1.5}} ok?', [("f", {"a": -1.5})]),
    ("math.factorial(n=5)", [("math.factorial", {"n": 5})]),
    ("get_time()", [("get_time", {})]),
    ('f(d={"k": [1, "x"]}, s="a, b) c")', [("f", {"d": {"k": [1, "x"]}, "s": "a, b) c"})]),
    ("The weather is nice (sunny) today.", []),
    ("Use print(x) to show x.", []),
    ('{"answer": 42}', []),
    ("", []),
]  # fmt: skip


@pytest.mark.parametrize(("text", "calls"), PARSE_CASES)
def test_parse_calls(text, calls):
    assert fc.parse_calls(text) == [{"name": n, "arguments": a} for n, a in calls]


@pytest.mark.parametrize(
    "text",
    [
        'get_weather(city="Paris"',  # unbalanced
        "get_weather(city=Paris)",  # non-literal
        'get_weather("Paris", days=3)',  # positional
        "f(a=__import__('os').system('true'))",  # never evaluated
        '{"name": "f", "arguments": {"a": ',  # truncated JSON
        '{"name": "f", "arguments": "{not json"}',  # bad JSON-string arguments
    ],
)
def test_parse_errors(text):
    with pytest.raises(CallParseError):
        fc.parse_calls(text)


def test_parse_already_parsed_list():
    calls = [{"name": "f", "arguments": {"a": 1}}]
    assert fc.parse_calls(calls) == calls
    assert fc.check([{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}],
                    WEATHER_KEY, TOOLS)["valid"]  # fmt: skip


def test_score_categories_and_error_counts():
    predictions = [
        'get_weather(city="Paris", days=3)',  # simple, valid
        'get_weather(city="Rome", days=3)',  # simple, value error
        'get_weather(city="Paris", days=3)',  # multiple (2 tools), valid
        "Nothing to call.",  # irrelevance, valid
        'get_weather(city="Paris", days=3)',  # irrelevance, fail
        '[get_weather(city="Rome", days=1), get_weather(city="Paris", days=3), circle_area(radius=2)]',
    ]
    expected = [WEATHER_KEY, WEATHER_KEY, WEATHER_KEY, [], [], PARALLEL_KEY]
    tools = [TOOLS, TOOLS, PARALLEL_TOOLS, TOOLS, TOOLS, PARALLEL_TOOLS]
    result = fc.score(predictions, expected, tools)
    assert result["num_samples"] == 6
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["accuracy_simple"] == pytest.approx(0.5)
    assert result["accuracy_multiple"] == 1.0
    assert result["accuracy_irrelevance"] == pytest.approx(0.5)
    assert result["accuracy_parallel"] == 1.0
    assert result["error_types"] == {"value_error:string": 1, "irrelevance:called_function": 1}


def test_score_given_categories_and_errors():
    result = fc.score(
        ['get_weather(city="Paris", days=3)'], [WEATHER_KEY], [TOOLS], ["live_simple"]
    )
    assert result["accuracy_live_simple"] == 1.0
    assert "accuracy_simple" not in result
    with pytest.raises(ValueError, match="length mismatch"):
        fc.score(["a"], [], [])
    with pytest.raises(ValueError, match="no examples"):
        fc.score([], [], [])


def test_parallel_needs_one_to_one_assignment():
    # each expected call fits call 0, none fits call 1: no one-to-one assignment exists
    key = [
        {"name": "get_weather", "arguments": {"city": ["Paris", "Rome"], "days": [3]}},
        {"name": "get_weather", "arguments": {"city": ["Paris", "Rome"], "days": [3]}},
    ]
    pred = '[get_weather(city="Paris", days=3), get_weather(city="Oslo", days=3)]'
    verdict = fc.check(pred, key, TOOLS)
    assert verdict["error_type"] == "parallel_function_checker_no_order:cannot_find_match"


def test_untyped_param_still_separates_bool_from_int():
    tool = _tool("f", {"x": {"description": "anything"}}, ["x"])
    key = [{"name": "f", "arguments": {"x": [1]}}]
    assert fc.check("f(x=1)", key, [tool])["valid"]
    assert fc.check("f(x=1.0)", key, [tool])["valid"]
    assert fc.check("f(x=True)", key, [tool])["error_type"] == "value_error:others"
