"""The record every layout indexer returns, and the helpers they share.

A layout (FaceForensics++, Celeb-DF, DFDC, a folder tree, a CSV file, the demo media) is a small
dataclass with a ``name`` (the cache folder) and an ``items()`` method returning
:class:`SourceItem` records. Everything after that (decoding, faces, landmarks, masks, the manifest)
is shared code in :mod:`lmguide.data.prepare`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lmguide.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from lmguide.runs.errors import LmguideError

SPLITS = ("train", "val", "test")
MEDIA_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES
_UNSAFE = re.compile(r"[^A-Za-z0-9._/+-]")


class LayoutError(LmguideError, ValueError):
    """A data set that does not match its layout (missing folders, bad labels, bad paths)."""


class MissingRoot(LayoutError):
    """A layout that needs ``data.root`` was given none (a command that sets it under another key, such
    as crosseval's ``roots``, names that key instead)."""


@dataclass(frozen=True)
class SourceItem:
    """One media file to index: an image or a video.

    path: where the file is (absolute).
    label: 0 real, 1 fake.
    split: train, val or test.
    key: unique id of the file inside its data set, normally its path relative to the data root
        (``manipulated_sequences/Deepfakes/c23/videos/000_003.mp4``); names the cache files.
    video_id: the clip the frames belong to, for video-level metrics (``Deepfakes/000_003``).
        ``None``: a video is its own clip (``key``); each face of a still image is its own clip.
    person: who is in it, for identity-disjoint splits, per-person statistics and face swaps between
        different people. ``None``: every clip is its own person (a video, each face of a photo).
    origin: where the file came from (the demo's package and archive member), recorded in the
        manifest; empty for a user's data set.
    """

    path: Path
    label: int
    split: str
    key: str = ""
    video_id: str | None = None
    person: str | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not self.key:
            object.__setattr__(self, "key", self.path.name)
        object.__setattr__(self, "key", safe_key(self.key))
        if self.label not in (0, 1):
            raise LayoutError(f"{self.path}: label must be 0 (real) or 1 (fake), got {self.label!r}")
        if self.split not in SPLITS:
            raise LayoutError(f"{self.path}: split must be one of {SPLITS}, got {self.split!r}")

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


def safe_key(key: str) -> str:
    """``key`` usable as a relative cache path: no leading ``/``, no ``..``, odd characters as ``_``."""
    parts = [p for p in str(key).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise LayoutError(f"sample key {key!r} must be a relative path without '..'")
    return "/".join(_UNSAFE.sub("_", p) for p in parts)


def check_root(root: str | Path | None, layout: str) -> Path:
    """The data root as an absolute path, or a LayoutError that says what is missing."""
    if root in (None, "", "???"):
        raise MissingRoot(f"data.root is not set: pass data.root=<folder of the {layout} data set>")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise LayoutError(f"data.root {path} is not a folder ({layout} layout)")
    return path


def resolve_under(root: Path, rel: str | Path, allow_absolute: bool = False, what: str = "path") -> Path:
    """``root / rel`` refusing escapes: ``..`` out of ``root`` and absolute paths (unless allowed)."""
    rel = Path(rel)
    if rel.is_absolute():
        if not allow_absolute:
            raise LayoutError(
                f"{what} {rel} is absolute; paths are resolved under data.root ({root}) unless "
                "absolute paths are explicitly allowed (allow_absolute=true)"
            )
        return rel
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise LayoutError(f"{what} {rel} escapes data.root ({root}); '..' out of the data root is refused")
    return full


def parse_label(value: object, where: str) -> int:
    """0/1, real/fake (any case) → 0/1; anything else is a LayoutError naming ``where``."""
    text = str(value).strip().lower()
    if text in ("0", "real", "original", "pristine"):
        return 0
    if text in ("1", "fake", "manipulated", "deepfake"):
        return 1
    raise LayoutError(f"{where}: label {value!r} is not one of 0, 1, real, fake")


def hash_split(group: str, fractions: Mapping[str, float], seed: int = 0) -> str:
    """A stable split for ``group`` (a video or identity): the same group always lands in the same
    split, whatever else is in the data set. ``fractions`` gives ``val`` and ``test``; the rest is train.
    """
    val, test = float(fractions.get("val", 0.0)), float(fractions.get("test", 0.0))
    if val < 0 or test < 0 or val + test >= 1:
        raise LayoutError(f"split fractions must be >= 0 with val + test < 1, got val={val}, test={test}")
    u = int(hashlib.sha1(f"{seed}:{group}".encode()).hexdigest()[:12], 16) / 16**12
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def check_fractions(fractions: Mapping[str, float] | None, where: str) -> dict[str, float]:
    """``{val, test}`` fractions as plain floats (Hydra passes a DictConfig), refused when unknown
    keys or values would make :func:`hash_split` meaningless."""
    out = {str(k): v for k, v in dict(fractions or {}).items()}
    bad = set(out) - {"val", "test"}
    if bad:
        raise LayoutError(f"{where}: unknown split fraction(s) {sorted(bad)}; give val and/or test")
    try:
        out = {k: float(v) for k, v in out.items()}
    except (TypeError, ValueError):
        raise LayoutError(f"{where}: split fractions must be numbers, got {fractions!r}") from None
    hash_split("", out)  # validates the range
    return out


def check_val_fraction(fractions: Mapping[str, float] | None, where: str) -> dict[str, float]:
    """:func:`check_fractions` for a layout whose test split is given: a ``test`` share is refused."""
    out = check_fractions(fractions, where)
    if "test" in out:
        raise LayoutError(f"{where}: this layout's test split is given; give only val (e.g. {{val: 0.1}})")
    return out


def rel_key(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (the usual sample key)."""
    return path.relative_to(root).as_posix()


def load_json(path: Path) -> object:
    """The parsed JSON file, or a LayoutError naming the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LayoutError(f"{path}: cannot read JSON ({err})") from None


def media_files(folder: Path, suffixes: Iterable[str] = MEDIA_SUFFIXES) -> list[Path]:
    """Media files under ``folder`` (recursive, sorted, hidden files skipped)."""
    suffixes = tuple(s.lower() for s in suffixes)
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def non_media_files(folder: Path, suffixes: Iterable[str] = MEDIA_SUFFIXES) -> list[Path]:
    """The files under ``folder`` that :func:`media_files` leaves out (hidden ones aside): listed by
    prepare, never dropped silently."""
    suffixes = tuple(s.lower() for s in suffixes)
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() not in suffixes
        and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def require_items(items: list[SourceItem], layout: str, root: Path) -> list[SourceItem]:
    """Refuse an empty data set and duplicate keys with a message that names the layout and root."""
    if not items:
        raise LayoutError(f"the {layout} layout found no media under {root}")
    seen: dict[str, Path] = {}
    for it in items:
        if it.key in seen:
            raise LayoutError(f"{layout}: {it.path} and {seen[it.key]} share the sample key {it.key!r}")
        seen[it.key] = it.path
    return items


def unlisted_media(root: Path, keys: set[str], suffixes: Iterable[str] = MEDIA_SUFFIXES) -> list[Path]:
    """Media files under ``root`` whose key (path relative to ``root``) is not in ``keys``: files a
    layout would leave out for want of a label, which it refuses rather than skips."""
    return [p for p in media_files(root, suffixes) if rel_key(p, root) not in keys]


def refuse_unlisted(root: Path, keys: set[str], layout: str, why: str, fix: str) -> None:
    """A LayoutError naming the first video under ``root`` whose key is not in ``keys`` (``why`` it has
    no label, and the ``fix``), with how many more there are; nothing when every video is listed."""
    from lmguide.data.media import VIDEO_SUFFIXES

    stray = unlisted_media(root, keys, VIDEO_SUFFIXES)
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise LayoutError(f"{layout}: video {stray[0]}{more} {why}, so it has no label; {fix}")


def record_label(rec, labels: dict[str, int], where: str, fields: str) -> int:
    """The label of one metadata record (a JSON object with a ``label`` among ``labels``' names, in any
    case); a LayoutError naming ``where`` for anything else."""
    if not isinstance(rec, dict):
        raise LayoutError(f"{where}: expected an object with {fields}, got {rec!r}")
    given = str(rec.get("label", "")).lower()
    label = next((v for name, v in labels.items() if name.lower() == given), None)
    if label is None:
        raise LayoutError(f"{where}: label {rec.get('label')!r} is not {' or '.join(labels)}")
    return label


def missing_listed(listing: Path, missing: list[str], listed: int, fix: str, shown: int = 5) -> str:
    """One line for the files ``listing`` names that do not exist: how many, the first few, the fix."""
    names = ", ".join(missing[:shown]) + (f", … (first {shown} shown)" if len(missing) > shown else "")
    return f"{len(missing)} of {listed} files listed in {listing} do not exist: {names}; {fix}"


def refuse_unlabelled(folder: Path, allowed: Iterable[str], layout: str, what: str) -> None:
    """Media in ``folder`` outside its ``allowed`` subfolders would have no ``what`` (label, split): a
    LayoutError naming the first such file, never a silent leave-out."""
    allowed = list(allowed)  # named in the message in the caller's order
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or child.name in allowed:
            continue
        stray = media_files(child) if child.is_dir() else [child] * (child.suffix.lower() in MEDIA_SUFFIXES)
        if stray:
            raise LayoutError(
                f"{layout}: {stray[0]} is not under one of {allowed} in {folder}, so it has no {what}; "
                "move it or remove it"
            )
