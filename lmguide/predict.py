"""Score media with a checkpoint: ``python -m lmguide.predict ckpt_path=... input=<image|video|folder>``.

Faces are found and cropped exactly as in training (the checkpoint's ``data.faces`` settings: MediaPipe
detector, ``crop_face`` with ``face_scale``/``face_size``, faces under ``min_face_size`` left out, the
largest face per video frame with ``video_faces=largest``) and go through the eval transform. Videos
are streamed (``frames_per_video`` evenly spaced frames, or ``frames_every``), never held in memory. Each
face gets P(fake); a file's verdict follows :mod:`lmguide.inference.verdict` (``aggregate=any``: fake when any
face is at or above the checkpoint's threshold, calibrated on the validation split; a video: when
``min_fake_frames`` sampled frames in a row are; ``aggregate=mean``: the mean of its faces), and its
score is the one that rule compared with the threshold. Files without a face are reported as such,
unreadable files and frames with a reason.
A ``model.landmark_channels`` checkpoint gets its region-mask channels from a FaceMesh pass over each
crop, as prepare landmarked the training crops; a face without landmarks is reported ``no_landmarks``,
never scored on empty channels.

A clip (video) checkpoint scores clips instead of faces (:mod:`lmguide.inference.clips`): frames sampled
as its training cache sampled them, a face track per face index, cut into clips as ``ClipDataset``
cuts them; a file is fake when any clip is (or, ``aggregate=mean``, by the mean of its clips).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmguide.data.faces import inference_pipeline
from lmguide.inference.clips import clip_sampling, clip_spec
from lmguide.inference.report import Reporter, report_paths
from lmguide.inference.results import FileResult, print_frames, print_table, write_output
from lmguide.inference.scorer import Scorer, list_inputs, score_file
from lmguide.inference.verdict import rule_from
from lmguide.runs.cli import check_argv, check_new_output, check_writable, device_choice, friendly_errors
from lmguide.runs.errors import ConfigError
from lmguide.runs.runtime import CONF_DIR

OUTPUT_SUFFIXES = (".csv", ".json")


def _count(cfg: DictConfig, key: str, null: str = "") -> int | None:
    """``cfg[key]``: a whole number >= 1 (None where ``null`` says what null means), else ConfigError."""
    v = cfg.get(key)
    if v is None and null:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{key} must be a whole number >= 1{f' ({null})' if null else ''}, got {v!r}")
    return v


def predict(cfg: DictConfig) -> list[FileResult]:
    """Score every file of ``cfg.input``; print the table, write ``cfg.output``; return the results."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from lmguide.training.checkpoint import load_model, verdict_threshold
    from lmguide.training.provenance import provenance_line

    output = Path(cfg.output).expanduser() if cfg.get("output") else None
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"output {output} must end in .csv or .json")
    if output is not None:
        check_new_output(output, "output", bool(cfg.get("overwrite", False)))
        check_writable(output, "output")  # before any scoring: results are never thrown away at the end
    every = _count(cfg, "frames_every", "or null")
    n_frames = _count(cfg, "frames_per_video", "or null for every frame")
    _count(cfg, "batch_size")
    rule = rule_from(cfg)
    files, ignored = list_inputs(cfg.input)
    reports = report_paths(cfg, files)  # checked before the model is loaded, as output= is

    console = Console()
    out_dir = cfg.paths.output_dir
    device = device_choice(cfg.get("device", "auto"))
    model, run_cfg = load_model(cfg.ckpt_path, list(cfg.get("overrides") or []), output_dir=out_dir)
    model.to(device)
    threshold, threshold_note = verdict_threshold(model)
    faces = inference_pipeline(run_cfg)  # its graphs are built on first use, inside the with below
    fs = faces.fs
    clips = clip_spec(model, run_cfg, int(cfg.batch_size))
    if clips is not None:  # clips span the time they spanned in training: the cache's frame sampling
        n_frames, every, how = clip_sampling(fs)
    console.print(
        f"lmguide predict: {len(files)} file(s) from {cfg.input} with {cfg.ckpt_path} "
        f"(backbone {run_cfg.model.backbone.name}, crop {fs.face_size}px x{fs.crop_scale}, "
        f"input {run_cfg.data.image_size}px, {device})",
        soft_wrap=True,
        highlight=False,
    )
    for p, why in ignored:
        console.print(f"  ignored ({why}): {p}", soft_wrap=True, highlight=False, markup=False)
    console.print(f"  verdict threshold {threshold:.4f}: {threshold_note}", soft_wrap=True, highlight=False)
    console.print(f"  {provenance_line(model.provenance)}", soft_wrap=True, highlight=False, markup=False)
    if clips is not None:
        console.print(
            f"  clip model: clips of {clips.frames} consecutive sampled frames of one face track, video "
            f"frames sampled as in training ({how}; predict's frames_per_video/frames_every are not used: "
            'overrides=["data.faces.frames_per_video=N"] changes it); a still image or a shorter track '
            f"is repeat-padded to one clip, a track under data.clip_min_frames={clips.min_frames} skipped",
            soft_wrap=True,
            highlight=False,
        )

    results: list[FileResult] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with (
        faces,
        Progress(*columns, console=console) as progress,
    ):
        scorer = Scorer(model, faces, int(cfg.batch_size), device, keep_crops=bool(reports), clips=clips)
        reporter = None
        if reports:
            reporter = Reporter(model, run_cfg, cfg.ckpt_path, threshold, threshold_note)
        all_files = progress.add_task("files", total=len(files))
        for path, name in files:
            result = score_file(scorer, path, name, n_frames, every, progress)
            result.threshold, result.rule = threshold, rule
            if reporter is not None:
                reporter.write(reports[name], result, scorer.crops)
            results.append(result)
            if cfg.get("print_frames", True):
                print_frames(progress.console, result)
            progress.advance(all_files)

    print_table(console, results)
    if reports:
        folder = next(iter(reports.values())).parent
        console.print(f"  {len(reports)} HTML report(s) written to {folder}", soft_wrap=True, highlight=False)
    if output is not None:
        write_output(output, results)
        console.print(f"  predictions written to {output}", soft_wrap=True, highlight=False)
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
@friendly_errors
def main(cfg: DictConfig) -> list[dict]:
    return [r.summary() for r in predict(cfg)]


if __name__ == "__main__":
    check_argv()
    main()
