"""Albumentations pipelines applied to the face and its landmark mask together."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from lmguide.models.weights import IMAGENET_MEAN, IMAGENET_STD

# the pipeline's normalisation (a backbone whose weights expect another converts its input itself)
from lmguide.runs.errors import require_number


def build_transform(image_size: int, augs: Sequence[A.BasicTransform] = ()) -> A.Compose:
    """``augs`` (training only) then resize, ImageNet normalisation and tensors.

    Masks follow every geometric step (flip, affine, resize) with linear interpolation so soft masks
    stay soft; colour steps touch the image only.
    """
    image_size = require_number("data.image_size", image_size, low=32, integer=True, example=128)
    return A.Compose(
        [
            *augs,
            A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA),
            A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
            ToTensorV2(),
        ],
        mask_interpolation=cv2.INTER_LINEAR,
    )
