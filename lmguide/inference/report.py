"""The pictures and model facts behind ``predict ... report=html`` (:mod:`lmguide.inference.html`): per
file, the faces its verdict rests on are drawn as the web page draws them, and a video gets its
timeline."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmguide.data.cache import sha256_file
from lmguide.inference.html import Checkpoint, render, report_name, write_report
from lmguide.inference.results import FileResult
from lmguide.runs.cli import check_new_output, check_writable
from lmguide.runs.errors import ConfigError
from lmguide.viz.tiles import face_tiles, faces_to_draw
from lmguide.viz.timeline import score_plot

#: faces of one file drawn in its report (every face is scored and listed)
MAX_FACES = 8
SIZE, ALPHA = 256, 0.45


def report_paths(cfg: DictConfig, files: list[tuple[Path, str]]) -> dict[str, Path]:
    """``report=html``: the page of each input file by its display name (``report_dir``, or ``reports/``
    in the run directory); every path is refused before any work if it could not be written, or exists
    without ``overwrite=true``, or is a link. ``report=null``: none."""
    report = cfg.get("report")
    if report is None:
        return {}
    if report != "html":
        raise ConfigError(f"report must be null or html, got {report!r}")
    folder = Path(str(cfg.get("report_dir") or Path(cfg.paths.output_dir) / "reports")).expanduser()
    check_writable(folder, "report_dir", folder=True)
    taken: set[str] = set()
    paths = {name: folder / report_name(name, taken) for _, name in files}
    for p in paths.values():
        check_new_output(p, "report", bool(cfg.get("overwrite", False)))
    return paths


class Reporter:
    def __init__(self, model, run_cfg, ckpt_path, threshold: float, threshold_note: str):
        self.model, self.run_cfg, self.threshold = model, run_cfg, float(threshold)
        self.mask_points = hydra.utils.instantiate(run_cfg.data.mask).points()
        self.ckpt = Checkpoint(
            str(ckpt_path),
            sha256_file(ckpt_path),
            self.threshold,
            threshold_note,
            getattr(model, "provenance", None),
        )

    def write(self, path: Path, result: FileResult, crops: dict | None) -> Path:
        tiles, notes = [], []
        shown = [] if result.clips else faces_to_draw(result, result.decision)
        if len(shown) > MAX_FACES:
            notes.append(f"{len(shown)} faces scored; the pictures of the first {MAX_FACES} are shown")
        for fr in shown[:MAX_FACES]:
            crop = (crops or {}).get((fr.frame, fr.face or 0))
            if crop is None:
                continue
            t = face_tiles(
                self.model, self.run_cfg, crop, fr, result.file, SIZE, ALPHA, self.threshold, self.mask_points
            )
            tiles += t.tiles
            if t.note:
                notes.append(f"face {fr.face or 0}: {t.note}")
        if result.clips:
            notes.append("a clip model: draw one of its clips with python -m lmguide.visualize clip=<k>")
        timeline = None
        frame_scores = [(f.frame, f.prob_fake) for f in result.frames if f.prob_fake is not None]
        if result.kind == "video" and frame_scores:
            title = f"{Path(result.file).name}: P(fake) per sampled frame"
            timeline = score_plot(frame_scores, self.threshold, title, result.decision.run)
        return write_report(path, render(result, self.ckpt, tiles, timeline, notes))
