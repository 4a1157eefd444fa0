"""Typed, strict configuration of ``python -m jobs.build_data`` (synthetic suites)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from steermoe import env
from steermoe.config import ConfigError, apply_overrides, read_layered_yaml
from steermoe.synth import tts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SplitCounts(_Strict):
    """Examples per split (before clips outside the length limits are dropped)."""

    train: int = Field(default=0, ge=0)
    validation: int = Field(default=0, ge=0)
    test: int = Field(default=0, ge=0)


class SuiteConfig(_Strict):
    """One suite: how many examples and the clip length limits."""

    counts: SplitCounts = SplitCounts()
    # Shorter clips are padded with silence up to this length; shorter than 60 % is dropped.
    min_s: float = Field(default=1.0, ge=0)
    # Longer clips are dropped (and counted).
    max_s: float = Field(default=20.0, gt=0, le=30.0)

    @model_validator(mode="after")
    def _check(self) -> SuiteConfig:
        if self.min_s >= self.max_s:
            raise ValueError(f"@min_s@ must be < max_s ({self.max_s})")
        return self


class AsrSuiteConfig(SuiteConfig):
    """The ASR suite: natural sentences of 3-15 s by default."""

    min_s: float = Field(default=3.0, ge=0)
    max_s: float = Field(default=15.0, gt=0, le=30.0)
    # Share of very short utterances (digits, single words, names, dates: 0.3-2 s), taken
    # before `text_mix`; use with a small `min_s` or they are padded with silence.
    short_share: float = Field(default=0.0, ge=0, le=1)
    # Longest fortune sentence in words (at least 8).
    max_words: int = Field(default=35, ge=8)


class EngineWeights(_Strict):
    """Share of clips per TTS engine (among the engines with voices in the split; 0 = off)."""

    piper: float = Field(default=0.3, ge=0)
    flite: float = Field(default=0.2, ge=0)
    espeak: float = Field(default=0.5, ge=0)
    kokoro: float = Field(default=0.0, ge=0)


class VoiceSplits(_Strict):
    """Held-out voices by id pattern (fnmatch); everything else trains."""

    # Voice id patterns reserved for the test split (they win over validation).
    test: tuple[str, ...] = tts.TEST_VOICES
    # Voice id patterns reserved for the validation split.
    validation: tuple[str, ...] = tts.VALIDATION_VOICES


class BuildConfig(_Strict):
    """Everything the data build needs; YAML holds values only."""

    # Build name; the default output folder is `<cache>/data/<name>`.
    name: str = Field(default="default", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # Output folder (null = `<cache>/data/<name>`).
    out: str | None = None
    # Seed of every random choice: same seed and config -> identical manifests and audio.
    seed: int = 0
    # Worker processes (0 = render in this process).
    workers: int = Field(default=2, ge=0, le=256)
    asr: AsrSuiteConfig = AsrSuiteConfig()
    aqa: SuiteConfig = SuiteConfig()
    fc: SuiteConfig = SuiteConfig()
    engines: EngineWeights = EngineWeights()
    voices: VoiceSplits = VoiceSplits()
    # Speaking-rate factor range drawn per clip.
    speed: tuple[float, float] = (0.85, 1.15)
    # Pitch factor range drawn per clip.
    pitch: tuple[float, float] = (0.9, 1.1)
    # Probability that a clip gets background noise, and its SNR range in dB.
    noise_prob: float = Field(default=0.3, ge=0, le=1)
    snr_db: tuple[float, float] = (10.0, 30.0)
    # ASR text shares: fortune sentences, vocabulary frames, number/date/name templates.
    text_mix: tuple[float, float, float] = (0.7, 0.15, 0.15)
    # AQA shares: spoken content, generated tones, speaker gender.
    aqa_mix: tuple[float, float, float] = (0.5, 0.35, 0.15)
    # AQA question forms: open, yes/no, multiple choice.
    aqa_forms: tuple[float, float, float] = (0.4, 0.3, 0.3)
    # FC categories: simple, multiple, parallel, irrelevance.
    fc_mix: tuple[float, float, float, float] = (0.25, 0.35, 0.2, 0.2)
    # Delete audio files of earlier builds that the current plan no longer uses.
    prune: bool = True
    # Seconds between progress lines.
    progress_every_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BuildConfig:
        for key in ("speed", "pitch", "snr_db"):
            lo, hi = getattr(self, key)
            if lo > hi or (key != "snr_db" and lo <= 0):
                raise ValueError(f"@{key}@ must be [low, high] with 0 < low <= high")
        for key in ("text_mix", "aqa_mix", "aqa_forms", "fc_mix"):
            values = getattr(self, key)
            if any(v < 0 for v in values) or sum(values) <= 0:
                raise ValueError(f"@{key}@ needs non-negative shares with a positive sum")
        if sum(self.engines.model_dump().values()) <= 0:
            raise ValueError("@engines@ needs at least one engine with weight > 0")
        return self

    def out_dir(self) -> Path:
        """The resolved output folder."""
        return Path(self.out).expanduser() if self.out else env.cache_dir() / "data" / self.name


def load_build_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> BuildConfig:
    """Read a YAML build config, apply ``key.sub=value`` overrides and validate.

    Like the run configs, a build config may start with ``base: other.yaml`` and hold only
    its differences (mappings merge key by key; other values replace the base's).

    Raises:
        ConfigError: unreadable file or base, unknown key or bad value (the message names
            the key).
    """
    data: dict[str, Any] = read_layered_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if msg.startswith("@"):
                field, _, msg = msg[1:].partition("@ ")
                loc = f"{loc}.{field}" if loc else field
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{loc}: {msg}")
        raise ConfigError("invalid build configuration:\n  " + "\n  ".join(lines)) from None
