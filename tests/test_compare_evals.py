"""Paired comparison of two evaluation folders (`jobs.compare_evals`)."""

from __future__ import annotations

import random

import pytest

from evaluators.manifest import write_manifest
from jobs import compare_evals as compare_job
from steermoe.compare_evals import _Side, compare_folders, compare_manifests
from steermoe.evaluate import score_records

SENTENCES = [
    "the cat sat on the mat",
    "a quick brown fox jumps",
    "call me back after six",
    "it was greek to me",
    "no one can make you feel inferior",
    "you can reach me on six eight four",
]


def asr_rows(predictions, references=SENTENCES, prefix="asr"):
    return [
        {
            "id": f"{prefix}-{i:03d}",
            "task": "asr",
            "duration_s": 2.0,
            "latency_s": 0.5,
            "reference": ref,
            "prediction": pred,
            "language": "en",
        }
        for i, (pred, ref) in enumerate(zip(predictions, references))
    ]


def aqa_rows(answers, truth):
    return [
        {
            "id": f"aqa-{i:03d}",
            "task": "aqa",
            "duration_s": 2.0,
            "latency_s": 0.5,
            "reference": ref,
            "prediction": pred,
            "language": "en",
            "kind": "open",
        }
        for i, (pred, ref) in enumerate(zip(answers, truth))
    ]


def garble(sentence: str, rng: random.Random) -> str:
    words = sentence.split()
    return " ".join(w if rng.random() < 0.5 else "uh" for w in words)


def test_identical_evaluations_differ_by_nothing():
    rows = asr_rows([garble(s, random.Random(i)) for i, s in enumerate(SENTENCES)])
    (c,) = compare_manifests("synthetic-asr", rows, rows, resamples=200)
    assert (c.metric, c.a, c.b, c.difference) == ("wer", c.a, c.a, 0.0)
    assert (c.low, c.high, c.a_better, c.b_better) == (0.0, 0.0, 0, 0)
    assert c.verdict == "within noise" and c.paired == len(SENTENCES)


def test_a_uniformly_better_transcriber_wins_outside_the_noise():
    worse = asr_rows(["uh " + s.split(" ", 1)[1] + " uh" for s in SENTENCES])
    better = asr_rows(SENTENCES)  # perfect
    (c,) = compare_manifests("synthetic-asr", worse, better, resamples=300)
    assert c.b == 0.0 and c.a > 0 and c.difference < 0
    assert c.high < 0, "every resample favours B, so the interval lies below 0"
    assert (c.a_better, c.b_better) == (0, len(SENTENCES))
    assert c.verdict == "B better"  # lower WER is better
    (flipped,) = compare_manifests("synthetic-asr", better, worse, resamples=300)
    assert flipped.verdict == "A better" and flipped.low > 0


def test_the_sums_reproduce_the_scorer_on_any_resample():
    rng = random.Random(3)
    rows = asr_rows([garble(s, rng) + " extra" * rng.randrange(3) for s in SENTENCES])
    side = _Side("synthetic-asr", "wer", rows)
    assert side.additive
    for _ in range(20):
        draw = [rng.randrange(len(rows)) for _ in rows]
        want = score_records([rows[i] for i in draw], "synthetic-asr")["wer"]
        assert side.value(draw) == pytest.approx(want, abs=1e-9)


def test_each_task_of_a_mixed_set_ranks_by_its_own_metric_and_fsdd_by_digits():
    truth = ["red", "blue", "green", "seven"]
    mixed_a = asr_rows(SENTENCES[:3]) + aqa_rows(["red", "no", "no", "no"], truth)
    mixed_b = asr_rows(SENTENCES[:3]) + aqa_rows(["red", "blue", "green", "seven"], truth)
    by_task = {c.task: c for c in compare_manifests("mix", mixed_a, mixed_b, resamples=100)}
    assert (by_task["asr"].metric, by_task["aqa"].metric) == ("wer", "accuracy")
    assert (by_task["aqa"].a, by_task["aqa"].b) == (0.25, 1.0)
    assert by_task["aqa"].higher_is_better and by_task["aqa"].b_better == 3
    digits = ["one", "four", "six", "seven"]
    heard = ["One.", "", "It is 6.", "seven eight"]  # right, silent, right, a second digit
    (fsdd,) = compare_manifests("fsdd", asr_rows(digits, digits), asr_rows(heard, digits))
    assert fsdd.metric == "digit_accuracy" and fsdd.higher_is_better
    assert (fsdd.a, fsdd.b, fsdd.a_better, fsdd.b_better) == (1.0, 0.5, 2, 0)


def test_folders_pair_by_id_and_bad_input_is_named(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write_manifest(a / "synthetic-asr.jsonl", asr_rows(SENTENCES))
    write_manifest(b / "synthetic-asr.jsonl", asr_rows(SENTENCES[:4]))  # two fewer
    write_manifest(b / "librivox.jsonl", asr_rows(SENTENCES))  # only in B: not compared
    (c,) = compare_folders(a, b, resamples=50)
    assert (c.dataset, c.paired, c.unpaired) == ("synthetic-asr", 4, 2)
    assert compare_job.main([str(a), str(b), "--resamples", "50"]) == 0
    out = capsys.readouterr().out
    assert "synthetic-asr" in out and "2 examples in only one manifest were left out" in out

    write_manifest(tmp_path / "c" / "fsdd.jsonl", asr_rows(SENTENCES))
    assert compare_job.main([str(a), str(tmp_path / "c")]) == 2
    assert "share no dataset manifest" in capsys.readouterr().err
    assert compare_job.main([str(a), str(tmp_path / "nowhere")]) == 2
    assert "evaluation folder not found" in capsys.readouterr().err
    write_manifest(tmp_path / "d" / "synthetic-asr.jsonl", asr_rows(SENTENCES, prefix="x"))
    with pytest.raises(ValueError, match="share no example id"):
        compare_folders(a, tmp_path / "d")


def test_resamples_of_only_unscorable_rows_are_left_out_of_the_interval():
    refs = ["", "hello there world"]  # the first is empty: the scorer drops it
    a = asr_rows(["anything", "hello world"], refs)
    b = asr_rows(["anything", "hello there world"], refs)
    (c,) = compare_manifests("synthetic-asr", a, b, resamples=200)
    assert (c.a, c.b) == pytest.approx((100 / 3, 0.0))
    assert c.low == c.high == pytest.approx(-100 / 3), "a quarter of the draws hold no scorable row"
    assert (c.a_better, c.b_better) == (0, 1)
