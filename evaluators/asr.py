"""ASR scoring with the Open ASR Leaderboard's classic protocol (README: The workflow, evaluate).

Both sides go through Whisper's normaliser (``EnglishTextNormalizer`` for English,
``BasicTextNormalizer`` otherwise, from the ``whisper_normalizer`` package). Pairs whose
reference is empty after normalisation are dropped with their predictions. WER is
corpus-level: the sum of substitutions, deletions and insertions over the sum of reference
words, computed by jiwer and reported in percent.

Languages written without spaces (see ``NO_SPACE_LANGUAGES``) have no meaningful word
boundaries, so their primary metric is CER: whitespace is removed after normalisation and
the error rate is computed over characters (for other languages CER counts spaces, as
jiwer does). ``wer`` is still reported for them (over whatever whitespace-separated tokens
the normaliser leaves) but ``primary_metric(language)`` returns ``"cer"``; a sweep on
such a language must optimise ``cer``. The normaliser is Whisper's own, default settings
included: it turns Unicode marks (e.g. Thai or Devanagari vowel signs) into spaces, which
keeps numbers comparable with published ones but makes CER blind to errors in those marks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import cache

import jiwer
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

PRIMARY = "wer"
HIGHER_IS_BETTER = False

# ISO 639 codes of languages normally written without spaces between words.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "bo"})


def _base_language(language: str) -> str:
    """Returns the lower-case ISO code without a region, e.g. ``"en-US"`` -> ``"en"``."""
    return re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]


def primary_metric(language: str = "en") -> str:
    """Returns the metric to rank on for ``language``: ``"cer"`` without spaces, else ``"wer"``."""
    return "cer" if _base_language(language) in NO_SPACE_LANGUAGES else "wer"


@cache
def _normalizer(language: str) -> Callable[[str], str]:
    """Returns Whisper's normaliser for ``language``, stripped of outer whitespace."""
    norm = EnglishTextNormalizer() if _base_language(language) == "en" else BasicTextNormalizer()
    return lambda text: norm(text).strip()


def normalize(text: str, language: str = "en") -> str:
    """Applies the Whisper normaliser used for ``language``.

    Args:
        text: Raw transcript.
        language: ISO 639 code; ``"en"`` selects ``EnglishTextNormalizer``, anything else
            ``BasicTextNormalizer``.

    Returns:
        The normalised transcript without leading or trailing whitespace.
    """
    return _normalizer(language)(text)


def _check_lengths(**named: Sequence) -> None:
    """Raises ValueError naming the lengths when the sequences differ in length."""
    lengths = {name: len(seq) for name, seq in named.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {detail}")


def score(
    predictions: Sequence[str], references: Sequence[str], language: str = "en"
) -> dict[str, float]:
    """Scores transcripts against references.

    Args:
        predictions: Model transcripts, one per example.
        references: Reference transcripts, same length as ``predictions``.
        language: ISO 639 code of the audio (selects normaliser and primary metric).

    Returns:
        ``wer`` and ``cer`` (percent, normalised), ``wer_raw`` (percent, no normalisation),
        ``num_samples`` (pairs kept), ``num_empty_references_dropped``, and the word-level
        ``substitutions``, ``deletions``, ``insertions`` and ``reference_words``.

    Raises:
        ValueError: On a length mismatch, or when no reference is left after dropping
            references that are empty after normalisation (nothing to score).
    """
    _check_lengths(predictions=predictions, references=references)
    kept = [
        (pred, ref, normalize(pred, language), normalize(ref, language))
        for pred, ref in zip(predictions, references)
    ]
    kept = [row for row in kept if row[3]]
    dropped = len(predictions) - len(kept)
    if not kept:
        raise ValueError(
            f"no non-empty reference to score: {len(predictions)} examples, "
            f"{dropped} empty after normalisation"
        )
    raw_preds, raw_refs, preds, refs = (list(col) for col in zip(*kept))
    words = jiwer.process_words(refs, preds)
    raw = jiwer.process_words([r.strip() for r in raw_refs], [p.strip() for p in raw_preds])
    if _base_language(language) in NO_SPACE_LANGUAGES:
        # Spacing is arbitrary in these scripts: score characters with whitespace removed.
        chars = jiwer.process_characters(
            [re.sub(r"\s+", "", r) for r in refs], [re.sub(r"\s+", "", p) for p in preds]
        )
    else:
        chars = jiwer.process_characters(refs, preds)
    return {
        "wer": 100.0 * words.wer,
        "wer_raw": 100.0 * raw.wer,
        "cer": 100.0 * chars.cer,
        "num_samples": len(kept),
        "num_empty_references_dropped": dropped,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "reference_words": words.substitutions + words.deletions + words.hits,
    }


def rtfx(durations_s: Sequence[float], latencies_s: Sequence[float]) -> float:
    """Returns the inverse real-time factor: total audio seconds / total inference seconds.

    Args:
        durations_s: Audio duration of each example, in seconds.
        latencies_s: Inference time of each example, in seconds.

    Raises:
        ValueError: On a length mismatch, a negative or non-finite value, or zero total latency.
    """
    _check_lengths(durations_s=durations_s, latencies_s=latencies_s)
    values = [*durations_s, *latencies_s]
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError("durations and latencies must be finite and non-negative")
    total_latency = float(sum(latencies_s))
    if total_latency <= 0:
        raise ValueError(f"total latency must be positive, got {total_latency}")
    return float(sum(durations_s)) / total_latency
