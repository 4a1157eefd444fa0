"""Process environment defaults: loopback-only Ray, no telemetry, an offline model hub.

``apply_defaults()`` only fills variables the user has not set, so anything can be
overridden from the shell. Jobs call it first; tests call it from ``conftest.py``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

DEFAULTS: dict[str, str] = {
    # A single-node Ray stays on 127.0.0.1 instead of the machine's interface address.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # DeepSpeed otherwise warns that it cannot find an accelerator on CPU machines.
    "DS_ACCELERATOR": "cpu",
}

TEST_DEFAULTS: dict[str, str] = {
    # Tiny random backbones run ~7x faster on one intra-op thread than on two.
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def apply_defaults(*, testing: bool = False) -> None:
    """Set the platform's environment defaults where the user has not set them."""
    values = dict(DEFAULTS)
    if testing:
        values.update(TEST_DEFAULTS)
    if _has_cuda_hint():
        values.pop("DS_ACCELERATOR")
    if os.environ.get("RAY_ADDRESS"):
        # Joining an existing (possibly multi-node) cluster: keep Ray's own address choice.
        values.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    for key, value in values.items():
        os.environ.setdefault(key, value)


def _has_cuda_hint() -> bool:
    return Path("/dev/nvidiactl").exists() or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


def cache_dir() -> Path:
    """Folder for converted backbones and built data (``$STEERMOE_CACHE``, default
    ``~/.cache/steermoe``); outside the repository so it never lands in git."""
    return Path(os.environ.get("STEERMOE_CACHE", Path.home() / ".cache" / "steermoe")).expanduser()


def shared_data_dir() -> Path:
    """Optional folder of extra held-out speech (``$STEERMOE_SHARED_DATA``, default
    ``../shared/data`` next to the repository). It may be absent on a user's machine."""
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    return Path(os.environ.get("STEERMOE_SHARED_DATA", default)).expanduser()


# Checkpoints shipped inside the package, referenced as ``embedded:<name>``.
EMBEDDED_PREFIX = "embedded:"
EMBEDDED_CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def embedded_checkpoints() -> list[str]:
    """Names of the checkpoints shipped inside the package."""
    if not EMBEDDED_CHECKPOINTS.is_dir():
        return []
    return sorted(p.parent.name for p in EMBEDDED_CHECKPOINTS.glob("*/steermoe.json"))


def ray_token_path() -> Path:
    """The token file Ray's CLI and clients read: ``$RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


_TOKEN_REPORTED: set[str] = set()


def ensure_ray_token() -> Path | None:
    """Make sure a local cluster started with token authentication has its token.

    ``ray start --head`` with ``RAY_AUTH_MODE=token`` does not create a missing token (only
    ``ray.init()`` does, readable by every user). This creates it, as 64 random hex digits in
    the file Ray's CLI reads, with mode 0600 in a 0700 folder, and says once per process where
    the token is (never the token itself). Nothing is done when ``RAY_AUTH_TOKEN`` holds the
    token or ``RAY_AUTH_MODE`` is not ``token`` (set by the caller; unset means token auth).

    Returns:
        The token file, or None when no file is involved.
    """
    import secrets

    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_MODE", "token") != "token":
        return None
    path = ray_token_path()
    created = False
    if not path.is_file():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
            created = True
    if str(path) not in _TOKEN_REPORTED:
        _TOKEN_REPORTED.add(str(path))
        what = "created a new token" if created else "using the token"
        print(
            f"[ray] token authentication: {what} in {path}; CLI calls need RAY_AUTH_MODE=token",
            flush=True,
        )
    return path


def ray_temp_dir() -> Path:
    """Where local Ray clusters keep their sessions and logs, as Ray itself decides it:
    ``$RAY_TMPDIR/ray``, else (on Linux) ``$TMPDIR/ray``, else ``/tmp/ray``."""
    base = os.environ.get("RAY_TMPDIR")
    if not base and sys.platform.startswith("linux"):
        base = os.environ.get("TMPDIR")
    return Path(base or "/tmp") / "ray"


def free_port(preferred: int = 0) -> int:
    """``preferred`` when nothing listens on it at 127.0.0.1, else (or for 0) a free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
