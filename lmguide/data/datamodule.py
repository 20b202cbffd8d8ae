"""LightningDataModule: ``prepare_data`` builds/reuses the landmark cache, ``setup`` only reads it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from lmguide.data.cache import cache_errors
from lmguide.data.clips import ClipDataset
from lmguide.data.datasets import FaceDataset, SwapDataset
from lmguide.data.faces import FaceSettings
from lmguide.data.fakes import FaceSwap, SelfBlend
from lmguide.data.manifest import PreparedIndex
from lmguide.data.masks import CONTOURS, MaskSpec
from lmguide.data.prepare import cache_complete, prepare_index
from lmguide.data.sources import XSOURCE, hold_out
from lmguide.data.transforms import build_transform
from lmguide.runs.errors import ConfigError, require_number

log = logging.getLogger(__name__)


class EpochShuffle(Sampler[int]):
    """A random order of ``n`` items that is a function of ``(seed, epoch)`` alone.

    With ``keys=True`` it yields ``(epoch, index)`` pairs, from which the dataset draws each sample's
    randomness (self-blend, augmentation; :func:`~lmguide.data.datasets.sample_seed`), so a sample
    depends on ``(seed, epoch, index)`` alone and never on a loader worker's state. A run resumed at
    epoch k therefore sees the same order and the same samples as an uninterrupted run, whatever
    happened to the global RNG before. ``epoch_fn`` (the trainer's
    ``current_epoch``) names the epoch when Lightning calls ``set_epoch`` before each epoch's iterator:
    the number Lightning passes runs one ahead after a resume. The generator is re-seeded only when
    the epoch changes.
    """

    def __init__(self, n: int, seed: int = 0, epoch_fn: Callable[[], int] | None = None, keys: bool = False):
        self.n, self.seed, self.epoch_fn, self.keys = n, seed, epoch_fn, keys
        self.generator = torch.Generator()
        self.epoch: int | None = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        epoch = self.epoch_fn() if self.epoch_fn is not None else epoch
        if epoch != self.epoch:
            self.epoch = epoch
            self.generator.manual_seed((self.seed * 1_000_003 + epoch) % 2**63)

    def __iter__(self):
        if self.epoch_fn is not None:  # a wrapping sampler (DDP's) does not forward set_epoch
            self.set_epoch(self.epoch_fn())
        order = torch.randperm(self.n, generator=self.generator).tolist()
        if self.keys:
            yield from ((self.epoch, i) for i in order)
        else:
            yield from order

    def __len__(self) -> int:
        return self.n


class FaceDataModule(L.LightningDataModule):
    """Frames of the cached index, or clips of ``clip_frames`` frames for a video backbone.

    ``clip_frames`` (``data.clip_frames``, which follows ``backbone.clip_frames``) switches every split
    to :class:`~lmguide.data.clips.ClipDataset`: batches then hold images (B, T, 3, S, S) and masks
    (B, T, 1, S, S) with one label per clip; ``clip_min_frames`` is the shortest track kept (padded).

    The evaluated splits (val, test, the swaps) also hold ``region_masks`` (B, R, S, S), one per region
    of ``mask.regions``, for the per-region attention shares of the run's summary (:meth:`eval_targets`).

    Extra targets of the landmark loss, in training batches only, each set from the loss config so the
    default path stays as it is:

    * ``region_masks`` (``data.region_masks``, follows ``loss.landmark.regions``: ``loss=per_head``):
      names of landmark regions; batches hold ``region_masks`` (B, R, S, S) (clips (B, T, R, S, S)),
      drawn from the cached landmarks with the ``mask`` spec, in this order.
    * ``blend_masks``: batches hold ``blend_mask`` (B, 1, S, S) (clips (B, T, 1, S, S)): an SBI fake's
      blend mask, zeros otherwise. Not a config key: the run sets it from the model's landmark loss
      (``loss.landmark.apply_to=fake_blend``), through :func:`for_model`.

    Input channels (``landmark_channels``, follows ``model.landmark_channels``): every split's images
    (train, val, test and the swaps) are (3 + R, S, S), the masks of ``mask.regions`` after RGB
    (:mod:`lmguide.data.channels`), augmented with the image.

    A cross-method test (frame models only): with ``swap`` (:class:`~lmguide.data.fakes.FaceSwap`) the
    test split's real faces also get landmark face swaps between different people
    (:class:`~lmguide.data.datasets.SwapDataset`, ``datasets["test_swaps"]``); ``test_fakes="swap"``
    makes that set the test split itself (``data=demo_swaps``). Swaps are never built for train or val.

    Loader workers persist for the whole run (``+data.persistent_workers=false`` starts them afresh
    each epoch); why either way keeps a resume exact is written at :meth:`_loader`.
    """

    def __init__(
        self,
        source,
        faces: FaceSettings,
        mask: MaskSpec,
        cache_dir: str,
        image_size: int = 128,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        train_augs: Sequence = (),
        fakes: SelfBlend | None = None,
        seed: int = 0,
        root: str | None = None,
        prepare_workers: int | None = None,
        clip_frames: int | None = None,
        clip_min_frames: int = 1,
        region_masks: Sequence[str] | None = None,
        blend_masks: bool = False,
        swap: FaceSwap | None = None,
        test_fakes: str = "self_blend",
        persistent_workers: bool = True,
        landmark_channels: bool = False,
        test_sources: Sequence[str] | None = None,
    ):
        super().__init__()
        batch_size = require_number("data.batch_size", batch_size, low=1, integer=True)
        if prepare_workers is not None:
            prepare_workers = require_number("data.prepare_workers", prepare_workers, low=1, integer=True)
        self.source, self.faces, self.mask = source, faces, mask
        self.root, self.prepare_workers = root, prepare_workers
        self.cache_dir = str(Path(cache_dir).expanduser())
        self.image_size, self.batch_size = image_size, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.fakes, self.seed = num_workers, fakes, seed
        self.persistent_workers = persistent_workers
        self.train_tf = build_transform(image_size, list(train_augs))
        self.eval_tf = build_transform(image_size)
        if clip_frames is not None:  # null: single frames
            clip_frames = require_number("data.clip_frames", clip_frames, low=1, integer=True)
            clip_min_frames = require_number(
                "data.clip_min_frames", clip_min_frames, low=1, high=clip_frames, integer=True
            )
        self.clip_frames, self.clip_min_frames = clip_frames, clip_min_frames
        if isinstance(region_masks, str):
            region_masks = [region_masks]
        self.region_masks = tuple(region_masks) if region_masks else ()
        known = {*mask.point_regions(), *CONTOURS}
        unknown = [r for r in self.region_masks if r not in known]
        if unknown:
            raise ValueError(f"data.region_masks: unknown region(s) {unknown}; known: {sorted(known)}")
        self.blend_masks = bool(blend_masks)
        if test_fakes not in ("self_blend", "swap"):
            raise ValueError(f"data.test_fakes must be self_blend or swap, got {test_fakes!r}")
        if test_fakes == "swap" and swap is None:
            raise ValueError("data.test_fakes=swap needs data.swap (the FaceSwap settings)")
        if test_fakes == "swap" and clip_frames:
            raise ValueError("data.test_fakes=swap scores single frames; clip models are not supported")
        self.swap, self.test_fakes = swap, test_fakes
        self.landmark_channels = bool(landmark_channels)
        if isinstance(test_sources, str):
            test_sources = [test_sources]
        self.test_sources = tuple(test_sources or ())
        if self.test_sources and clip_frames:
            raise ValueError("data.test_sources scores single frames; clip models are not supported")
        self.index: PreparedIndex | None = None
        self.rows: dict[str, list[dict]] = {}
        self.datasets: dict[str, FaceDataset] = {}
        #: set only these splits up (:meth:`setup_scoring`); empty: train, val and test
        self.scored_splits: tuple[str, ...] = ()

    def prepare_data(self) -> None:
        """Build (or resume, or reuse) the landmark cache; Lightning calls it on one process per node.
        Under DDP the cache must be complete already (:meth:`check_cache_for`)."""
        self.check_cache_for(getattr(self.trainer, "world_size", 1))
        with cache_errors(self.cache_dir):
            prepare_index(
                self.source.name,
                self.source.items(),
                self.cache_dir,
                self.faces,
                self.mask,
                workers=self.prepare_workers,
            )

    def check_cache_for(self, world: int, command: str | None = None) -> None:
        """Refuse a run of ``world`` > 1 DDP processes on a landmark cache that is not complete, giving
        the sharded prepare ``command`` to run first (see :mod:`lmguide.runs.distributed`)."""
        if world <= 1:
            return
        items = self.source.items()
        work, done = cache_complete(self.source.name, items, self.cache_dir, self.faces, self.mask)
        if not done:
            from lmguide.runs.distributed import hydra_prepare_command, incomplete_cache

            raise incomplete_cache(work, world, command or hydra_prepare_command())

    def setup(self, stage: str | None = None) -> None:
        if self.index is None:
            self.index = prepare_index(
                self.source.name, self.source.items(), self.cache_dir, self.faces, self.mask, read_only=True
            )
        if not self.rows:
            self.rows = {s: self.index.ok_rows(s) for s in self.scored_splits or ("train", "val", "test")}
            if empty := [s for s in self.scored_splits if not self.rows[s]]:
                raise ConfigError(
                    f"the {empty[0]} split holds no usable face ({len(self.index.rows)} manifest rows in "
                    f"all, {self.index.manifest}): check data.root, or score another split"
                )
            if self.test_sources:  # faces of sources never seen in train or val: the xsource split
                self.rows = hold_out(self.rows, self.test_sources)
        for split in self.rows:  # train, val, test (and xsource: the held-out sources' faces)
            if split in self.datasets:
                continue
            rows = self.rows[split]
            det = split != "train"
            args = (rows, self.index.root, self.index.mask_dir, self.eval_tf if det else self.train_tf)
            extra = {**self.channels(), **(self.eval_targets() if det else self.extra_targets())}
            if self.clip_frames:
                self.datasets[split] = ClipDataset(
                    *args,
                    self.fakes,
                    frames=self.clip_frames,
                    deterministic=det,
                    seed=self.seed,
                    min_frames=self.clip_min_frames,
                    split=split,
                    **extra,
                )
            elif split == "test" and self.test_fakes == "swap":
                self.datasets[split] = self.swap_dataset()
            else:
                self.datasets[split] = FaceDataset(
                    *args, self.fakes, deterministic=det, seed=self.seed, **extra
                )
        for split in ("test", XSOURCE):  # the scored sets' face swaps (test_swaps, xsource_swaps)
            key = f"{split}_swaps"
            if self.swap is None or self.clip_frames or split not in self.rows or key in self.datasets:
                continue
            same = split == "test" and self.test_fakes == "swap"  # the test split is the swap set
            self.datasets[key] = self.datasets["test"] if same else self.swap_dataset(split)

    def setup_scoring(self, splits: Sequence[str]) -> None:
        """Set up ``splits`` alone, for scoring: the test set of another data set may hold no train or val
        face. A split without a usable face is a ConfigError that names it."""
        self.scored_splits = tuple(splits)
        self.setup("test")

    def swap_dataset(self, split: str = "test") -> SwapDataset:
        """The real faces of ``split`` and face swaps between its different people."""
        rows = self.rows[split]
        root, masks = self.index.root, self.index.mask_dir
        extra = {**self.channels(), **self.eval_targets()}  # both draw with the same mask spec
        return SwapDataset(rows, root, masks, self.eval_tf, self.swap, seed=self.seed, **extra)

    def channels(self) -> dict:
        """Keyword arguments of every split's dataset for the input channels (none for an RGB model)."""
        return dict(spec=self.mask, channel_regions=self.mask.regions) if self.landmark_channels else {}

    def eval_targets(self) -> dict:
        """Keyword arguments of the evaluated splits' datasets: one mask per landmark region (eyes, nose,
        mouth, ...), from which the run reports the share of attention on each region."""
        return dict(spec=self.mask, region_masks=self.mask.regions)

    def extra_targets(self) -> dict:
        """Keyword arguments of the training dataset for the landmark loss's extra targets."""
        extra: dict = {}
        if self.region_masks:
            extra.update(spec=self.mask, region_masks=self.region_masks)
        if self.blend_masks:
            extra["blend_masks"] = True
        return extra

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights of the training labels, ``n / (2 * n_c)``."""
        counts = torch.bincount(torch.tensor(self.datasets["train"].labels), minlength=2).float()
        if (counts == 0).any():
            raise ValueError(f"the training split lacks a class (counts real/fake = {counts.tolist()})")
        return counts.sum() / (2 * counts)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.datasets[split]
        sampler = None
        if shuffle:  # the order and every sample's randomness follow (seed, epoch): see EpochShuffle
            sampler = EpochShuffle(len(ds), self.seed, self._epoch, keys=True)
        return DataLoader(
            ds,
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            sampler=sampler,
            # the loader's own generator: the worker seeds it draws at each new iterator (which no
            # sample uses) come neither from the sampler's nor from the global RNG, so the order and
            # the training draws do not depend on when iterators are created (persistent or not, resumed)
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            # workers live for the whole run, or restart each epoch: either way a resumed run repeats the
            # uninterrupted one exactly and no sample depends on num_workers, because a training sample
            # draws nothing from its worker's state: its randomness is keyed by (seed, epoch, index)
            # (EpochShuffle's keys, datasets.sample_seed)
            persistent_workers=self.num_workers > 0 and self.persistent_workers,
            drop_last=shuffle and len(ds) > self.batch_size,
            pin_memory=torch.cuda.is_available(),
        )

    def _epoch(self) -> int:
        """The trainer's current epoch (0 outside a trainer)."""
        trainer = getattr(self, "trainer", None)
        return 0 if trainer is None else int(trainer.current_epoch)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def for_model(data_cfg, model) -> FaceDataModule:
    """``data_cfg`` instantiated with the extra targets ``model``'s landmark loss trains on: the fakes'
    blend masks for ``loss.landmark.apply_to=fake_blend`` (read from the loss, never copied into the
    data config)."""
    import hydra

    landmark = getattr(getattr(model, "loss", None), "landmark", None)
    return hydra.utils.instantiate(data_cfg, blend_masks=bool(getattr(landmark, "needs_blend", False)))
