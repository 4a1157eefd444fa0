"""Audio QA scorer: normalisation table, yes/no, MMAU multiple choice, any vs majority."""

import pytest

from evaluators import audio_qa
from evaluators.tasks import TASKS, mode_for

NORMALISE_CASES = [
    ("The Dog", "dog"),
    ("a car, an engine and the train.", "car engine and train"),
    ("Twenty one", "21"),
    ("twenty-one birds", "21 birds"),
    ("three", "3"),
    ("zero", "0"),
    ("one hundred and five", "105"),
    ("a hundred", "100"),
    ("two thousand twenty four", "2024"),
    ("one two", "1 2"),
    ("It's 3.5 km!", "its 3.5 km"),
    ("1,000 people", "1000 people"),
    ("  Lots   of\tspace ", "lots of space"),
    ("there are seven birds and twenty dogs", "there are 7 birds and 20 dogs"),
    ("Theory", "theory"),  # "the" only as a whole word
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISE_CASES)
def test_normalize_answer_table(raw, expected):
    assert audio_qa.normalize_answer(raw) == expected


def test_metadata_and_registry():
    assert audio_qa.PRIMARY == "accuracy"
    assert audio_qa.HIGHER_IS_BETTER is True
    assert TASKS["aqa"].scorer is audio_qa
    assert mode_for("val_aqa_accuracy") == mode_for("mixed.aqa.accuracy") == "max"


def test_open_exact_match_after_normalisation():
    result = audio_qa.score(
        ["The dog.", "three birds", "a cat", "dogs"], ["dog", "3 birds", "The cat!", "dog"]
    )
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["num_samples"] == 4


YES_NO_CASES = [
    ("Yes.", "yes", True),
    ("Yeah, definitely", "yes", True),
    ("True", "yes", True),
    ("No, it is not", "no", True),
    ("false", "no", True),
    ("No, yes", "yes", False),  # first yes/no word counts
    ("I am not sure", "yes", False),
    ("I am not sure", "no", False),
    ("Nobody knows", "no", False),  # "nobody" is not "no"
    ("Yes", "No", False),
]


@pytest.mark.parametrize(("prediction", "reference", "right"), YES_NO_CASES)
def test_yes_no(prediction, reference, right):
    result = audio_qa.score([prediction], [reference], kind="yes_no")
    assert result["accuracy"] == float(right)


def test_yes_no_reference_without_answer_raises():
    with pytest.raises(ValueError, match="yes/no"):
        audio_qa.score(["yes"], ["maybe"], kind="yes_no")


CHOICES = ["car engine", "motorcycle engine", "train horn", "dog barking"]
MC_CASES = [
    ("car engine", True),
    ("The answer is: a car engine.", True),
    ("(A) Car Engine", True),
    ("engine", False),  # misses "car"
    ("motorcycle engine", False),
    ("car engine or motorcycle engine", False),  # "motorcycle" belongs to a wrong choice only
    ("car engine, not a train", False),  # "train" is unique to a wrong choice
    ("", False),
]


@pytest.mark.parametrize(("prediction", "right"), MC_CASES)
def test_multiple_choice_mmau_rule(prediction, right):
    result = audio_qa.score([prediction], ["car engine"], kind="multiple_choice", choices=[CHOICES])
    assert result["accuracy"] == float(right)


def test_multiple_choice_needs_choices():
    with pytest.raises(ValueError, match="choices"):
        audio_qa.score(["car"], ["car"], kind="multiple_choice")


def test_any_vs_majority():
    refs = [["rain", "rain", "thunder"], ["rain", "rain", "thunder"], ["birds", "Birds.", "wind"]]
    result = audio_qa.score(["rain", "thunder", "wind"], refs)
    assert result["accuracy_any"] == pytest.approx(1.0)
    assert result["accuracy"] == result["accuracy_any"]
    # majority: "rain" (2/3) and "birds" (2/3 after normalisation)
    assert result["accuracy_majority"] == pytest.approx(1 / 3)


def test_majority_tie_accepts_any_tied_answer():
    # 1-1 tie: either answer is a majority answer; 2-1-1: "wind" is not
    refs = [["rain", "thunder"], ["rain", "thunder"], ["rain", "rain", "thunder", "wind"]]
    result = audio_qa.score(["rain", "thunder", "wind"], refs)
    assert result["accuracy_majority"] == pytest.approx(2 / 3)


def test_yes_no_majority_uses_mapped_labels():
    verdict = audio_qa.judge("yes", ["Yeah", "yes it is", "no"], kind="yes_no")
    assert verdict == {"match_any": True, "match_majority": True}
    verdict = audio_qa.judge("no", ["Yeah", "yes it is", "no"], kind="yes_no")
    assert verdict == {"match_any": True, "match_majority": False}


def test_mixed_kinds_report_per_kind():
    result = audio_qa.score(
        ["yes", "dog", "car engine"],
        ["no", "dog", "car engine"],
        kind=["yes_no", "open", "multiple_choice"],
        choices=[None, None, CHOICES],
    )
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["accuracy_yes_no"] == 0.0
    assert result["accuracy_open"] == 1.0
    assert result["accuracy_multiple_choice"] == 1.0


def test_errors():
    with pytest.raises(ValueError, match="length mismatch"):
        audio_qa.score(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        audio_qa.score([], [])
    with pytest.raises(ValueError, match="unknown kind"):
        audio_qa.score(["a"], ["a"], kind="essay")
    with pytest.raises(ValueError, match="no reference"):
        audio_qa.score(["a"], [[]])
