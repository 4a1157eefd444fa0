"""Audio question answering scoring (README: Manifest format, ``kind`` and ``choices``).

Three kinds of question:

* ``open``: exact match after ``normalize_answer`` (lower case, no punctuation, no articles,
  number words as digits, single spaces).
* ``yes_no``: the first yes/no word of the prediction (yes, yeah, true / no, false) must
  equal the reference's.
* ``multiple_choice``: MMAU's rule. The prediction's normalised words must include every
  word of the right choice and no word that only a wrong choice has.

A reference is a string or a list of acceptable answers (one per annotator, as in
Clotho-AQA). ``accuracy_any`` counts a prediction right when it matches any of them;
``accuracy_majority`` when it matches the most common normalised answer (any of them on a
tie). ``accuracy`` is ``accuracy_any``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

PRIMARY = "accuracy"
HIGHER_IS_BETTER = True

KINDS = ("open", "yes_no", "multiple_choice")

# English number words below twenty, by value (the synthetic suites speak them too).
NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
# The tens from twenty to ninety, in order.
TENS_WORDS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_UNITS = {word: value for value, word in enumerate(NUMBER_WORDS)}
_TENS = {word: 10 * value for value, word in enumerate(TENS_WORDS, start=2)}
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_YES = frozenset({"yes", "yeah", "true"})
_NO = frozenset({"no", "false"})


def _words_to_digits(tokens: list[str]) -> list[str]:
    """Replaces runs of English number words by their value: ``twenty one`` -> ``21``."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        total, current, last, j = 0, 0, None, i
        while j < len(tokens):
            word = tokens[j]
            if word in _UNITS and last in (None, "hundred", "scale", "tens"):
                if last == "tens" and not 0 < _UNITS[word] < 10:
                    break
                current, last = current + _UNITS[word], "unit"
            elif word in _TENS and last in (None, "hundred", "scale"):
                current, last = current + _TENS[word], "tens"
            elif word == "hundred" and last in (None, "unit"):
                current, last = (current or 1) * 100, "hundred"
            elif word in _SCALES and last in (None, "unit", "tens", "hundred"):
                total, current, last = total + (current or 1) * _SCALES[word], 0, "scale"
            elif (
                word == "and"
                and last in ("hundred", "scale")
                and j + 1 < len(tokens)
                and (tokens[j + 1] in _UNITS or tokens[j + 1] in _TENS)
            ):
                pass
            else:
                break
            j += 1
        if j == i:
            out.append(tokens[i])
            i += 1
        else:
            out.append(str(total + current))
            i = j
    return out


def normalize_answer(text: str) -> str:
    """Normalises an answer for exact match.

    Lower-cases, turns hyphens and slashes into spaces, deletes other punctuation (a decimal
    point between digits is kept), removes the articles a/an/the, writes number words as
    digits and collapses whitespace.

    Args:
        text: A prediction or reference answer.

    Returns:
        The normalised answer, e.g. ``"The Twenty-One dogs!"`` -> ``"21 dogs"``.
    """
    text = re.sub(r"[-‐–—/]", " ", text.lower())
    text = re.sub(r"(?!(?<=\d)\.(?=\d))(?:[^\w\s]|_)", "", text)
    tokens = [t for t in text.split() if t not in ("a", "an", "the")]
    return " ".join(_words_to_digits(tokens))


def _yes_no(text: str) -> str | None:
    """Returns ``"yes"``/``"no"`` for the first yes/no word of ``text``, else None."""
    for token in normalize_answer(text).split():
        if token in _YES:
            return "yes"
        if token in _NO:
            return "no"
    return None


def _mmau_match(prediction: str, answer: str, choices: Sequence[str]) -> bool:
    """MMAU's multiple-choice rule over normalised word sets."""
    pred = set(normalize_answer(prediction).split())
    right = set(normalize_answer(answer).split())
    if not pred:
        return False
    wrong: set[str] = set()
    for choice in choices:
        words = set(normalize_answer(choice).split())
        if words != right:
            wrong |= words - right
    return right <= pred and pred.isdisjoint(wrong)


def _canonical(reference: str, kind: str) -> str:
    """Returns the form used to count votes among references."""
    if kind != "yes_no":
        return normalize_answer(reference)
    label = _yes_no(reference)
    if label is None:
        raise ValueError(f"yes/no reference has no yes/no word: {reference!r}")
    return label


def _match(prediction: str, reference: str, kind: str, choices: Sequence[str] | None) -> bool:
    """Says whether ``prediction`` answers ``reference`` under ``kind``'s rule."""
    if kind == "open":
        return normalize_answer(prediction) == normalize_answer(reference)
    if kind == "yes_no":
        return _yes_no(prediction) == _canonical(reference, kind)
    if choices is None:
        raise ValueError("multiple_choice needs the example's choices")
    return _mmau_match(prediction, reference, choices)


def judge(
    prediction: str,
    reference: str | Sequence[str],
    kind: str = "open",
    choices: Sequence[str] | None = None,
) -> dict[str, bool]:
    """Judges one answer.

    Args:
        prediction: The model's answer.
        reference: The right answer, or a list of annotators' answers.
        kind: ``"open"``, ``"yes_no"`` or ``"multiple_choice"``.
        choices: The example's choice strings (needed for ``multiple_choice``).

    Returns:
        ``match_any`` (matches any reference) and ``match_majority`` (matches a most common
        normalised reference).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs:
        raise ValueError("an example has no reference answer")
    votes = Counter(_canonical(ref, kind) for ref in refs)
    top = max(votes.values())
    majority = [
        next(r for r in refs if _canonical(r, kind) == c) for c, n in votes.items() if n == top
    ]
    return {
        "match_any": any(_match(prediction, ref, kind, choices) for ref in refs),
        "match_majority": any(_match(prediction, ref, kind, choices) for ref in majority),
    }


def score(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    kind: str | Sequence[str] = "open",
    choices: Sequence[Sequence[str] | None] | None = None,
) -> dict[str, float]:
    """Scores answers against references.

    Args:
        predictions: Model answers, one per example.
        references: Per example, the right answer or a list of acceptable answers.
        kind: One kind for all examples, or one per example.
        choices: Per example, the choice strings (``None`` where not multiple choice).

    Returns:
        ``accuracy`` (= ``accuracy_any``), ``accuracy_any``, ``accuracy_majority`` and
        ``num_samples``; with mixed kinds also ``accuracy_<kind>`` for each kind present.

    Raises:
        ValueError: On length mismatches, no examples, an unknown kind or missing choices.
    """
    n = len(predictions)
    kinds = [kind] * n if isinstance(kind, str) else list(kind)
    per_choice = [None] * n if choices is None else list(choices)
    lengths = {
        "predictions": n,
        "references": len(references),
        "kind": len(kinds),
        "choices": len(per_choice),
    }
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")
    if n == 0:
        raise ValueError("no examples to score")
    verdicts = [judge(p, r, k, c) for p, r, k, c in zip(predictions, references, kinds, per_choice)]
    any_acc = sum(v["match_any"] for v in verdicts) / n
    result: dict[str, float] = {
        "accuracy": any_acc,
        "accuracy_any": any_acc,
        "accuracy_majority": sum(v["match_majority"] for v in verdicts) / n,
        "num_samples": n,
    }
    if len(set(kinds)) > 1:
        for k in sorted(set(kinds)):
            hits = [v["match_any"] for v, kk in zip(verdicts, kinds) if kk == k]
            result[f"accuracy_{k}"] = sum(hits) / len(hits)
    return result
