"""What the web page (:mod:`lmguide.app`) shows, without the page: one upload in, a result per face out.

Nothing here scores on its own. The faces are found, cropped and scored by :mod:`lmguide.predict`
(``Scorer`` / ``score_file``: the checkpoint's detector and crop settings, P(fake) per face, a video's
``frames_per_video`` evenly spaced frames); the pictures are :mod:`lmguide.visualize`'s ``explain`` on the
very crops predict scored (the crop, the mean attention with the landmark mask outlined, each head's map,
Grad-CAM of "fake"); the verdict uses the threshold training calibrated on the validation split
(:func:`lmguide.training.checkpoint.verdict_threshold`, 0.5 with a note for older checkpoints). Inputs the
page cannot analyse raise :class:`AppInputError` with the sentence the page shows.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from lmguide.data.faces import inference_pipeline
from lmguide.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, video_frame_size
from lmguide.inference.results import FileResult
from lmguide.inference.scorer import Scorer, media_kind, score_file
from lmguide.inference.verdict import VerdictRule, rule_from
from lmguide.runs.errors import LmguideError

# the only lmguide imports of the web page (app.py imports this module, lmguide.runs.cli and lmguide.CONF_DIR)
from lmguide.training.checkpoint import CheckpointError, load_model, verdict_threshold
from lmguide.training.provenance import provenance_line
from lmguide.viz.tiles import face_tiles, faces_to_draw


class AppInputError(LmguideError, ValueError):
    """An upload the page cannot analyse; the message is what the page shows."""


@dataclass
class FaceResult:
    """One scored face: predict's P(fake), the verdict, and visualize's pictures of its crop."""

    face: int  # index of the face in its frame (predict's ``face``)
    frame: int  # the frame it was found in (0 for an image)
    prob_fake: float  # predict's score of this crop
    verdict: str  # "fake" when prob_fake >= the threshold, else "real"
    box: tuple[float, float, float, float]
    det_score: float
    tiles: list[tuple[np.ndarray, str]] = field(default_factory=list)  # (RGB uint8, caption)
    explained_prob: float | None = None  # P(fake) of the explanation's own forward pass (same crop)
    note: str = ""  # why a face has only its crop (no landmarks), or why one of its maps is flat


@dataclass
class Analysis:
    name: str
    kind: str  # image or video
    prob_fake: float  # the file's score by the verdict rule (predict's file score)
    verdict: str
    threshold: float
    threshold_note: str
    faces: list[FaceResult]  # the image's faces; a video: the faces of its highest-scoring frame
    frame_scores: list[tuple[int, float]]  # (frame, P(fake)) per scored face of a video, in frame order
    frames_no_face: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    provenance: str = ""  # what the checkpoint was trained on and how it did (lmguide.training.provenance)
    rule: str = ""  # the verdict rule in words (lmguide.inference.verdict)
    fake_frames: list[int] = field(default_factory=list)  # a video's sampled frames >= the threshold
    fake_run: tuple[int, int] | None = None  # the run of frames that made a video fake


def image_megapixels(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the image header (nothing decoded), or None when PIL cannot tell."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Image.DecompressionBombError as err:  # PIL refuses > 179 MP headers before reading them
        raise AppInputError(f"{path.name} is an image too large to analyse: {err}") from None
    except Exception:  # not an image PIL knows: predict's reader gives the reason
        return None


class Analyzer:
    """A loaded checkpoint and the page's limits; :meth:`analyse` turns one file into an Analysis."""

    def __init__(
        self,
        model,
        run_cfg: DictConfig,
        frames_per_video: int = 32,
        max_megapixels: float = 25.0,
        max_faces: int = 8,
        batch_size: int = 32,
        size: int = 256,
        alpha: float = 0.45,
        rule: VerdictRule | None = None,
    ):
        import torch

        self.model, self.run_cfg = model.eval(), run_cfg
        self.device = torch.device("cpu")  # visualize's explain runs on the CPU
        self.frames_per_video, self.max_megapixels = int(frames_per_video), float(max_megapixels)
        self.max_faces, self.batch_size, self.size, self.alpha = int(max_faces), int(batch_size), size, alpha
        self.threshold, self.threshold_note = verdict_threshold(model)
        self.rule = rule or VerdictRule()
        self.provenance = provenance_line(getattr(model, "provenance", None))
        self._lock = threading.Lock()  # one analysis at a time: Grad-CAM hooks the shared model
        self.mask_points = hydra.utils.instantiate(run_cfg.data.mask).points()

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> Analyzer:
        """From ``conf/app.yaml``'s keys: the checkpoint through :func:`load_model`, as every command."""
        model, run_cfg = load_model(
            cfg.ckpt_path, list(cfg.get("overrides") or []), output_dir=cfg.paths.output_dir
        )
        if getattr(model, "clip_frames", None):
            raise CheckpointError(
                f"{cfg.ckpt_path} is a video (clip) model: the web page scores and explains single face "
                "crops; score its videos with lmguide.predict and draw a clip with lmguide.visualize"
            )
        return cls(
            model,
            run_cfg,
            frames_per_video=cfg.frames_per_video,
            max_megapixels=cfg.max_megapixels,
            max_faces=cfg.max_faces,
            batch_size=cfg.batch_size,
            size=int(cfg.size),
            alpha=float(cfg.alpha),
            rule=rule_from(cfg),
        )

    def verdict(self, p: float) -> str:
        return "fake" if p >= self.threshold else "real"

    def _check(self, path, name: str) -> tuple[Path, str]:
        if not path:
            raise AppInputError("no file: upload an image or a short video, or pick a demo face")
        path = Path(path)
        if not path.is_file():
            raise AppInputError(f"{name} did not arrive (no such file on the server): upload it again")
        kind = media_kind(path)
        if kind is None:
            raise AppInputError(
                f"{name} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                f"({', '.join(VIDEO_SUFFIXES)})"
            )
        if path.stat().st_size == 0:
            raise AppInputError(
                f"{name} is empty (0 bytes): the upload did not finish, or the file is broken"
            )
        size = image_megapixels(path) if kind == "image" else video_frame_size(path)
        if size is not None and size[0] * size[1] > self.max_megapixels * 1e6:
            w, h = size
            what = "is" if kind == "image" else "has frames of"
            raise AppInputError(
                f"{name} {what} {w}x{h} pixels ({w * h / 1e6:.0f} megapixels), above this page's limit of "
                f"{self.max_megapixels:g} (max_megapixels). Predict scores such a photo at full size with "
                "tiled detection, which would hold the server for seconds and about a gigabyte per upload; "
                "crop or downscale it, or score it with python -m lmguide.predict input=<file>"
            )
        return path, kind

    def analyse(self, path, name: str | None = None) -> Analysis:
        """Score every face of ``path`` and explain them; AppInputError with the page's message when the
        file cannot be analysed (no file, unsupported, empty, too large, unreadable, no face)."""
        with self._lock:
            return self._analyse(path, name)

    def _analyse(self, path, name: str | None) -> Analysis:
        t0 = time.perf_counter()
        name = name or (Path(path).name if path else "the upload")
        path, kind = self._check(path, name)
        with inference_pipeline(self.run_cfg) as faces:
            scorer = Scorer(self.model, faces, self.batch_size, self.device, keep_crops=True)
            pixels = int(self.max_megapixels * 1e6)  # every frame, as every image: a header can lie
            result = score_file(scorer, path, name, self.frames_per_video, max_pixels=pixels)
        result.threshold, result.rule = self.threshold, self.rule
        self._raise_for_status(result, kind)
        decision = result.decision
        scored = [f for f in result.frames if f.prob_fake is not None]
        shown = faces_to_draw(result, decision)  # a video: the frame the verdict leans on most
        notes = []
        if len(shown) > self.max_faces:
            notes.append(f"{len(shown)} faces scored; the pictures of the first {self.max_faces} are shown")
        faces = []
        for i, fr in enumerate(shown):
            face = FaceResult(
                fr.face or 0, fr.frame, fr.prob_fake, self.verdict(fr.prob_fake), fr.box, fr.det_score or 0.0
            )
            if i < self.max_faces:
                self._explain(face, scorer.crops[(fr.frame, fr.face or 0)], fr, name)
            faces.append(face)
        if kind == "video":
            where = " of the fake run" if decision.run else ""
            notes.append(
                f"pictures of frame {shown[0].frame}, the most suspect sampled frame{where}; "
                f"{result.frames_scored} of {len({f.frame for f in result.frames})} sampled frames had a face"
            )
        return Analysis(
            name,
            kind,
            float(decision.score),
            str(decision.label),
            self.threshold,
            self.threshold_note,
            faces,
            [(f.frame, f.prob_fake) for f in scored] if kind == "video" else [],
            result.frames_no_face,
            time.perf_counter() - t0,
            notes,
            self.provenance,
            decision.rule,
            decision.fake_frames if kind == "video" else [],
            decision.run,
        )

    @staticmethod
    def _raise_for_status(result: FileResult, kind: str) -> None:
        what = "an image" if kind == "image" else "a video"
        if result.status in ("unreadable", "decode_error"):
            raise AppInputError(f"{result.file} could not be read as {what}: {result.reason}")
        if result.status == "no_face":
            raise AppInputError(
                f"no face found in {result.file}: {result.reason}; give {what} with a visible, frontal face"
            )
        if result.status != "ok" or result.prob_fake is None:
            raise AppInputError(f"{result.file} gave no score ({result.status}: {result.reason})")

    def _explain(self, face: FaceResult, crop: np.ndarray, fr, name: str) -> None:
        """visualize's pictures of the crop predict scored (no landmarks: the crop alone, with a note)."""
        t = face_tiles(
            self.model, self.run_cfg, crop, fr, name, self.size, self.alpha, self.threshold, self.mask_points
        )
        face.tiles, face.explained_prob, face.note = t.tiles, t.explained_prob, t.note
