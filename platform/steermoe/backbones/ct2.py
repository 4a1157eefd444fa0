"""Reader for CTranslate2 ``model.bin`` files (binary versions 4 to 6), written from the format.

Layout (little-endian): u32 version, string spec name, u32 revision, u32 variable count; per
variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, raw data; then u32
alias count and (alias, target) string pairs. A string is a u16 length and that many bytes,
the last one a NUL. Nothing may follow the aliases.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUPPORTED_VERSIONS = (4, 5, 6)

# CTranslate2's DataType enum -> numpy dtype; bfloat16 (5) is widened to float32 on read.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
BFLOAT16 = 5


class Ct2FormatError(ValueError):
    """A file is not a CTranslate2 model this reader understands (or it is truncated)."""


@dataclass(frozen=True)
class Ct2Model:
    """The parsed contents of a CTranslate2 ``model.bin``.

    Attributes:
        version: Binary format version.
        spec: Model spec name, e.g. ``"WhisperSpec"``.
        revision: Spec revision.
        variables: Variable name -> array (read-only view of the source bytes, bf16 widened).
        aliases: Alias name -> target variable name (e.g. a tied output projection).
    """

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """Return a variable by name, following an alias if ``name`` is one."""
        return self.variables[self.aliases.get(name, name)]

    def scalar(self, name: str) -> int | float:
        """Return a rank-0 variable (e.g. ``encoder/num_heads``) as a Python number."""
        return self.get(name).reshape(-1)[0].item()


class _Cursor:
    def __init__(self, data: bytes | memoryview) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def take(self, size: int) -> memoryview:
        end = self.pos + size
        if end > len(self.view):
            raise Ct2FormatError(f"truncated file: wanted {size} bytes at offset {self.pos}")
        chunk = self.view[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def string(self) -> str:
        (length,) = self.unpack("H")
        raw = bytes(self.take(length))
        if not raw or raw[-1] != 0:
            raise Ct2FormatError(f"string at offset {self.pos - length} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def read_ct2_model(source: str | Path | bytes | memoryview) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin``.

    Args:
        source: A path, or the file's bytes (e.g. several parts joined in memory).

    Returns:
        The parsed model; arrays are views into ``source``'s bytes (copy before writing).

    Raises:
        Ct2FormatError: Unsupported version, bad dtype or size, truncation or trailing bytes.
    """
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    cur = _Cursor(data)
    version = cur.u32()
    if version not in SUPPORTED_VERSIONS:
        raise Ct2FormatError(
            f"CTranslate2 binary version {version} is not supported (known: {SUPPORTED_VERSIONS})"
        )
    spec = cur.string()
    revision = cur.u32()
    variables: dict[str, np.ndarray] = {}
    for _ in range(cur.u32()):
        name = cur.string()
        rank = cur.u8()
        shape = cur.unpack(f"{rank}I") if rank else ()
        dtype_id = cur.u8()
        if dtype_id not in DTYPES:
            raise Ct2FormatError(f"variable {name!r}: unknown dtype id {dtype_id}")
        dtype = DTYPES[dtype_id]
        num_bytes = cur.u32()
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if num_bytes != expected:
            raise Ct2FormatError(
                f"variable {name!r}: {num_bytes} bytes for shape {shape} of {dtype} ({expected} expected)"
            )
        array = np.frombuffer(cur.take(num_bytes), dtype=dtype).reshape(shape)
        if dtype_id == BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
    aliases: dict[str, str] = {}
    for _ in range(cur.u32()):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.pos != len(cur.view):
        raise Ct2FormatError(f"{len(cur.view) - cur.pos} unexpected bytes after the aliases")
    missing = sorted(t for t in aliases.values() if t not in variables)
    if missing:
        raise Ct2FormatError(f"aliases point at missing variables: {missing}")
    return Ct2Model(version, spec, revision, variables, aliases)


def write_ct2_model(
    path: str | Path,
    variables: dict[str, np.ndarray],
    *,
    spec: str = "WhisperSpec",
    revision: int = 3,
    version: int = 6,
    aliases: dict[str, str] | None = None,
) -> None:
    """Write a CTranslate2 ``model.bin`` (the inverse of ``read_ct2_model``; used by tests).

    Args:
        path: File to write.
        variables: Name -> array of a dtype in ``DTYPES`` (bfloat16 is not written).
        spec: Spec name.
        revision: Spec revision.
        version: Binary version.
        aliases: Alias name -> target variable name.
    """
    ids = {np.dtype(v).str: k for k, v in DTYPES.items() if k != BFLOAT16}

    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", version), string(spec), struct.pack("<II", revision, len(variables))]
    for name, array in variables.items():
        array = np.array(array, order="C")  # (ascontiguousarray makes scalars 1-d)
        le = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        out += [
            string(name),
            struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape),
            struct.pack("<BI", ids[le.str], array.nbytes),
            array.astype(le).tobytes(),
        ]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    Path(path).write_bytes(b"".join(out))
