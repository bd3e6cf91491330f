"""Where collected activation features go, item by item: memory for small sets, ``.npy`` files for large ones.

:mod:`calibration.activations` hands each statement's pooled rows (``last`` and ``mean``, ``(L, H)`` each) and,
for bag probes, its token rows to a sink as the engine delivers them. :class:`MemorySink` keeps them in lists and
stacks them at the end (the default: a few thousand statements of a small model). :class:`DiskSink` writes them
straight into float32 ``.npy`` files in a folder (``numpy.lib.format.open_memmap``) and returns read-only memory
maps of them, so a set larger than RAM is collected and read back page by page: ``n`` statements at ``L`` layers
of width ``H`` take ``2 n L H x 4`` bytes of disk (72 GiB for 9,000 statements at 32 layers of 8,192) and almost
no memory.

The folder's ``features.json`` is written last, naming the collection's key (model, layers, texts, kind) and
shapes: a folder holds a complete collection exactly when it is there with the same key, which is how a re-run
reuses it (:func:`load_features`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from numpy.lib import format as npy

from guard.errors import ConfigError

__all__ = ["FeatureSink", "MemorySink", "DiskSink", "open_sink", "load_features", "MANIFEST"]

#: the file that marks a folder's collection complete
MANIFEST = "features.json"
_POOLED = ("last", "mean")
# numpy's stubs leave the .npy helpers untyped
_open_memmap: Callable[..., np.memmap[Any, Any]] = npy.open_memmap
_write_header: Callable[[BinaryIO, dict[str, object]], None] = npy.write_array_header_1_0


class FeatureSink(Protocol):
    """Takes one statement's features at a time; :meth:`finish` gives them all back as arrays."""

    def add(self, last: np.ndarray, mean: np.ndarray, tokens: np.ndarray | None = None) -> None:
        """One statement: its last token's rows ``(L, H)``, its mean rows ``(L, H)`` and, for bags, every
        token's rows ``(t, L, H)``."""

    def finish(self) -> dict[str, np.ndarray]:
        """``{"last": (n, L, H), "mean": (n, L, H)}`` float32, plus ``"tokens": (N, L, H)`` and
        ``"starts": (n,)`` when token rows were kept."""


def _starts(lengths: list[int]) -> np.ndarray:
    """Each statement's first row among the concatenated token rows."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def _check_count(added: int, expected: int | None) -> None:
    if added == 0 or (expected is not None and added != expected):
        raise ConfigError(f"the feature sink got {added} statements but expected {expected or 'at least one'}; "
                          "pass every collected text exactly once")


class MemorySink:
    """Features in memory, stacked once at the end (what collection always did).

    Example:
        >>> sink = MemorySink()
        >>> sink.add(np.ones((2, 3)), np.zeros((2, 3)))
        >>> sink.finish()["last"].shape
        (1, 2, 3)
    """

    def __init__(self, keep_tokens: bool = False) -> None:
        self.keep_tokens = keep_tokens
        self._pooled: dict[str, list[np.ndarray]] = {name: [] for name in _POOLED}
        self._tokens: list[np.ndarray] = []

    def add(self, last: np.ndarray, mean: np.ndarray, tokens: np.ndarray | None = None) -> None:
        """Keep a float32 copy of one statement's rows (a copy, so a view does not pin the engine's whole
        ``(tokens, L, H)`` result in memory)."""
        self._pooled["last"].append(np.array(last, np.float32))
        self._pooled["mean"].append(np.array(mean, np.float32))
        if self.keep_tokens and tokens is not None:
            self._tokens.append(np.array(tokens, np.float32))

    def finish(self) -> dict[str, np.ndarray]:
        """The stacked features."""
        _check_count(len(self._pooled["last"]), None)
        out = {name: np.stack(rows) for name, rows in self._pooled.items()}
        if self.keep_tokens:
            out["tokens"] = np.concatenate(self._tokens)
            out["starts"] = _starts([len(t) for t in self._tokens])
        return out


class DiskSink:
    """Features written as they come into ``folder/{last,mean}.npy`` (and ``tokens.npy``, ``starts.npy``).

    ``n`` is the number of statements to come; the pooled files are sized for them when the first one arrives
    (its rows give ``L`` and ``H``). Token rows, whose count is known only at the end, are appended to
    ``tokens.npy`` after a header that numpy leaves room to grow, and the header is rewritten on :meth:`finish`.

    Example:
        >>> import tempfile
        >>> sink = DiskSink(tempfile.mkdtemp(), 1, key="demo")
        >>> sink.add(np.ones((2, 3)), np.zeros((2, 3)))
        >>> type(sink.finish()["last"]).__name__
        'memmap'
    """

    def __init__(self, folder: str | Path, n: int, keep_tokens: bool = False, key: str = "") -> None:
        self.folder, self.n, self.keep_tokens, self.key = Path(folder), n, keep_tokens, key
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / MANIFEST).unlink(missing_ok=True)  # incomplete until finish() writes it again
        self._pooled: dict[str, np.memmap[Any, Any]] = {}
        self._added = 0
        self._lengths: list[int] = []
        self._tokens: BinaryIO | None = None
        self._row_shape: tuple[int, ...] = ()

    def add(self, last: np.ndarray, mean: np.ndarray, tokens: np.ndarray | None = None) -> None:
        """Write one statement's rows into the next slot (and append its token rows)."""
        if self._added >= self.n:
            raise ConfigError(f"the feature sink in {self.folder} holds {self.n} statements and got one more; "
                              "size it for every text collected")
        if not self._pooled:
            shape = (self.n, *np.shape(last))
            self._pooled = {name: _open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=np.float32,
                                               shape=shape) for name in _POOLED}
        self._pooled["last"][self._added] = last
        self._pooled["mean"][self._added] = mean
        self._added += 1
        if self.keep_tokens and tokens is not None:
            self._append_tokens(np.ascontiguousarray(tokens, np.float32))

    def _append_tokens(self, rows: np.ndarray) -> None:
        if self._tokens is None:
            self._tokens = open(self.folder / "tokens.npy", "wb")  # closed by finish()
            self._tokens.write(_header((0, *rows.shape[1:])))
            self._row_shape = rows.shape[1:]
        self._tokens.write(rows.tobytes())
        self._lengths.append(len(rows))

    def finish(self) -> dict[str, np.ndarray]:
        """Flush, mark the folder complete and return read-only memory maps of its files."""
        _check_count(self._added, self.n)
        for array in self._pooled.values():
            array.flush()
        self._pooled = {}
        names = list(_POOLED)
        if self.keep_tokens:
            self._close_tokens()
            np.save(self.folder / "starts.npy", _starts(self._lengths))
            names += ["tokens", "starts"]
        manifest = {"key": self.key, "n": self.n, "arrays": names}
        (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        return _open(self.folder, names)

    def _close_tokens(self) -> None:
        """Rewrite ``tokens.npy``'s header with the final row count (same length: numpy pads it for growth)."""
        if self._tokens is None:
            raise ConfigError(f"keep_tokens was set but no token rows reached the sink in {self.folder}; "
                              "pass each statement's token rows to add()")
        header = _header((sum(self._lengths), *self._row_shape))
        if len(header) != len(_header((0, *self._row_shape))):
            raise ConfigError(f"numpy {np.__version__} wrote a .npy header that cannot grow in place; "
                              "upgrade numpy (>= 1.26) or collect without --features-dir")
        self._tokens.seek(0)
        self._tokens.write(header)
        self._tokens.close()
        self._tokens = None


def _header(shape: tuple[int, ...]) -> bytes:
    """A version-1.0 ``.npy`` header of a C-ordered little-endian float32 array of ``shape``."""
    buf = io.BytesIO()
    _write_header(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _open(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    # read-only memory maps of plain float32 .npy files (open_memmap never unpickles, unlike a general loader)
    return {name: _open_memmap(folder / f"{name}.npy", mode="r") for name in names}


def open_sink(n: int, keep_tokens: bool = False, folder: str | Path | None = None, key: str = "") -> FeatureSink:
    """A :class:`DiskSink` in ``folder`` when one is given, else a :class:`MemorySink`."""
    if folder is None:
        return MemorySink(keep_tokens)
    return DiskSink(folder, n, keep_tokens, key)


def load_features(folder: str | Path, key: str) -> dict[str, np.ndarray] | None:
    """The complete collection ``key`` in ``folder`` as read-only memory maps, or ``None`` (absent, incomplete,
    or another collection's)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return None
    return _open(Path(folder), list(manifest.get("arrays", _POOLED)))
