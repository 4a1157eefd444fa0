"""Trainable-only checkpoints that describe themselves.

A checkpoint folder holds ``trainable.safetensors`` (only the steering MoE and projector
tensors) and ``steermoe.json``, the header: format version, package version, backbone
identities (id + SHA-256 of their files), the model config, the prompt template and a digest
of the tensor file. Loading checks all of it and fails with a clear :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import steermoe
from steermoe import env
from steermoe.config import ModelConfig

FORMAT = "steermoe-checkpoint/1"
TENSORS = "trainable.safetensors"
HEADER = "steermoe.json"
# The folder inside a Ray checkpoint (and a promoted model) that holds the trainable checkpoint.
MODEL_DIR = "model"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded (corrupt, truncated, other backbone...)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    model, config: ModelConfig, path: str | Path, extra: dict | None = None
) -> Path:
    """Write the trainable tensors and the header to folder ``path`` (atomically)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    state = {n: p.detach().float().contiguous().cpu() for n, p in model.trainable_parameters()}
    save_file(state, str(tmp / TENSORS), metadata={"format": FORMAT})
    header = {
        "format": FORMAT,
        "steermoe_version": steermoe.__version__,
        "backbones": model.identity,
        "model_config": config.model_dump(mode="json"),
        "prompt_template": model.template.rendered,
        "tensors": {n: list(t.shape) for n, t in state.items()},
        "tensors_sha256": _sha256(tmp / TENSORS),
        **(extra or {}),
    }
    (tmp / HEADER).write_text(json.dumps(header, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def local_checkpoint(ref: str | Path) -> Path:
    """Folder of checkpoint ``ref``: ``embedded:<name>`` or a folder path. A training run's
    checkpoint folder (``checkpoint_step*``, the model under ``model/``) stands for its model.

    Raises:
        CheckpointError: unknown embedded name or missing folder.
    """
    text = str(ref)
    if text.startswith(env.EMBEDDED_PREFIX):
        name = text[len(env.EMBEDDED_PREFIX) :]
        folder = env.EMBEDDED_CHECKPOINTS / name
        if not (folder / HEADER).is_file():
            raise CheckpointError(
                f"{text}: no such embedded checkpoint "
                f"(shipped: {env.embedded_checkpoints() or 'none'})"
            )
        return folder
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    if not (folder / HEADER).is_file() and (folder / MODEL_DIR / HEADER).is_file():
        return folder / MODEL_DIR
    return folder


def read_header(path: str | Path) -> dict:
    """The JSON header of checkpoint folder ``path``."""
    file = Path(path) / HEADER
    if not file.is_file():
        raise CheckpointError(f"{path}: not a SteerMoE checkpoint (no {HEADER})")
    try:
        header = json.loads(file.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{file}: corrupt header: {exc}") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{file}: unsupported format {header.get('format')!r}")
    return header


def checkpoint_config(path: str | Path) -> ModelConfig:
    """The model config a checkpoint was trained with."""
    data = read_header(path)["model_config"]
    # Checkpoints written before the projector had an output norm were trained without one.
    projector = data.setdefault("projector", {})
    projector.setdefault("norm", "none")
    return ModelConfig.model_validate(data)


def inference_config(path: str | Path, device: str | torch.device = "cpu") -> ModelConfig:
    """The model config to run a checkpoint with on ``device``: as trained, except that a
    bf16 checkpoint computes in fp32 on a CPU without native bf16 (there bf16 matrix products
    run ~80x slower; fp32 only adds precision to what the checkpoint learned)."""
    from steermoe.model.build import slow_bf16

    config = checkpoint_config(path)
    if config.dtype == "bfloat16" and slow_bf16(device):
        return config.model_copy(update={"dtype": "float32"})
    return config


def load_checkpoint(model, path: str | Path, *, check_backbones: bool = True) -> dict:
    """Load trainable tensors into ``model`` after checking integrity and backbones.

    Returns:
        The header.
    """
    folder = Path(path)
    header, state = _read_checked(model, folder, check_backbones=check_backbones)
    params = dict(model.trainable_parameters())
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}: tensors do not match the model (missing {missing}, unexpected {unexpected})"
        )
    with torch.no_grad():
        for name, param in params.items():
            if tuple(state[name].shape) != tuple(param.shape):
                raise CheckpointError(
                    f"{folder}: {name} has shape {tuple(state[name].shape)}, "
                    f"model expects {tuple(param.shape)}"
                )
            param.copy_(state[name].to(param.dtype))
    return header


def warm_start(model, path: str | Path) -> tuple[list[str], list[str]]:
    """Initialise the trainable tensors of ``model`` from another checkpoint, where they fit.

    Tensors with the same name and shape are copied (e.g. the projector and, for the same
    expert count, the steering MoE); the others keep their fresh initialisation. The backbones
    must be the same ones the checkpoint was trained against.

    Returns:
        ``(loaded, skipped)`` tensor names.

    Raises:
        CheckpointError: unreadable or corrupt checkpoint, other backbones, or no tensor fits.
    """
    folder = Path(path)
    _, state = _read_checked(model, folder, check_backbones=True)
    loaded, skipped = [], []
    with torch.no_grad():
        for name, param in model.trainable_parameters():
            source = state.get(name)
            if source is not None and tuple(source.shape) == tuple(param.shape):
                param.copy_(source.to(param.dtype))
                loaded.append(name)
            else:
                skipped.append(name)
    if not loaded:
        raise CheckpointError(f"{folder}: no tensor fits this model (all of {skipped} differ)")
    return loaded, skipped


def _read_checked(
    model, folder: Path, *, check_backbones: bool
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The header and tensors of ``folder`` after the integrity (and backbone) checks."""
    header = read_header(folder)
    tensors = folder / TENSORS
    if not tensors.is_file():
        raise CheckpointError(f"{folder}: missing {TENSORS}")
    if _sha256(tensors) != header.get("tensors_sha256"):
        raise CheckpointError(f"{tensors}: corrupt or truncated (SHA-256 does not match header)")
    if check_backbones:
        _check_backbones(model, header, folder)
    try:
        return header, load_file(str(tensors))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{tensors}: unreadable: {exc}") from None


def _check_backbones(model, header: dict, folder: Path) -> None:
    for role in ("encoder", "llm"):
        want = header["backbones"][role]
        have = model.identity[role]
        if want.get("sha256") != have.get("sha256"):
            raise CheckpointError(
                f"{folder}: trained against {role} {want.get('name')!r} "
                f"({_short(want)}), but the model has {have.get('name')!r} ({_short(have)})"
            )


def _short(identity: dict) -> str:
    digest = hashlib.sha256(json.dumps(identity.get("sha256", {}), sort_keys=True).encode())
    return f"files {digest.hexdigest()[:12]}"
