"""Where a video may be entered by seeking: the keyframes of an MP4/MOV, read from its sample tables.

OpenCV's seek (``CAP_PROP_POS_FRAMES``) turns a frame number into a time with the stream's frame
rate and lands by timestamp, so it only finds the frame sequential decoding numbers ``i`` when every
frame lasts as long: on a variable-frame-rate phone video it lands frames away (the demo's two
``.mov`` files do). :func:`seek_table` therefore gives a table only for a file whose one video track
has a constant frame duration and a single edit, and says where its keyframes are, so a reader seeks
only where that skips decoding. Nothing is decoded; any other container, or anything unexpected in
this one, is None (read the video sequentially).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: a ``moov`` box above this is not read (the tables of a 1 h 60 fps video are a few MB)
MAX_MOOV_BYTES = 64 << 20


@dataclass(frozen=True)
class SeekTable:
    """The frames of a video's track and its keyframes (0-based frame indices, ascending)."""

    frames: int
    keyframes: tuple[int, ...]

    def keyframe_at_or_before(self, index: int) -> int:
        """The last keyframe at or before ``index`` (the first frame when there is none)."""
        i = bisect.bisect_right(self.keyframes, max(0, index)) - 1
        return self.keyframes[i] if i >= 0 else 0


def _boxes(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, box end)`` of the boxes in ``buf[start:end]``; stops at a malformed one."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", buf[pos : pos + 8])
        head = 8
        if size == 1 and pos + 16 <= end:
            (size,) = struct.unpack(">Q", buf[pos + 8 : pos + 16])
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield kind, pos + head, pos + size
        pos += size


def _child(buf: bytes, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    for kind, s, e in _boxes(buf, start, end):
        if kind == path[0]:
            return (s, e) if len(path) == 1 else _child(buf, s, e, *path[1:])
    return None


def _read_moov(path: Path) -> bytes | None:
    with open(path, "rb") as f:
        f.seek(0, 2)
        size, pos = f.tell(), 0
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            n, kind = struct.unpack(">I4s", head[:8])
            skip = 8
            if n == 1 and len(head) == 16:
                (n,), skip = struct.unpack(">Q", head[8:16]), 16
            elif n == 0:
                n = size - pos
            if n < 8 or not kind.isascii():
                return None  # not an ISO media file
            if kind == b"moov":
                if n > MAX_MOOV_BYTES:
                    return None
                f.seek(pos + skip)
                return f.read(n - skip)  # the payload: the boxes inside
            pos += n
    return None


def _track_table(buf: bytes, s: int, e: int) -> SeekTable | None:
    """The table of one video ``trak`` box, or None when it is not safe to seek in."""
    stbl = _child(buf, s, e, b"mdia", b"minf", b"stbl")
    elst = _child(buf, s, e, b"edts", b"elst")
    if stbl is None:
        return None
    if elst is not None:  # more than one edit (a cut, an empty lead-in) moves frames off their times
        (entries,) = struct.unpack(">I", buf[elst[0] + 4 : elst[0] + 8])
        if entries != 1:
            return None
    stts, stsz = _child(buf, *stbl, b"stts"), _child(buf, *stbl, b"stsz")
    if stts is None or stsz is None:
        return None
    (runs,) = struct.unpack(">I", buf[stts[0] + 4 : stts[0] + 8])
    if runs != 1:  # frame durations vary (or the table is empty): seeking by time is not by frame
        return None
    (frames,) = struct.unpack(">I", buf[stsz[0] + 8 : stsz[0] + 12])
    (count, _duration) = struct.unpack(">II", buf[stts[0] + 8 : stts[0] + 16])
    if frames <= 0 or count != frames:
        return None
    stss = _child(buf, *stbl, b"stss")
    if stss is None:  # no sync-sample table: every frame is a keyframe
        return SeekTable(frames, tuple(range(frames)))
    (k,) = struct.unpack(">I", buf[stss[0] + 4 : stss[0] + 8])
    if stss[0] + 8 + 4 * k > stss[1]:
        return None
    keys = struct.unpack(f">{k}I", buf[stss[0] + 8 : stss[0] + 8 + 4 * k])
    return SeekTable(frames, tuple(sorted(i - 1 for i in keys if 1 <= i <= frames)))


def seek_table(path: str | Path) -> SeekTable | None:
    """The keyframe table of an MP4/MOV with one constant-frame-rate video track and one edit, else None."""
    try:
        buf = _read_moov(Path(path))
        if buf is None:
            return None
        tables = []
        for kind, s, e in _boxes(buf, 0, len(buf)):
            hdlr = _child(buf, s, e, b"mdia", b"hdlr") if kind == b"trak" else None
            if hdlr is not None and buf[hdlr[0] + 8 : hdlr[0] + 12] == b"vide":
                tables.append(_track_table(buf, s, e))
        return tables[0] if len(tables) == 1 else None  # several video tracks: which one OpenCV reads?
    except (OSError, struct.error):
        return None
