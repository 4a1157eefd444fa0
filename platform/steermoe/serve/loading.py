"""Find and load the served checkpoint: an MLflow registry reference or a checkpoint folder.

``models:/<name>@<alias>`` and ``models:/<name>/<version>`` are downloaded with the MLflow
client; the registered artifact is expected to hold a checkpoint folder written by
``save_checkpoint`` (found anywhere inside it by its ``steermoe.json`` header), possibly next to
a ``config.yaml``. An alias is pinned to its version once, on the driver, so every replica loads
the same version even if the alias moves during a deployment.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from steermoe.model import build_model, load_checkpoint
from steermoe.model.checkpoint import (
    HEADER,
    CheckpointError,
    inference_config,
    local_checkpoint,
)
from steermoe.tracking import default_tracking_uri

_REGISTRY = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def is_registry_ref(ref: str) -> bool:
    """True for ``models:/...`` references."""
    return ref.startswith("models:/")


def pin_version(ref: str, tracking_uri: str) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>``; other references unchanged.

    Raises:
        CheckpointError: malformed reference, unknown model, alias or version.
    """
    if not is_registry_ref(ref):
        return ref
    match = _REGISTRY.match(ref)
    if match is None:
        raise CheckpointError(
            f"{ref!r}: expected models:/<name>@<alias> or models:/<name>/<version>"
        )
    # MLflow is heavy: only registry references need it.
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if match["alias"]:
            mv = client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            mv = client.get_model_version(match["name"], match["version"])
    except MlflowException as exc:
        raise CheckpointError(f"{ref!r} not found in registry {tracking_uri}: {exc}") from None
    return f"models:/{match['name']}/{mv.version}"


def find_checkpoint(root: str | Path) -> Path:
    """The folder under ``root`` (itself included) that holds a checkpoint header.

    Raises:
        CheckpointError: no header, or several (ambiguous).
    """
    root = Path(root)
    if (root / HEADER).is_file():
        return root
    found = sorted(p.parent for p in root.rglob(HEADER))
    if not found:
        raise CheckpointError(f"{root}: no SteerMoE checkpoint ({HEADER}) inside")
    if len(found) > 1:
        raise CheckpointError(f"{root}: several checkpoints inside: {[str(p) for p in found]}")
    return found[0]


def resolve_checkpoint(
    ref: str, *, tracking_uri: str | None = None, dst: Path | None = None
) -> Path:
    """Local checkpoint folder for ``ref`` (downloading registry artifacts into ``dst``).

    Args:
        ref: ``models:/...`` reference, ``embedded:<name>`` (shipped with the package) or a
            checkpoint folder (or a folder containing one).
        tracking_uri: MLflow tracking/registry URI (default: :func:`default_tracking_uri`).
        dst: download folder for registry artifacts (default: a fresh temporary folder).

    Raises:
        CheckpointError: missing folder, unknown registry entry, no checkpoint inside.
    """
    if not is_registry_ref(ref):
        return find_checkpoint(local_checkpoint(ref))
    uri = tracking_uri or default_tracking_uri()
    pinned = pin_version(ref, uri)
    import mlflow.artifacts  # heavy: only registry references need it
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, version = pinned.removeprefix("models:/").rsplit("/", 1)
    target = dst or Path(tempfile.mkdtemp(prefix="steermoe-serve-"))
    try:
        # The version's own artifact location, read with URIs given per call: a models:/
        # download consults the process-wide registry URI, and MLflow's set_*_uri would
        # export both to the whole process.
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        source = client.get_model_version_download_uri(name, version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(target), tracking_uri=uri
        )
    except MlflowException as exc:
        raise CheckpointError(f"cannot download {pinned}: {exc}") from None
    return find_checkpoint(local)


def load_model(
    ref: str,
    *,
    tracking_uri: str | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
):
    """Build the model a checkpoint describes and load its trainable tensors.

    Returns:
        ``(model, header, folder)``: the ``SteerMoEModel`` in eval mode, the checkpoint header
        and the local checkpoint folder.
    """
    folder = resolve_checkpoint(ref, tracking_uri=tracking_uri)
    cache = Path(cache_dir) if cache_dir else None
    model = build_model(inference_config(folder, device), device=device, cache_dir=cache)
    header = load_checkpoint(model, folder)
    model.eval()
    return model, header, folder
