"""Self-blended images (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022).

A fake is made from one real face: a colour- and geometry-perturbed copy of the face (the source) is
blended back onto the original (the target) through a blurred, randomly deformed convex hull of its
landmarks. The detector has to find blending boundaries and statistical mismatches, the traces common
to face swaps, without ever seeing a real deepfake.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from lmguide.data.masks import hull_mask


class SelfBlend:
    """Callable ``(rgb uint8 (H, W, 3), landmarks (478, >=2), rng) -> (fake uint8, blend mask float32)``."""

    def __init__(
        self,
        scale: tuple[float, float] = (0.95, 1.05),
        shift: float = 0.03,
        hull_scale: tuple[float, float] = (0.85, 1.05),
        blend_ratios=(0.25, 0.5, 0.75, 1.0, 1.0, 1.0),
        blur_kernels: tuple[int, int] = (5, 25),
    ):
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"fakes.scale must be an increasing pair of positive numbers, got {scale}")
        self.scale, self.shift, self.hull_scale = tuple(scale), float(shift), tuple(hull_scale)
        self.blend_ratios, self.blur_kernels = tuple(blend_ratios), tuple(blur_kernels)
        # the source's statistical mismatch: colour shifts and a frequency change (SBI's source-target aug)
        self.color = A.Compose(
            [
                A.RGBShift(r_shift_limit=20, g_shift_limit=20, b_shift_limit=20, p=0.3),
                A.HueSaturationValue(
                    hue_shift_limit=(-0.3, 0.3),
                    sat_shift_limit=(-0.3, 0.3),
                    val_shift_limit=(-0.3, 0.3),
                    p=0.3,
                ),
                A.RandomBrightnessContrast(brightness_limit=(-0.1, 0.1), contrast_limit=(-0.1, 0.1), p=1.0),
                A.OneOf(
                    [A.Downscale(scale_range=(0.25, 0.5), p=1.0), A.Sharpen(alpha=(0.2, 0.5), p=1.0)], p=0.5
                ),
            ]
        )

    def _blur_odd(self, rng: np.random.Generator) -> int:
        lo, hi = self.blur_kernels
        return int(rng.integers(lo // 2, hi // 2 + 1)) * 2 + 1

    def __call__(self, rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator):
        h, w = rgb.shape[:2]
        self.color.set_random_seed(int(rng.integers(2**31)))
        source = self.color(image=rgb)["image"]
        # small geometric misalignment of the source
        s = rng.uniform(*self.scale)
        tx, ty = rng.uniform(-self.shift, self.shift, size=2) * (w, h)
        m = np.array([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty]], np.float32)
        source = cv2.warpAffine(source, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        # blend mask: landmark hull, deformed (anisotropic scaling about its centre), blurred twice
        pts = np.asarray(landmarks, np.float32)[:, :2]
        c = pts.mean(0)
        pts = c + (pts - c) * rng.uniform(*self.hull_scale, size=2).astype(np.float32)
        mask = hull_mask(pts, (h, w))
        blurred = cv2.GaussianBlur(mask, (self._blur_odd(rng),) * 2, 0)
        # keep only the inner part, then soften it again (SBI's two-step blur). "Inner" = the blur left it
        # at 1; in float32 the blurred interior is 1 only up to rounding (0.99999994), so compare with a
        # tolerance: an exact `< 1` zeroed the whole mask for ~10% of draws (fakes identical to the real)
        inner = np.where(blurred >= 1 - 1e-3, blurred, 0).astype(np.float32)
        if not inner.any():  # a hull too thin to survive the erosion: blend through the blurred hull
            inner = blurred
        mask = cv2.GaussianBlur(inner, (self._blur_odd(rng),) * 2, 0)
        mask = mask / max(float(mask.max()), 1e-6) * float(rng.choice(self.blend_ratios))
        fake = source.astype(np.float32) * mask[..., None] + rgb.astype(np.float32) * (1 - mask[..., None])
        return np.clip(fake.round(), 0, 255).astype(np.uint8), mask.astype(np.float32)
