"""ASR scorer: Whisper normaliser table, hand-computed WER, agreement with jiwer by hand."""

import math
import random

import jiwer
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from evaluators import asr
from evaluators.tasks import TASKS, mode_for

NORMALISER_CASES = [
    ("Hello, World!", "hello world"),
    ("twenty five", "25"),
    ("Twenty-five dollars", "$25"),
    ("one hundred and five", "105"),
    ("two point five", "2.5"),
    ("ten percent", "10%"),
    ("It's 5 km.", "it is 5 km"),
    ("I can't go, Mr. Smith", "i can not go mister smith"),
    ("They won't, we'll see", "they will not we will see"),
    ("The colour of the centre", "the color of the center"),
    ("She apologised", "she apologized"),
    ("Um, hmm, okay [laughter]", "okay"),
    ("1,000 people", "1000 people"),
    ("  MANY   spaces\there ", "many spaces here"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISER_CASES)
def test_english_normaliser_table(raw, expected):
    assert asr.normalize(raw, "en") == expected


def test_basic_normaliser_for_other_languages():
    assert asr.normalize("¡Hola, Señor (ruido)!", "es") == "hola señor"
    assert asr.normalize("Le Colour", "fr-FR") == "le colour"  # no British->US mapping


def test_metadata_and_registry():
    assert asr.PRIMARY == "wer"
    assert asr.HIGHER_IS_BETTER is False
    assert TASKS["asr"].scorer is asr
    assert mode_for("val_wer") == mode_for("librivox.wer") == mode_for("x.cer") == "min"
    assert asr.primary_metric("en") == "wer"
    assert asr.primary_metric("zh-CN") == "cer"
    assert asr.primary_metric("th") == "cer"


def test_wer_hand_computed():
    # refs (normalised): "the cat sat on the mat" (6 words), "hello world" (2 words)
    # pred 1: "the cat sit on mat": 1 substitution (sat->sit), 1 deletion (the)
    # pred 2: "hello big world": 1 insertion
    result = asr.score(
        ["The cat sit on mat", "hello big world"], ["The cat sat on the mat.", "Hello world"]
    )
    assert result["substitutions"] == 1
    assert result["deletions"] == 1
    assert result["insertions"] == 1
    assert result["reference_words"] == 8
    assert result["wer"] == pytest.approx(100 * 3 / 8)
    assert result["num_samples"] == 2
    assert result["num_empty_references_dropped"] == 0


def test_corpus_level_not_mean_of_utterances():
    # utterance WERs 100% (1 word) and 0% (9 words): corpus WER 10%, mean would be 50%
    result = asr.score(["x", "a b c d e f g h i"], ["y", "a b c d e f g h i"])
    assert result["wer"] == pytest.approx(10.0)


def test_normalisation_vs_raw():
    result = asr.score(["twenty five colours"], ["Twenty-five colors."])
    assert result["wer"] == 0.0
    # raw: "twenty five colours" vs "Twenty-five colors.": 2 subs + 1 ins over 2 words
    assert result["wer_raw"] == pytest.approx(150.0)


def test_cer_hand_computed():
    # "abcd" vs "abxd": 1 substitution over 4 characters
    assert asr.score(["abxd"], ["abcd"])["cer"] == pytest.approx(25.0)


def test_empty_references_dropped_with_predictions():
    result = asr.score(["garbage words", "hello world", "uh"], ["[noise]", "hello world", "um"])
    assert result["num_samples"] == 1
    assert result["num_empty_references_dropped"] == 2
    assert result["wer"] == 0.0
    assert result["wer_raw"] == 0.0


def test_empty_prediction_counts_deletions():
    result = asr.score(["", "cat"], ["cat dog bird", "cat"])
    assert result["deletions"] == 3
    assert result["wer"] == pytest.approx(100 * 3 / 4)


def test_successive_digit_words_collapse():
    # Whisper reads successive single digits as one number: the reference is one word.
    assert asr.normalize("one two three four") == "1234"
    assert asr.score(["1234"], ["one two three four"])["reference_words"] == 1


def test_all_references_empty_raises():
    with pytest.raises(ValueError, match="no non-empty reference"):
        asr.score(["something"], ["(inaudible)"])
    with pytest.raises(ValueError, match="no non-empty reference"):
        asr.score([], [])


def test_length_mismatch_names_lengths():
    with pytest.raises(ValueError, match="predictions=2, references=1"):
        asr.score(["a", "b"], ["a"])


def test_no_space_language_primary_is_cer():
    # BasicTextNormalizer turns the commas into spaces; CER ignores spacing for zh.
    result = asr.score(["你好世界", "今天天气很好"], ["你好，世界！", "今天天气不好"])
    result_zh = asr.score(
        ["你好世界", "今天天气很好"], ["你好，世界！", "今天天气不好"], language="zh"
    )
    assert result_zh["cer"] == pytest.approx(100 * 1 / 10)  # 1 substitution over 4 + 6 chars
    assert result["cer"] != result_zh["cer"]  # with spaces counted (en path) it differs


def test_rtfx():
    assert asr.rtfx([10.0, 20.0], [1.0, 2.0]) == pytest.approx(10.0)
    assert asr.rtfx([3.0], [0.5]) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="durations_s=2, latencies_s=1"):
        asr.rtfx([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        asr.rtfx([1.0], [0.0])
    with pytest.raises(ValueError, match="non-negative"):
        asr.rtfx([1.0], [-1.0])


def _levenshtein(ref: list[str], hyp: list[str]) -> int:
    """Naive word edit distance, independent of jiwer."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i]
        for j, h in enumerate(hyp, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def test_agrees_with_independent_computation_on_random_pairs():
    rng = random.Random(1234)
    vocab = [
        "the", "colour", "color", "twenty", "five", "dollars", "Mr.", "it's", "can't", "cat",
        "sat", "on", "mat", "hello", "world", "um", "[noise]", "centre", "3", "%", "percent",
        "one", "hundred", "and", "Paris", "isn't", "organise", "organize", "first", "a",
    ]  # fmt: skip

    def sentence() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12)))

    refs = [sentence() for _ in range(300)]
    preds = [
        r if rng.random() < 0.3 else sentence() if rng.random() < 0.5 else r + " " + sentence()
        for r in refs
    ]
    result = asr.score(preds, refs)

    norm = EnglishTextNormalizer()
    pairs = [(norm(p).strip(), norm(r).strip()) for p, r in zip(preds, refs)]
    kept = [(p, r) for p, r in pairs if r]
    assert result["num_samples"] == len(kept)
    assert result["num_empty_references_dropped"] == len(refs) - len(kept)
    expected = 100 * jiwer.wer([r for _, r in kept], [p for p, _ in kept])
    assert result["wer"] == pytest.approx(expected)
    errors = sum(_levenshtein(r.split(), p.split()) for p, r in kept)
    words = sum(len(r.split()) for _, r in kept)
    assert result["wer"] == pytest.approx(100 * errors / words)
    assert result["reference_words"] == words
    s, d, i = result["substitutions"], result["deletions"], result["insertions"]
    assert s + d + i == errors
    assert not math.isnan(result["cer"])
