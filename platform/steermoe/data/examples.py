"""The one example type and its manifest format (JSONL, one example a line).

Manifest format
---------------
A manifest is a UTF-8 JSON-lines file; each non-empty line is one JSON object:

==================  ========  ===============================================================
key                 required  meaning
==================  ========  ===============================================================
``id``              yes       unique string within the manifest
``audio_path``      yes       audio file; a relative path is relative to the manifest's folder
``duration_s``      yes       clip length in seconds (number > 0)
``task``            yes       ``"asr"``, ``"aqa"`` or ``"fc"``
``instruction``     yes       text given to the model after the audio (may be ``""`` for ASR)
``target``          yes       reference output: transcript, answer, or calls as compact JSON
``language``        no        BCP-47-ish language code, default ``"en"``
``tools``           fc        OpenAI-style tools: ``[{"type": "function", "function":
                              {"name", "description", "parameters": <JSON schema>}}]``
``expected_calls``  fc        BFCL answer key: ``[{"name": ..., "arguments": {param:
                              [acceptable values]}}]``; ``""`` among the values = the parameter
                              may be omitted; ``[]`` = no call is expected (irrelevance)
``choices``         no        answer options of a multiple-choice question (aqa)
``kind``            no        aqa question form: ``"open"``, ``"yes_no"`` or ``"multiple_choice"``
``category``        no        fc category: ``simple``, ``multiple``, ``parallel``, ``irrelevance``
``voice``           no        speaker or TTS voice id (synthetic suites keep splits disjoint in it)
``meta``            no        free-form JSON object (source, annotators, generation parameters);
                              ``meta.spoken`` is the words said in an aqa/fc clip, when known
==================  ========  ===============================================================

Unknown keys are an error (a typo would otherwise silently drop data). Example line::

    {"id": "fc-test-00001", "audio_path": "audio/test/fc-test-00001-1a2b3c4d.wav",
     "duration_s": 3.42, "task": "fc", "instruction": "Tools: ...", "target":
     "[{\\"name\\":\\"set_timer\\",\\"arguments\\":{\\"minutes\\":5}}]", "language": "en",
     "tools": [...], "expected_calls": [{"name": "set_timer", "arguments": {"minutes": [5]}}],
     "category": "simple", "voice": "espeak:en-029+f4"}
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS = ("asr", "aqa", "fc")
AQA_KINDS = ("open", "yes_no", "multiple_choice")
FC_CATEGORIES = ("simple", "multiple", "parallel", "irrelevance")


class ManifestError(ValueError):
    """A manifest line that is not a valid example; the message names the file, line and key."""


@dataclass(frozen=True)
class Example:
    """One training or evaluation example: a clip plus what the model should produce.

    Attributes mirror the manifest keys (see the module docstring). ``audio_path`` is absolute
    once read from a manifest.
    """

    id: str
    audio_path: str
    duration_s: float
    task: str
    instruction: str
    target: str
    language: str = "en"
    tools: list[dict[str, Any]] | None = None
    expected_calls: list[dict[str, Any]] | None = None
    choices: list[str] | None = None
    kind: str | None = None
    category: str | None = None
    voice: str | None = None
    meta: dict[str, Any] | None = None

    def to_dict(self, *, relative_to: str | Path | None = None) -> dict[str, Any]:
        """Manifest row; ``audio_path`` relative to ``relative_to`` when given, and ``None``
        optional fields left out."""
        row = dataclasses.asdict(self)
        if relative_to is not None:
            row["audio_path"] = os.path.relpath(self.audio_path, relative_to)
        return {k: v for k, v in row.items() if v is not None or k in _REQUIRED}

    @property
    def transcript(self) -> str | None:
        """The words spoken in the clip: the target of an ASR example, ``meta.spoken`` of the
        others (synthetic suites record it), None when unknown."""
        if self.task == "asr":
            return self.target
        spoken = (self.meta or {}).get("spoken")
        return spoken if isinstance(spoken, str) and spoken.strip() else None

    def replace(self, **changes: Any) -> Example:
        """Copy with some fields changed."""
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(Example)}
_REQUIRED = ("id", "audio_path", "duration_s", "task", "instruction", "target")


def example_from_dict(
    row: Mapping[str, Any], *, base_dir: str | Path | None = None, where: str = "row"
) -> Example:
    """Validate one manifest row into an :class:`Example`.

    Args:
        row: the decoded JSON object.
        base_dir: folder that relative ``audio_path`` values are resolved against.
        where: location used in error messages, e.g. ``"train.jsonl:12"``.

    Raises:
        ManifestError: missing or unknown key, or a value of the wrong type or range.
    """
    if not isinstance(row, Mapping):
        raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - set(_FIELDS))
    if unknown:
        raise ManifestError(f"{where}: unknown key {unknown[0]!r}")
    for key in _REQUIRED:
        if key not in row or row[key] is None:
            raise ManifestError(f"{where}: missing key {key!r}")

    def bad(key: str, msg: str) -> ManifestError:
        return ManifestError(f"{where}: key {key!r} {msg} (got {row.get(key)!r:.80})")

    for key in ("id", "audio_path", "task", "instruction", "target", "language"):
        if key in row and not isinstance(row[key], str):
            raise bad(key, "must be a string")
    if not row["id"]:
        raise bad("id", "must not be empty")
    if not row["audio_path"]:
        raise bad("audio_path", "must not be empty")
    duration = row["duration_s"]
    if isinstance(duration, bool) or not isinstance(duration, int | float) or not duration > 0:
        raise bad("duration_s", "must be a number > 0")
    if row["task"] not in TASKS:
        raise bad("task", f"must be one of {list(TASKS)}")
    for key in ("tools", "expected_calls"):
        value = row.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, dict) for v in value)
        ):
            raise bad(key, "must be a list of objects")
    for i, tool in enumerate(row.get("tools") or []):
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict) or "name" not in fn:
            raise bad("tools", f"item {i} must be {{'type': 'function', 'function': {{name...}}}}")
    for i, call in enumerate(row.get("expected_calls") or []):
        args = call.get("arguments", {})
        if not isinstance(call.get("name"), str) or not isinstance(args, dict):
            raise bad("expected_calls", f"item {i} needs a string 'name' and 'arguments' object")
        if not all(isinstance(v, list) for v in args.values()):
            raise bad("expected_calls", f"item {i}: every argument must list acceptable values")
    choices = row.get("choices")
    if choices is not None and (
        not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)
    ):
        raise bad("choices", "must be a list of strings")
    if row.get("kind") is not None and row["kind"] not in AQA_KINDS:
        raise bad("kind", f"must be one of {list(AQA_KINDS)}")
    if row.get("category") is not None and row["category"] not in FC_CATEGORIES:
        raise bad("category", f"must be one of {list(FC_CATEGORIES)}")
    if row.get("voice") is not None and not isinstance(row["voice"], str):
        raise bad("voice", "must be a string")
    if row.get("meta") is not None and not isinstance(row["meta"], dict):
        raise bad("meta", "must be an object")

    values = dict(row)
    path = Path(values["audio_path"]).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    values["audio_path"] = os.path.normpath(str(path))
    values["duration_s"] = float(duration)
    return Example(**values)


def iter_manifest(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    """Yield ``(line_number, row)`` per non-empty line, or ``(line_number, error)`` for a line
    that is not valid JSON (so callers can skip or raise)."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, ManifestError(f"{path}:{number}: not valid JSON: {exc.msg}")


def read_manifest(path: str | Path) -> list[Example]:
    """Read and validate a whole manifest; relative audio paths resolve against its folder.

    Raises:
        ManifestError: the first invalid line, naming ``<file>:<line>`` and the key; duplicate ids.
        FileNotFoundError: no such manifest.
    """
    path = Path(path)
    base = path.resolve().parent
    out: list[Example] = []
    seen: dict[str, int] = {}
    for number, row in iter_manifest(path):
        if isinstance(row, Exception):
            raise row
        ex = example_from_dict(row, base_dir=base, where=f"{path}:{number}")
        if ex.id in seen:
            raise ManifestError(
                f"{path}:{number}: key 'id' duplicates line {seen[ex.id]} ({ex.id!r})"
            )
        seen[ex.id] = number
        out.append(ex)
    return out


def write_manifest(path: str | Path, examples: Iterable[Example]) -> Path:
    """Write examples atomically (temporary file + rename) with audio paths relative to the
    manifest's folder. Returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for ex in examples:
                f.write(json.dumps(ex.to_dict(relative_to=base), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
