"""DF40: 40 generation methods in one folder each, as released (processed frames).

Folders::

    <method>/<ff|cdf>/frames/<video>/<frame>.png   fakes of the FF++ (ff) or Celeb-DF (cdf) domain
    <method>/<ff|cdf>/**/<video>.mp4               the same without frames/ (e.g. heygen ships videos)
    <method>/fake/**, <method>/real/**             methods that come with their own reals (MidJourney,
                                                   stargan, e4e, ...)

The reals of the ff and cdf domains are not part of DF40 (they are FF++'s and Celeb-DF's, downloaded
apart): ``real.ff`` / ``real.cdf`` name their folders (DeepfakeBench's ``frames/<video>/`` trees or
videos). Derived folders (``landmarks/``, ``masks/``, ``frames_wocropface/``) are never read.

Every file records its method as its origin (``fsgan``; the domain reals ``real-ff``), so
per-method statistics and ``data.test_sources`` can use it. The released DF40 folder is a test set:
every file is in ``split`` (test); ``split: null`` hashes the video name instead, so one source
video lands in one split across methods.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lmguide.data.layouts.base import (
    SPLITS,
    LayoutError,
    SourceItem,
    check_fractions,
    check_root,
    hash_split,
    media_files,
    refuse_unlabelled,
    rel_key,
    require_items,
    resolve_under,
)
from lmguide.data.media import VIDEO_SUFFIXES

log = logging.getLogger(__name__)
#: what media outside the method/real folders lacks
NO_LABEL = "label (fake, or real)"

DOMAINS = ("ff", "cdf")
#: the class folders of a method that ships its own reals
CLASSES = {"fake": 1, "real": 0}
#: what DeepfakeBench's preprocessing writes beside frames/: never media to score
DERIVED = ("landmarks", "masks", "frames_wocropface")


def clip_media(folder: Path) -> list[tuple[Path, str | None]]:
    """``(file, clip)`` for the media of ``folder``: its ``frames/`` tree when there is one (a clip per
    video folder), else every file below it, derived folders left out. A video is its own clip; an
    image is one frame of the clip of its folder, or its own clip when directly in ``folder``."""
    base = folder / "frames" if (folder / "frames").is_dir() else folder
    unused = len(media_files(folder)) - len(media_files(base)) if base != folder else 0
    if unused:
        log.info("df40: %s: reading frames/ only (%d other media files there are not used)", folder, unused)
    out = []
    for path in media_files(base):
        inside = path.relative_to(base)
        if any(part in DERIVED for part in inside.parts[:-1]):
            continue
        if path.suffix.lower() in VIDEO_SUFFIXES:
            clip = inside.with_suffix("").as_posix()
        else:
            clip = inside.parent.as_posix() if inside.parent != Path(".") else None
        out.append((path, clip))
    return out


@dataclass
class DF40Source:
    """DF40 fakes of the selected methods and domains, with the reals they are told from.

    root: the DF40 folder (``DF40/`` or ``DF40_train/``) holding one folder per method.
    methods: method folder names (``fsgan``, ``MidJourney``, ...); None: every method folder.
    domains: ``ff`` and/or ``cdf``: which source domain of the ff/cdf methods to read.
    real: ``{ff: folder, cdf: folder}`` of the reals of each domain (relative to ``root`` or
        absolute); None leaves that domain without reals (a warning).
    split: the split of every file (the released DF40 is a test set); None: hash of the video name.
    split_fractions: val/test shares for the hash split.
    """

    root: str | None = None
    methods: Sequence[str] | None = None
    domains: Sequence[str] = field(default_factory=lambda: list(DOMAINS))
    real: Mapping[str, str | None] = field(default_factory=lambda: {"ff": None, "cdf": None})
    split: str | None = "test"
    split_fractions: Mapping[str, float] = field(default_factory=lambda: {"val": 0.1, "test": 0.1})
    name: str = "df40"

    def items(self) -> list[SourceItem]:
        layout = self.name
        root = check_root(self.root, layout)
        domains = [str(d) for d in self.domains or []]
        if not domains or set(domains) - set(DOMAINS):
            raise LayoutError(f"{layout}: domains {domains} must be a non-empty list of {list(DOMAINS)}")
        real = {str(k): v for k, v in dict(self.real or {}).items()}
        if set(real) - set(DOMAINS):
            raise LayoutError(f"{layout}: real has unknown domain(s) {sorted(set(real) - set(DOMAINS))}")
        if self.split is not None and self.split not in SPLITS:
            raise LayoutError(f"{layout}: split {self.split!r} is not one of {SPLITS} (or null for a hash)")
        fractions = check_fractions(self.split_fractions, f"{layout} split_fractions")
        refuse_unlabelled(root, [p.name for p in root.iterdir() if p.is_dir()], layout, NO_LABEL)
        out: list[SourceItem] = []
        used: set[str] = set()  # the domains whose fakes were read
        reals = {d: resolve_under(root, str(v), True, f"{layout} real.{d}") for d, v in real.items() if v}
        for method in self._methods(root, list(reals.values())):
            out += self._method(root, method, domains, used, fractions)
        for domain in sorted(used):
            if domain not in reals:
                log.warning(
                    "%s: no reals for the %s domain (data.source.real.%s is null): its fakes have nothing "
                    "to be told from; point it at the real frames (FF++ for ff, Celeb-DF for cdf)",
                    layout,
                    domain,
                    domain,
                )
                continue
            folder = reals[domain]
            if not folder.is_dir():
                raise LayoutError(f"{layout}: real.{domain} {folder} is not a folder")
            files = clip_media(folder)
            if not files:
                raise LayoutError(f"{layout}: real.{domain} {folder} holds no images or videos")
            for path, clip in files:
                inner = path.relative_to(folder).as_posix()
                key = rel_key(path, root) if path.is_relative_to(root) else f"real_{domain}/{inner}"
                out.append(self._item(path, 0, key, f"real/{domain}", clip, f"real-{domain}", fractions))
        return require_items(out, layout, root)

    def _methods(self, root: Path, reals: list[Path]) -> list[str]:
        """The method folders to read: ``methods``, else every folder under ``root`` that does not
        hold the reals (``real.ff`` may point inside the DF40 folder)."""
        present = sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and not any(r.is_relative_to(p.resolve()) for r in reals)
        )
        if self.methods is None:
            return present
        chosen = [str(m) for m in self.methods]
        bad = [m for m in chosen if m not in present]
        if bad or not chosen:
            raise LayoutError(
                f"{self.name}: methods {bad or chosen} are not method folders of {root}; choose from "
                f"{present}"
            )
        return chosen

    def _method(
        self, root: Path, method: str, domains: list[str], used: set[str], fractions: dict[str, float]
    ) -> list[SourceItem]:
        layout, folder = self.name, root / method
        kinds = [d for d in (*DOMAINS, *CLASSES) if (folder / d).is_dir()]
        if not kinds or (set(kinds) & set(DOMAINS) and set(kinds) & set(CLASSES)):
            raise LayoutError(
                f"{layout}: method folder {folder} must hold ff/ and/or cdf/ (fakes of those domains), or "
                f"fake/ and real/ (a method with its own reals); it holds {kinds or 'neither'}"
            )
        refuse_unlabelled(folder, kinds, layout, NO_LABEL)
        out = []
        if set(kinds) & set(CLASSES):
            for cls in kinds:
                for path, clip in clip_media(folder / cls):
                    key = rel_key(path, root)
                    out.append(
                        self._item(path, CLASSES[cls], key, f"{method}/{cls}", clip, method, fractions)
                    )
        else:
            read = [d for d in domains if d in kinds]
            if not read:
                raise LayoutError(f"{layout}: method {method} has none of domains {domains} (it has {kinds})")
            if len(read) < len(domains):
                missing = ", ".join(f"{d}/" for d in domains if d not in read)
                log.warning(
                    "%s: method %s has no %s folder; its other domains are read", layout, method, missing
                )
            for domain in read:
                used.add(domain)
                for path, clip in clip_media(folder / domain):
                    key = rel_key(path, root)
                    out.append(self._item(path, 1, key, f"{method}/{domain}", clip, method, fractions))
        if not out:
            raise LayoutError(f"{layout}: method folder {folder} holds no images or videos")
        return out

    def _item(
        self, path: Path, label: int, key: str, prefix: str, clip: str | None, origin: str, fr: dict
    ) -> SourceItem:
        video_id = f"{prefix}/{clip}" if clip else None
        group = clip.rsplit("/", 1)[-1] if clip else key
        split = self.split or hash_split(f"df40:{group}", fr)
        return SourceItem(path, label, split, key=key, video_id=video_id, origin=f"{origin} DF40/{prefix}")
