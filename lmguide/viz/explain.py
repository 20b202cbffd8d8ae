"""One face explained: found, cropped and transformed exactly as training does (the run's
:class:`~lmguide.data.faces.FacePipeline`), its landmark mask, and the overlays of the model's attention
maps, Grad-CAM, (ViT backbones) the CLS attention and the extra views (per-stage Grad-CAM, SE/CBAM
channel gates, Swin window attention), as RGB tiles by file stem; every heat map with its colour bar,
and a warning on it where the map is flat."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from lmguide.data.faces import FacePipeline, inference_pipeline
from lmguide.runs.errors import ConfigError, VisualizeError
from lmguide.viz.channels import channel_gates, gate_bar_chart, has_channel_gate
from lmguide.viz.gradcam import CLASS_NAMES, grad_cam_checked
from lmguide.viz.heat import Heat, attention_warning, flat_warning, heat_tile, warnings_of
from lmguide.viz.overlays import heat_map, heat_overlay, mask_outline
from lmguide.viz.panels import mask_overlay, patch_grid_overlay, resize_rgb, side_by_side
from lmguide.viz.stages import stage_label, swin_blocks, window_attention, window_grid_overlay
from lmguide.viz.vit_attention import vit_cls_attention, vit_grid

log = logging.getLogger(__name__)


@dataclass
class FaceInput:
    """A face as the model sees it, plus what is needed to draw it."""

    crop: np.ndarray  # (S, S, 3) RGB uint8, S = data.faces.face_size
    landmarks: np.ndarray  # (478, 3) pixel coordinates of ``crop``
    mask: np.ndarray  # (S, S) float32 landmark mask of ``crop``
    image: torch.Tensor  # (3, s, s) normalised model input, s = data.image_size (+ R region channels)
    model_mask: torch.Tensor  # (s, s) the mask after the eval transform
    box: tuple[float, float, float, float]
    score: float
    n_faces: int
    index: int = 0  # the face's index in its frame (predict's ``face``)
    too_small: bool = False  # under min_face_size: explained, but predict leaves it out


@dataclass
class Unexplained:
    """A face that was found but cannot be drawn (FaceMesh found no landmarks in its crop): why, and its
    model input where predict could still score it (None for a landmark-channel model)."""

    index: int
    reason: str
    image: torch.Tensor | None
    too_small: bool = False


@dataclass
class Explanation:
    prob_fake: float
    maps: np.ndarray  # (M, h, w) attention maps
    gradcam: np.ndarray  # (s, s) in [0, 1]
    target_class: int
    images: dict[str, np.ndarray] = field(default_factory=dict)  # file stem -> RGB uint8 tile
    warnings: list[str] = field(default_factory=list)  # flat maps: what each picture warns of


def prepare_face(rgb: np.ndarray, run_cfg: DictConfig, which: str = "largest", name: str = "") -> FaceInput:
    """Detect, crop, landmark and transform the face exactly as training's data pipeline does."""
    if which not in ("largest", "best"):
        raise ConfigError(f"face must be 'largest' or 'best', got {which!r}")
    (face,) = prepare_faces(rgb, run_cfg, which, name)
    if isinstance(face, Unexplained):
        raise VisualizeError(face.reason)
    return face


def prepare_faces(
    rgb: np.ndarray, run_cfg: DictConfig, which: str = "all", name: str = ""
) -> list[FaceInput | Unexplained]:
    """Every face predict would find in a still image (``which=all``: the run's ``image_faces`` rule,
    in predict's face order), or the ``largest`` / ``best`` one, each prepared as training does; a face
    whose crop FaceMesh cannot landmark comes back :class:`Unexplained` (the others are still
    explained). VisualizeError when there is no face at all."""
    if which not in ("all", "largest", "best"):
        raise ConfigError(f"face must be 'all', 'largest' or 'best', got {which!r}")
    # faces under min_face_size are explained too (flagged too_small): training never saw them
    with inference_pipeline(run_cfg, crop_small=True) as faces:
        fs = faces.fs
        policy = fs.image_faces if which == "all" else which
        found = faces(rgb, policy)
        if not found.faces:
            raise VisualizeError(
                f"no face found in {name or 'the image'} (MediaPipe face detection {fs.detector}, "
                f"min_confidence={fs.min_confidence}); give an image with a visible face"
            )
        out: list[FaceInput | VisualizeError] = []
        for face in found.faces:
            try:
                fi = face_from_crop(
                    face.crop, run_cfg, face.det.box, face.det.score, found.found, name, faces
                )
            except VisualizeError as err:
                out.append(VisualizeError(f"face {face.index}: {err}"))
                continue
            fi.index, fi.too_small = face.index, face.too_small
            out.append(fi)
        return out


def face_from_crop(
    crop: np.ndarray,
    run_cfg: DictConfig,
    box: tuple[float, float, float, float],
    score: float,
    n_faces: int = 1,
    name: str = "",
    faces: FacePipeline | None = None,
) -> FaceInput:
    """A face crop (cut by the run's :class:`FacePipeline`, as training does) landmarked, masked and
    transformed by the pipeline's eval transform; ``faces``: that pipeline when the caller has one open
    (one for ``run_cfg`` otherwise)."""
    from lmguide.data.landmarks import FaceMeshLandmarker
    from lmguide.data.masks import draw_mask

    with FaceMeshLandmarker() as mesh:
        landmarks = mesh(crop)
    if landmarks is None:
        raise VisualizeError(
            f"a face was found in {name or 'the image'} but FaceMesh found no landmarks in its crop "
            "(training drops such faces too)"
        )
    spec = hydra.utils.instantiate(run_cfg.data.mask)
    mask = draw_mask(landmarks, crop.shape[:2], spec)
    if faces is None:  # only its transform is used: the detector graphs are built lazily, so never here
        faces = inference_pipeline(run_cfg)
    out = faces.model_input(crop, mask, landmarks)  # a landmark-channel model: these landmarks' regions
    model_mask = torch.as_tensor(out["mask"]).float()
    return FaceInput(crop, landmarks, mask, out["image"], model_mask, box, score, n_faces)


def attention_heat(tile: np.ndarray, values: np.ndarray, name: str, label: str = "attention") -> Heat:
    """A heat tile of an attention map ``name``, with its warning when the map is flat."""
    return Heat(tile, values, label, attention_warning(values), name)


def explain(
    model: nn.Module,
    face: FaceInput,
    mask_points: np.ndarray,
    size: int = 256,
    target_class: int = 1,
    alpha: float = 0.45,
    layers: Sequence[int] = (),
    channels: int = 8,
    window_block: Sequence[int] | None = None,
    threshold: float = 0.5,
) -> Explanation:
    """Run ``model`` on the face and draw every overlay at ``size`` x ``size`` (file stem -> RGB), each
    heat map with its colour bar to the right; a flat map (one value everywhere) has its warning written
    on it, listed in ``warnings`` and logged. The panel's verdict is P(fake) at ``threshold`` (give the
    checkpoint's, as every caller does).

    Besides the attention maps and Grad-CAM: ``layers`` draws Grad-CAM of those backbone stages side
    by side (``layers``); an SE/CBAM attention adds its channel gate (``channel_gates``, the top
    ``channels`` channels, and ``channel_map``, where they fire); a Swin backbone adds the window
    attention of ``window_block`` (``window_attention``, the window grid drawn)."""
    model.eval()
    with torch.no_grad():
        out = model(face.image[None])
    prob = float(out.logits.softmax(-1)[0, 1])
    maps = out.maps[0].float().cpu().numpy()
    cam, cam_warning = grad_cam_checked(model, face.image, target_class)

    rgb = resize_rgb(face.crop, size)
    pts = mask_points[:, :2] * (size / face.crop.shape[1])
    mean = maps.mean(0)
    mean_name = f"mean attention map ({len(maps)} maps)"
    cam_label = f"Grad-CAM ({CLASS_NAMES[target_class]})"
    heats: dict[str, np.ndarray | Heat] = {
        "attention_mean": attention_heat(
            mask_outline(heat_overlay(rgb, mean, alpha), face.mask), mean, mean_name
        ),
        "gradcam": Heat(heat_overlay(rgb, cam, alpha), cam, cam_label, cam_warning, cam_label),
        # the heat maps alone, beside their overlays
        "attention_mean_heatmap": attention_heat(heat_map(mean, size, size), mean, mean_name),
        "gradcam_heatmap": Heat(heat_map(cam, size, size), cam, cam_label, cam_warning, cam_label),
    }
    for i, m in enumerate(maps):
        heats[f"attention_head{i}"] = attention_heat(heat_overlay(rgb, m, alpha), m, f"attention map {i}")
    if vit_grid(model.backbone.model) is not None:
        heats["patch_grid"] = attention_heat(patch_grid_overlay(rgb, mean, alpha), mean, mean_name)
        cls = vit_cls_attention(model, face.image)
        heats["vit_cls_attention"] = attention_heat(patch_grid_overlay(rgb, cls, alpha), cls, "CLS attention")
    heats.update(extra_views(model, face.image, rgb, target_class, alpha, layers, channels, window_block))
    warnings = warnings_of(list(heats.values()))
    for w in warnings:
        log.warning("%s", w)
    verdict = CLASS_NAMES[int(prob >= threshold)]
    images = {"face": rgb, "mask": mask_overlay(rgb, face.mask, pts)}
    panel = side_by_side(
        [rgb, images["mask"], heats["attention_mean"], heats["gradcam"]],
        ["face crop", "landmark mask", f"mean attention ({len(maps)} maps)", cam_label],
        f"P(fake) = {prob:.3f}  ->  {verdict} (threshold {threshold:.3f})",
    )
    images.update({k: heat_tile(v) if isinstance(v, Heat) else v for k, v in heats.items()})
    images["panel"] = panel
    return Explanation(prob, maps, cam, target_class, images, warnings)


def extra_views(
    model: nn.Module,
    image: torch.Tensor,
    rgb: np.ndarray,
    target_class: int,
    alpha: float,
    layers: Sequence[int] = (),
    channels: int = 8,
    window_block: Sequence[int] | None = None,
) -> dict[str, np.ndarray | Heat]:
    """The per-stage Grad-CAM row, the channel gate and the Swin window attention (where they apply):
    heat maps as :class:`Heat` tiles, the rest (the stage row, the gate chart) drawn."""
    views: dict[str, np.ndarray | Heat] = {}
    cam_label = f"Grad-CAM ({CLASS_NAMES[target_class]})"
    if layers:
        for i in dict.fromkeys(int(i) for i in layers):
            cam, warning = grad_cam_checked(model, image, target_class, i)
            where = f"{cam_label}, stage {i}"
            views[f"gradcam_stage{i}"] = Heat(heat_overlay(rgb, cam, alpha), cam, cam_label, warning, where)
        stems = [k for k in views if k.startswith("gradcam_stage")]
        views["layers"] = side_by_side(
            [views[k] for k in stems],
            [stage_label(model.backbone, int(k.removeprefix("gradcam_stage"))) for k in stems],
            f"{cam_label} per backbone stage: low-level -> semantic",
        )
    if has_channel_gate(model):
        gates = channel_gates(model, image, channels)
        views["channel_gates"] = gate_bar_chart(gates, rgb.shape[0])
        views["channel_map"] = Heat(
            heat_overlay(rgb, gates.spatial, alpha),
            gates.spatial,
            "gated channel energy",
            flat_warning(gates.spatial, "channel map", "the top channels fire evenly everywhere"),
            "channel map",
        )
    if swin_blocks(model.backbone):
        wmap = window_attention(model, image, window_block)
        views["window_attention"] = attention_heat(
            window_grid_overlay(rgb, wmap, heat_overlay(rgb, wmap.attention, alpha)),
            wmap.attention,
            "window attention map",
            "attention received",
        )
    return views
