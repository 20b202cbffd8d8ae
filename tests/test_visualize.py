"""``python -m lmguide.visualize``: overlays of a real face with the trained test checkpoint, clear errors,
the CLI, and Grad-CAM on a ViT backbone."""

from __future__ import annotations

import contextlib
import io

import cv2
import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from lmguide.runs.runtime import CONF_DIR
from lmguide.training.checkpoint import CheckpointError
from lmguide.visualize import VisualizeError, explain, stage_target, visualize, vit_cls_attention

from .conftest import compose_cfg, run_cli

SIZE = 160  # not the default, so the tile size is shown to follow the config
NUM_MAPS = 2  # the trained_ckpt fixture's attention.num_maps
OVERLAYS = ["mask", "attention_mean", "gradcam"] + [f"attention_head{i}" for i in range(NUM_MAPS)]
HEATMAPS = ["attention_mean_heatmap", "gradcam_heatmap"]  # the heat maps alone


def viz_cfg(ckpt, image, out_dir, *extra):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "visualize",
            overrides=[f"ckpt_path={ckpt}", f"input={image}", f"paths.output_dir={out_dir}", *extra],
        )


def read_rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} is not a readable PNG"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def run(trained_ckpt, media, tmp_path_factory):
    """One in-process run on single_face.jpg: (result, printed text, output dir)."""
    out = tmp_path_factory.mktemp("viz")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        res = visualize(viz_cfg(trained_ckpt, media["single_face.jpg"], out, f"size={SIZE}"))
    return res, buf.getvalue(), out


def test_writes_every_png_at_the_tile_size(run):
    res, _, out = run
    expected = {"face", "panel", *OVERLAYS, *HEATMAPS}  # EfficientNet: no patch grid
    assert set(res["paths"]) == expected
    assert {p.stem for p in out.glob("*.png")} == expected
    for stem in expected - {"panel"}:
        img = read_rgb(out / f"{stem}.png")
        if stem in ("face", "mask"):
            assert img.shape == (SIZE, SIZE, 3), stem
        else:  # a heat map: the tile, then its colour bar
            assert img.shape[0] == SIZE and img.shape[1] > SIZE, stem


def test_overlays_are_not_blank_and_differ_from_the_face(run):
    _, _, out = run
    face = read_rgb(out / "face.png").astype(np.float32)
    assert face.var() > 100  # a real photo, not a black crop
    for stem in OVERLAYS:
        img = read_rgb(out / f"{stem}.png")[:, :SIZE].astype(np.float32)
        assert img.var() > 0, stem
        assert np.abs(img - face).mean() > 2.0, f"{stem} looks like the plain crop"


def test_each_heat_map_alone_is_what_its_overlay_blends_over_the_face(run):
    res, _, out = run
    alpha = 0.45  # the default opacity
    face = read_rgb(out / "face.png").astype(np.float32)
    for stem in ("attention_mean", "gradcam"):
        heat = read_rgb(out / f"{stem}_heatmap.png")[:, :SIZE].astype(np.float32)
        assert heat.var() > 0 and np.abs(heat - face).mean() > 20, stem  # no face in it
    # the Grad-CAM overlay is the face blended with its heat map (to one grey level of float rounding)
    blend = face * (1 - alpha) + read_rgb(out / "gradcam_heatmap.png")[:, :SIZE] * alpha
    assert np.abs(read_rgb(out / "gradcam.png")[:, :SIZE] - blend).max() <= 1.0
    # and both carry the same colour bar to the right
    assert np.array_equal(
        read_rgb(out / "gradcam.png")[:, SIZE:], read_rgb(out / "gradcam_heatmap.png")[:, SIZE:]
    )


def test_panel_is_four_labelled_tiles_under_a_title(run):
    res, _, out = run
    panel = read_rgb(out / "panel.png")
    face = read_rgb(out / "face.png")
    assert panel.shape[1] > 4 * SIZE  # four tiles, two of them with their colour bars
    # the tiles are at their own pixels below the title and the labels: the face first, as written
    (top,) = [y for y in range(panel.shape[0] - SIZE + 1) if np.array_equal(panel[y : y + SIZE, :SIZE], face)]
    assert 10 < top < SIZE // 2
    assert panel[:top].std() > 5  # the title and the labels are drawn
    gradcam = read_rgb(out / "gradcam.png")[:, :SIZE]
    assert any(
        np.array_equal(panel[top : top + SIZE, x : x + SIZE], gradcam) for x in range(panel.shape[1] - SIZE)
    )
    assert res["explanation"].warnings == []  # this face's maps are not flat


def test_numbers_prediction_maps_and_mask(run, trained_ckpt):
    from lmguide.training.checkpoint import load_model

    res, _, _ = run
    face, expl = res["face"], res["explanation"]
    assert 0.0 <= res["prob_fake"] <= 1.0
    model, cfg = load_model(trained_ckpt)
    with torch.no_grad():
        logits = model(face.image[None]).logits
    assert res["prob_fake"] == pytest.approx(float(logits.softmax(-1)[0, 1]), abs=1e-5)
    s = cfg.data.image_size
    assert face.image.shape == (3, s, s)
    assert face.crop.shape == (cfg.data.faces.face_size, cfg.data.faces.face_size, 3)
    assert expl.maps.shape[0] == NUM_MAPS
    assert expl.gradcam.shape == (s, s)
    assert expl.gradcam.min() >= 0.0 and expl.gradcam.max() <= 1.0 + 1e-6 and expl.gradcam.std() > 0
    # the landmark mask covers part of the face, and the model's mask is its resized copy
    assert 0.005 < face.mask.mean() < 0.5
    assert float(face.model_mask.mean()) == pytest.approx(float(face.mask.mean()), abs=0.02)
    assert (face.landmarks[:, :2] >= 0).all() and (face.landmarks[:, :2] < face.crop.shape[0]).all()


def test_prints_numbered_steps_and_paths(run):
    res, text, _ = run
    positions = [text.index(f"[{i}/5]") for i in range(1, 6)]
    assert positions == sorted(positions)
    assert "Loading image" in text and "single_face.jpg" in text
    assert f"P(fake) = {res['prob_fake']:.4f}" in text
    for path in res["paths"].values():
        assert str(path) in text


def test_gradcam_layer_is_the_stage_the_attention_uses(trained_ckpt):
    from lmguide.training.checkpoint import load_model

    model, _ = load_model(trained_ckpt)
    layer, reshape = stage_target(model.backbone)
    assert reshape is None
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        fmap = model.backbone(torch.zeros(1, 3, 128, 128))
    handle.remove()
    assert seen == [fmap.shape]  # the Grad-CAM layer's output is the feature map the attention sees


def test_no_face_is_a_clear_error(trained_ckpt, media, tmp_path):
    with pytest.raises(VisualizeError, match="no face found in .*free-mountain-vector-01.jpg"):
        visualize(viz_cfg(trained_ckpt, media["free-mountain-vector-01.jpg"], tmp_path))
    assert not list(tmp_path.glob("*.png"))


def test_a_folder_gets_a_panel_per_face_and_an_index_page(trained_ckpt, media, tmp_path):
    import re
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("single_face.jpg", "sample1.jpg", "free-mountain-vector-01.jpg"):  # the last: no face
        shutil.copy(media[name], folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    buf = io.StringIO()
    with (
        contextlib.redirect_stdout(buf),
        pytest.raises(
            VisualizeError, match=r"1 of 3 image\(s\) could not be explained: free-mountain-vector-01.jpg"
        ),
    ):
        visualize(viz_cfg(trained_ckpt, folder, out, f"size={SIZE}"))
    # everything else was written before the error: one face in its folder, several in face<i>/
    group = sorted(p.name for p in (out / "sample1").iterdir() if p.is_dir())
    assert len(group) > 1 and group == [f"face{i}" for i in range(len(group))]
    for d in [out / "single_face", *(out / "sample1" / g for g in group)]:
        assert read_rgb(d / "panel.png").shape[1] > 4 * SIZE  # with two colour bars
        assert (d / "gradcam_heatmap.png").exists()
    assert not (out / "free-mountain-vector-01").exists()
    page = (out / "index.html").read_text()
    assert 'src="single_face/panel.png"' in page and 'src="sample1/face1/panel.png"' in page
    assert "no face found" in page and "notes.txt" not in page and "threshold 0.5" not in page
    printed = [float(v) for v in re.findall(r"file: P\(fake\) = ([0-9.]+)", buf.getvalue())]
    shown = [float(v) for v in re.findall(r"<td>([0-9]\.[0-9]{4})</td>", page)]
    # the page lists images by name (sample1 before single_face); the run went in the same order
    assert len(printed) == 2 and shown == pytest.approx(printed, abs=1e-4)


def test_missing_image_is_named_before_the_checkpoint_is_read(tmp_path):
    missing = tmp_path / "nope.jpg"
    # the checkpoint does not exist either: the image is checked first, cheaply
    with pytest.raises(VisualizeError, match=f"input image {missing} does not exist"):
        visualize(viz_cfg(tmp_path / "none.ckpt", missing, tmp_path))


def test_unreadable_image_and_bad_checkpoint(media, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(VisualizeError, match="cannot read .*junk.jpg as an image"):
        visualize(viz_cfg(tmp_path / "none.ckpt", junk, tmp_path))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        visualize(viz_cfg(bad, media["single_face.jpg"], tmp_path))


def _cli(args: list[str], cwd, cache_dir):
    return run_cli("lmguide.visualize", args, cwd, cache_dir, timeout=300)


def test_cli(trained_ckpt, media, cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    ckpt = f"ckpt_path={trained_ckpt}"
    proc = _cli([ckpt, f"input={media['single_face.jpg']}", f"hydra.run.dir={run_dir}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[1/5] Loading image" in proc.stdout and "[5/5] Writing overlays" in proc.stdout
    panel = read_rgb(run_dir / "panel.png")
    assert panel.shape[1] > 4 * 256 and read_rgb(run_dir / "face.png").shape == (256, 256, 3)  # default size
    assert str(run_dir / "panel.png") in proc.stdout

    missing = tmp_path / "missing.png"
    proc = _cli([ckpt, f"input={missing}", f"hydra.run.dir={tmp_path / 'run2'}"], tmp_path, cache_dir)
    assert proc.returncode != 0
    assert f"error: input image {missing} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_vit_gradcam_and_patch_grid(run, tmp_path):
    """A freshly built ViT (the trained checkpoint is EfficientNet): Grad-CAM on its tokens reshaped to
    the patch grid, and the patch-grid overlay."""
    res, _, _ = run
    face = res["face"]
    cfg = compose_cfg(["backbone=vit", f"attention.num_maps={NUM_MAPS}"], tmp_path)
    assert cfg.data.image_size == face.image.shape[-1]
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model).eval()
    fused_before = model.backbone.model.model.blocks[11].attn.fused_attn
    layer, reshape = stage_target(model.backbone)
    grid = cfg.data.image_size // 16
    tokens = torch.randn(2, 1 + grid * grid, 192)
    assert reshape(tokens).shape == (2, 192, grid, grid)
    assert torch.equal(reshape(tokens)[:, :, 0, 1], tokens[:, 2])  # class token dropped, row-major grid
    spec = hydra.utils.instantiate(cfg.data.mask)
    expl = explain(model, face, face.landmarks[spec.points()], size=96)
    assert set(expl.images) == {"face", "panel", "patch_grid", "vit_cls_attention", *OVERLAYS, *HEATMAPS}
    assert expl.gradcam.shape == (cfg.data.image_size,) * 2 and expl.gradcam.std() > 0
    pg = expl.images["patch_grid"]
    assert pg.shape[0] == 96 and pg.shape[1] > 96  # the tile, then its colour bar
    pg = pg[:, :96]
    assert np.abs(pg.astype(np.float32) - expl.images["face"]).mean() > 2.0
    # grid lines are white at every patch boundary
    for i in range(1, grid):
        assert (pg[round(i * 96 / grid), :] == 255).all()
    assert expl.images["panel"].shape[1] > 4 * 96
    cls = vit_cls_attention(model, face.image)
    assert cls.shape == (grid, grid) and (cls >= 0).all()
    # the CLS row of a softmax: its patch shares plus its share for itself sum to 1
    assert 0.0 < cls.sum() < 1.0 and cls.std() > 0
    assert model.backbone.model.model.blocks[11].attn.fused_attn == fused_before  # restored
    assert vit_cls_attention(_effnet(tmp_path), face.image) is None


def _effnet(tmp_path):
    return hydra.utils.instantiate(compose_cfg([], tmp_path).model).eval()


# --------------------------------------------------------------------------- detectors trained elsewhere


FOREIGN = "backbone=efficientnet_b0"  # the architecture of a weights file trained elsewhere


def _timm_detector(outputs: int, seed: int = 0):
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=outputs).eval()
    with torch.no_grad():
        model.get_classifier().bias.copy_(torch.linspace(-0.5, 1.0, outputs))  # P(fake) away from 0.5
    return model


@pytest.mark.parametrize(("outputs", "layout"), [(2, "params"), (2, "state_dict"), (2, "bare"), (1, "bare")])
def test_a_timm_detectors_file_is_explained_with_its_own_score(media, tmp_path, outputs, layout):
    model = _timm_detector(outputs)
    sd = model.state_dict()
    payload = {"params": sd, "state_dict": {"state_dict": {f"model.{k}": v for k, v in sd.items()}}}
    torch.save(payload.get(layout, sd), tmp_path / "det.pth")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        res = visualize(
            viz_cfg(
                tmp_path / "det.pth", media["single_face.jpg"], tmp_path / "out", "backbone=efficientnet_b0"
            )
        )
    assert "311/311 tensors matched" in res["report"] and res["report"] in buf.getvalue()
    assert set(res["paths"]) == {"face", "gradcam", "gradcam_heatmap", "panel"}
    with torch.no_grad():  # timm's efficientnet_b0 expects ImageNet normalisation, as the crop has
        logits = model(res["face"].image[None])
    want = logits.softmax(-1)[0, 1] if outputs == 2 else logits[0, 0].sigmoid()
    assert res["prob_fake"] == pytest.approx(float(want), abs=1e-5) and abs(res["prob_fake"] - 0.5) > 0.05


def test_a_file_of_another_architecture_is_refused_with_the_key_report(media, tmp_path):
    import timm

    torch.save(timm.create_model("resnet18", num_classes=2).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(
        VisualizeError,
        match=r"does not fit timm's efficientnet_b0: .* 0/311 tensors matched.*missing: conv_stem.weight",
    ):
        visualize(
            viz_cfg(tmp_path / "resnet.pth", media["single_face.jpg"], tmp_path, "backbone=efficientnet_b0")
        )
    torch.save(_timm_detector(1000).state_dict(), tmp_path / "imagenet.pth")
    with pytest.raises(
        VisualizeError, match=r"has \[1000\] output\(s\); a detector needs 1 \(sigmoid\) or 2"
    ):
        visualize(
            viz_cfg(tmp_path / "imagenet.pth", media["single_face.jpg"], tmp_path, "backbone=efficientnet_b0")
        )
    assert not list(tmp_path.glob("*.png"))


def test_folder_mode_takes_every_image_suffix_predict_takes(tmp_path, monkeypatch, capsys):
    """visualize input=<folder> lists the same images as predict input=<folder> (.tif included)."""
    import lmguide.visualize as viz
    from lmguide.data.media import IMAGE_SUFFIXES
    from lmguide.inference.scorer import list_inputs

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, suffix in enumerate(IMAGE_SUFFIXES):
        (folder / f"face{i}{suffix}").write_bytes(b"")
        (folder / f"upper{i}{suffix.upper()}").write_bytes(b"")
    taken, _ = list_inputs(folder)

    class Listed(Exception):
        pass

    def stop(*args, **kwargs):
        raise Listed

    monkeypatch.setattr(viz, "_load", stop)
    with pytest.raises(Listed):
        viz.visualize_folder(viz_cfg("x.ckpt", folder, tmp_path / "out"), folder, tmp_path / "out")
    assert f"[1/3] {len(taken)} image(s) in {folder}" in capsys.readouterr().out
    assert len(taken) == 2 * len(IMAGE_SUFFIXES)
