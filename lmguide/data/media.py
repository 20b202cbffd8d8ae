"""Reading media: images as RGB, and the wanted frames of a video, streamed one at a time.

Shared by the index builder (``prepare``) and ``predict`` so that both sample and decode frames the
same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from lmguide.data.keyframes import SeekTable, seek_table
from lmguide.runs.errors import LmguideError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")


class MediaError(LmguideError, ValueError):
    """A file that cannot be decoded at all (the reason is in the message)."""


def plan_frames(total: int, frames_per_video: int | None, every_k: int | None) -> list[int]:
    """Indices of the frames to score among ``total``: every k-th, or n evenly spaced (all if None)."""
    if every_k:
        return list(range(0, total, every_k))
    if frames_per_video is None or frames_per_video >= total:
        return list(range(total))
    return sorted(set(np.linspace(0, total - 1, frames_per_video).round().astype(int).tolist()))


# the marker a complete file of this kind ends with (trailing bytes after it are tolerated)
_END_MARKERS = {".jpg": (b"\xff\xd9", "JPEG"), ".jpeg": (b"\xff\xd9", "JPEG"), ".png": (b"IEND", "PNG")}
_TAIL = 1 << 20


def check_complete(path: Path) -> None:
    """A JPEG or PNG cut short decodes with its missing part grey and no error from OpenCV, and then
    looks like a frame without a face. Refuse a decodable image as what it is when its end marker is
    missing: a truncated file."""
    path = Path(path)
    if path.suffix.lower() not in _END_MARKERS:
        return
    marker, kind = _END_MARKERS[path.suffix.lower()]
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - _TAIL))
        tail = f.read()
    if marker not in tail:
        raise MediaError(f"truncated {kind} (no end-of-image marker): the file is incomplete")


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (alpha dropped, greyscale expanded, as the training data is read)."""
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as err:  # an image over OpenCV's size limit raises instead of returning None
        if "CV_IO_MAX_IMAGE" in str(err.err):
            raise MediaError(
                f"image too large to decode ({err.err} failed: OpenCV reads at most "
                "OPENCV_IO_MAX_IMAGE_PIXELS, 2^30 pixels by default)"
            ) from None
        raise MediaError(f"not a readable image (OpenCV: {err.err})") from None
    if bgr is None:
        raise MediaError("not a readable image (OpenCV could not decode it)")
    try:
        check_complete(path)
    except OSError as err:
        raise MediaError(f"cannot read the file ({err.strerror or err})") from None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_pixel_limit() -> int:
    """The pixels one image may hold: OpenCV's own limit for images (``OPENCV_IO_MAX_IMAGE_PIXELS``,
    2^30 by default), applied to video frames as well."""
    try:
        return int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))
    except ValueError:
        return 1 << 30


def too_many_pixels(w: int, h: int, limit: int, what: str) -> MediaError:
    return MediaError(
        f"{what} {w}x{h} pixels ({w * h / 1e6:.0f} megapixels), above the limit of "
        f"{limit / 1e6:g} megapixels per frame; downscale the video (e.g. ffmpeg -vf scale=1920:-2)"
    )


def video_frame_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of a video's frames from its header (nothing decoded), or None when OpenCV
    cannot open it or the header does not say."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return (w, h) if w > 0 and h > 0 else None
    finally:
        cap.release()


#: how VideoFrames reaches the wanted frames: ``seek`` (default) or ``grab`` (decode every frame up to
#: the last wanted one); the environment variable sets it for prepare's worker processes too
DECODE_ENV = "LMGUIDE_VIDEO_DECODE"
DECODE_MODES = ("seek", "grab")
#: OpenCV's seek to frame i starts decoding at the keyframe at or before i - 16 (cap_ffmpeg_impl.hpp)
SEEK_BACKOFF = 16


def decode_mode(mode: str | None = None) -> str:
    mode = mode or os.environ.get(DECODE_ENV) or "seek"
    if mode not in DECODE_MODES:
        raise ValueError(f"video decode mode {mode!r} (from {DECODE_ENV}?) is not one of {DECODE_MODES}")
    return mode


class VideoFrames:
    """The wanted frames of a video, decoded one at a time.

    ``decode="grab"`` decodes every frame up to the last wanted one (``grab`` skips the colour
    conversion of the others). ``"seek"`` (default, or ``$LMGUIDE_VIDEO_DECODE``) seeks past a
    keyframe when one lies between the current frame and the next wanted one, and only in files
    where seeking is frame-exact (:func:`lmguide.data.keyframes.seek_table`: MP4/MOV with a constant
    frame rate; elsewhere it grabs): the frames are the same bytes as ``grab``'s. ``decoded`` counts
    the frames the last iteration decoded (those inside a seek estimated from the keyframe table).

    Iterating yields ``(frame_index, rgb)``; a wanted frame the decoder cannot deliver (truncated
    file, frame count in the header too high) is yielded as ``(frame_index, None)``. ``threads`` caps
    the decoder's threads (prepare runs one per worker process, each worker owning one core).
    ``max_pixels`` (default :func:`image_pixel_limit`): a frame size above it, in the header or in the
    first frame decoded larger than the header said, is a MediaError before the rest is decoded.
    """

    def __init__(
        self,
        path: Path,
        frames_per_video: int | None,
        every_k: int | None,
        threads: int | None = None,
        max_pixels: int | None = None,
        decode: str | None = None,
    ):
        self.path, self.threads, self.decode = path, threads, decode_mode(decode)
        self.max_pixels = int(max_pixels) if max_pixels else image_pixel_limit()
        self.total = self._frame_count()
        self.wanted = plan_frames(self.total, frames_per_video, every_k)
        self.decoded = 0

    def _open(self) -> cv2.VideoCapture:
        cap = None
        if self.threads:  # FFmpeg decoder threads (its default: one per core)
            cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, self.threads])
            if not cap.isOpened():  # another backend may still read it
                cap.release()
                cap = None
        cap = cap or cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise MediaError("not a readable video (OpenCV could not open it)")
        return cap

    def _frame_count(self) -> int:
        cap = self._open()
        try:
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if w * h > self.max_pixels:  # checked before a single frame is decoded
                raise too_many_pixels(w, h, self.max_pixels, "its frames are")
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if total <= 0:  # no count in the header (some streams): count by decoding
                total = 0
                while cap.grab():
                    total += 1
        finally:
            cap.release()
        if total <= 0:
            raise MediaError("no decodable video frame")
        return total

    def __len__(self) -> int:
        return len(self.wanted)

    def _seek_table(self) -> SeekTable | None:
        if self.decode != "seek":
            return None
        table = seek_table(self.path)
        return table if table is not None and table.frames == self.total else None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | None]]:
        cap, table = self._open(), self._seek_table()
        self.decoded = 0
        try:
            idx = 0  # the frame the next grab() decodes
            for pos, want in enumerate(self.wanted):
                key = table.keyframe_at_or_before(want - SEEK_BACKOFF) if table else 0
                if key > idx:  # a keyframe between here and there: seeking skips decoding
                    landed = cap.set(cv2.CAP_PROP_POS_FRAMES, want)
                    if landed and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == want:
                        self.decoded += want - key
                        idx = want
                    else:  # OpenCV did not land there: decode from the start, sequentially
                        cap.release()
                        cap, table, idx = self._open(), None, 0
                while idx < want and cap.grab():
                    idx, self.decoded = idx + 1, self.decoded + 1
                if idx < want or not cap.grab():  # the stream ends before this frame
                    for missing in self.wanted[pos:]:
                        yield missing, None
                    return
                idx, self.decoded = idx + 1, self.decoded + 1
                ok, bgr = cap.retrieve()
                if ok and bgr is not None and bgr.shape[0] * bgr.shape[1] > self.max_pixels:
                    h, w = bgr.shape[:2]  # the header understated it: stop before the rest
                    raise too_many_pixels(w, h, self.max_pixels, f"frame {want} is")
                yield want, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok and bgr is not None else None
        finally:
            cap.release()
