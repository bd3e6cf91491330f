"""Read and write the safetensors format with numpy alone.

The format is an 8-byte little-endian header length, a JSON header mapping tensor names to
``{"dtype", "shape", "data_offsets"}`` (plus an optional ``__metadata__`` of strings), then the raw
little-endian bytes. Keeping this in the core lets artefacts load without torch; files written here
load with the official ``safetensors`` library and vice versa. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from guard.errors import ArtifactError

__all__ = ["save_tensors", "load_tensors"]

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dt: name for name, dt in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def save_tensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` in safetensors format.

    Args:
        path: destination file.
        tensors: name -> array; arrays are stored little-endian and C-contiguous.
        metadata: optional string -> string map stored as ``__metadata__``.

    Raises:
        ArtifactError: an array has a dtype safetensors cannot store.
    """
    header: dict[str, object] = {}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dt not in _NAMES:
            raise ArtifactError(
                f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot store; "
                f"expected one of {sorted(str(d) for d in _NAMES)} (cast it with .astype(np.float32))"
            )
        blob = np.ascontiguousarray(arr, dtype=dt).tobytes()
        header[name] = {"dtype": _NAMES[dt], "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for blob in blobs:
            fh.write(blob)


def load_tensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into numpy arrays.

    Returns:
        ``(tensors, metadata)``.

    Raises:
        ArtifactError: the file is missing, truncated or not safetensors.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read tensor file {str(path)!r}: {exc.strerror}; check the path") from exc
    if len(data) < 8:
        raise ArtifactError(f"{str(path)!r} is {len(data)} bytes, too short to be safetensors; re-export it")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > min(_MAX_HEADER, len(data) - 8):
        raise ArtifactError(f"{str(path)!r} declares a {hlen}-byte header but holds {len(data)} bytes; "
                            "the file is corrupt")
    try:
        header = json.loads(data[8 : 8 + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{str(path)!r} has an unreadable safetensors header ({exc}); the file is corrupt") from exc
    body = memoryview(data)[8 + hlen :]
    metadata = header.pop("__metadata__", {}) or {}
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        try:
            dt = _DTYPES[spec["dtype"]]
            start, end = (int(x) for x in spec["data_offsets"])
            shape = tuple(int(s) for s in spec["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"tensor {name!r} in {str(path)!r} has a malformed entry {spec!r}") from exc
        count = int(np.prod(shape, dtype=np.int64))
        if end > len(body) or end - start != count * dt.itemsize:
            raise ArtifactError(
                f"tensor {name!r} in {str(path)!r} needs bytes {start}..{end} of {len(body)}; "
                "the file is truncated or corrupt"
            )
        out[name] = np.frombuffer(body[start:end], dtype=dt).reshape(shape).copy()
    return out, {str(k): str(v) for k, v in metadata.items()}
