"""Score media with a checkpoint: ``python -m lmguide.predict ckpt_path=... input=<image|video|folder>``.

Faces are found and cropped exactly as in training (the checkpoint's ``data.faces`` settings: MediaPipe
detector, ``crop_face`` with ``face_scale``/``face_size``, faces under ``min_face_size`` left out, the
largest face per video frame with ``video_faces=largest``) and go through the eval transform. Videos
are streamed (``frames_per_video`` evenly spaced frames, or ``every_k``), never held in memory. Each
face gets P(fake); a file's score is the mean of its faces' scores (one face per video frame: the mean
of its frames). Files without a face are reported as such, unreadable files and frames with a reason.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from lmguide import CONF_DIR
from lmguide.cli import check_argv, check_writable, friendly_errors
from lmguide.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, VideoFrames, read_image
from lmguide.data.prepare import face_settings, select_faces
from lmguide.errors import ConfigError, InputMissing

OUTPUT_SUFFIXES = (".csv", ".json")
CSV_FIELDS = [
    "level",
    "file",
    "kind",
    "frame",
    "face",
    "status",
    "prob_fake",
    "det_score",
    "x0",
    "y0",
    "x1",
    "y1",
    "frames_scored",
    "frames_no_face",
    "frames_unreadable",
    "reason",
]


@dataclass
class FrameResult:
    """One scored face, or one frame that gave no score (status no_face / too_small / decode_error)."""

    frame: int
    status: str  # ok, no_face, too_small, decode_error
    face: int | None = None
    prob_fake: float | None = None
    det_score: float | None = None
    box: tuple[float, float, float, float] | None = None
    reason: str = ""


@dataclass
class FileResult:
    file: str
    kind: str  # image or video
    status: str = "ok"  # ok, no_face, unreadable, decode_error
    reason: str = ""
    frames: list[FrameResult] = field(default_factory=list)

    @property
    def scores(self) -> list[float]:
        return [f.prob_fake for f in self.frames if f.prob_fake is not None]

    @property
    def prob_fake(self) -> float | None:
        s = self.scores
        return float(np.mean(s)) if s else None

    @property
    def face_scores(self) -> dict[int, float]:
        """P(fake) per face index (the mean over the frames it was scored in): a second face, e.g. a
        photo inside the photo, is visible instead of being averaged into the file's score."""
        by_face: dict[int, list[float]] = {}
        for f in self.frames:
            if f.prob_fake is not None:
                by_face.setdefault(f.face or 0, []).append(f.prob_fake)
        return {k: float(np.mean(v)) for k, v in sorted(by_face.items())}

    def _frames_with(self, pred) -> int:
        return len({f.frame for f in self.frames if pred(f)})

    @property
    def frames_scored(self) -> int:
        return self._frames_with(lambda f: f.status == "ok")

    @property
    def frames_no_face(self) -> int:
        scored = {f.frame for f in self.frames if f.status == "ok"}
        return len({f.frame for f in self.frames if f.status in ("no_face", "too_small")} - scored)

    @property
    def frames_unreadable(self) -> int:
        return self._frames_with(lambda f: f.status == "decode_error")

    def summary(self) -> dict:
        return {
            "file": self.file,
            "kind": self.kind,
            "status": self.status,
            "prob_fake": self.prob_fake,
            "frames_scored": self.frames_scored,
            "frames_no_face": self.frames_no_face,
            "frames_unreadable": self.frames_unreadable,
            "reason": self.reason,
        }


# -- inputs and frames -----------------------------------------------------------------------------


def media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def list_inputs(input_path: str | Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """``([(file, display name)], ignored files)`` for an image, a video or a folder (recursive, sorted)."""
    path = Path(input_path).expanduser()
    if not path.exists():
        raise InputMissing(f"input {path} does not exist: give input=<an image, a video or a folder>")
    supported = ", ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if path.is_file():
        if media_kind(path) is None:
            raise ConfigError(f"input {path} is not a supported image or video (suffixes: {supported})")
        return [(path, str(input_path))], []
    files, ignored = [], []
    for p in sorted(path.rglob("*"), key=lambda p: p.relative_to(path).as_posix()):
        rel = p.relative_to(path)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        (files if media_kind(p) else ignored).append(p)
    if not files:
        raise InputMissing(f"input folder {path} holds no image or video (suffixes: {supported})")
    return [(p, p.relative_to(path).as_posix()) for p in files], ignored


# -- scoring ---------------------------------------------------------------------------------------


class Scorer:
    """Detect, crop and score faces in batches (faces are kept until the batch is full or flushed)."""

    def __init__(
        self,
        model,
        run_cfg: DictConfig,
        detector,
        batch_size: int,
        device: torch.device,
        keep_crops: bool = False,
    ):
        from lmguide.data.transforms import build_transform

        self.model, self.detector, self.device = model, detector, device
        self.fs = face_settings(run_cfg.data.faces)
        self.tf = build_transform(int(run_cfg.data.image_size))
        self.batch_size = batch_size
        self._pending: list[tuple[FrameResult, torch.Tensor]] = []
        # keep_crops: every scored crop by (frame, face), RGB uint8, for a caller that explains them
        self.crops: dict[tuple[int, int], np.ndarray] | None = {} if keep_crops else None

    def add_frame(self, result: FileResult, fidx: int, rgb: np.ndarray | None, policy: str) -> None:
        from lmguide.data.faces import crop_face

        if rgb is None:
            reason = f"frame {fidx} could not be decoded"
            result.frames.append(FrameResult(fidx, "decode_error", reason=reason))
            return
        dets = self.detector.detect(rgb)
        dets = select_faces(dets, policy)
        if not dets:
            result.frames.append(FrameResult(fidx, "no_face", reason=f"no face detected in frame {fidx}"))
            return
        for k, d in enumerate(dets):
            box = tuple(round(float(v), 1) for v in d.box)
            fr = FrameResult(fidx, "ok", face=k, det_score=round(d.score, 4), box=box)
            result.frames.append(fr)
            if d.size < self.fs.min_face_size:
                fr.status = "too_small"
                fr.reason = f"face of {d.size:.0f}px < min_face_size {self.fs.min_face_size}"
                continue
            crop = crop_face(rgb, d.box, self.fs.crop_scale, self.fs.face_size)
            if self.crops is not None:
                self.crops[(fidx, k)] = crop
            self._pending.append((fr, self.tf(image=crop)["image"]))
            if len(self._pending) >= self.batch_size:
                self.flush()

    @torch.inference_mode()
    def flush(self) -> None:
        if not self._pending:
            return
        x = torch.stack([t for _, t in self._pending]).to(self.device)
        probs = self.model(x).logits.float().softmax(-1)[:, 1].cpu().tolist()
        for (fr, _), p in zip(self._pending, probs, strict=True):
            fr.prob_fake = float(p)
        self._pending = []


def score_file(
    scorer: Scorer,
    path: Path,
    name: str,
    n_frames: int | None = 32,
    every_k: int | None = None,
    progress=None,
    rgb: np.ndarray | None = None,
) -> FileResult:
    """Every face of one image or video scored (a video's ``n_frames`` evenly spaced frames, or every
    ``every_k``-th); unreadable files and files without a face come back with their status and reason.
    ``rgb``: the image already decoded (read from ``path`` otherwise); ``progress``: a rich Progress."""
    kind = media_kind(path)
    result = FileResult(name, kind)
    try:
        if kind == "image":
            scorer.add_frame(result, 0, read_image(path) if rgb is None else rgb, scorer.fs.image_faces)
        else:
            frames = VideoFrames(path, None if n_frames is None else int(n_frames), every_k)
            task = None if progress is None else progress.add_task(f"  {name}", total=len(frames))
            for fidx, frame in frames:
                scorer.add_frame(result, fidx, frame, scorer.fs.video_faces)
                if progress is not None:
                    progress.advance(task)
            if progress is not None:
                progress.remove_task(task)
        scorer.flush()
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
            if result.frames_unreadable:
                result.reason += f"; {result.frames_unreadable} frame(s) could not be decoded"
        else:
            result.status = "decode_error"
            result.reason = "no frame could be decoded"
    elif result.frames_unreadable and not result.reason:
        result.reason = f"{result.frames_unreadable} frame(s) could not be decoded"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device: use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA GPU is available here; use device=cpu (or auto)")
    return device


def predict(cfg: DictConfig) -> list[FileResult]:
    """Score every file of ``cfg.input``; print the table, write ``cfg.output``; return the results."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from lmguide.checkpoint import load_model
    from lmguide.data.faces import FaceFinder

    output = Path(cfg.output).expanduser() if cfg.get("output") else None
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"output {output} must end in .csv or .json")
    if output is not None:
        check_writable(output, "output")  # before any scoring: results are never thrown away at the end
    every_k = cfg.get("every_k")
    n_frames = cfg.get("frames_per_video")
    if every_k is not None and int(every_k) < 1:
        raise ConfigError(f"every_k must be >= 1 (or null), got {every_k}")
    if n_frames is not None and int(n_frames) < 1:
        raise ConfigError(f"frames_per_video must be >= 1 (or null for every frame), got {n_frames}")
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    files, ignored = list_inputs(cfg.input)

    console = Console()
    out_dir = cfg.paths.output_dir
    device = _device(str(cfg.get("device", "auto")))
    model, run_cfg = load_model(cfg.ckpt_path, list(cfg.get("overrides") or []), output_dir=out_dir)
    model.to(device)
    fs = face_settings(run_cfg.data.faces)
    console.print(
        f"lmguide predict: {len(files)} file(s) from {cfg.input} with {cfg.ckpt_path} "
        f"(backbone {run_cfg.model.backbone.name}, crop {fs.face_size}px x{fs.crop_scale}, "
        f"input {run_cfg.data.image_size}px, {device})",
        soft_wrap=True,
        highlight=False,
    )
    for p in ignored:
        console.print(f"  ignored (not an image or video): {p}", soft_wrap=True, highlight=False)

    results: list[FileResult] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with (
        FaceFinder(fs.detector, fs.min_confidence) as detector,
        Progress(*columns, console=console) as progress,
    ):
        scorer = Scorer(model, run_cfg, detector, int(cfg.batch_size), device)
        all_files = progress.add_task("files", total=len(files))
        for path, name in files:
            result = score_file(scorer, path, name, n_frames, every_k, progress)
            results.append(result)
            if cfg.get("print_frames", True):
                _print_frames(progress.console, result)
            progress.advance(all_files)

    print_table(console, results)
    if output is not None:
        write_output(output, results)
        console.print(f"  predictions written to {output}", soft_wrap=True, highlight=False)
    return results


# -- reporting -------------------------------------------------------------------------------------


def _fmt(p: float | None) -> str:
    return "-" if p is None or math.isnan(p) else f"{p:.4f}"


def _print_frames(console, result: FileResult) -> None:
    head = f"{result.file}: P(fake) {_fmt(result.prob_fake)}"
    if result.status != "ok":
        head += f" [{result.status}: {result.reason}]"
    console.print(head, soft_wrap=True, highlight=False, markup=False)
    for f in result.frames:
        where = f"frame {f.frame:5d}" + ("" if f.face is None else f" face {f.face}")
        what = f"P(fake) {_fmt(f.prob_fake)}" if f.status == "ok" else f"{f.status}: {f.reason}"
        console.print(f"  {where}  {what}", soft_wrap=True, highlight=False, markup=False)


def print_table(console, results: list[FileResult]) -> None:
    from rich.table import Table

    title = "lmguide: P(fake) per file (mean of its frames; frames = frames scored)"
    table = Table(title=title, header_style="bold")
    for col, justify in [
        ("file", "left"),
        ("type", "left"),
        ("P(fake)", "right"),
        ("per face", "left"),
        ("frames", "right"),
        ("no face", "right"),
        ("note", "left"),
    ]:
        table.add_column(col, justify=justify, overflow="fold")
    for r in results:
        note = r.reason if r.status == "ok" else f"{r.status.replace('_', ' ')}: {r.reason}"
        faces = r.face_scores
        per_face = "  ".join(f"{k}: {_fmt(v)}" for k, v in faces.items()) if len(faces) > 1 else ""
        table.add_row(
            r.file, r.kind, _fmt(r.prob_fake), per_face, str(r.frames_scored), str(r.frames_no_face), note
        )
    console.print(table)
    no_face = [r.file for r in results if r.status == "no_face"]
    bad = [r.file for r in results if r.status in ("unreadable", "decode_error")]
    if no_face:
        console.print(f"no face found in: {', '.join(no_face)}", soft_wrap=True, highlight=False)
    if bad:
        console.print(f"could not be decoded: {', '.join(bad)}", soft_wrap=True, highlight=False)


def write_output(path: Path, results: list[FileResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        doc = {"files": [{**r.summary(), "frames": [asdict(f) for f in r.frames]} for r in results]}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in results:
            w.writerow({**r.summary(), "level": "file", "prob_fake": _csv_num(r.prob_fake)})
            for fr in r.frames:
                x0, y0, x1, y1 = fr.box or ("",) * 4
                w.writerow(
                    {
                        "level": "frame",
                        "file": r.file,
                        "kind": r.kind,
                        "frame": fr.frame,
                        "face": "" if fr.face is None else fr.face,
                        "status": fr.status,
                        "prob_fake": _csv_num(fr.prob_fake),
                        "det_score": _csv_num(fr.det_score),
                        **dict(zip(("x0", "y0", "x1", "y1"), (x0, y0, x1, y1), strict=True)),
                        "reason": fr.reason,
                    }
                )


def _csv_num(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
@friendly_errors
def main(cfg: DictConfig) -> list[dict]:
    return [r.summary() for r in predict(cfg)]


if __name__ == "__main__":
    check_argv()
    main()
