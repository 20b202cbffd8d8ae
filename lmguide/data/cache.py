"""Cache helpers: stable config hashes and atomic writes (temp file + rename).

Concurrent jobs (sweeps) share one cache, so every file lands in one `os.replace` and a reader never
sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def config_hash(obj: Any, length: int = 10) -> str:
    """Short sha1 of a JSON-serialisable object (keys sorted), used to key cache folders."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:length]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    def _w(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return atomic_write(path, _w)


def atomic_imwrite(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an image with OpenCV (BGR or single channel) atomically; the extension picks the codec."""
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise OSError(f"could not encode image for {path}")
    return atomic_write_bytes(path, buf.tobytes())
