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


class FaceSwap:
    """A landmark-driven face swap: another person's face warped onto a target face.

    Callable ``(target rgb, target landmarks, source rgb, source landmarks) -> (fake uint8, mask)``
    on two cached crops with their 478 FaceMesh points, all deterministic:

    1. Delaunay triangulation of the target's 468 mesh points (the iris points left out);
    2. a piecewise-affine warp: every target pixel inside a triangle samples the source at the point
       the triangle's affine map sends it to (one ``cv2.remap``);
    3. colour transfer (Reinhard et al. 2001): the warped face's mean and standard deviation per Lab
       channel matched to the target's, inside the face;
    4. blending through the target's landmark hull, eroded by ``erode`` of the crop side and blurred
       (``blend="alpha"``), or Poisson blending (``blend="seamless"``, ``cv2.seamlessClone``).

    A method other than self-blending: a detector trained on self-blended images is tested on these
    (``data=demo_swaps``); they are never used for training.
    """

    def __init__(
        self, blend: str = "alpha", erode: float = 0.04, blur: float = 0.06, color_transfer: bool = True
    ):
        if blend not in ("alpha", "seamless"):
            raise ValueError(f"swap.blend must be 'alpha' or 'seamless', got {blend!r}")
        if not 0 <= erode < 0.5 or not 0 <= blur < 0.5:
            raise ValueError(
                f"swap.erode and swap.blur are fractions of the crop side in [0, 0.5), got {erode}, {blur}"
            )
        self.blend, self.erode, self.blur, self.color_transfer = blend, erode, blur, color_transfer

    @staticmethod
    def warp(source: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, size: tuple[int, int]):
        """``source`` warped piecewise-affinely so that ``src_pts`` land on ``dst_pts`` (both (N, 2));
        returns the warped image (H, W, 3) and where it is defined (H, W) bool."""
        from scipy.spatial import Delaunay

        h, w = size
        tris = Delaunay(dst_pts).simplices  # (T, 3) point indices
        d, s = dst_pts[tris], src_pts[tris]  # (T, 3, 2)
        area = np.abs(np.cross(d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]))
        tris, d, s = tris[area > 1e-3], d[area > 1e-3], s[area > 1e-3]
        # affine maps dst -> src per triangle: [x y 1] @ A = [x' y']
        lhs = np.concatenate([d, np.ones((len(d), 3, 1))], axis=2)  # (T, 3, 3)
        maps = np.linalg.solve(lhs, s)  # (T, 3, 2)
        owner = np.full((h, w), -1, np.int32)
        for t, tri in enumerate(d):
            cv2.fillConvexPoly(owner, np.round(tri).astype(np.int32), int(t))
        ys, xs = np.nonzero(owner >= 0)
        a = maps[owner[ys, xs]]  # (P, 3, 2)
        map_x = np.zeros((h, w), np.float32)
        map_y = np.zeros((h, w), np.float32)
        map_x[ys, xs] = xs * a[:, 0, 0] + ys * a[:, 1, 0] + a[:, 2, 0]
        map_y[ys, xs] = xs * a[:, 0, 1] + ys * a[:, 1, 1] + a[:, 2, 1]
        warped = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return warped, owner >= 0

    @staticmethod
    def transfer_color(image: np.ndarray, reference: np.ndarray, region: np.ndarray) -> np.ndarray:
        """``image`` with the Lab mean and std of ``reference`` inside ``region`` (H, W bool)."""
        if region.sum() < 16:
            return image
        a = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
        b = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
        ma, sa = a[region].mean(0), a[region].std(0) + 1e-6
        mb, sb = b[region].mean(0), b[region].std(0)
        out = (a - ma) / sa * sb + mb
        return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)

    def __call__(
        self, target: np.ndarray, target_lms: np.ndarray, source: np.ndarray, source_lms: np.ndarray
    ):
        h, w = target.shape[:2]
        dst = np.asarray(target_lms, np.float64)[:468, :2]
        src = np.asarray(source_lms, np.float64)[:468, :2]
        warped, defined = self.warp(source, src, dst, (h, w))
        face = hull_mask(dst, (h, w)) > 0
        face &= defined
        if self.color_transfer:
            warped = self.transfer_color(warped, target, face)
        k = max(1, int(round(self.erode * max(h, w))))
        inner = cv2.erode(face.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8))
        if self.blend == "seamless" and inner.any():
            x, y, bw, bh = cv2.boundingRect(inner)
            centre = (x + bw // 2, y + bh // 2)
            fake = cv2.seamlessClone(warped, target, inner * 255, centre, cv2.NORMAL_CLONE)
            return fake, inner.astype(np.float32)
        b = int(round(self.blur * max(h, w))) // 2 * 2 + 1
        mask = cv2.GaussianBlur(inner.astype(np.float32), (b, b), 0) if b > 1 else inner.astype(np.float32)
        mask = np.where(defined, mask, 0).astype(np.float32)
        fake = warped.astype(np.float32) * mask[..., None] + target.astype(np.float32) * (1 - mask[..., None])
        return np.clip(fake.round(), 0, 255).astype(np.uint8), mask
