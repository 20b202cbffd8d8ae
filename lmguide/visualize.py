"""Explain one image: ``python -m lmguide.visualize ckpt_path=... input=<image>`` (Hydra).

Detects every face predict scores (``face=all``; or only the ``largest`` / ``best``), crops each exactly
as training does (same detector settings, margin, crop size and eval transform of the checkpoint's
run), runs the model and writes, per face (into ``face<i>/`` when there are several), PNGs of ``size``
pixels:
``face.png`` (the crop), ``gradcam.png`` (Grad-CAM of the target class on the backbone's last used
feature stage), ``attention_head<i>.png`` (each attention map), ``attention_mean.png`` (their mean,
with the landmark mask outlined), ``mask.png`` (the landmark mask drawn from FaceMesh landmarks of the
crop), ``patch_grid.png`` and ``vit_cls_attention.png`` (ViT backbones only: mean attention per patch,
and the CLS token's attention over the patches in the block the attention uses) and ``panel.png``
(image | mask | mean attention | Grad-CAM, with P(fake) and the verdict at the checkpoint's threshold in
the title). The file's verdict is predict's (:mod:`lmguide.inference.verdict`: any face at or above the
threshold by default), so both commands say the same of one file. ``input=<folder>`` explains every image of
the folder, each into its own subfolder, with an ``index.html`` of thumbnails.

A clip (video) checkpoint explains one clip instead (:func:`visualize_clip`): ``input=<video>`` is
sampled, cropped and cut into clips as predict does (:mod:`lmguide.inference.clips`), and clip ``clip``
(0: the first) is drawn as ``clip_strip.png``: each frame's crop with its mean attention, P(fake) of
the clip in the title. A still image is a one-frame clip, repeat-padded as training pads it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import hydra
import numpy as np
from omegaconf import DictConfig

from lmguide.data import media
from lmguide.data.faces import face_settings
from lmguide.runs.cli import check_argv, check_writable, friendly_errors
from lmguide.runs.errors import ConfigError, VisualizeError
from lmguide.runs.runtime import CONF_DIR
from lmguide.viz.explain import (
    CLASS_NAMES,
    Explanation,
    FaceInput,
    Unexplained,
    explain,
    face_from_crop,
    prepare_face,
    prepare_faces,
)
from lmguide.viz.gradcam import grad_cam
from lmguide.viz.stages import stage_target
from lmguide.viz.vit_attention import vit_cls_attention

#: the pieces moved to lmguide.viz, still importable from here (the Gradio page uses them)
__all__ = [
    "CLASS_NAMES",
    "Explanation",
    "FaceInput",
    "VisualizeError",
    "explain",
    "face_from_crop",
    "grad_cam",
    "stage_target",
    "prepare_face",
    "read_image",
    "visualize",
    "visualize_clip",
    "visualize_folder",
    "visualize_foreign",
    "vit_cls_attention",
]


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 image (alpha dropped, greyscale expanded, as the training data is read)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VisualizeError(f"input image {path} does not exist")
    try:
        return media.read_image(path)
    except media.MediaError as err:
        raise VisualizeError(f"cannot read {path} as an image ({err})") from None


def _check_options(cfg: DictConfig) -> None:
    if not isinstance(cfg.size, int) or isinstance(cfg.size, bool) or cfg.size < 32:
        raise ConfigError(f"size must be >= 32 pixels, got {cfg.size}")
    if cfg.target_class not in (0, 1):
        raise ConfigError(f"target_class must be 0 (real) or 1 (fake), got {cfg.target_class}")
    alpha = cfg.alpha
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha is the heat map's opacity and must be in [0, 1], got {cfg.alpha}")
    from lmguide.inference.verdict import rule_from

    rule_from(cfg)  # aggregate / min_fake_frames refused by name before any work


def _load(cfg: DictConfig, out_dir: Path, step: str):
    from lmguide.training.checkpoint import load_model

    print(f"{step} Loading checkpoint {cfg.ckpt_path}", flush=True)
    model, run_cfg = load_model(cfg.ckpt_path, list(cfg.get("overrides") or []), output_dir=out_dir)
    print(
        f"      backbone {run_cfg.model.backbone.name}, input {run_cfg.data.image_size}px, "
        f"crop {run_cfg.data.faces.face_size}px x{face_settings(run_cfg.data.faces).crop_scale}",
        flush=True,
    )
    return model, run_cfg


def int_list(cfg: DictConfig, key: str) -> list[int]:
    """``cfg[key]`` as a list of integers (null: empty); anything else is refused by name."""
    value = cfg.get(key)
    if value is None:
        return []
    items = [value] if isinstance(value, int | str) else list(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"{key} must be a list of integers, e.g. {key}=[0,1,2], got {value!r}")
    return items


def _score(model, image) -> float:
    """P(fake) of a face that could not be explained (no landmarks), as predict scores it."""
    import torch

    with torch.inference_mode():
        return float(model(image[None]).logits.float().softmax(-1)[0, 1])


def _explain_image(
    model, run_cfg, cfg: DictConfig, rgb: np.ndarray, name: str, out_dir: Path, steps: list[str]
):
    """Detect, explain and write every face of one image (``out_dir`` for one face, ``face<i>/`` in it for
    several); the file's verdict by predict's rule at the checkpoint's threshold (``steps``: the three
    step labels)."""
    from lmguide.inference.verdict import decide, rule_from
    from lmguide.training.checkpoint import verdict_threshold

    threshold, note = verdict_threshold(model)
    rule = rule_from(cfg)
    print(f"{steps[0]} Detecting the faces and their FaceMesh landmarks", flush=True)
    found = prepare_faces(rgb, run_cfg, cfg.face, name=name)
    print(
        f"      {len(found)} face(s) to explain ({cfg.face}); threshold {threshold:.4f}: {note}", flush=True
    )
    print(f"{steps[1]} Running the model and Grad-CAM on each face", flush=True)
    spec = hydra.utils.instantiate(run_cfg.data.mask)
    faces, units = [], []
    for face in found:
        sub = out_dir if len(found) == 1 else out_dir / f"face{face.index}"
        if isinstance(face, Unexplained):  # no landmarks: nothing to draw, but scored as predict does
            p = None if face.image is None else _score(model, face.image)
            scored = p is not None and not face.too_small
            if scored:
                units.append((0, p))
            print(f"      face {face.index}: not drawn: {face.reason}", flush=True)
            faces.append(
                {"face": face.index, "prob_fake": p, "scored": scored, "note": face.reason, "paths": {}}
            )
            continue
        x0, y0, x1, y1 = face.box
        small = face.too_small
        result = explain(
            model,
            face,
            face.landmarks[spec.points()],
            int(cfg.size),
            cfg.target_class,
            cfg.alpha,
            layers=int_list(cfg, "layers"),
            channels=cfg.get("channels", 8),
            window_block=int_list(cfg, "window_block") or None,
            threshold=threshold,
        )
        verdict = "fake" if result.prob_fake >= threshold else "real"
        for w in result.warnings:  # a flat Grad-CAM or attention map: drawn on the picture, said here
            print(f"      warning: face {face.index}: {w}", flush=True)
        print(
            f"      face {face.index}: box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}), score {face.score:.2f}, "
            f"P(fake) = {result.prob_fake:.4f} -> {verdict}",
            flush=True,
        )
        why = ""
        if small:
            why = (
                f"smaller than min_face_size={run_cfg.data.faces.min_face_size}px: training never saw faces "
                "this small, and predict leaves it out of the verdict"
            )
            print(f"      warning: face {face.index} is {why}", flush=True)
        else:
            units.append((0, result.prob_fake))
        print(f"{steps[2]} Writing overlays of face {face.index} to {sub}", flush=True)
        paths = _write(result.images, sub)
        faces.append(
            {"face": face.index, "prob_fake": result.prob_fake, "verdict": verdict, "scored": not small,
             "note": why, "paths": paths, "input": face, "explanation": result}
        )  # fmt: skip
    d = decide(units, threshold, rule, "image")
    if d.label is not None:
        print(f"      file: P(fake) = {d.score:.4f} -> {d.label} ({d.rule}, threshold {threshold:.4f})")
    first = next((f for f in faces if f["paths"]), None)
    if first is None:
        raise VisualizeError(f"no face of {name} could be explained: {'; '.join(f['note'] for f in faces)}")
    return {
        "prob_fake": d.score if d.label is not None else first["prob_fake"],
        "verdict": d.label,
        "threshold": threshold,
        "rule": d.rule,
        "faces": faces,
        "paths": first["paths"],
        "face": first["input"],
        "explanation": first["explanation"],
    }


def visualize_folder(cfg: DictConfig, folder: Path, out_dir: Path) -> dict:
    """Every image of ``folder`` (not its subfolders): its PNGs under ``<output_dir>/<file stem>/`` and
    one ``index.html`` with a thumbnail, P(fake) and the verdict per image. An image that cannot be
    explained (unreadable, no face) is listed there with the reason and the others go on; the command
    then ends with one error line naming them."""
    from collections import Counter

    from lmguide.viz.index import write_index

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in media.IMAGE_SUFFIXES)
    if not files:
        raise VisualizeError(f"input folder {folder} holds no image ({', '.join(media.IMAGE_SUFFIXES)})")
    print(f"[1/3] {len(files)} image(s) in {folder}", flush=True)
    model, run_cfg = _load(cfg, out_dir, "[2/3]")
    print(f"[3/3] Explaining each image into {out_dir}/<name>/", flush=True)
    results, failed = {}, {}
    # a subfolder per file: its stem, or its full name where two files share a stem (a.jpg, a.png)
    shared = Counter(p.stem for p in files)
    stems = {p.name: p.stem if shared[p.stem] == 1 else p.name for p in files}
    for i, path in enumerate(files, 1):
        print(f"  ({i}/{len(files)}) {path.name}", flush=True)
        try:
            rgb = read_image(path)
            sub = out_dir / stems[path.name]
            results[path.name] = _explain_image(model, run_cfg, cfg, rgb, str(path), sub, ["   "] * 3)
        except VisualizeError as err:
            failed[path.name] = str(err)
            print(f"      skipped: {err}", flush=True)
    index = write_index(out_dir, folder, results, failed, stems=stems)
    print(f"index: {index}", flush=True)
    if failed:
        raise VisualizeError(
            f"{len(failed)} of {len(files)} image(s) could not be explained: {', '.join(failed)} "
            f"(reasons in {index}); the other {len(results)} were written"
        )
    return {"results": results, "failed": failed, "index": index}


def _write(images: dict[str, np.ndarray], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, img in images.items():
        path = out_dir / f"{stem}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        paths[stem] = path
        print(f"      {path}", flush=True)
    return paths


def visualize_foreign(cfg: DictConfig, out_dir: Path) -> dict:
    """``backbone=<choice>``: ``ckpt_path`` is a timm classifier's weights file trained elsewhere
    (:mod:`lmguide.viz.foreign`); Grad-CAM only, as it has no attention maps."""
    from lmguide.viz.foreign import ForeignCheckpointError, explain_foreign, load_foreign

    print(f"[1/4] Loading image {cfg.input}", flush=True)
    rgb = read_image(cfg.input)
    name = str(cfg.backbone.name)
    print(f"[2/4] Loading {cfg.ckpt_path} as timm's {name}", flush=True)
    try:
        model, report = load_foreign(cfg.ckpt_path, name)
    except ForeignCheckpointError as err:
        raise VisualizeError(str(err)) from None
    print(f"      {report}", flush=True)
    print("[3/4] Detecting the face, running the model and Grad-CAM", flush=True)
    mean, std = cfg.backbone.get("mean"), cfg.backbone.get("std")
    norm = (list(mean), list(std)) if mean is not None and std is not None else None
    ws: list[str] = []
    p, images, face = explain_foreign(
        model, rgb, int(cfg.size), cfg.alpha, cfg.target_class, str(cfg.input), norm, warnings=ws
    )
    for w in ws:
        print(f"      warning: {w}", flush=True)
    print(f"      P(fake) = {p:.4f}", flush=True)
    print(f"[4/4] Writing overlays to {out_dir}", flush=True)
    return {"prob_fake": p, "paths": _write(images, out_dir), "face": face, "report": report}


def visualize_clip(cfg: DictConfig, out_dir: Path, model=None, run_cfg=None) -> dict:
    """One clip of ``cfg.input`` (a video, or a still image: a padded one-frame clip) explained by a clip
    model: ``clip_strip.png``. Returns ``{"prob_fake", "clip" (a ClipResult), "paths"}``."""
    import torch

    from lmguide.data.faces import inference_pipeline
    from lmguide.inference.clips import clip_sampling, clip_spec
    from lmguide.inference.scorer import Scorer, score_file
    from lmguide.viz.clips import clip_strip

    path = Path(str(cfg.input)).expanduser()
    if not path.is_file():
        raise VisualizeError(f"input {path} does not exist")
    if model is None:
        model, run_cfg = _load(cfg, out_dir, "[1/3]")
    spec = clip_spec(model, run_cfg, 32)
    if spec is None:
        raise VisualizeError(
            f"{path} is a video and {cfg.ckpt_path} a frame model: lmguide.visualize explains one image "
            "with it; give a still image (or a frame saved from the video), or score the video with "
            "lmguide.predict"
        )
    faces = inference_pipeline(run_cfg)  # its graphs are built on first use, inside the with below
    n_frames, every, how = clip_sampling(faces.fs)
    print(f"[2/3] Sampling {path.name} ({how}), cropping its faces and scoring its clips", flush=True)
    with faces:
        scorer = Scorer(model, faces, 32, torch.device("cpu"), keep_crops=True, clips=spec)
        result = score_file(scorer, path, str(path), n_frames, every)
        k = int(cfg.get("clip") or 0)
        if not result.clips:
            raise VisualizeError(
                f"{path}: no clip to explain ({result.status.replace('_', ' ')}: {result.reason})"
            )
        if not 0 <= k < len(result.clips):
            raise VisualizeError(f"clip={k}: {path} has clips 0..{len(result.clips) - 1}; pick one of them")
        clip = result.clips[k]
        x = torch.stack([faces.model_input(scorer.crops[(f, clip.face)])["image"] for f in clip.frames])
    with torch.inference_mode():
        out = model(x[None])  # (1, T, 3, S, S) -> maps (T, M, h, w)
    prob = float(out.logits.float().softmax(-1)[0, 1])
    first, last = clip.frame_range
    pad = ", repeat-padded" if clip.padded else ""
    print(f"      {len(result.clips)} clip(s); clip {k}: frames {first}-{last}{pad}, P(fake) = {prob:.4f}")
    title = f"{path.name}: clip {k} of {len(result.clips)} (frames {first}-{last}{pad}), P(fake) {prob:.4f}"
    ws: list[str] = []
    strip = clip_strip(x, out.maps, clip.frames, title, int(cfg.size), cfg.alpha, warnings=ws)
    for w in ws:
        print(f"      warning: {w}", flush=True)
    print(f"[3/3] Writing the strip to {out_dir}", flush=True)
    return {"prob_fake": prob, "clip": clip, "paths": _write({"clip_strip": strip}, out_dir)}


def visualize(cfg: DictConfig) -> dict:
    """The command: returns ``{"prob_fake", "paths": {stem: Path}, "face": FaceInput}``; for a folder
    :func:`visualize_folder`'s ``{"results", "failed", "index"}``."""
    _check_options(cfg)
    out_dir = Path(cfg.output_dir)
    check_writable(out_dir, "output_dir", folder=True)  # before any work
    folder = Path(str(cfg.input)).expanduser()
    if cfg.get("backbone"):
        return visualize_foreign(cfg, out_dir)
    if folder.is_dir():
        return visualize_folder(cfg, folder, out_dir)
    if folder.suffix.lower() in media.VIDEO_SUFFIXES:
        return visualize_clip(cfg, out_dir)

    print(f"[1/5] Loading image {cfg.input}", flush=True)
    rgb = read_image(cfg.input)
    print(f"      {rgb.shape[1]}x{rgb.shape[0]} pixels", flush=True)
    model, run_cfg = _load(cfg, out_dir, "[2/5]")
    if getattr(model, "clip_frames", None):
        return visualize_clip(cfg, out_dir, model, run_cfg)
    return _explain_image(model, run_cfg, cfg, rgb, str(cfg.input), out_dir, ["[3/5]", "[4/5]", "[5/5]"])


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="visualize")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    return visualize(cfg).get("prob_fake")


if __name__ == "__main__":
    check_argv()
    main()
