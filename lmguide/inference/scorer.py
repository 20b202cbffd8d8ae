"""Find, crop and score the faces of one file, as training saw them: the machinery of
``python -m lmguide.predict``, shared with the web page (:mod:`lmguide.inference.page`) and
``python -m lmguide.visualize``.

:func:`list_inputs` lists what a path holds (every file it skips, with the reason); :class:`Scorer`
detects, crops and scores faces in batches (face tracks cut into clips for a clip model);
:func:`score_file` streams one image or video through it into a :class:`FileResult`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmguide.data.channels import NoLandmarks
from lmguide.data.faces import FacePipeline
from lmguide.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, VideoFrames, read_image
from lmguide.inference.clips import ClipSpec, score_tracks
from lmguide.inference.results import FileResult, FrameResult
from lmguide.runs.errors import ConfigError, InputMissing

# -- inputs and frames -----------------------------------------------------------------------------


def media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def _not_a_file(p: Path) -> str | None:
    """Why ``p`` (found in a folder, or given) is no regular file to read, or None when it is one."""
    import errno
    import stat

    try:
        mode = p.stat().st_mode  # follows links: a dangling link or a loop fails here
    except OSError as err:
        if p.is_symlink():
            return "a symbolic link loop" if err.errno == errno.ELOOP else "a dangling symbolic link"
        return f"unreadable ({err.strerror})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{kind}, not a regular file"


def list_inputs(input_path: str | Path) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """``([(file, display name)], [(ignored path, why)])`` for an image, a video or a folder (recursive,
    sorted); what a folder holds that is not read (other suffixes, FIFOs, dangling links, link loops) is
    listed with the reason, never dropped without a word."""
    path = Path(input_path).expanduser()
    if not path.exists() and not path.is_symlink():
        raise InputMissing(f"input {path} does not exist: give input=<an image, a video or a folder>")
    supported = ", ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if (why := _not_a_file(path)) is not None:
        raise ConfigError(f"input {path} is {why}: give input=<an image, a video or a folder>")
    if path.is_file():
        if media_kind(path) is None:
            raise ConfigError(f"input {path} is not a supported image or video (suffixes: {supported})")
        return [(path, str(input_path))], []
    files, ignored = [], []
    for p in sorted(path.rglob("*"), key=lambda p: p.relative_to(path).as_posix()):
        rel = p.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if (why := _not_a_file(p)) is not None:
            ignored.append((p, why))
        elif p.is_file():
            if media_kind(p):
                files.append(p)
            else:
                ignored.append((p, "not an image or video"))
    if not files:
        raise InputMissing(f"input folder {path} holds no image or video (suffixes: {supported})")
    return [(p, p.relative_to(path).as_posix()) for p in files], ignored


# -- scoring ---------------------------------------------------------------------------------------


class Scorer:
    """Detect, crop and score faces in batches (faces are kept until the batch is full or flushed).

    ``clips`` (a clip model): faces are not scored one by one but gathered into face tracks (one per face
    index) and scored as clips when the file ends (:meth:`end_file`)."""

    def __init__(
        self,
        model,
        faces: FacePipeline,
        batch_size: int,
        device: torch.device,
        keep_crops: bool = False,
        clips: ClipSpec | None = None,
    ):
        self.model, self.faces, self.device = model, faces, device
        self.batch_size, self.clips = batch_size, clips
        self._pending: list[tuple[FrameResult, torch.Tensor]] = []
        self._tracks: dict[int, list[tuple[FrameResult, torch.Tensor]]] = {}
        # keep_crops: every scored crop by (frame, face), RGB uint8, for a caller that explains them
        self.crops: dict[tuple[int, int], np.ndarray] | None = {} if keep_crops else None

    def add_frame(self, result: FileResult, fidx: int, rgb: np.ndarray | None, policy: str) -> None:
        if rgb is None:
            reason = f"frame {fidx} could not be decoded"
            result.frames.append(FrameResult(fidx, "decode_error", reason=reason))
            return
        found = self.faces(rgb, policy)
        if not found.faces:
            result.frames.append(FrameResult(fidx, "no_face", reason=f"no face detected in frame {fidx}"))
            return
        for face in found.faces:
            d = face.det
            box = tuple(round(float(v), 1) for v in d.box)
            fr = FrameResult(fidx, "ok", face=face.index, det_score=round(d.score, 4), box=box)
            result.frames.append(fr)
            if face.too_small:
                fr.status = "too_small"
                fr.reason = f"face of {d.size:.0f}px < min_face_size {self.faces.fs.min_face_size}"
                continue
            try:  # a landmark-channel model: FaceMesh on the crop draws the channels, or finds nothing
                x = self.faces.model_input(face.crop)["image"]
            except NoLandmarks as err:
                fr.status, fr.reason = "no_landmarks", f"face {face.index} in frame {fidx}: {err}"
                continue
            if self.crops is not None:
                self.crops[(fidx, face.index)] = face.crop
            self._pending.append((fr, x))
            if len(self._pending) >= self.batch_size:
                self.flush()

    @torch.inference_mode()
    def flush(self) -> None:
        if not self._pending:
            return
        if self.clips is not None:  # a clip model: the faces join their tracks, scored at end_file
            for fr, x in self._pending:
                self._tracks.setdefault(fr.face or 0, []).append((fr, x))
            self._pending = []
            return
        x = torch.stack([t for _, t in self._pending]).to(self.device)
        probs = self.model(x).logits.float().softmax(-1)[:, 1].cpu().tolist()
        for (fr, _), p in zip(self._pending, probs, strict=True):
            fr.prob_fake = float(p)
        self._pending = []

    def start_file(self) -> None:
        self._pending, self._tracks = [], {}
        if self.crops is not None:  # one file's crops at a time: a folder of videos never piles up
            self.crops = {}

    def end_file(self, result: FileResult) -> None:
        """Score what is pending; a clip model's tracks become clips (skipped tracks noted)."""
        self.flush()
        if self.clips is None:
            return
        tracks, self._tracks = self._tracks, {}
        result.clips, notes = score_tracks(self.model, tracks, self.clips, self.device)
        if notes and not result.clips:
            result.status, result.reason = "too_short", "; ".join(notes)
        elif notes:
            result.reason = "; ".join(notes)


def score_file(
    scorer: Scorer,
    path: Path,
    name: str,
    n_frames: int | None = 32,
    every: int | None = None,
    progress=None,
    rgb: np.ndarray | None = None,
    max_pixels: int | None = None,
) -> FileResult:
    """Every face of one image or video scored (a video's ``n_frames`` evenly spaced frames, or every
    ``every``-th); unreadable files and files without a face come back with their status and reason.
    ``rgb``: the image already decoded (read from ``path`` otherwise); ``progress``: a rich Progress;
    ``max_pixels``: a video's frame size limit (:class:`VideoFrames`; OpenCV's image limit by default)."""
    fs = scorer.faces.fs
    kind = media_kind(path)
    result = FileResult(name, kind)
    scorer.start_file()
    try:
        if kind == "image":
            scorer.add_frame(result, 0, read_image(path) if rgb is None else rgb, fs.image_faces)
        else:
            frames = VideoFrames(
                path, None if n_frames is None else int(n_frames), every, max_pixels=max_pixels
            )
            task = None if progress is None else progress.add_task(f"  {name}", total=len(frames))
            for fidx, frame in frames:
                scorer.add_frame(result, fidx, frame, fs.video_faces)
                if progress is not None:
                    progress.advance(task)
            if progress is not None:
                progress.remove_task(task)
        scorer.end_file(result)
    except MediaError as err:
        result.status = "unreadable" if kind == "image" else "decode_error"
        result.reason = str(err)
    _finish(result)
    return result


def _finish(result: FileResult) -> None:
    if result.status == "ok" and not result.scores:
        decoded = [f for f in result.frames if f.status != "decode_error"]
        if decoded:
            result.status = "no_face"
            n = len({f.frame for f in decoded})
            where = "in the image" if result.kind == "image" else f"in {n} scanned frames"
            result.reason = f"no face detected {where}"
            if any(f.status == "too_small" for f in result.frames):
                result.reason += " (only faces under min_face_size)"
            lost = [f for f in result.frames if f.status == "no_landmarks"]
            if lost:  # faces were found: say why none was scored
                result.status = "no_landmarks"
                result.reason = f"{len(lost)} face(s) found, none scored: {lost[0].reason}"
            if result.frames_unreadable:
                result.reason += f"; {result.frames_unreadable} frame(s) could not be decoded"
        else:
            result.status = "decode_error"
            result.reason = "no frame could be decoded"
    elif result.frames_unreadable:
        unreadable = f"{result.frames_unreadable} frame(s) could not be decoded"
        result.reason = f"{result.reason}; {unreadable}" if result.reason else unreadable
