"""Datasets over the cached index: single frames (image, landmark mask, label, video id) with their
self-blended fakes, and the real faces with landmark face swaps between people (a cross-method test
set). Clips of consecutive frames for video models: :mod:`lmguide.data.clips`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lmguide.data.channels import stack_channels
from lmguide.data.fakes import SelfBlend
from lmguide.data.manifest import row_person
from lmguide.data.masks import MaskSpec, draw_mask
from lmguide.data.sources import item_sources

log = logging.getLogger(__name__)


def _read(path: Path, flags: int, what: str, sample: str) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise RuntimeError(
            f"cannot read cached {what} {path} (sample {sample}); the cache is damaged: "
            f"delete {path.parent.parent} and run again to rebuild it"
        )
    return img


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of every random choice of training sample ``index`` in ``epoch`` (31 bits), a hash of the
    three numbers (numpy's SeedSequence): independent of the process that draws it."""
    state = np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(index)]).generate_state(1)
    return int(state[0]) >> 1


def sample_key(key: int | tuple[int, int]) -> tuple[int, int]:
    """``(epoch, index)`` of a dataset key: an index alone is epoch 0."""
    if isinstance(key, tuple | list):
        epoch, index = key
        return int(epoch), int(index)
    return 0, int(key)


class FaceDataset(Dataset):
    """Cached face crops with their landmark masks.

    With ``fakes`` (self-blended images) the dataset has two items per face: item ``2k`` is real face
    ``k`` and item ``2k + 1`` a fake made from it, so any slice holds both classes.
    ``deterministic=True`` (val/test) seeds each fake by its index, so every evaluation sees the same
    fakes; otherwise each epoch draws new ones: every random choice of a sample (its fake, its
    augmentation) comes from one seed, a function of ``(seed, epoch, index)`` (:func:`sample_seed`).
    The index may be an ``(epoch, index)`` key (what :class:`~lmguide.data.datamodule.EpochShuffle`
    yields for training), else the epoch is 0. Nothing is drawn from a worker's RNG (why that matters:
    :meth:`~lmguide.data.datamodule.FaceDataModule._loader`).
    A sample that cannot be read raises an error naming the file: no other sample is substituted.

    Extra loss targets, only when asked (the default path reads and transforms image and mask only):

    * ``region_masks`` (names of ``spec``'s regions): the item also holds ``region_masks`` (R, S, S),
      one mask per region drawn from the cached landmarks with ``spec`` (``draw_mask(..., region=)``),
      for the ``per_head`` landmark loss.
    * ``blend_masks``: the item also holds ``blend_mask`` (1, S, S), the self-blend mask of an SBI
      fake (where and how strongly the face was altered) and zeros for every other sample, for the
      landmark loss's ``apply_to=fake_blend``.

    Input channels (``channel_regions``, every split of a ``model.landmark_channels`` run): one mask
    per region, drawn like ``region_masks``, stacked after RGB: ``image`` is then (3 + R, S, S)
    (:mod:`lmguide.data.channels`).

    All of them go through the same albumentations call as image and mask (``masks=``), so every
    geometric step moves them exactly like the landmark mask.
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
        *,
        spec: MaskSpec | None = None,
        region_masks: Sequence[str] | None = None,
        blend_masks: bool = False,
        channel_regions: Sequence[str] | None = None,
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
        self.regions = tuple(region_masks) if region_masks else ()
        self.channel_regions = tuple(channel_regions) if channel_regions else ()
        if (self.regions or self.channel_regions) and spec is None:
            raise ValueError("region masks need the MaskSpec they are drawn with (spec=)")
        self.spec, self.blend_masks = spec, bool(blend_masks)
        # who each video name shows, the unit that bootstrap intervals resample: a fake's name is
        # recorded with the person it was made from, never recovered from the name
        person = {r["video_id"]: row_person(r) for r in rows}
        self.person_of = person | ({self.fake_name(v): p for v, p in person.items()} if fakes else {})
        self.video_names = sorted(self.person_of)
        self._video_index = {v: i for i, v in enumerate(self.video_names)}

    #: video names and keys of the fakes made here: ``sbi:<video id>``, ``sbi:<sample id>`` (unique
    #: names only: what an item is comes from :attr:`item_kinds`)
    fake_prefix = "sbi:"
    #: the kind of the fakes made here
    fake_kind = "self-blend"

    def fake_name(self, name: str) -> str:
        """The video name (or item key) of a fake made here from the real ``name``."""
        return f"{self.fake_prefix}{name}"

    def __len__(self) -> int:
        return len(self.rows) * (2 if self.fakes else 1)

    @property
    def labels(self) -> list[int]:
        return [lab for r in self.rows for lab in ((r["label"],) if self.fakes is None else (r["label"], 1))]

    @property
    def item_keys(self) -> list[str]:
        """Per item, its frame's path inside the data set (the manifest's ``sample_id``: source file,
        frame, face), a fake's prefixed like its video name (``sbi:<sample id>``): what predictions.csv
        pairs two runs' scores of one face by."""
        ids = [r["sample_id"] for r in self.rows]
        if self.fakes is None:
            return ids
        return [k for sid in ids for k in (sid, self.fake_name(sid))]

    def _kinds(self, labels) -> list[str]:
        own = ["fake" if lab else "real" for lab in labels]
        return own if self.fakes is None else [k for kind in own for k in (kind, self.fake_kind)]

    @property
    def item_kinds(self) -> list[str]:
        """Per item, what it is: ``real``, ``fake`` (one of the data set's own fakes) or the kind of fake
        made here (:attr:`fake_kind`: ``self-blend``, ``swap``). A field of the item, never parsed back
        out of its key."""
        return self._kinds(r["label"] for r in self.rows)

    @property
    def item_sources(self) -> list[str]:
        """Per item, the package its face came from (a fake shares its real face's; ``""`` unknown)."""
        return item_sources(self.rows, 2 if self.fakes else 1)

    def _seed(self, i: int, epoch: int = 0) -> int:
        return (self.seed * 1_000_003 + i) if self.deterministic else sample_seed(self.seed, epoch, i)

    def _load_row(self, r: dict, fake: bool, seed: int) -> dict:
        """Row ``r`` untransformed (a self-blended fake of it when ``fake``, drawn from ``seed``)."""
        sid = r["sample_id"]
        img = cv2.cvtColor(
            _read(self.root / r["image"], cv2.IMREAD_COLOR, "face crop", sid), cv2.COLOR_BGR2RGB
        )
        mask = _read(self.mask_dir / f"{sid}.png", cv2.IMREAD_GRAYSCALE, "mask", sid).astype(np.float32) / 255
        label, video = r["label"], r["video_id"]
        drawn = (*self.regions, *self.channel_regions)
        lms = np.load(self.root / r["landmarks"], allow_pickle=False) if fake or drawn else None
        blend = None
        if fake:
            img, blend = self.fakes(img, lms, np.random.default_rng(seed))
            label, video = 1, self.fake_name(video)
        s = {"image": img, "mask": mask, "label": label, "video": video, "seed": seed}
        if drawn:  # landmarks are in pixels of the crop: draw at its size, each region once
            masks = {n: draw_mask(lms, img.shape[:2], self.spec, region=n) for n in dict.fromkeys(drawn)}
            for key, names in (("region_masks", self.regions), ("region_channels", self.channel_regions)):
                if names:
                    s[key] = np.stack([masks[n] for n in names])
        if self.blend_masks:
            s["blend_mask"] = blend if blend is not None else np.zeros(img.shape[:2], np.float32)
        return s

    def _transform(self, s: dict, image: np.ndarray, mask: np.ndarray, k: int | None = None) -> dict:
        """Image, mask and the extra targets of ``s`` (frame ``k`` of a clip) through one transform call:
        ``{"image" (3 or 3 + R', S, S), "mask" (1, S, S), ["blend_mask" (1, S, S)], ["region_masks"
        (R, S, S)]}``."""
        extra = []
        if self.blend_masks:
            extra.append(s["blend_mask"] if k is None else s["blend_mask"][k])
        for key in ("region_masks", "region_channels"):
            if key in s:
                extra.extend(s[key] if k is None else s[key][k])
        if not extra:
            out = self.transform(image=image, mask=mask)
            return {"image": out["image"], "mask": out["mask"].float().unsqueeze(0)}
        out = self.transform(image=image, mask=mask, masks=np.stack(extra))
        more = torch.as_tensor(out["masks"]).float()  # (1 + R + R', S, S), the parts asked for
        res = {"image": out["image"], "mask": out["mask"].float().unsqueeze(0)}
        if self.blend_masks:
            res["blend_mask"], more = more[:1], more[1:]
        if self.regions:
            res["region_masks"], more = more[: len(self.regions)], more[len(self.regions) :]
        if self.channel_regions:
            res["image"] = stack_channels(res["image"], more)
        return res

    def load(self, i: int | tuple[int, int]) -> dict:
        """The untransformed sample ``i`` (or ``(epoch, i)``): RGB uint8 image, mask float32 (H, W), label,
        video name, seed (and, when asked, ``region_masks`` (R, H, W) and ``blend_mask`` (H, W), float32)."""
        epoch, i = sample_key(i)
        fake = self.fakes is not None and i % 2 == 1
        r = self.rows[i // 2 if self.fakes is not None else i]
        return self._load_row(r, fake, self._seed(i, epoch))

    def __getitem__(self, i: int | tuple[int, int]) -> dict:
        s = self.load(i)
        self.transform.set_random_seed(s["seed"] + 1)
        out = self._transform(s, s["image"], s["mask"])  # image (3, S, S) float, mask (1, S, S) in [0, 1]
        out["label"] = torch.tensor(s["label"], dtype=torch.long)
        out["video"] = torch.tensor(self._video_index[s["video"]], dtype=torch.long)
        return out


class SwapDataset(FaceDataset):
    """Real faces and landmark face swaps between different people (a cross-method test set).

    Item ``2k`` is real face ``k``; item ``2k + 1`` is face ``k`` with the face of another person of the
    same rows swapped in by ``swap`` (:class:`~lmguide.data.fakes.FaceSwap`). The source face is drawn
    from the faces whose ``person`` differs from face ``k``'s, with a generator seeded by ``(seed, k)``:
    the set is the same on every call and never pairs a person with themself. Fakes are named
    ``swap:<video id>`` of their target face. Evaluation only: no augmentation, no extra targets; a
    swap's input channels (``channels``: FaceDataset's ``spec`` and ``channel_regions``) are drawn
    from the target face's landmarks, where the swapped face was warped to.
    """

    fake_prefix = "swap:"
    fake_kind = "swap"

    def __init__(
        self,
        rows: list[dict],
        root: Path,
        mask_dir: Path,
        transform: A.Compose,
        swap,
        seed: int = 0,
        **channels,
    ):
        super().__init__(rows, root, mask_dir, transform, swap, deterministic=True, seed=seed, **channels)
        people = sorted({row_person(r) for r in rows})
        if len(people) < 2:
            raise ValueError(f"face swaps need faces of at least two people; these rows show {people}")
        self._by_person = {p: [] for p in people}
        for j, r in enumerate(rows):
            self._by_person[row_person(r)].append(j)

    def source_index(self, k: int) -> int:
        """The row whose face is swapped into row ``k``: another person's, fixed by ``(seed, k)``."""
        rng = np.random.default_rng([self.seed, k])
        me = row_person(self.rows[k])
        others = [p for p in self._by_person if p != me]
        person = others[int(rng.integers(len(others)))]  # every other person equally likely
        faces = self._by_person[person]
        return faces[int(rng.integers(len(faces)))]

    def load(self, i: int) -> dict:
        k = i // 2
        r = self.rows[k]
        if i % 2 == 0:
            return self._load_row(r, False, self._seed(i))
        s = self._load_row(r, False, self._seed(i))
        src = self.rows[self.source_index(k)]
        src_img = cv2.cvtColor(
            _read(self.root / src["image"], cv2.IMREAD_COLOR, "face crop", src["sample_id"]),
            cv2.COLOR_BGR2RGB,
        )
        lms = np.load(self.root / r["landmarks"], allow_pickle=False)
        src_lms = np.load(self.root / src["landmarks"], allow_pickle=False)
        s["image"], _ = self.fakes(s["image"], lms, src_img, src_lms)
        s["label"], s["video"] = 1, self.fake_name(r["video_id"])
        return s
