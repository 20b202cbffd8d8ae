"""The region masks a ``model.landmark_channels`` model takes after its RGB channels, drawn the same way
for training (from the cached landmarks) and at inference (from a FaceMesh pass over the face crop).

One mask per region of the run's mask spec (``landmarks.regions``, in that order), drawn with
:func:`~lmguide.data.masks.draw_mask` at the crop's size, sent through the same albumentations call as
the image (every geometric step moves them with it, colour steps leave them alone) and stacked after
the normalised RGB channels, unnormalised in [0, 1]: ``(3 + R, S, S)``. The backbone side is
:mod:`lmguide.models.input_channels`.

A face in which FaceMesh finds no landmarks has no masks. Training never sees one (prepare records it
as ``no_landmarks``); inference raises :class:`NoLandmarks`, and predict and the page report the face
as ``no_landmarks`` instead of scoring it with empty channels the model never saw in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch

from lmguide.data.masks import MaskSpec, draw_mask
from lmguide.runs.errors import LmguideError


class NoLandmarks(LmguideError, ValueError):
    """A face crop without FaceMesh landmarks, given to a model that takes region masks as channels."""


def draw_regions(
    landmarks: np.ndarray, size: tuple[int, int], spec: MaskSpec, regions: Sequence[str]
) -> np.ndarray:
    """(R, H, W) float32: one mask of ``spec`` per name of ``regions``, for landmarks in pixels of an
    (H, W) crop."""
    return np.stack([draw_mask(landmarks, size, spec, region=r) for r in regions])


def stack_channels(image: torch.Tensor, masks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The normalised image (3, S, S) and its transformed region masks (R, S, S) as one (3 + R, S, S)."""
    return torch.cat([image, torch.as_tensor(masks).to(image.dtype)], 0)


def run_channels(run_cfg) -> MaskSpec | None:
    """The mask spec whose regions a run's model takes as input channels, or None (an RGB model)."""
    from omegaconf import OmegaConf

    if not OmegaConf.select(run_cfg, "model.landmark_channels", default=False):
        return None
    import hydra

    return hydra.utils.instantiate(run_cfg.data.mask)


def describe_channels(spec: MaskSpec | None) -> dict:
    """What each input channel holds (export metadata): RGB, then with ``spec`` one region mask each."""
    doc: dict = {"rgb": [0, 1, 2]}
    if spec is not None:
        doc["landmark_regions"] = {r: 3 + i for i, r in enumerate(spec.regions)}
        doc["landmark_masks"] = {
            **asdict(spec),
            "rule": "FaceMesh (478 points, refine_landmarks) on the face crop at face_size px; per region "
            "lmguide.data.masks.draw_mask(landmarks, crop size, spec, region=r); resized with the crop "
            "(cv2.INTER_LINEAR), values in [0, 1], not normalised; no landmarks: the face is not scored",
        }
    return doc
