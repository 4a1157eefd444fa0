"""The registered champion as an MLflow pyfunc model.

Every registered version is logged with :func:`log_model`: its artifacts are the trainable
checkpoint (header included) and the resolved run config; ``load_context`` builds the model
from the offline backbones exactly as Ray Serve does. So the MLflow tools work on it::

    mlflow.pyfunc.load_model("models:/steermoe@champion").predict(
        pd.DataFrame({"audio": ["clip.wav"]})
    )
    mlflow models serve -m models:/steermoe@champion --env-manager local -h 127.0.0.1 -p 5001

Input columns: ``audio`` (a file path, or the file's bytes: raw, or base64 text as JSON
carries them), ``instruction`` (optional; empty = transcribe), ``tools`` (optional, OpenAI-style
tool list as JSON text; the model answers with its calls). Output: one ``text`` column.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
import torch
import yaml
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, ColSpec, Schema

from steermoe.data.audio import AudioError, load_audio
from steermoe.data.tools import tool_instruction
from steermoe.model.checkpoint import checkpoint_config
from steermoe.model.core import Decoding, tool_decoding
from steermoe.serve.audio import decode_audio
from steermoe.serve.errors import APIError
from steermoe.serve.loading import load_model

ARTIFACT_CHECKPOINT = "checkpoint"
ARTIFACT_CONFIG = "config"
# Clips decoded per generate() call.
BATCH = 8


class PredictError(ValueError):
    """A row the model cannot answer; the message names the row and the column."""


def signature() -> ModelSignature:
    """Input table ``audio`` (path or bytes), ``instruction``, ``tools``; output ``text``."""
    inputs = Schema(
        [
            ColSpec(AnyType(), "audio"),
            ColSpec("string", "instruction", required=False),
            ColSpec("string", "tools", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("string", "text")]))


def input_example(audio_path: str | Path) -> pd.DataFrame:
    """A one-row input table: transcribe the clip named."""
    return pd.DataFrame({"audio": [str(audio_path)], "instruction": [""]})


class SteerMoEPyfunc(mlflow.pyfunc.PythonModel):
    """Frozen backbones + the logged steering checkpoint, answering an input table."""

    def load_context(self, context) -> None:
        folder = Path(context.artifacts[ARTIFACT_CHECKPOINT])
        self.model, self.header, _ = load_model(str(folder))
        self.config = checkpoint_config(folder)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        texts = answer(self.model, self.config, _rows(model_input))
        return pd.DataFrame({"text": texts})


def _rows(model_input) -> list[dict[str, Any]]:
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    if "audio" not in frame.columns:
        raise PredictError("input has no 'audio' column (a file path or the file's bytes)")
    records = frame.to_dict(orient="records")
    return [{k: (None if _missing(v) else v) for k, v in r.items()} for r in records]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _wave(value, row: int, max_s: float):
    """A clip as 16 kHz samples: path, raw bytes, or base64 text."""
    name = f"row {row}"
    try:
        if isinstance(value, bytes | bytearray):
            return decode_audio(bytes(value), max_s=max_s, param=f"audio ({name})")
        if not isinstance(value, str) or not value:
            raise PredictError(f"{name}: 'audio' must be a file path or the file's bytes")
        if os.path.isfile(value):
            return load_audio(value, example_id=name, min_s=0.1, max_s=max_s)
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise PredictError(f"{name}: 'audio' is neither an existing file nor base64") from None
        return decode_audio(data, max_s=max_s, param=f"audio ({name})")
    except AudioError as exc:
        raise PredictError(str(exc)) from None
    except APIError as exc:
        raise PredictError(f"{name}: {exc.message}") from None


def _tools(row: dict[str, Any], index: int) -> list[dict[str, Any]] | None:
    tools = row.get("tools")
    if not tools:
        return None
    try:
        parsed = json.loads(tools) if isinstance(tools, str) else tools
    except json.JSONDecodeError as exc:
        raise PredictError(f"row {index}: 'tools' is not JSON ({exc.msg})") from None
    if not isinstance(parsed, list) or not all(isinstance(t, dict) for t in parsed):
        raise PredictError(f"row {index}: 'tools' must be a JSON list of tool objects")
    return parsed


def _instruction(row: dict[str, Any], index: int, tools: list | None, config) -> str:
    text = row.get("instruction") or ""
    if tools:
        try:
            block = tool_instruction(tools, compact=config.tool_prompt == "compact")
        except ValueError as exc:
            raise PredictError(f"row {index}: 'tools': {exc}") from None
        text = f"{text}\n{block}" if text else block
    return text or config.default_instruction


def _decoding(index: int, tools: list | None) -> Decoding:
    """As Serve's ``tool_choice: auto`` and evaluation decode (:func:`tool_decoding`)."""
    try:
        return tool_decoding(tools)
    except ValueError as exc:
        raise PredictError(f"row {index}: 'tools': {exc}") from None


def answer(model, config, rows: list[dict[str, Any]], *, max_new_tokens: int = 128) -> list[str]:
    """Greedy answers of ``rows`` (dicts with ``audio``, ``instruction``, ``tools``)."""
    waves = [_wave(r["audio"], i, model.max_audio_s) for i, r in enumerate(rows)]
    tools = [_tools(r, i) for i, r in enumerate(rows)]
    prompts = [_instruction(r, i, t, config) for i, (r, t) in enumerate(zip(rows, tools))]
    decodings = [_decoding(i, t) for i, t in enumerate(tools)]
    texts: list[str] = []
    with torch.no_grad():
        for i in range(0, len(rows), BATCH):
            batch = model.collate(waves[i : i + BATCH], prompts[i : i + BATCH]).to(model.device)
            part = decodings[i : i + BATCH]
            texts += model.generate(batch, max_new_tokens=max_new_tokens, decoding=part).texts
    return texts


def log_model(
    *,
    run_id: str,
    checkpoint: str | Path,
    config: dict[str, Any],
    tracking_uri: str,
    name: str = "model",
    example_audio: str | Path | None = None,
) -> ModelInfo:
    """Log the checkpoint as a pyfunc model in run ``run_id``; returns its ``ModelInfo``
    (``model_uri``, ``model_id``).

    With ``example_audio``, MLflow also stores an input example and checks, by loading the
    model and answering it, that the logged model serves.
    """
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="steermoe-pyfunc-") as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=SteerMoEPyfunc(),
                artifacts={ARTIFACT_CHECKPOINT: str(checkpoint), ARTIFACT_CONFIG: str(config_path)},
                signature=signature(),
                input_example=input_example(example_audio) if example_audio else None,
                pip_requirements=_requirements(),
            )
    return info


def _requirements() -> list[str]:
    """The platform's own pins (the model needs steermoe's stack, importable as installed)."""
    try:
        return [r for r in (metadata.requires("steermoe") or []) if ";" not in r]
    except metadata.PackageNotFoundError:
        return []
