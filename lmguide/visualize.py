"""Explain one image: ``python -m lmguide.visualize ckpt_path=... input=<image>`` (Hydra).

Detects the face, crops it exactly as training does (same detector settings, margin, crop size and
eval transform of the checkpoint's run), runs the model and writes overlay PNGs of ``size`` pixels:
``face.png`` (the crop), ``gradcam.png`` (Grad-CAM of the target class on the backbone's last used
feature stage), ``attention_head<i>.png`` (each attention map), ``attention_mean.png`` (their mean,
with the landmark mask outlined), ``mask.png`` (the landmark mask drawn from FaceMesh landmarks of the
crop), ``patch_grid.png`` and ``vit_cls_attention.png`` (ViT backbones only: mean attention per patch,
and the CLS token's attention over the patches in the block the attention uses) and ``panel.png``
(image | mask | mean attention | Grad-CAM, with P(fake) in the title). ``input=<folder>`` explains
every image of the folder, each into its own subfolder, with an ``index.html`` of thumbnails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from lmguide import CONF_DIR
from lmguide.cli import check_argv, check_writable, friendly_errors
from lmguide.data import media
from lmguide.data.prepare import face_settings
from lmguide.errors import ConfigError, LmguideError
from lmguide.models.backbones import feature_stage, vit_model

CLASS_NAMES = ("real", "fake")


class VisualizeError(LmguideError, RuntimeError):
    """An input that cannot be explained: missing or unreadable image, no face, no landmarks."""


@dataclass
class FaceInput:
    """A face as the model sees it, plus what is needed to draw it."""

    crop: np.ndarray  # (S, S, 3) RGB uint8, S = data.faces.face_size
    landmarks: np.ndarray  # (478, 3) pixel coordinates of ``crop``
    mask: np.ndarray  # (S, S) float32 landmark mask of ``crop``
    image: torch.Tensor  # (3, s, s) normalised model input, s = data.image_size
    model_mask: torch.Tensor  # (s, s) the mask after the eval transform
    box: tuple[float, float, float, float]
    score: float
    n_faces: int


@dataclass
class Explanation:
    prob_fake: float
    maps: np.ndarray  # (M, h, w) attention maps
    gradcam: np.ndarray  # (s, s) in [0, 1]
    target_class: int
    images: dict[str, np.ndarray] = field(default_factory=dict)  # file stem -> RGB uint8 tile


# -- Grad-CAM ----------------------------------------------------------------------------------------


class LogitsOnly(nn.Module):
    """``model(x).logits``: the plain classifier output Grad-CAM expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def vit_grid(net: nn.Module) -> tuple[int, int] | None:
    """Patch grid (gh, gw) if ``net`` (a TimmBackbone's ``.model``) is a ViT, else None."""
    inner = vit_model(net)
    return None if inner is None else tuple(inner.patch_embed.grid_size)


def gradcam_target(backbone: nn.Module):
    """``(layer, reshape_transform)`` for Grad-CAM: the feature stage the attention works on.

    CNNs: the stage ``out_index`` picks (timm's ``feature_info``), already (B, C, h, w); later stages
    of the features-only net never reach the logits. ViTs: the block ``out_index`` picks, whose
    tokens are reshaped to the patch grid (prefix/class tokens dropped).
    """
    net = backbone.model
    inner, layer = getattr(net, "model", net), feature_stage(net)
    grid = vit_grid(net)
    if grid is None:
        return layer, None
    prefix = int(inner.num_prefix_tokens)

    def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        if n - prefix != grid[0] * grid[1]:
            raise VisualizeError(f"{n - prefix} patch tokens do not fill the {grid[0]}x{grid[1]} patch grid")
        return tokens[:, prefix:].reshape(b, grid[0], grid[1], c).permute(0, 3, 1, 2)

    return layer, tokens_to_grid


def vit_cls_attention(model: nn.Module, image: torch.Tensor) -> np.ndarray | None:
    """CLS-token attention over the patch grid in the ViT block the attention module uses (mean over heads).

    Returns (gh, gw) shares of the CLS token's attention (they sum to 1 minus what it pays to the prefix
    tokens), or None for a non-ViT backbone. timm's attention is run unfused for this one pass so its
    softmax matrix can be read where it enters ``attn_drop``.
    """
    net = model.backbone.model
    grid = vit_grid(net)
    if grid is None:
        return None
    inner, attn = vit_model(net), feature_stage(net).attn
    captured: list[torch.Tensor] = []
    handle = attn.attn_drop.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach()))
    fused, attn.fused_attn = attn.fused_attn, False
    try:
        with torch.no_grad():
            model(image[None])
    finally:
        attn.fused_attn = fused
        handle.remove()
    probs = captured[-1][0]  # (heads, N, N), rows sum to 1
    prefix = int(inner.num_prefix_tokens)
    cls_to_patches = probs[:, 0, prefix:].mean(0)  # (gh * gw,)
    return cls_to_patches.reshape(grid).float().cpu().numpy()


def grad_cam(model: nn.Module, image: torch.Tensor, target_class: int = 1) -> np.ndarray:
    """Grad-CAM of ``target_class`` (1 = fake) for one normalised image (3, s, s) -> (s, s) in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, reshape = gradcam_target(model.backbone)
    with torch.enable_grad(), GradCAM(LogitsOnly(model), [layer], reshape_transform=reshape) as cam:
        out = cam(input_tensor=image[None].clone(), targets=[ClassifierOutputTarget(target_class)])
    return np.nan_to_num(out[0].astype(np.float32))


# -- face and model --------------------------------------------------------------------------------


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 image (alpha dropped, greyscale expanded, as the training data is read)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VisualizeError(f"input image {path} does not exist")
    try:
        return media.read_image(path)
    except media.MediaError as err:
        raise VisualizeError(f"cannot read {path} as an image ({err})") from None


def prepare_face(rgb: np.ndarray, run_cfg: DictConfig, which: str = "largest", name: str = "") -> FaceInput:
    """Detect, crop, landmark and transform the face exactly as training's data pipeline does."""
    from lmguide.data.faces import FaceFinder, crop_face

    if which not in ("largest", "best"):
        raise ConfigError(f"face must be 'largest' or 'best', got {which!r}")
    fs = face_settings(run_cfg.data.faces)
    with FaceFinder(fs.detector, fs.min_confidence) as detector:
        dets = detector.detect(rgb)
    if not dets:
        raise VisualizeError(
            f"no face found in {name or 'the image'} (MediaPipe face detection {fs.detector}, "
            f"min_confidence={fs.min_confidence}); give an image with a visible face"
        )
    det = max(dets, key=lambda d: d.size) if which == "largest" else dets[0]
    crop = crop_face(rgb, det.box, fs.crop_scale, fs.face_size)
    return face_from_crop(crop, run_cfg, det.box, det.score, len(dets), name)


def face_from_crop(
    crop: np.ndarray,
    run_cfg: DictConfig,
    box: tuple[float, float, float, float],
    score: float,
    n_faces: int = 1,
    name: str = "",
) -> FaceInput:
    """A face crop (made with ``crop_face`` as training does) landmarked, masked and transformed."""
    from lmguide.data.landmarks import FaceMeshLandmarker
    from lmguide.data.masks import draw_mask
    from lmguide.data.transforms import build_transform

    with FaceMeshLandmarker() as mesh:
        landmarks = mesh(crop)
    if landmarks is None:
        raise VisualizeError(
            f"a face was found in {name or 'the image'} but FaceMesh found no landmarks in its crop "
            "(training drops such faces too)"
        )
    spec = hydra.utils.instantiate(run_cfg.data.mask)
    mask = draw_mask(landmarks, crop.shape[:2], spec)
    out = build_transform(run_cfg.data.image_size)(image=crop, mask=mask)
    model_mask = torch.as_tensor(out["mask"]).float()
    return FaceInput(crop, landmarks, mask, out["image"], model_mask, box, score, n_faces)


def explain(
    model: nn.Module,
    face: FaceInput,
    mask_points: np.ndarray,
    size: int = 256,
    target_class: int = 1,
    alpha: float = 0.45,
) -> Explanation:
    """Run ``model`` on the face and draw every overlay at ``size`` x ``size`` (file stem -> RGB)."""
    from lmguide.viz.overlays import heat_map, heat_overlay, mask_outline
    from lmguide.viz.panels import mask_overlay, patch_grid_overlay, resize_rgb, side_by_side

    model.eval()
    with torch.no_grad():
        out = model(face.image[None])
    prob = float(out.logits.softmax(-1)[0, 1])
    maps = out.maps[0].float().cpu().numpy()
    cam = grad_cam(model, face.image, target_class)

    rgb = resize_rgb(face.crop, size)
    pts = mask_points[:, :2] * (size / face.crop.shape[1])
    mean = maps.mean(0)
    images = {
        "face": rgb,
        "mask": mask_overlay(rgb, face.mask, pts),
        "attention_mean": mask_outline(heat_overlay(rgb, mean, alpha), face.mask),
        "gradcam": heat_overlay(rgb, cam, alpha),
        # the heat maps alone, beside their overlays
        "attention_mean_heatmap": heat_map(mean, size, size),
        "gradcam_heatmap": heat_map(cam, size, size),
    }
    images.update({f"attention_head{i}": heat_overlay(rgb, m, alpha) for i, m in enumerate(maps)})
    if vit_grid(model.backbone.model) is not None:
        images["patch_grid"] = patch_grid_overlay(rgb, mean, alpha)
        images["vit_cls_attention"] = patch_grid_overlay(rgb, vit_cls_attention(model, face.image), alpha)
    verdict = CLASS_NAMES[int(prob >= 0.5)]
    images["panel"] = side_by_side(
        [images["face"], images["mask"], images["attention_mean"], images["gradcam"]],
        [
            "face crop",
            "landmark mask",
            f"mean attention ({len(maps)} maps)",
            f"Grad-CAM ({CLASS_NAMES[target_class]})",
        ],
        f"P(fake) = {prob:.3f}  ->  {verdict}",
    )
    return Explanation(prob, maps, cam, target_class, images)


# -- command -------------------------------------------------------------------------------------------


def _check_options(cfg: DictConfig) -> None:
    if not isinstance(cfg.size, int) or isinstance(cfg.size, bool) or cfg.size < 32:
        raise ConfigError(f"size must be >= 32 pixels, got {cfg.size}")
    if cfg.target_class not in (0, 1):
        raise ConfigError(f"target_class must be 0 (real) or 1 (fake), got {cfg.target_class}")
    alpha = cfg.alpha
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha is the heat map's opacity and must be in [0, 1], got {cfg.alpha}")


def _load(cfg: DictConfig, out_dir: Path, step: str):
    from lmguide.checkpoint import load_model

    print(f"{step} Loading checkpoint {cfg.ckpt_path}", flush=True)
    model, run_cfg = load_model(cfg.ckpt_path, list(cfg.get("overrides") or []), output_dir=out_dir)
    print(
        f"      backbone {run_cfg.model.backbone.name}, input {run_cfg.data.image_size}px, "
        f"crop {run_cfg.data.faces.face_size}px x{face_settings(run_cfg.data.faces).crop_scale}",
        flush=True,
    )
    return model, run_cfg


def _explain_image(
    model, run_cfg, cfg: DictConfig, rgb: np.ndarray, name: str, out_dir: Path, steps: list[str]
):
    """Detect, explain and write one image's PNGs into ``out_dir`` (``steps``: the three step labels)."""
    print(f"{steps[0]} Detecting the face and its FaceMesh landmarks", flush=True)
    face = prepare_face(rgb, run_cfg, cfg.face, name=name)
    x0, y0, x1, y1 = face.box
    print(
        f"      {face.n_faces} face(s) found; using the {cfg.face} one: box ({x0:.0f}, {y0:.0f}, {x1:.0f}, "
        f"{y1:.0f}), score {face.score:.2f}",
        flush=True,
    )
    if max(x1 - x0, y1 - y0) < run_cfg.data.faces.min_face_size:
        print(
            f"      warning: the face is smaller than min_face_size={run_cfg.data.faces.min_face_size}px; "
            "training never saw faces this small",
            flush=True,
        )
    print(f"{steps[1]} Running the model and Grad-CAM", flush=True)
    spec = hydra.utils.instantiate(run_cfg.data.mask)
    result = explain(model, face, face.landmarks[spec.points()], int(cfg.size), cfg.target_class, cfg.alpha)
    print(f"      P(fake) = {result.prob_fake:.4f}", flush=True)
    print(f"{steps[2]} Writing overlays to {out_dir}", flush=True)
    paths = _write(result.images, out_dir)
    return {"prob_fake": result.prob_fake, "paths": paths, "face": face, "explanation": result}


#: the files of an ``input=<folder>`` that are explained (by suffix, any case)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def visualize_folder(cfg: DictConfig, folder: Path, out_dir: Path) -> dict:
    """Every image of ``folder`` (not its subfolders): its PNGs under ``<output_dir>/<file stem>/`` and
    one ``index.html`` with a thumbnail, P(fake) and the verdict per image. An image that cannot be
    explained (unreadable, no face) is listed there with the reason and the others go on; the command
    then ends with one error line naming them."""
    from collections import Counter

    from lmguide.viz.index import write_index

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VisualizeError(f"input folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
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
    p, images, face = explain_foreign(
        model, rgb, int(cfg.size), cfg.alpha, cfg.target_class, str(cfg.input), norm
    )
    print(f"      P(fake) = {p:.4f}", flush=True)
    print(f"[4/4] Writing overlays to {out_dir}", flush=True)
    return {"prob_fake": p, "paths": _write(images, out_dir), "face": face, "report": report}


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

    print(f"[1/5] Loading image {cfg.input}", flush=True)
    rgb = read_image(cfg.input)
    print(f"      {rgb.shape[1]}x{rgb.shape[0]} pixels", flush=True)
    model, run_cfg = _load(cfg, out_dir, "[2/5]")
    return _explain_image(model, run_cfg, cfg, rgb, str(cfg.input), out_dir, ["[3/5]", "[4/5]", "[5/5]"])


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="visualize")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    return visualize(cfg).get("prob_fake")


if __name__ == "__main__":
    check_argv()
    main()
