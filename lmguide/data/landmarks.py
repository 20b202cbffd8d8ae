"""MediaPipe FaceMesh adapter: 478 landmarks (468 mesh + 10 iris points, ``refine_landmarks=True``)."""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 478


def landmarker_version() -> str:
    """Identifies the landmark model; part of every cache key built on landmarks."""
    import mediapipe as mp

    return f"mediapipe-{mp.__version__}-facemesh-refine"


class MediaPipeGraph:
    """A MediaPipe solution graph used as a context manager. Graphs are per process: build one inside
    the process (worker) that uses it, never before a fork, and close it when done."""

    _graph = None

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FaceMeshLandmarker(MediaPipeGraph):
    """Landmarks of the most prominent face in an RGB crop, in pixel coordinates of that crop."""

    def __init__(self, min_confidence: float = 0.5, static_image_mode: bool = True):
        import mediapipe as mp

        self._graph = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static_image_mode,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
        )

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """(478, 3) float32 array ``x, y`` in pixels and ``z`` scaled like ``x``; ``None`` if no face."""
        h, w = rgb.shape[:2]
        res = self._graph.process(np.ascontiguousarray(rgb))
        if not res.multi_face_landmarks:
            return None
        pts = res.multi_face_landmarks[0].landmark
        arr = np.array([(p.x * w, p.y * h, p.z * w) for p in pts], dtype=np.float32)
        if arr.shape[0] != NUM_LANDMARKS:
            raise RuntimeError(f"FaceMesh returned {arr.shape[0]} points, expected {NUM_LANDMARKS}")
        return arr
