"""The face pipeline shared by prepare, predict and visualize: detect → select → size check → crop
(→ transform), so a face is "cropped exactly as in training" by definition (:class:`FacePipeline`).

Detection uses MediaPipe's full- and short-range detectors; crops are squares with a margin.

Large photos are also scanned in overlapping tiles: the detector works at 192 px, so a 200-px face
in a 1920-px group photo is too small to be found on the whole image. Tile and full-image detections
are merged with non-maximum suppression, and a tile detection is dropped when it lies inside the
region of a larger face (the face box grown by ``region_scale``): a tile sees only part of a big face,
and the detector then finds "faces" in its hair, ear or collar.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from lmguide.data.landmarks import MediaPipeGraph


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the full frame
    score: float

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


class FaceDetector(MediaPipeGraph):
    """MediaPipe face detection (per process, see :class:`MediaPipeGraph`).

    A frame whose longest side exceeds ``tile_above`` pixels is also scanned in ``tile_size`` tiles
    (half overlapping); ``region_scale`` is the growth of a face box that makes its region (see the
    module docstring). Class defaults, settable per instance."""

    tile_size, tile_above, region_scale = 640, 1000, 1.8

    def __init__(self, model_selection: int = 1, min_confidence: float = 0.5, nms_iou: float = 0.3):
        import mediapipe as mp

        if not 0.0 < min_confidence < 1.0:
            raise ValueError(f"faces.min_confidence must be in (0, 1), got {min_confidence}")
        self._graph = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_confidence
        )
        self.nms_iou = nms_iou

    def _run(self, rgb: np.ndarray, ox: int = 0, oy: int = 0) -> list[Detection]:
        h, w = rgb.shape[:2]
        res = self._graph.process(np.ascontiguousarray(rgb))
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            x0, y0 = ox + b.xmin * w, oy + b.ymin * h
            out.append(Detection((x0, y0, x0 + b.width * w, y0 + b.height * h), float(d.score[0])))
        return out

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 frame, best score first."""
        dets = self._run(rgb)
        h, w = rgb.shape[:2]
        if max(h, w) > self.tile_above:
            t = self.tile_size
            step = t // 2
            tiles = []
            for y in range(0, max(h - step, 1), step):
                for x in range(0, max(w - step, 1), step):
                    tiles += self._run(rgb[y : y + t, x : x + t], x, y)
            dets += [d for d in tiles if not inside_a_larger_face(d, dets + tiles, self.region_scale)]
        if not dets:
            return []
        boxes = [[d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]] for d in dets]
        keep = cv2.dnn.NMSBoxes(boxes, [d.score for d in dets], 0.0, self.nms_iou)
        return sorted((dets[i] for i in np.asarray(keep).ravel()), key=lambda d: -d.score)


def inside_a_larger_face(det: Detection, others: list[Detection], scale: float) -> bool:
    """True when ``det``'s centre lies in the region of a face at least twice its size: that face's box
    grown ``scale`` times about its centre (hair, ears and neck included)."""
    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    for o in others:
        if o is det or o.size < 2 * det.size:
            continue
        ox, oy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
        half = scale * o.size / 2
        if abs(cx - ox) <= half and abs(cy - oy) <= half:
            return True
    return False


def crop_face(
    rgb: np.ndarray, box: tuple[float, float, float, float], scale: float = 1.3, size: int = 256
) -> np.ndarray:
    """Square crop centred on ``box`` with side ``scale * max(w, h)``, resized to ``size``.

    Parts outside the frame are filled with black (never with a stretched border).
    """
    if scale <= 0 or size <= 0:
        raise ValueError(f"crop scale and size must be positive, got scale={scale}, size={size}")
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = scale * max(x1 - x0, y1 - y0)
    k = size / side
    m = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]], dtype=np.float64)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(rgb, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT)


#: ``data.faces.detector`` values: which MediaPipe detector model finds the faces
DETECTORS = ("full", "short", "both", "none")


class FaceFinder:
    """The face detector that ``data.faces.detector`` names, shared by prepare, predict and visualize.

    * ``full``: the full-range model (faces up to 5 m, tiled on large photos); when it finds nothing,
      the short-range model is tried on the same frame (a face that fills the frame is often missed by
      the full-range model).
    * ``short``: the short-range model only (faces within about 2 m: close-ups, face crops).
    * ``both``: both models, overlapping boxes merged by non-maximum suppression (the best score wins).
    * ``none``: no detection: the input is already a face crop, the whole frame is the face (score 1);
      FaceMesh then runs on it directly.

    Graphs are built lazily (the short-range one only when first needed) in the process that uses them.
    """

    def __init__(self, detector: str = "full", min_confidence: float = 0.5, nms_iou: float = 0.3):
        if detector not in DETECTORS:
            raise ValueError(f"data.faces.detector must be one of {DETECTORS}, got {detector!r}")
        if not 0.0 < min_confidence < 1.0:
            raise ValueError(f"faces.min_confidence must be in (0, 1), got {min_confidence}")
        self.detector, self.min_confidence, self.nms_iou = detector, min_confidence, nms_iou
        self._models: dict[int, FaceDetector] = {}

    def _model(self, selection: int) -> FaceDetector:
        if selection not in self._models:
            self._models[selection] = FaceDetector(selection, self.min_confidence, nms_iou=self.nms_iou)
        return self._models[selection]

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 frame, best score first."""
        if self.detector == "none":
            h, w = rgb.shape[:2]
            return [Detection((0.0, 0.0, float(w), float(h)), 1.0)]
        if self.detector == "short":
            return self._model(0).detect(rgb)
        dets = self._model(1).detect(rgb)
        if self.detector == "full":
            return dets or self._model(0).detect(rgb)
        dets = dets + self._model(0).detect(rgb)  # both
        if not dets:
            return []
        boxes = [[d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]] for d in dets]
        keep = cv2.dnn.NMSBoxes(boxes, [d.score for d in dets], 0.0, self.nms_iou)
        return sorted((dets[i] for i in np.asarray(keep).ravel()), key=lambda d: -d.score)

    def close(self) -> None:
        for m in self._models.values():
            m.close()
        self._models.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the settings and the pipeline -----------------------------------------------------------------


@dataclass
class FaceSettings:
    """How frames are sampled and faces found and cropped (all part of the crop cache key)."""

    face_size: int = 256
    face_scale: float = 1.3
    crop: str = "scaled"  # scaled: side = face_scale * box side; tight: the detector box itself
    # full (full-range model, short-range when it finds nothing), short, both (best of the two) or
    # none (the input is already a face crop: FaceMesh runs on the whole frame)
    detector: str = "full"
    min_confidence: float = 0.5
    low_confidence: float = 0.2  # detections in [low_confidence, min_confidence) → status low_confidence
    min_face_size: int = 48  # pixels in the source frame; smaller detections are recorded, not cropped
    frames_per_video: int = 32
    frames_every: int | None = None  # every k-th frame instead of frames_per_video evenly spaced
    video_faces: str = "largest"  # which faces a video frame keeps: largest, best (score) or all
    image_faces: str = "all"  # the same for a still image

    def __post_init__(self) -> None:
        if self.face_size < 32:
            raise ValueError(f"data.faces.face_size must be >= 32, got {self.face_size}")
        if not self.face_scale > 0:
            raise ValueError(f"data.faces.face_scale must be > 0, got {self.face_scale}")
        if self.detector not in DETECTORS:
            raise ValueError(
                f"data.faces.detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}"
            )
        if self.crop not in ("scaled", "tight"):
            raise ValueError(f"data.faces.crop must be 'scaled' or 'tight', got {self.crop!r}")
        if self.frames_per_video < 1:
            raise ValueError(f"data.faces.frames_per_video must be >= 1, got {self.frames_per_video}")
        if self.frames_every is not None and self.frames_every < 1:
            raise ValueError(f"data.faces.frames_every must be null or >= 1, got {self.frames_every}")
        if not 0.0 < self.min_confidence < 1.0:
            raise ValueError(f"data.faces.min_confidence must be in (0, 1), got {self.min_confidence}")
        if not 0.0 < self.low_confidence <= self.min_confidence:
            raise ValueError(
                f"data.faces.low_confidence must be in (0, min_confidence={self.min_confidence}], "
                f"got {self.low_confidence}"
            )
        for k in ("video_faces", "image_faces"):
            if getattr(self, k) not in ("largest", "best", "all"):
                raise ValueError(f"data.faces.{k} must be largest, best or all, got {getattr(self, k)!r}")

    @property
    def crop_scale(self) -> float:
        return 1.0 if self.crop == "tight" or self.detector == "none" else self.face_scale


def face_settings(node) -> FaceSettings:
    """FaceSettings from a config node (``data.faces`` of a run, ``_target_`` ignored)."""
    return FaceSettings(**{k: v for k, v in dict(node).items() if not k.startswith("_")})


def inference_pipeline(run_cfg, crop_small: bool = False) -> FacePipeline:
    """The pipeline a trained run's model reads faces through: the run's ``data.faces``, the eval
    transform at its ``data.image_size`` and, for a ``model.landmark_channels`` model, its region masks
    (:func:`lmguide.data.channels.run_channels`). Predict, the page, visualize and explain build it here;
    its graphs are built on first use."""
    from lmguide.data.channels import run_channels

    fs = face_settings(run_cfg.data.faces)
    size = int(run_cfg.data.image_size)
    return FacePipeline(fs, image_size=size, crop_small=crop_small, channels=run_channels(run_cfg))


def select_faces(dets: list, policy: str) -> list:
    """The detections a frame keeps under ``policy`` (largest, best or all)."""
    if policy == "largest":
        return sorted(dets, key=lambda d: -d.size)[:1]
    if policy == "best":
        return sorted(dets, key=lambda d: -d.score)[:1]
    return dets


@dataclass
class Face:
    """One face a frame keeps (after selection): its rank ``index`` among them, the detection and the
    crop (None for a face under ``min_face_size``, unless the pipeline crops small faces too)."""

    index: int
    det: Detection
    crop: np.ndarray | None  # (S, S, 3) RGB uint8, S = face_size
    too_small: bool = False


@dataclass
class FrameFaces:
    """What the pipeline found in one frame: the kept faces, how many passed ``min_confidence``
    (before selection), and when none did, the best detection below it (status low_confidence)."""

    faces: list[Face] = field(default_factory=list)
    found: int = 0
    best_below: Detection | None = None


class FacePipeline:
    """Detect → select → size check → crop → transform, with one run's :class:`FaceSettings`.

    ``record_low``: detect down to ``low_confidence`` so that a frame whose faces all score below
    ``min_confidence`` is told apart from one without a face (the cache records both). ``crop_small``:
    crop faces under ``min_face_size`` as well (still flagged ``too_small``). ``image_size``: the
    eval transform of :meth:`model_input` (the model's input side). ``channels``: the mask spec of a
    ``model.landmark_channels`` model (:func:`lmguide.data.channels.run_channels`): :meth:`model_input`
    then runs FaceMesh on the crop and stacks its region masks after RGB. Graphs are built lazily in the
    process that uses them; close the pipeline (or use it as a context manager) when done.
    """

    def __init__(
        self,
        fs: FaceSettings,
        image_size: int | None = None,
        record_low: bool = False,
        crop_small: bool = False,
        channels=None,
    ):
        self.fs, self.image_size, self.crop_small = fs, image_size, crop_small
        self.finder = FaceFinder(fs.detector, fs.low_confidence if record_low else fs.min_confidence)
        self._transform = None
        self.channels, self._mesh = channels, None

    def __call__(self, rgb: np.ndarray, policy: str) -> FrameFaces:
        """The faces of an RGB uint8 frame under ``policy`` (largest, best or all)."""
        fs = self.fs
        dets = self.finder.detect(rgb)
        sure = [d for d in dets if d.score >= fs.min_confidence]
        if not sure:
            return FrameFaces(best_below=max(dets, key=lambda d: d.score) if dets else None)
        faces = []
        for k, d in enumerate(select_faces(sure, policy)):
            small = d.size < fs.min_face_size
            crop = None
            if self.crop_small or not small:
                crop = crop_face(rgb, d.box, fs.crop_scale, fs.face_size)
            faces.append(Face(k, d, crop, small))
        return FrameFaces(faces, len(sure))

    def model_input(
        self, crop: np.ndarray, mask: np.ndarray | None = None, landmarks: np.ndarray | None = None
    ) -> dict:
        """The eval transform of a crop (and its mask): ``{"image": (3, s, s) tensor[, "mask"]}``.

        With ``channels`` the image is (3 + R, s, s): the region masks drawn from ``landmarks`` (the
        crop's FaceMesh landmarks, found here when not given) follow RGB; a crop without landmarks
        raises :class:`~lmguide.data.channels.NoLandmarks`."""
        if self._transform is None:
            from lmguide.data.transforms import build_transform

            if self.image_size is None:
                raise ValueError("FacePipeline(image_size=...) is needed for model inputs")
            self._transform = build_transform(int(self.image_size))
        if self.channels is None:
            return self._transform(image=crop) if mask is None else self._transform(image=crop, mask=mask)
        from lmguide.data.channels import NoLandmarks, draw_regions, stack_channels

        if landmarks is None:
            landmarks = self._landmarks(crop)
        if landmarks is None:
            raise NoLandmarks(
                "FaceMesh found no landmarks in the face crop: this model takes the landmark region masks "
                "as input channels (model.landmark_channels), so the face is not scored (training drops "
                "such faces too)"
            )
        regions = draw_regions(landmarks, crop.shape[:2], self.channels, self.channels.regions)
        extra = {} if mask is None else {"mask": mask}
        out = self._transform(image=crop, masks=regions, **extra)
        out["image"] = stack_channels(out["image"], out.pop("masks"))
        return out

    def _landmarks(self, crop: np.ndarray) -> np.ndarray | None:
        if self._mesh is None:
            from lmguide.data.landmarks import FaceMeshLandmarker

            self._mesh = FaceMeshLandmarker()
        return self._mesh(crop)

    def close(self) -> None:
        self.finder.close()
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
