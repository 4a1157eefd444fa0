"""Named evaluation datasets: real held-out speech plus the built synthetic test splits.

=========================  ==================================================================
name                       what
=========================  ==================================================================
``librivox``               5 LibriVox read-speech utterances (Jane Austen) with transcripts,
                           16 kHz, from Debian ``pocketsphinx-testdata``
``pocketsphinx-commands``  the same package's command clips: 5 "cards" utterances (its
                           ``cards.transcription``) and ``goforward.raw`` ("go forward ten
                           meters", the phrase of its ``goforward.gram``; raw 16 kHz PCM,
                           converted to WAV once under ``<cache>/data/heldout``)
``fsdd``                   Free Spoken Digit Dataset subset in ``shared_data_dir()/fsdd``:
                           test takes 0-4 of every speaker and digit (real 8 kHz speech,
                           resampled on load). Instruction "Transcribe the audio.", target the
                           digit as a lower-case word ("seven"); ``fsdd_accuracy`` accepts the
                           word or the numeral.
``synthetic-asr|aqa|fc``   ``<root>/<suite>/test.jsonl`` of a ``jobs.build_data`` build
=========================  ==================================================================

A missing source raises :class:`DatasetUnavailable` whose message says how to get it;
``load_named`` turns that into a warning and an empty list so an evaluation carries on.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

from steermoe import env
from steermoe.data.audio import write_wav
from steermoe.data.examples import Example
from steermoe.data.sources import load_examples

log = logging.getLogger(__name__)

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
# Its LibriVox clips: real read speech, also the benchmarks' input.
LIBRIVOX = POCKETSPHINX_DATA / "librivox"
ASR_INSTRUCTION = "Transcribe the audio."
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SYNTHETIC = {"synthetic-asr": "asr", "synthetic-aqa": "aqa", "synthetic-fc": "fc"}
NAMES = ("librivox", "pocketsphinx-commands", "fsdd", *SYNTHETIC)


class DatasetUnavailable(FileNotFoundError):
    """A named dataset whose files are not on this machine; the message says how to get them."""


def named_dataset(
    name: str, *, root: str | Path | None = None, max_s: float | None = 30.0
) -> list[Example]:
    """Examples of a named evaluation set (see the module table), in a fixed order.

    Args:
        name: one of :data:`NAMES`.
        root: built data root for the ``synthetic-*`` sets (default ``<cache>/data/default``).
        max_s: longest clip kept.

    Raises:
        DatasetUnavailable: the files are missing (message gives the fix).
        KeyError: unknown name.
    """
    if name == "librivox":
        return librivox()
    if name == "pocketsphinx-commands":
        return pocketsphinx_commands()
    if name == "fsdd":
        return fsdd()
    if name in SYNTHETIC:
        base = Path(root) if root is not None else env.cache_dir() / "data" / "default"
        manifest = base / SYNTHETIC[name] / "test.jsonl"
        if not manifest.is_file():
            raise DatasetUnavailable(
                f"{name}: {manifest} not found; build it with "
                f"`python -m jobs.build_data jobs/configs/data_default.yaml` (or pass root=)"
            )
        examples, _ = load_examples(manifest, max_s=max_s)
        return examples
    raise KeyError(f"unknown dataset {name!r}; known: {', '.join(NAMES)}")


def load_named(names: Iterable[str], *, root: str | Path | None = None) -> dict[str, list[Example]]:
    """Load several named sets; an unavailable one is warned about and left out."""
    out: dict[str, list[Example]] = {}
    for name in names:
        try:
            out[name] = named_dataset(name, root=root)
        except DatasetUnavailable as exc:
            warnings.warn(str(exc), stacklevel=2)
    return out


def _pocketsphinx_dir() -> Path:
    if not (POCKETSPHINX_DATA / "librivox").is_dir():
        raise DatasetUnavailable(
            f"pocketsphinx test data not found under {POCKETSPHINX_DATA}; "
            "install it with `sudo apt-get install pocketsphinx-testdata`"
        )
    return POCKETSPHINX_DATA


def _sphinx_transcripts(path: Path) -> dict[str, str]:
    """``<s> words </s> (utt-id)`` lines -> {utt-id: words}."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s*(.*?)\s*\(([^()]+)\)\s*$", line)
        if m:
            words = re.sub(r"</?s>", " ", m.group(1))
            out[m.group(2)] = " ".join(words.split())
    return out


def librivox() -> list[Example]:
    """The 5 LibriVox utterances of pocketsphinx-testdata (lower-case transcripts)."""
    folder = _pocketsphinx_dir() / "librivox"
    rows = []
    for uid, text in sorted(_sphinx_transcripts(folder / "transcription").items()):
        rows.append(_asr_example(f"librivox-{uid}", folder / f"{uid}.wav", text, "librivox"))
    return rows


def pocketsphinx_commands() -> list[Example]:
    """The 5 "cards" command clips plus ``goforward.raw`` (converted to WAV in the cache)."""
    data = _pocketsphinx_dir()
    rows = [
        _asr_example(f"cards-{uid}", data / "cards" / f"{uid}.wav", text, "pocketsphinx-cards")
        for uid, text in sorted(_sphinx_transcripts(data / "cards" / "cards.transcription").items())
    ]
    raw = data / "goforward.raw"
    if raw.is_file():
        wav = env.cache_dir() / "data" / "heldout" / "goforward.wav"
        if not wav.is_file():
            pcm = np.frombuffer(raw.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
            write_wav(wav, pcm)
        rows.append(_asr_example("goforward", wav, "go forward ten meters", "pocketsphinx"))
    return rows


def _asr_example(eid: str, path: Path, text: str, source: str, **extra) -> Example:
    info = sf.info(str(path))
    return Example(
        id=eid,
        audio_path=str(path),
        duration_s=round(info.frames / info.samplerate, 4),
        task="asr",
        instruction=ASR_INSTRUCTION,
        target=text,
        meta={"source": source, **extra},
    )


def fsdd(takes: Iterable[int] = range(5)) -> list[Example]:
    """FSDD test takes (0-4 by default) of every speaker and digit, sorted by file name.

    Raises:
        DatasetUnavailable: ``shared_data_dir()/fsdd/recordings`` is missing.
    """
    folder = env.shared_data_dir() / "fsdd" / "recordings"
    if not folder.is_dir():
        raise DatasetUnavailable(
            f"fsdd: {folder} not found; put the Free Spoken Digit Dataset recordings "
            "(github.com/Jakobovski/free-spoken-digit-dataset) there or set $STEERMOE_SHARED_DATA"
        )
    wanted = set(takes)
    rows = []
    for path in sorted(folder.glob("*.wav")):
        m = re.fullmatch(r"(\d)_([A-Za-z]+)_(\d+)", path.stem)
        if not m or int(m.group(3)) not in wanted:
            continue
        digit, speaker = int(m.group(1)), m.group(2)
        ex = _asr_example(
            f"fsdd-{path.stem}", path, DIGITS[digit], "fsdd", digit=digit, speaker=speaker
        )
        rows.append(ex.replace(voice=f"fsdd:{speaker}"))
    if not rows:
        raise DatasetUnavailable(f"fsdd: no test takes found in {folder}")
    return rows


def fsdd_accuracy(predictions: Iterable[str], references: Iterable[str]) -> float:
    """Share of predictions naming the reference digit: the digit word or numeral, alone or
    inside a short sentence ("Seven." and "7" both match "seven"); any other digit word or
    numeral in the prediction makes it wrong."""
    preds, refs = list(predictions), list(references)
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    if not refs:
        return 0.0
    correct = 0
    for pred, ref in zip(preds, refs):
        found = {DIGITS[int(t)] if t.isdigit() else t for t in _digit_tokens(pred)}
        correct += found == {ref.strip().lower()}
    return correct / len(refs)


def _digit_tokens(text: str) -> list[str]:
    tokens = re.findall(r"[a-z]+|\d", text.lower())
    return [t for t in tokens if t in DIGITS or t.isdigit()]
