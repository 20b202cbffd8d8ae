"""Face detection (MediaPipe full- and short-range detectors) and square crops with a margin.

Large photos are also scanned in overlapping tiles: the detector works at 192 px, so a 200-px face
in a 1920-px group photo is too small to be found on the whole image. Tile and full-image detections
are merged with non-maximum suppression, and a tile detection is dropped when it lies inside the
region of a larger face (the face box grown by ``region_scale``): a tile sees only part of a big face,
and the detector then finds "faces" in its hair, ear or collar.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """MediaPipe face detection (per process, see :class:`MediaPipeGraph`)."""

    def __init__(
        self,
        model_selection: int = 1,
        min_confidence: float = 0.5,
        tile_size: int = 640,
        tile_above: int = 1000,
        nms_iou: float = 0.3,
        region_scale: float = 1.8,
    ):
        import mediapipe as mp

        if not 0.0 < min_confidence < 1.0:
            raise ValueError(f"faces.min_confidence must be in (0, 1), got {min_confidence}")
        self._graph = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_confidence
        )
        self.tile_size, self.tile_above, self.nms_iou = tile_size, tile_above, nms_iou
        self.region_scale = region_scale

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
