"""Cache helpers: stable config hashes, atomic writes (temp file + rename), the per-source done records
a resumed prepare pass trusts, and one error for a cache that cannot be written.

Concurrent jobs (sweeps) share one cache, so every file lands in one `os.replace` and a reader never
sees half a file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lmguide.runs.errors import LmguideError


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


_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}


class CacheWriteError(LmguideError, RuntimeError):
    """The landmark cache could not be written (unwritable folder, full disk)."""


@contextmanager
def cache_errors(cache_dir: str | Path):
    """Turn an OS error while fetching or writing into ``cache_dir`` into one message that names the
    folder, the cause and the fix. Writes are atomic and per file: what was cached stays, and the next
    run resumes from it."""
    try:
        yield
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS:  # e.g. a network error fetching the demo: its own message
            raise
        cause = err.strerror or str(err)
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        raise CacheWriteError(
            f"cannot write the landmark cache under {cache_dir}: {cause}{where}. Files cached so far are "
            "kept and a re-run resumes from them; free space or set paths.cache_dir (LMGUIDE_CACHE_DIR) "
            "to a writable folder"
        ) from err


# -- done records: a source file counts as indexed once its record exists


def done_path(work: Path, key: str) -> Path:
    return work / "done" / f"{key}.json"


def is_done(work: Path, item) -> bool:
    """A source counts as done when its record exists and was made from a file of the same size."""
    path = done_path(work, item.key)
    if not path.exists():
        return False
    try:
        rec = json.loads(path.read_text())
        return rec.get("size") == item.path.stat().st_size
    except (OSError, ValueError):
        return False  # unreadable record or missing file: index it again (and report then)


def remove_stale_temps(work: Path, key: str, older_than: float = 600.0) -> int:
    """Delete temp files (``.<name>.<random>``) a killed run left in the folders of source ``key``.

    Only files older than ``older_than`` seconds: a younger one may belong to a concurrent run that is
    writing it right now. Temp files are never read, so leaving a young one is harmless.
    """
    now, n = time.time(), 0
    for folder in (work / "faces" / key, work / "landmarks" / key, done_path(work, key).parent):
        if not folder.is_dir():
            continue
        for p in folder.glob(".*"):
            try:
                if p.is_file() and now - p.stat().st_mtime > older_than:
                    p.unlink()
                    n += 1
            except OSError:
                pass  # removed by a concurrent run
    return n


def file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
