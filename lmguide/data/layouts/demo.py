"""The demo layout: real faces fetched from registry packages, split by person."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from lmguide.data.layouts.base import SPLITS, LayoutError, SourceItem


@dataclass
class DemoSource:
    """``splits``: file names per split. ``people``: groups of files that show the same person (a
    person's files must share a split); every other video is one person and every face of a photo
    its own."""

    cache_dir: str
    splits: dict[str, list[str]]
    use_npm: bool = True
    people: dict[str, list[str]] = field(default_factory=dict)
    name: str = "demo"

    def person_of(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for person, files in (self.people or {}).items():
            for f in files:
                if f in out:
                    raise LayoutError(f"data.source.people: {f} is listed for {out[f]} and {person}")
                out[f] = person
        return out

    def items(self) -> list[SourceItem]:
        from lmguide.data.demo import ARTIFACTS, fetch_demo_media, media_origins

        media = fetch_demo_media(self.cache_dir, use_npm=self.use_npm)
        origins = media_origins(self.cache_dir)
        bad = set(self.splits) - set(SPLITS)
        if bad:
            raise LayoutError(f"data.source.splits: unknown split(s) {sorted(bad)}; use {SPLITS}")
        person = self.person_of()
        split_of = {f: s for s in SPLITS for f in self.splits.get(s) or []}
        for p in sorted(set(person.values())):
            where = {split_of.get(f) for f, q in person.items() if q == p}
            if len(where) > 1:
                raise LayoutError(
                    f"data.source.people: the files of {p} sit in splits {sorted(map(str, where))}; "
                    "a person's files must share one split"
                )
        optional = [m.rsplit("/", 1)[-1] for a in ARTIFACTS if a.tool == "npm" for m in a.members]
        out, seen = [], set()
        for split in SPLITS:
            for fname in self.splits.get(split) or []:
                if fname in seen:
                    raise LayoutError(f"data.source.splits: {fname} is listed in more than one split")
                seen.add(fname)
                if fname in media:
                    item = SourceItem(
                        media[fname],
                        0,
                        split,
                        key=fname,
                        person=person.get(fname),
                        origin=origins.get(fname, ""),
                    )
                    out.append(item)
                elif not any(fnmatch.fnmatch(fname, o) for o in optional):  # npm media is optional
                    raise FileNotFoundError(f"demo media file {fname} is not in {self.cache_dir}/demo/media")
        return out
