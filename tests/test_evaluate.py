"""Checkpoint evaluation: manifests, scoring from manifests only, MLflow, unavailable and bad data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import steermoe.model
from evaluators import audio_qa, function_calling
from evaluators.manifest import REQUIRED_FIELDS, read_manifest, score_manifest
from evaluators.tasks import TASKS
from jobs import evaluate as job
from steermoe import evaluate as ev
from steermoe.config import load_config
from steermoe.data.examples import Example
from steermoe.model import build_model, save_checkpoint
from steermoe.train.loop import task_scores

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = str(ROOT / "jobs" / "configs" / "eval_tiny.yaml")
TINY = ["model.encoder=tiny-random-whisper", "model.llm=tiny-random-llm"]
TIMER_TOOL = {
    "type": "function",
    "function": {
        "name": "set_timer",
        "description": "Start a timer",
        "parameters": {
            "type": "object",
            "properties": {"minutes": {"type": "integer"}},
            "required": ["minutes"],
        },
    },
}
ASR_ROWS = [("asr-b", "turn left"), ("asr-a", "hello world"), ("asr-c", "seven")]
BAD_IDS = {"bad-corrupt", "bad-nan"}


def _wav(path: Path, seconds: float, freq: float) -> float:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    return seconds


def _row(eid: str, wav: str, dur: float, task: str, instruction: str, target: str, **kw) -> dict:
    return (
        dict(
            id=eid,
            audio_path=wav,
            duration_s=dur,
            task=task,
            instruction=instruction,
            target=target,
        )
        | kw
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """``asr_set/test.jsonl`` (3 good clips + a corrupt file + a NaN clip) and ``mixed.jsonl``
    (one asr, two aqa, two fc rows)."""
    root = tmp_path_factory.mktemp("data")
    (root / "asr_set").mkdir()
    asr = []
    for i, (eid, text) in enumerate(ASR_ROWS):
        dur = _wav(root / "asr_set" / f"{eid}.wav", 0.5 + 0.4 * i, 200 + 100 * i)
        asr.append(_row(eid, f"{eid}.wav", dur, "asr", "", text))
    (root / "asr_set" / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" * 20)
    asr.append(_row("bad-corrupt", "corrupt.wav", 1.0, "asr", "", "broken"))
    nan = np.full(8000, np.nan, dtype=np.float32)
    sf.write(root / "asr_set" / "nan.wav", nan, 16000, subtype="FLOAT")
    asr.append(_row("bad-nan", "nan.wav", 0.5, "asr", "", "not a number"))
    _write(root / "asr_set" / "test.jsonl", asr)

    d = {name: _wav(root / f"{name}.wav", 0.6, f) for name, f in [("m1", 300), ("m2", 500)]}
    tools = [TIMER_TOOL]
    mixed = [
        _row("m-asr", "m1.wav", d["m1"], "asr", "Transcribe the audio.", "one two"),
        _row("m-aqa-open", "m1.wav", d["m1"], "aqa", "How many beeps?", "three", kind="open"),
        _row(
            "m-aqa-mc",
            "m2.wav",
            d["m2"],
            "aqa",
            "Is it high or low? Choices: high, low",
            "high",
            kind="multiple_choice",
            choices=["high", "low"],
        ),
        _row(
            "m-fc-simple",
            "m1.wav",
            d["m1"],
            "fc",
            "Tools: set_timer(minutes)",
            '[{"name":"set_timer","arguments":{"minutes":5}}]',
            tools=tools,
            expected_calls=[{"name": "set_timer", "arguments": {"minutes": [5]}}],
            category="simple",
        ),
        _row(
            "m-fc-none",
            "m2.wav",
            d["m2"],
            "fc",
            "Tools: set_timer(minutes)",
            "[]",
            tools=tools,
            expected_calls=[],
            category="irrelevance",
        ),
    ]
    _write(root / "mixed.jsonl", mixed)
    return root


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    """A tiny model with perturbed trainable tensors and its saved checkpoint."""
    cfg = load_config(None, TINY)
    model = build_model(cfg.model, cache_dir=cache, seed=1)
    with torch.no_grad():
        for _, p in model.trainable_parameters():
            p.add_(torch.randn_like(p))
    path = save_checkpoint(model, cfg.model, tmp_path_factory.mktemp("ckpt") / "ckpt")
    return model, path


def _config(data: Path, *more: str):
    return load_config(
        None, [*TINY, f"data.root={data}", "eval.batch_size=2", "eval.max_new_tokens=4", *more]
    )


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory):
    """A run in a SQLite tracking store whose artifacts stay in a temporary folder."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    from steermoe import tracking

    c = tracking.client(uri)
    exp = c.create_experiment("eval-test", artifact_location=(folder / "artifacts").as_uri())
    return c, uri, c.create_run(exp, run_name="eval").info.run_id


@pytest.fixture(scope="module")
def evaluated(data, trained, mlflow_run, tmp_path_factory):
    """One evaluation of both manifests plus two unavailable sets, logged to MLflow."""
    model, ckpt = trained
    _, uri, run_id = mlflow_run
    out = tmp_path_factory.mktemp("eval")
    specs = [
        str(data / "asr_set" / "test.jsonl"),
        "mixed.jsonl",  # relative to data.root
        "synthetic-aqa",  # data.root has no aqa/test.jsonl
        str(data / "nowhere.jsonl"),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = ev.evaluate_checkpoint(
            ckpt,
            _config(data),
            datasets=specs,
            output_dir=out,
            run_id=run_id,
            tracking_uri=uri,
            model=model,
        )
    return results, out, [str(w.message) for w in caught]


def test_manifests_have_every_field_and_every_good_example(evaluated):
    _, out, _ = evaluated
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["asr_set-test.jsonl", "mixed.jsonl"]
    asr = read_manifest(out / "asr_set-test.jsonl")
    assert [r["id"] for r in asr] == ["asr-a", "asr-b", "asr-c"]  # ordered by id
    assert {r["reference"] for r in asr} == {text for _, text in ASR_ROWS}
    mixed = read_manifest(out / "mixed.jsonl")
    assert sorted(r["task"] for r in mixed) == ["aqa", "aqa", "asr", "fc", "fc"]
    per_task = {
        "asr": {"wer"},
        "aqa": {"kind", "choices", "correct"},
        "fc": {"expected_calls", "tools", "category", "valid", "error_type"},
    }
    for r in asr + mixed:
        assert set(REQUIRED_FIELDS) | {"task"} | per_task[r["task"]] <= set(r)
        assert r["latency_s"] > 0 and r["duration_s"] > 0
        assert isinstance(r["prediction"], str)
        assert r["finish"] in ("stop", "repeat", "length")
        assert r["grammar_completed"] is False or r["task"] == "fc"


def test_verdicts_in_the_manifest_agree_with_the_evaluators(evaluated):
    _, out, _ = evaluated
    for r in read_manifest(out / "mixed.jsonl"):
        if r["task"] == "aqa":
            want = audio_qa.judge(r["prediction"], r["reference"], r["kind"], r["choices"])
            assert r["correct"] == want["match_any"]
        elif r["task"] == "fc":
            want = function_calling.check(r["prediction"], r["expected_calls"], r["tools"])
            assert (r["valid"], r["error_type"]) == (want["valid"], want["error_type"])


def test_verdict_of_known_answers():
    fc = Example(
        id="f",
        audio_path="x.wav",
        duration_s=1.0,
        task="fc",
        instruction="",
        target="",
        tools=[TIMER_TOOL],
        expected_calls=[{"name": "set_timer", "arguments": {"minutes": [5]}}],
    )
    assert ev.verdict(fc, '[{"name": "set_timer", "arguments": {"minutes": 5}}]')["valid"]
    wrong = ev.verdict(fc, "set_timer(minutes='five')")
    assert not wrong["valid"] and wrong["error_type"]
    assert wrong["category"] == "simple"
    mc = Example(
        id="q",
        audio_path="x.wav",
        duration_s=1.0,
        task="aqa",
        instruction="",
        target="high",
        kind="multiple_choice",
        choices=["high", "low"],
    )
    assert ev.verdict(mc, "It is high.")["correct"] is True
    assert ev.verdict(mc, "low")["correct"] is False
    asr = Example(
        id="a", audio_path="x.wav", duration_s=1.0, task="asr", instruction="", target="a b"
    )
    assert ev.verdict(asr, "a c")["wer"] == pytest.approx(50.0)


def test_validation_scores_are_the_primary_metrics_of_the_manifest_rows():
    def example(eid, task, target, **fields):
        return Example(
            id=eid,
            audio_path="x.wav",
            duration_s=1.0,
            task=task,
            instruction="",
            target=target,
            **fields,
        )

    key = [{"name": "set_timer", "arguments": {"minutes": [5]}}]
    rows = [
        (example("a1", "asr", "turn left now"), "turn right now"),
        (example("a2", "asr", "hello"), "hello"),
        (example("q1", "aqa", "red", meta={"answers": ["red", "crimson"]}), "Crimson."),
        (example("q2", "aqa", "high", kind="multiple_choice", choices=["high", "low"]), "low"),
        (example("f1", "fc", "", tools=[TIMER_TOOL], expected_calls=key), "set_timer(minutes=5)"),
        (example("f2", "fc", "", tools=[TIMER_TOOL], expected_calls=key), "no call"),
    ]
    scores = task_scores(rows)
    assert set(scores) == {task.val_metric for task in TASKS.values()}
    for name, task in TASKS.items():
        records = [ev.make_record(ex, pred, 0.1) for ex, pred in rows if ex.task == name]
        assert scores[task.val_metric] == score_manifest(records, name)[task.scorer.PRIMARY]
    assert scores == pytest.approx(
        {"val_wer": 25.0, "val_aqa_accuracy": 0.5, "val_fc_accuracy": 0.5}
    )


def test_metrics_are_the_scores_of_the_written_manifests(evaluated):
    results, out, _ = evaluated
    asr = score_manifest(out / "asr_set-test.jsonl", "asr")
    assert {k: results["asr_set-test"][k] for k in asr} == asr
    assert set(results["asr_set-test"]) - set(asr) <= {"unfinished"}
    assert results["asr_set-test"]["num_samples"] == 3
    mixed = read_manifest(out / "mixed.jsonl")
    assert set(results["mixed"]) == {"asr", "aqa", "fc"}
    for task in ("asr", "aqa", "fc"):
        want = score_manifest([r for r in mixed if r["task"] == task], task)
        got = results["mixed"][task]
        assert {k: got[k] for k in want} == want
        durations = sum(r["duration_s"] for r in mixed if r["task"] == task)
        latencies = sum(r["latency_s"] for r in mixed if r["task"] == task)
        assert got["rtfx"] == pytest.approx(durations / latencies)
        rows = [r for r in mixed if r["task"] == task]
        assert got["unfinished"] == sum(r["finish"] != "stop" for r in rows) / len(rows)


def test_score_only_reproduces_the_metrics_without_a_model(evaluated, monkeypatch):
    results, out, _ = evaluated

    def no_model(*args, **kwargs):
        raise AssertionError("scoring must not build or run a model")

    monkeypatch.setattr(steermoe.model, "build_model", no_model)
    monkeypatch.setattr(steermoe.model.SteerMoEModel, "generate", no_model)
    again = ev.score_only(out)
    assert again["asr_set-test"] == results["asr_set-test"]
    assert again["mixed"] == results["mixed"]
    assert again["failed"] == {}


def test_bad_audio_is_skipped_and_reported_by_id(evaluated):
    results, _, messages = evaluated
    skipped = results["skipped"]["asr_set-test"]
    assert set(skipped) == BAD_IDS
    assert "NaN" in skipped["bad-nan"]
    assert any("bad-corrupt" in m and "bad-nan" in m for m in messages)
    assert results["skipped"]["mixed"] == {}


def test_missing_datasets_are_reported_not_fatal(evaluated):
    results, out, messages = evaluated
    assert set(results["unavailable"]) == {"synthetic-aqa", "nowhere"}
    assert "jobs.build_data" in results["unavailable"]["synthetic-aqa"]
    assert not (out / "synthetic-aqa.jsonl").exists()
    assert any("unavailable dataset synthetic-aqa" in m for m in messages)
    assert results["asr_set-test"]["num_samples"] == 3  # the others still ran


def test_mlflow_holds_metrics_manifests_and_samples(evaluated, mlflow_run, tmp_path):
    results, out, _ = evaluated
    c, _, run_id = mlflow_run
    metrics = c.get_run(run_id).data.metrics
    assert metrics["eval.asr_set-test.wer"] == pytest.approx(results["asr_set-test"]["wer"])
    assert metrics["eval.asr_set-test.num_skipped"] == 2
    assert metrics["eval.mixed.fc.accuracy"] == pytest.approx(results["mixed"]["fc"]["accuracy"])
    assert metrics["eval.mixed.aqa.num_samples"] == 2
    names = {a.path for a in c.list_artifacts(run_id, "eval")}
    assert {"eval/asr_set-test.jsonl", "eval/mixed.jsonl", "eval/summary.json"} <= names
    assert "eval/samples.json" in names
    local = c.download_artifacts(run_id, "eval/mixed.jsonl", str(tmp_path))
    assert Path(local).read_text() == (out / "mixed.jsonl").read_text()
    table = json.loads(
        Path(c.download_artifacts(run_id, "eval/samples.json", str(tmp_path))).read_text()
    )
    assert "prediction" in table["columns"] and len(table["data"]) == 3 + 5


def test_metric_names_flatten_nested_counts():
    results = {
        "fc": {"accuracy": 0.5, "error_types": {"ast_decoder:decoder_failed": 2}, "note": "x"},
        "unavailable": {"fsdd": "missing"},
        "skipped": {"fc": {"a": "corrupt"}},
        "failed": {},
    }
    assert ev.metric_dict(results) == {
        "eval.fc.accuracy": 0.5,
        "eval.fc.error_types.ast_decoder_decoder_failed": 2.0,
        "eval.fc.num_skipped": 1.0,
    }


def test_building_from_the_checkpoint_gives_the_same_predictions(
    evaluated, data, trained, cache, monkeypatch, tmp_path
):
    _, out, _ = evaluated
    _, ckpt = trained
    monkeypatch.setenv("STEERMOE_CACHE", str(cache))
    spec = str(data / "asr_set" / "test.jsonl")
    with pytest.warns(UserWarning, match="bad-nan"):
        results = ev.evaluate_checkpoint(ckpt, _config(data), datasets=[spec], output_dir=tmp_path)
    rebuilt = read_manifest(tmp_path / "asr_set-test.jsonl")
    original = read_manifest(out / "asr_set-test.jsonl")
    assert [r["prediction"] for r in rebuilt] == [r["prediction"] for r in original]
    assert results["unavailable"] == {}
    assert json.loads((tmp_path / "summary.json").read_text())["checkpoint"] == str(ckpt)


def test_selection_takes_the_first_examples_by_id():
    rows = [
        Example(id=i, audio_path="x", duration_s=d, task="asr", instruction="", target="t")
        for i, d in [("c", 1.0), ("a", 3.0), ("d", 0.5), ("b", 2.0)]
    ]
    assert [e.id for e in ev.select(rows, 2)] == ["a", "b"]
    assert [e.id for e in ev.select(rows, None)] == ["a", "b", "c", "d"]


def test_dataset_labels():
    assert ev.dataset_label("librivox") == "librivox"
    assert ev.dataset_label("data/asr/test.jsonl") == "asr-test"
    assert ev.dataset_label("/x/mix set.jsonl") == "mix-set"
    assert ev.dataset_label("skipped.jsonl") == "skipped-data"


def test_fsdd_gets_digit_accuracy():
    records = [
        {
            "id": i,
            "task": "asr",
            "duration_s": 1,
            "latency_s": 0.5,
            "reference": "seven",
            "prediction": p,
        }
        for i, p in (("1", "Seven."), ("2", "7"), ("3", "eight"))
    ]
    metrics = ev.score_records(records, "fsdd")
    assert metrics["digit_accuracy"] == pytest.approx(2 / 3)
    assert metrics["wer"] == pytest.approx(100 / 3)  # Whisper's normaliser: "seven" -> "7"
    assert "digit_accuracy" not in ev.score_records(records, "librivox")


def test_tiny_config_loads_with_tiny_backbones():
    cfg = load_config(TINY_CONFIG)
    assert (cfg.model.encoder, cfg.model.llm) == ("tiny-random-whisper", "tiny-random-llm")
    assert "librivox" in cfg.eval.datasets and cfg.eval.max_examples


def test_job_rescores_and_prints_a_table(evaluated, capsys):
    results, out, _ = evaluated
    rc = job.main([TINY_CONFIG, f"eval.output_dir={out}", "--score-only"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "asr_set-test" in printed and "mixed/fc" in printed
    assert f"{results['asr_set-test']['wer']:.4g}" in printed
    assert job.main([TINY_CONFIG]) == 2


def test_clips_longer_than_the_encoder_window_are_skipped_not_cut(trained, data):
    model, _ = trained
    limits = ev.audio_limits(_config(data).data, model)
    # The tiny Whisper has Whisper's full 30 s window: the data limit (30 s) is the tighter one.
    assert model.max_audio_s == pytest.approx(30.0)
    assert limits.max_audio_s == pytest.approx(30.0)
    assert ev.audio_limits(limits.model_copy(update={"max_audio_s": 2.0}), model).max_audio_s == 2.0
