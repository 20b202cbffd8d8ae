"""Frame dataset over the cached index: (image, landmark mask, label, video id)."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lmguide.data.fakes import SelfBlend


def _read(path: Path, flags: int, what: str, sample: str) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise RuntimeError(
            f"cannot read cached {what} {path} (sample {sample}); the cache is damaged: "
            f"delete {path.parent.parent} and run again to rebuild it"
        )
    return img


class FaceDataset(Dataset):
    """Cached face crops with their landmark masks.

    With ``fakes`` (self-blended images) the dataset has two items per face: item ``2k`` is real face
    ``k`` and item ``2k + 1`` a fake made from it, so any slice holds both classes.
    ``deterministic=True`` (val/test) seeds each fake by its index, so every evaluation sees the same
    fakes; otherwise each epoch draws new ones from torch's RNG (seeded per worker by Lightning).
    A sample that cannot be read raises an error naming the file: no other sample is substituted.
    """

    def __init__(
        self,
        rows: list[dict],
        root: Path,
        mask_dir: Path,
        transform: A.Compose,
        fakes: SelfBlend | None = None,
        deterministic: bool = False,
        seed: int = 0,
    ):
        if not rows:
            raise ValueError(f"no usable faces for this split in {root}/manifest.csv")
        for r in rows:
            if r["label"] not in (0, 1):
                raise ValueError(
                    f"label must be 0 (real) or 1 (fake), got {r['label']!r} for {r['sample_id']}"
                )
        self.rows, self.root, self.mask_dir = rows, Path(root), Path(mask_dir)
        self.transform, self.fakes = transform, fakes
        self.deterministic, self.seed = deterministic, seed
        names = [r["video_id"] for r in rows] + ([f"sbi:{r['video_id']}" for r in rows] if fakes else [])
        self.video_names = sorted(set(names))
        self._video_index = {v: i for i, v in enumerate(self.video_names)}

    def __len__(self) -> int:
        return len(self.rows) * (2 if self.fakes else 1)

    @property
    def labels(self) -> list[int]:
        if self.fakes is None:
            return [r["label"] for r in self.rows]
        return [lab for r in self.rows for lab in (r["label"], 1)]

    def load(self, i: int) -> dict:
        """The untransformed sample ``i``: RGB uint8 image, mask float32 (H, W), label, video name."""
        fake = self.fakes is not None and i % 2 == 1
        r = self.rows[i // 2 if self.fakes is not None else i]
        sid = r["sample_id"]
        img = cv2.cvtColor(
            _read(self.root / r["image"], cv2.IMREAD_COLOR, "face crop", sid), cv2.COLOR_BGR2RGB
        )
        mask = _read(self.mask_dir / f"{sid}.png", cv2.IMREAD_GRAYSCALE, "mask", sid).astype(np.float32) / 255
        label, video = r["label"], r["video_id"]
        seed = (self.seed * 1_000_003 + i) if self.deterministic else int(torch.randint(2**31, ()).item())
        rng = np.random.default_rng(seed)
        if fake:
            lms = np.load(self.root / r["landmarks"], allow_pickle=False)
            img, _blend = self.fakes(img, lms, rng)
            label, video = 1, f"sbi:{video}"
        return {"image": img, "mask": mask, "label": label, "video": video, "seed": seed}

    def __getitem__(self, i: int) -> dict:
        s = self.load(i)
        self.transform.set_random_seed(s["seed"] + 1)
        out = self.transform(image=s["image"], mask=s["mask"])
        return {
            "image": out["image"],  # (3, S, S) float
            "mask": out["mask"].float().unsqueeze(0),  # (1, S, S) in [0, 1]
            "label": torch.tensor(s["label"], dtype=torch.long),
            "video": torch.tensor(self._video_index[s["video"]], dtype=torch.long),
        }
