"""Build the landmark cache: ``python -m lmguide.prepare data=<layout> data.root=<dir>``.

The same code as ``LightningDataModule.prepare_data``: faces detected and cropped, 478 FaceMesh
landmarks and region masks cached beside a manifest with one row per frame and a status for each.
Re-running resumes (only missing files are indexed); a finished cache is reused. Prints the rows per
status and label, the usable faces per split and the source files without a usable face.
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig

from lmguide.data.cache import cache_errors
from lmguide.data.manifest import PreparedIndex, summarize, unusable_sources
from lmguide.data.prepare import prepare_index
from lmguide.data.workers import shard_from_env
from lmguide.runs.cli import check_argv, friendly_errors
from lmguide.runs.errors import ConfigError, require_number
from lmguide.runs.runtime import CONF_DIR

log = logging.getLogger(__name__)


def parse_shard(value: object) -> tuple[int, int]:
    """``auto`` → from the launcher's environment; ``"i/n"`` → shard i of n (0-based)."""
    if value in (None, "auto"):
        return shard_from_env()
    try:
        i, n = (int(v) for v in str(value).split("/"))
    except ValueError:
        raise ConfigError(f"shard must be 'auto' or 'i/n' (e.g. 0/4), got {value!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"shard {value!r}: i must be in [0, n)")
    return i, n


def prepare(cfg: DictConfig) -> PreparedIndex | None:
    with cache_errors(cfg.paths.cache_dir):
        return _prepare(cfg)


def _prepare(cfg: DictConfig) -> PreparedIndex | None:
    source = hydra.utils.instantiate(cfg.data.source)
    faces = hydra.utils.instantiate(cfg.data.faces)
    mask = hydra.utils.instantiate(cfg.data.mask)
    shard = parse_shard(cfg.get("shard", "auto"))
    workers = cfg.data.get("prepare_workers")
    if workers is not None:
        workers = require_number("data.prepare_workers", workers, low=1, integer=True)
    t0 = time.perf_counter()
    items = source.items()
    videos = sum(i.is_video for i in items)
    print(
        f"lmguide prepare: {source.name}: {len(items)} files ({videos} videos, {len(items) - videos} images)"
        + (f", shard {shard[0]}/{shard[1]}" if shard[1] > 1 else ""),
        flush=True,
    )
    skipped = getattr(source, "skipped", [])
    if skipped:
        print(f"  skipped {len(skipped)} file(s) that are not images or videos:", flush=True)
        for p in skipped[:20]:
            print(f"    {p}", flush=True)
        if len(skipped) > 20:
            print(f"    ... and {len(skipped) - 20} more", flush=True)
    index = prepare_index(
        source.name,
        items,
        cfg.paths.cache_dir,
        faces,
        mask,
        workers=workers,
        shard=shard,
        progress=bool(cfg.get("progress", True)),
    )
    secs = time.perf_counter() - t0
    if index is None:
        print(f"shard {shard[0]}/{shard[1]} done in {secs:.1f} s; other shards are still running", flush=True)
        return None
    print(summarize(index.rows))
    bad = unusable_sources(items, index.rows)
    for it in bad:
        reasons = sorted({r["status"] for r in index.rows if r["source"] == it.key})
        print(f"  no usable face: {it.key} ({it.split}, label {it.label}): {', '.join(reasons)}")
    print(f"cache: {index.root}\nmanifest: {index.manifest}\nmasks: {index.mask_dir}\ntime: {secs:.1f} s")
    return index


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prepare")
@friendly_errors
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    check_argv()
    main()
