"""Synthetic suites: split disjointness (texts and voices), determinism, incremental rebuild."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

import pytest

from steermoe.config import ConfigError
from steermoe.data.examples import read_manifest
from steermoe.synth import text, tts
from steermoe.synth.build import BuildReport, _voices, build, fc_template_splits, plan
from steermoe.synth.build_config import load_build_config

SPLITS = ("train", "validation", "test")
TINY = [
    "workers=0",
    "asr.counts={train: 5, validation: 2, test: 2}",
    "aqa.counts={train: 6, validation: 2, test: 2}",
    "fc.counts={train: 6, validation: 2, test: 2}",
    "progress_every_s=1000",
]


def _build(out, *extra):
    config = load_build_config(None, [*TINY, f"out={out}", *extra])
    return build(config, log=lambda *_: None)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("suites")
    report = _build(out)
    return out, report


def _manifests(out):
    return {
        (s, sp): read_manifest(out / s / f"{sp}.jsonl")
        for s in ("asr", "aqa", "fc")
        for sp in SPLITS
    }


@pytest.mark.slow  # synthesises speech: ~10-20 s on a shared 2-core box
def test_build_writes_every_suite_and_split(built):
    out, report = built
    manifests = _manifests(out)
    assert report.failed == [] or all("too" in r for _, r in report.failed)
    assert len(manifests[("asr", "train")]) == 5 and len(manifests[("fc", "test")]) == 2
    for (suite, split), rows in manifests.items():
        assert rows, (suite, split)
        assert all(r.task == suite and r.id.startswith(f"{suite}-{split}-") for r in rows)
        assert all(r.audio_path.startswith(str(out / suite / "audio" / split)) for r in rows)
    for row in manifests[("asr", "train")]:
        assert 3.0 <= row.duration_s <= 15.0
    fc_rows = [r for sp in SPLITS for r in manifests[("fc", sp)]]
    assert all(r.tools and r.instruction.startswith("Tools:") for r in fc_rows)
    assert all(
        json.loads(r.target)
        == [{"name": c["name"], "arguments": c["arguments"]} for c in json.loads(r.target)]
        for r in fc_rows
    )
    line = (out / "asr" / "train.jsonl").read_text().splitlines()[0]
    assert json.loads(line)["audio_path"].startswith("audio/train/")  # relative on disk


@pytest.mark.slow  # synthesises speech: ~10-20 s on a shared 2-core box
def test_splits_are_disjoint_in_texts_and_voices(built):
    out, _ = built
    manifests = _manifests(out)
    texts, voices = defaultdict(set), defaultdict(set)
    for (suite, split), rows in manifests.items():
        for r in rows:
            if r.voice != "tones":  # generated tones have no text and no voice
                voices[split].add(r.voice)
                texts[split].add(
                    (
                        suite,
                        r.meta["text_key"].split(":", 1)[0]
                        + ":"
                        + r.meta["text_key"].split(":", 1)[1],
                    )
                )
                if suite == "asr":
                    texts[split].add(("asr-text", r.target))
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not texts[a] & texts[b], (a, b, texts[a] & texts[b])
        assert not voices[a] & voices[b], (a, b, voices[a] & voices[b])


def test_voice_and_template_assignment_is_disjoint_and_wide():
    splits = tts.split_voices(tts.all_voices())
    ids = {s: {v.id for v in vs} for s, vs in splits.items()}
    assert len(ids["train"]) >= 20
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
    assert {v.gender for v in splits["test"]} == {"male", "female"}
    # kal and kal16 are one speaker: same split
    kal = {s for s, vs in ids.items() if {"flite:kal", "flite:kal16"} & vs}
    assert len(kal) == 1
    fc_splits = fc_template_splits(0)
    assert set(fc_splits.values()) == set(SPLITS)
    tools_in = defaultdict(set)
    for key, split in fc_splits.items():
        tools_in[split].add(key.split(":")[0])
    assert tools_in["train"] >= {k.split(":")[0] for k in fc_splits if ":" in k} - {"chitchat"}


@pytest.mark.slow  # synthesises speech: ~10-20 s on a shared 2-core box
def test_same_seed_gives_identical_manifests_and_audio(built, tmp_path):
    out, _ = built
    _build(tmp_path)
    for suite in ("asr", "aqa", "fc"):
        for split in SPLITS:
            a = (out / suite / f"{split}.jsonl").read_text()
            b = (tmp_path / suite / f"{split}.jsonl").read_text()
            assert a == b, (suite, split)
    for row in read_manifest(tmp_path / "asr" / "train.jsonl"):
        other = out / "asr" / "audio" / "train" / row.audio_path.rsplit("/", 1)[1]
        assert _md5(row.audio_path) == _md5(other)
    assert (tmp_path / "asr" / "train.jsonl").read_text() != ""


def test_other_seed_changes_the_build(tmp_path):
    config = load_build_config(None, [*TINY, f"out={tmp_path}", "seed=7"])
    jobs7 = plan(config, _voices(config, BuildReport(out="")))
    config0 = load_build_config(None, [*TINY, f"out={tmp_path}"])
    jobs0 = plan(config0, _voices(config0, BuildReport(out="")))
    assert [j.text for j in jobs7] != [j.text for j in jobs0]


def test_kokoro_in_training_leaves_validation_and_test_as_they_were(tmp_path):
    def jobs(*extra):
        config = load_build_config(None, [*TINY, f"out={tmp_path}", *extra])
        return plan(config, _voices(config, BuildReport(out="")))

    before, after = jobs(), jobs("engines.kokoro=0.4")
    assert [j for j in after if j.split != "train"] == [j for j in before if j.split != "train"]
    train = [j for j in after if j.split == "train" and j.voice]
    assert {j.engine for j in train} >= {"kokoro", "espeak"}
    assert not any(j.engine == "kokoro" for j in before)


@pytest.mark.slow  # synthesises speech: ~10-20 s on a shared 2-core box
def test_incremental_rebuild_skips_valid_files(built):
    out, first = built
    assert first.rendered > 0
    again = _build(out)
    assert again.rendered == 0 and again.reused == first.planned
    victim = read_manifest(out / "fc" / "train.jsonl")[0].audio_path
    with open(victim, "r+b") as f:
        f.truncate(10)  # corrupt one clip
    third = _build(out)
    assert third.rendered == 1
    assert (out / "fc" / "train.jsonl").read_text().count("\n") == 6


def _md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_text_pool_filters_and_split_assignment():
    pool = text.fortune_sentences()
    assert len(pool) > 1000
    assert all(text.is_clean(t) and ":" not in t for t in pool[:2000])
    a = text.assign_splits([f"k{i}" for i in range(100)], seed=1)
    assert a == text.assign_splits([f"k{i}" for i in range(100)][::-1], seed=1)
    assert sum(v == "test" for v in a.values()) == 8


def test_build_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"asr\.countz: unknown key"):
        load_build_config(None, ["asr.countz=3"])
    with pytest.raises(ConfigError, match=r"speed: must be"):
        load_build_config(None, ["speed=[1.2, 0.9]"])
    with pytest.raises(ConfigError, match=r"workers"):
        load_build_config(None, ["workers=-1"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("asr:\n  min_s: 20\n  max_s: 10\n")
    with pytest.raises(ConfigError, match=r"asr\.min_s: must be < max_s"):
        load_build_config(cfg)
