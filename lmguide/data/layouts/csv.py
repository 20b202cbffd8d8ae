"""A CSV list of media files: ``path,label[,video_id,split]`` with a header line.

``path`` is relative to ``root`` (or to the CSV's folder when root is null); ``label`` is 0/1 or
real/fake; an empty or absent ``split`` is filled by a stable hash of the clip (``video_id``, else
the path). Listed files that do not exist are reported together: how many, and the first few.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lmguide.data.layouts.base import (
    SPLITS,
    LayoutError,
    SourceItem,
    check_fractions,
    check_root,
    hash_split,
    parse_label,
    require_items,
    resolve_under,
)

REQUIRED = ("path", "label")
#: listed files that do not exist: how many the error names (it counts them all)
MISSING_SHOWN = 5


@dataclass
class CSVSource:
    """Media files listed in a CSV.

    file: the CSV (header required; columns path, label, and optionally video_id, split).
    root: folder the paths are relative to; None: the CSV's folder.
    allow_absolute: accept absolute paths in the CSV (refused by default: a CSV moved between
        machines should not silently read other files).
    split_fractions: val/test shares for rows without a split.
    """

    file: str | None = None
    root: str | None = None
    allow_absolute: bool = False
    split_fractions: Mapping[str, float] = field(default_factory=lambda: {"val": 0.1, "test": 0.1})
    name: str = "csv"

    def items(self) -> list[SourceItem]:
        if self.file in (None, "", "???"):
            raise LayoutError("csv layout: data.source.file is not set (the CSV listing path,label)")
        csv_path = Path(self.file).expanduser().resolve()
        if not csv_path.is_file():
            raise LayoutError(f"csv layout: CSV file {csv_path} does not exist")
        root = check_root(self.root if self.root not in (None, "") else csv_path.parent, "csv")
        fractions = check_fractions(self.split_fractions, "csv split_fractions")
        out: list[SourceItem] = []
        clips: dict[str, tuple[int, str, str]] = {}  # video_id -> (label, split, where) of its first row
        missing: list[tuple[str, str, Path]] = []  # (where, path as listed, full path): reported together
        try:
            with csv_path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh, skipinitialspace=True)
                found = [(c or "").strip() for c in reader.fieldnames or []]
                missing = [c for c in REQUIRED if c not in found]
                if missing:
                    raise LayoutError(
                        f"{csv_path}: missing column(s) {missing}; the header must name path,label"
                        f"[,video_id,split], found {found}"
                    )
                reader.fieldnames = found
                for row in reader:
                    where = f"{csv_path}:{reader.line_num}"
                    item = self._item(row, where, root, fractions, clips, missing)
                    if item is not None:
                        out.append(item)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise LayoutError(f"{csv_path}: cannot read the CSV ({err})") from None
        if missing:
            raise LayoutError(missing_message(csv_path, root, missing, len(out) + len(missing)))
        return require_items(out, "csv", root)

    def _item(
        self,
        row: dict[str, str | None],
        where: str,
        root: Path,
        fractions: dict[str, float],
        clips: dict[str, tuple[int, str, str]],
        missing: list[tuple[str, str, Path]],
    ) -> SourceItem | None:
        def cell(name: str) -> str:
            value = row.get(name)
            return value.strip() if isinstance(value, str) else ""

        rel = cell("path")
        if not rel:
            raise LayoutError(f"{where}: empty path")
        path = resolve_under(root, rel, self.allow_absolute, what=f"{where}: path")
        if path.is_dir():
            raise LayoutError(f"{where}: path {rel} is a folder, not a file ({path})")
        if not path.is_file():
            missing.append((where, rel, path))  # the rest of the list is still checked, then all named
            return None
        key = (
            path.relative_to(root).as_posix() if path.is_relative_to(root) else "external/" + path.as_posix()
        )
        label = parse_label(cell("label"), where)
        video_id = cell("video_id") or None
        split = cell("split").lower()
        if split and split not in SPLITS:
            raise LayoutError(f"{where}: split {split!r} is not one of {SPLITS} (or empty for a hash split)")
        split = split or hash_split(video_id or key, fractions)
        if video_id is not None:
            first = clips.setdefault(video_id, (label, split, where))
            if first[:2] != (label, split):
                raise LayoutError(
                    f"{where}: video_id {video_id!r} has label {label}, split {split} here but label "
                    f"{first[0]}, split {first[1]} at {first[2]}; a clip needs one label and one split"
                )
        return SourceItem(path, label, split, key=key, video_id=video_id)


def missing_message(csv_path: Path, root: Path, missing: list[tuple[str, str, Path]], listed: int) -> str:
    """One line for the listed files that do not exist: the one, or how many and the first few."""
    if len(missing) == 1:
        where, rel, path = missing[0]
        return f"{where}: file {rel} does not exist ({path})"
    shown = ", ".join(f"{rel} (line {where.rsplit(':', 1)[1]})" for where, rel, _ in missing[:MISSING_SHOWN])
    more = f", … (first {MISSING_SHOWN} shown)" if len(missing) > MISSING_SHOWN else ""
    return (
        f"{len(missing)} of {listed} files listed in {csv_path} do not exist: {shown}{more}; paths are "
        f"relative to {root} (data.source.root, else the CSV's folder): fix them or remove those rows"
    )
