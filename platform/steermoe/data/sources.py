"""Load examples from any supported source into :class:`~steermoe.data.examples.Example` rows.

Sources (``spec``), detected in this order:

* ``hf:<name-or-folder>[:split]``: Hugging Face ``datasets``. A folder is read with
  ``load_from_disk``, anything else with ``load_dataset`` (offline unless the user allows the
  hub). The audio column is read undecoded and checked with soundfile (no torchcodec needed);
  in-memory audio bytes are written once under ``<cache>/data/hf/``. Columns: ``text`` /
  ``transcription`` / ``sentence`` -> asr; ``question`` + ``answer`` -> aqa.
* a ``.jsonl`` manifest (see :mod:`steermoe.data.examples`).
* a LibriSpeech-layout folder: ``<spk>/<chapter>/<spk>-<chapter>.trans.txt`` + ``.flac`` files.
* a Clotho-AQA folder (its ``*.csv`` files with ``file_name,QuestionText,answer,confidence``,
  three annotator rows per question, audio under ``audio_files/``) or one of its CSV files.
  The target is the majority answer; all answers go to ``meta["answers"]``.
* any other folder: audio files (wav, flac, ogg, mp3) with optional sidecar ``<name>.txt``
  transcripts -> asr examples (clips without a transcript are skipped unless ``unlabelled``).

Bad rows (invalid manifest line, missing/corrupt/empty/over-long audio, ...) are skipped and
listed in the :class:`LoadReport`, or raise :class:`DataError` naming the example when
``strict``.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from steermoe import env
from steermoe.data.audio import AudioError, audio_info, load_audio
from steermoe.data.examples import (
    Example,
    ManifestError,
    example_from_dict,
    iter_manifest,
)

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
CLOTHO_COLUMNS = ("file_name", "QuestionText", "answer", "confidence")
TEXT_COLUMNS = ("text", "transcription", "transcript", "sentence", "normalized_text")
Check = Literal["none", "header", "full"]


class DataError(ValueError):
    """A bad example in strict mode, or a source that cannot be read at all."""


@dataclass
class LoadReport:
    """What one ``load_examples`` call kept, dropped and why."""

    source: str
    loaded: int = 0
    filtered: int = 0  # dropped on purpose (task not requested)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (example id, reason)

    @property
    def num_skipped(self) -> int:
        """Bad examples skipped."""
        return len(self.skipped)

    def summary(self) -> str:
        """One line for logs: counts plus the first few skip reasons."""
        text = f"{self.source}: {self.loaded} loaded, {self.num_skipped} skipped"
        if self.filtered:
            text += f", {self.filtered} filtered by task"
        if self.skipped:
            shown = "; ".join(f"{i}: {r}" for i, r in self.skipped[:3])
            text += f" ({shown}{'; ...' if self.num_skipped > 3 else ''})"
        return text


# A row is either an Example or (id, reason) for a bad one.
_Row = Example | tuple[str, str]


def load_examples(
    spec: str | Path,
    *,
    root: str | Path | None = None,
    tasks: Iterable[str] | None = None,
    strict: bool = False,
    min_s: float = 0.0,
    max_s: float | None = 30.0,
    check: Check = "header",
    unlabelled: bool = False,
    cache: str | Path | None = None,
) -> tuple[list[Example], LoadReport]:
    """Read one source into examples.

    Args:
        spec: manifest path, folder, Clotho CSV or ``hf:<name-or-folder>[:split]``.
        root: folder that a relative ``spec`` is resolved against first (e.g. the data root).
        tasks: keep only these tasks (others are counted as ``filtered``); ``None`` = all.
        strict: raise :class:`DataError` on the first bad example instead of skipping it.
        min_s: reject clips shorter than this (seconds).
        max_s: reject clips longer than this (``None`` = no limit).
        check: ``"header"`` opens each file's header (existence, format, rate, length);
            ``"full"`` decodes every clip (also finds NaN/inf); ``"none"`` trusts the source.
        unlabelled: keep audio-folder clips that have no transcript (target ``""``).
        cache: where in-memory Hugging Face audio is written (default ``<cache>/data/hf``).

    Raises:
        DataError: unreadable source, or a bad example when ``strict``.
        FileNotFoundError: the spec names no existing file or folder.
    """
    spec = str(spec)
    report = LoadReport(source=spec)
    wanted = set(tasks) if tasks is not None else None
    rows = _dispatch(spec, root=root, unlabelled=unlabelled, cache=cache)
    out: list[Example] = []
    seen: set[str] = set()
    for row in rows:
        if isinstance(row, tuple):
            _bad(report, row[0], row[1], strict)
            continue
        if wanted is not None and row.task not in wanted:
            report.filtered += 1
            continue
        if row.id in seen:
            _bad(report, row.id, "duplicate id", strict)
            continue
        try:
            row = _checked(row, check=check, min_s=min_s, max_s=max_s)
        except AudioError as exc:
            _bad(report, row.id, exc.reason, strict)
            continue
        seen.add(row.id)
        out.append(row)
    report.loaded = len(out)
    (log.warning if report.skipped else log.info)(report.summary())
    return out, report


def _bad(report: LoadReport, example_id: str, reason: str, strict: bool) -> None:
    if strict:
        raise DataError(f"{report.source}: example {example_id!r}: {reason}")
    report.skipped.append((example_id, reason))


def _checked(ex: Example, *, check: Check, min_s: float, max_s: float | None) -> Example:
    if check == "none":
        if max_s is not None and ex.duration_s > max_s:
            raise AudioError(ex.id, f"too long: {ex.duration_s:.2f} s > max {max_s:g} s")
        if ex.duration_s < min_s:
            raise AudioError(ex.id, f"too short: {ex.duration_s:.3f} s < min {min_s:g} s")
        return ex
    if check == "full":
        audio = load_audio(ex.audio_path, example_id=ex.id, min_s=min_s, max_s=max_s)
        return ex.replace(duration_s=round(len(audio) / 16_000, 4))
    info = audio_info(ex.audio_path, example_id=ex.id)
    duration = info.frames / info.samplerate
    if max_s is not None and duration > max_s:
        raise AudioError(ex.id, f"too long: {duration:.2f} s > max {max_s:g} s")
    if duration < min_s:
        raise AudioError(ex.id, f"too short: {duration:.3f} s < min {min_s:g} s")
    return ex.replace(duration_s=round(duration, 4))


def _dispatch(
    spec: str, *, root: str | Path | None, unlabelled: bool, cache: str | Path | None
) -> Iterator[_Row]:
    if spec.startswith("hf:"):
        return _hf_rows(spec[3:], root=root, cache=cache)
    path = resolve_spec(spec, root)
    if path.is_file():
        if path.suffix == ".csv":
            return _clotho_rows([path], audio_dir=path.parent / "audio_files")
        return _manifest_rows(path)
    if not path.is_dir():
        raise FileNotFoundError(f"data source not found: {spec} (looked at {path})")
    if next(path.glob("*/*/*.trans.txt"), None) is not None:
        return _librispeech_rows(path)
    csvs = [p for p in sorted(path.glob("*.csv")) if _is_clotho_csv(p)]
    if csvs:
        return _clotho_rows(csvs, audio_dir=path / "audio_files")
    return _folder_rows(path, unlabelled=unlabelled)


def resolve_spec(spec: str | Path, root: str | Path | None) -> Path:
    """A relative spec is looked up under ``root`` first, then the working directory."""
    path = Path(spec).expanduser()
    if not path.is_absolute() and root is not None and (Path(root) / path).exists():
        return Path(root) / path
    return path


# ------------------------------------------------------------------------- manifests


def _manifest_rows(path: Path) -> Iterator[_Row]:
    base = path.resolve().parent
    for number, row in iter_manifest(path):
        where = f"{path.name}:{number}"
        rid = row.get("id") if isinstance(row, dict) else None
        rid = rid if isinstance(rid, str) and rid else where
        if isinstance(row, Exception):
            yield rid, str(row)
            continue
        try:
            yield example_from_dict(row, base_dir=base, where=where)
        except ManifestError as exc:
            yield rid, str(exc)


# ------------------------------------------------------------------------ librispeech


def _librispeech_rows(path: Path) -> Iterator[_Row]:
    for trans in sorted(path.glob("*/*/*.trans.txt")):
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            if not text.strip():
                yield uid, f"{trans.name}:{number}: empty transcript"
                continue
            audio = trans.parent / f"{uid}.flac"
            yield _audio_example(
                uid,
                audio,
                task="asr",
                instruction="",
                target=text.strip(),
                voice=f"librispeech:{uid.split('-')[0]}",
                meta={"source": "librispeech"},
            )


def _audio_example(example_id: str, audio: Path, **fields: Any) -> _Row:
    """An example whose duration comes from the audio header, or (id, reason)."""
    try:
        info = audio_info(audio, example_id=example_id)
    except AudioError as exc:
        return example_id, exc.reason
    return Example(
        id=example_id,
        audio_path=str(audio.resolve()),
        duration_s=round(info.frames / info.samplerate, 4),
        **fields,
    )


# -------------------------------------------------------------------------- clotho-aqa


def _is_clotho_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    return all(c in header for c in CLOTHO_COLUMNS[:3])


def _clotho_rows(csvs: list[Path], *, audio_dir: Path) -> Iterator[_Row]:
    for path in csvs:
        if not _is_clotho_csv(path):
            raise DataError(f"{path}: not a Clotho-AQA CSV (needs columns {CLOTHO_COLUMNS})")
        groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                key = (
                    (row.get("file_name") or "").strip(),
                    (row.get("QuestionText") or "").strip(),
                )
                groups[key].append(row)
        per_file: Counter[str] = Counter()
        for (file_name, question), rows in groups.items():
            per_file[file_name] += 1
            eid = f"clotho-{path.stem}-{Path(file_name).stem}-q{per_file[file_name]}"
            answers = [(r.get("answer") or "").strip() for r in rows]
            answers = [a for a in answers if a]
            if not file_name or not question or not answers:
                yield eid, f"{path.name}: row without file_name, question or answer"
                continue
            majority = Counter(a.lower() for a in answers).most_common(1)[0][0]
            target = next(a for a in answers if a.lower() == majority)
            is_yes_no = all(a.lower() in ("yes", "no") for a in answers)
            yield _audio_example(
                eid,
                audio_dir / file_name,
                task="aqa",
                instruction=question,
                target=target,
                kind="yes_no" if is_yes_no else "open",
                meta={
                    "source": "clotho-aqa",
                    "split": path.stem,
                    "answers": answers,
                    "confidence": [(r.get("confidence") or "").strip() for r in rows],
                },
            )


# ------------------------------------------------------------------------ audio folder


def _folder_rows(path: Path, *, unlabelled: bool) -> Iterator[_Row]:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)}) and no manifest")
    for audio in files:
        eid = audio.relative_to(path).with_suffix("").as_posix()
        sidecar = audio.with_suffix(".txt")
        text = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else ""
        if not text and not unlabelled:
            yield eid, f"no transcript (expected {sidecar.name})"
            continue
        yield _audio_example(
            eid, audio, task="asr", instruction="", target=text, meta={"source": str(path)}
        )


# ------------------------------------------------------------------- hugging face


def parse_hf_spec(rest: str) -> tuple[str, str | None]:
    """``name[:split]`` -> (name, split): the split follows the first ``:`` after the last
    ``/`` (so ``user/ds:validation[:10]`` keeps its slice)."""
    head, slash, tail = rest.rpartition("/")
    name, sep, split = tail.partition(":")
    if sep and name and split:
        return f"{head}{slash}{name}", split
    return rest, None


def _hf_rows(rest: str, *, root: str | Path | None, cache: str | Path | None) -> Iterator[_Row]:
    import datasets  # heavy; only for hf: sources

    name, split = parse_hf_spec(rest)
    local = resolve_spec(name, root)
    try:
        if local.is_dir():
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                chosen = split or ("train" if "train" in ds else None)
                if chosen not in ds:
                    raise DataError(f"hf:{rest}: pick a split, one of {sorted(ds)}")
                ds, split = ds[chosen], chosen
        else:
            ds = datasets.load_dataset(name, split=split or "train")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"hf:{rest}: cannot load dataset: {exc}") from None
    split = split or "train"
    audio_col = _audio_column(ds)
    if audio_col is None:
        raise DataError(f"hf:{rest}: no audio column (columns: {ds.column_names})")
    ds = ds.cast_column(audio_col, datasets.Audio(decode=False))
    slug = re.sub(r"[^\w.-]+", "_", name.strip("/"))[-60:]
    digest = hashlib.sha1(str(local.resolve() if local.is_dir() else name).encode()).hexdigest()[:8]
    store = Path(cache) if cache is not None else env.cache_dir() / "data" / "hf"
    store = store / f"{slug}-{digest}" / split
    make = _hf_row_maker(ds.column_names, prefix=f"{slug}-{split}")
    for i, row in enumerate(ds):
        yield make(i, row, audio_col, store)


def _audio_column(ds: Any) -> str | None:
    import datasets

    for col, feature in ds.features.items():
        if isinstance(feature, datasets.Audio):
            return col
    return "audio" if "audio" in ds.column_names else None


def _hf_row_maker(columns: list[str], *, prefix: str) -> Callable[..., _Row]:
    text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
    id_col = next((c for c in ("id", "key", "utt_id", "segment_id") if c in columns), None)
    is_qa = "question" in columns and "answer" in columns

    def make(i: int, row: dict[str, Any], audio_col: str, store: Path) -> _Row:
        eid = str(row[id_col]) if id_col and row.get(id_col) not in (None, "") else f"{prefix}-{i}"
        audio = row.get(audio_col) or {}
        if isinstance(audio, str):
            audio = {"path": audio, "bytes": None}
        data, src = audio.get("bytes"), audio.get("path")
        if src and Path(src).is_file():
            path = Path(src)
        elif data:
            suffix = Path(src).suffix if src and Path(src).suffix else ".wav"
            safe = re.sub(r"[^\w.-]+", "_", eid)
            path = store / f"{safe}{suffix}"
            if not path.is_file() or path.stat().st_size != len(data):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
        else:
            return eid, f"audio column holds neither bytes nor an existing path ({src})"
        if is_qa:
            fields: dict[str, Any] = {
                "task": "aqa",
                "instruction": str(row["question"]),
                "target": str(row["answer"]),
            }
            if isinstance(row.get("choices"), list):
                fields.update(choices=[str(c) for c in row["choices"]], kind="multiple_choice")
        elif text_col is not None:
            text = row.get(text_col)
            if not isinstance(text, str) or not text.strip():
                return eid, f"empty {text_col!r}"
            fields = {"task": "asr", "instruction": "", "target": text.strip()}
        else:
            return eid, f"no transcript column (one of {TEXT_COLUMNS}) or question/answer"
        meta = {"source": "hf", "row": i}
        if "language" in row and isinstance(row["language"], str):
            fields["language"] = row["language"]
        if "speaker_id" in row:
            fields["voice"] = str(row["speaker_id"])
        return _audio_example(eid, path, meta=meta, **fields)

    return make
