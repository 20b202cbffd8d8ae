"""The visualiser's per-stage Grad-CAM (``layers=[…]``), SE/CBAM channel gates and Swin window attention,
each checked against a computation written out here."""

from __future__ import annotations

import contextlib
import io

import cv2
import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from lmguide.models.attention.common import energy_map
from lmguide.runs.errors import ConfigError
from lmguide.runs.runtime import CONF_DIR
from lmguide.visualize import FaceInput, explain, grad_cam, int_list, visualize
from lmguide.viz.channels import channel_gates, gate_bar_chart, has_channel_gate
from lmguide.viz.stages import stage_names, stage_target, swin_blocks, window_attention, window_grid_overlay

from .conftest import compose_cfg

SIZE = 64


def _model(tmp_path, *overrides):
    cfg = compose_cfg([f"data.image_size={SIZE}", *overrides], tmp_path)
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model).eval()


def _image(seed=0):
    return torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _manual_gradcam(model, image, layer, to_nchw, target_class=1):
    """Grad-CAM as the paper writes it: channel weights = spatial mean of d logit / d activation,
    cam = relu(sum_c w_c A_c), min-max scaled, resized to the input (and scaled again, as
    pytorch-grad-cam does)."""
    acts = {}

    def keep(mod, inp, out):
        out.retain_grad()
        acts["a"] = out

    h = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = image[None].clone().requires_grad_(True)
            logits = model(x).logits
            logits[0, target_class].backward()
    finally:
        h.remove()
    a, g = to_nchw(acts["a"]), to_nchw(acts["a"].grad)
    w = g.mean((2, 3), keepdim=True)
    cam = torch.relu((w * a).sum(1))[0].detach().numpy()
    cam = cv2.resize(((cam - cam.min()) / (cam.max() - cam.min() + 1e-7)).astype(np.float32), (SIZE, SIZE))
    return (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)  # scaled again after the resize


def test_stage_names_and_refusal_name_the_computed_stages(tmp_path):
    model = _model(tmp_path, "backbone=efficientnet_lite0", "backbone.weights=null")
    names = stage_names(model.backbone)
    # out_index 4 of EfficientNet-Lite
    assert names == ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"]
    refusal = r"stages 0\.\.4 \(blocks\.0, blocks\.1, blocks\.2, blocks\.4, blocks\.6\)"
    with pytest.raises(ConfigError, match=refusal):
        stage_target(model.backbone, 5)


@pytest.mark.parametrize(
    "overrides,stage",
    [
        (["backbone=efficientnet_lite0", "backbone.weights=null"], 1),
        (["backbone=swin"], 1),
        (["backbone=swin"], None),
    ],
)
def test_gradcam_per_stage_equals_the_formula(tmp_path, overrides, stage):
    """Swin stages are NHWC: without the permute Grad-CAM would average over the wrong axes."""
    model = _model(tmp_path, *overrides)
    image = _image()
    layer, reshape = stage_target(model.backbone, stage)
    to_nchw = reshape or (lambda t: t)
    ours = grad_cam(model, image, 1, stage)
    ref = _manual_gradcam(model, image, layer, to_nchw)
    assert ours.shape == (SIZE, SIZE) and ours.std() > 0
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_stages_differ_from_each_other(tmp_path):
    model = _model(tmp_path, "backbone=efficientnet_lite0", "backbone.weights=null")
    cams = [grad_cam(model, _image(), 1, i) for i in range(4)]
    for i in range(3):
        assert np.abs(cams[i] - cams[i + 1]).mean() > 0.01


@pytest.fixture(scope="module")
def swin(tmp_path_factory):
    model = _model(tmp_path_factory.mktemp("swin"), "backbone=swin")
    assert [len(s) for s in swin_blocks(model.backbone)] == [2, 2, 6]  # stages 0..2 of Swin-T
    return model


def test_window_attention_is_each_windows_softmax_back_in_image_coordinates(swin):
    """Block [0, 1] of Swin-T at 64 px: a 16x16 token grid, windows of 8, shifted by 4. Reference: the
    captured softmax laid out with timm's own window_reverse and rolled back."""
    from timm.models.swin_transformer import window_reverse

    model = swin
    blk = swin_blocks(model.backbone)[0][1]
    assert blk.window_size == (8, 8) and blk.shift_size == (4, 4)
    image = _image(1)
    with torch.no_grad():
        fused_logits = model(image[None]).logits
    fused_before = blk.attn.fused_attn
    wmap = window_attention(model, image, [0, 1])
    assert blk.attn.fused_attn == fused_before
    assert (wmap.stage, wmap.block, wmap.window, wmap.shift) == (0, 1, (8, 8), (4, 4))
    assert wmap.attention.shape == (16, 16)

    probs = []
    h = blk.attn.attn_drop.register_forward_hook(lambda m, i, o: probs.append(i[0]))
    blk.attn.fused_attn = False
    try:
        with torch.no_grad():
            unfused_logits = model(image[None]).logits
    finally:
        blk.attn.fused_attn = fused_before
        h.remove()
    torch.testing.assert_close(unfused_logits, fused_logits, atol=1e-5, rtol=1e-4)  # same model
    received = probs[0].mean(1).mean(1)  # (4 windows, 64)
    ref = window_reverse(received.reshape(4, 8, 8, 1), (8, 8), 16, 16)[0, ..., 0]
    ref = torch.roll(ref, shifts=(4, 4), dims=(0, 1)).numpy()
    np.testing.assert_allclose(wmap.attention, ref, atol=1e-6)
    # each shifted window's shares sum to 1
    shifted = np.roll(wmap.attention, (-4, -4), axis=(0, 1))
    sums = shifted.reshape(2, 8, 2, 8).sum((1, 3))
    np.testing.assert_allclose(sums, np.ones((2, 2)), atol=1e-5)
    assert wmap.attention.std() > 0

    # the default is the last block of the stage the attention uses (stage 2: 4x4 tokens, one window)
    last = window_attention(model, image)
    assert (last.stage, last.block, last.shift) == (2, 5, (0, 0)) and last.attention.shape == (4, 4)
    np.testing.assert_allclose(last.attention.sum(), 1.0, atol=1e-5)


def test_window_grid_is_drawn_where_the_shifted_windows_meet(swin):
    model = swin
    wmap = window_attention(model, _image(), [0, 1])
    rgb = np.full((128, 128, 3), 100, np.uint8)
    out = window_grid_overlay(rgb, wmap, rgb)
    # tokens 4 and 12 (shift 4, window 8) of a 16-token grid at 128 px: pixel rows/columns 32 and 96
    for p in (32, 96):
        assert (out[p, :] == 255).all() and (out[:, p] == 255).all()
    assert (out[64, 1:-1] == 100).any()  # the unshifted border (token 8) is not drawn


def test_window_block_refusals(swin, tmp_path):
    with pytest.raises(ConfigError, match=r"stage 0: 2 blocks, stage 1: 2 blocks, stage 2: 6 blocks"):
        window_attention(swin, _image(), [0, 2])
    with pytest.raises(ConfigError, match="needs a Swin backbone"):
        window_attention(_model(tmp_path), _image())


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_channel_gate_is_the_gate_the_forward_pass_applies(tmp_path, attention):
    model = _model(tmp_path, f"attention={attention}")
    assert has_channel_gate(model)
    image = _image()
    cg = channel_gates(model, image, top_k=5)
    with torch.no_grad():
        fmap = model.backbone(image[None])
        att = model.attention
        if attention == "se":
            gate = torch.sigmoid(att.excite[2](torch.relu(att.excite[0](fmap.mean((2, 3), keepdim=True)))))
            # the SE module's guided map is the energy of the gated features: ties the gate to forward
            torch.testing.assert_close(model(image[None]).maps, energy_map(fmap * gate))
        else:
            mlp = att.channel_mlp
            gate = torch.sigmoid(mlp(fmap.mean((2, 3), keepdim=True)) + mlp(fmap.amax((2, 3), keepdim=True)))
    gate = gate[0, :, 0, 0]
    np.testing.assert_allclose(cg.gates, gate.numpy(), atol=1e-6)
    top = np.argsort(-gate.numpy())[:5]
    assert list(cg.top) == list(top)
    expected = ((fmap[0] * gate[:, None, None])[top] ** 2).mean(0).numpy()
    np.testing.assert_allclose(cg.spatial, expected, rtol=1e-5, atol=1e-8)

    chart = gate_bar_chart(cg, 200)
    assert chart.shape == (200, 200, 3) and chart.dtype == np.uint8
    orange = (chart[..., 0] > 200) & (chart[..., 1] > 100) & (chart[..., 1] < 160) & (chart[..., 2] < 60)
    assert orange.sum() > 200  # the bars


def test_no_channel_gate_is_refused(tmp_path):
    model = _model(tmp_path)  # attention=multi
    assert not has_channel_gate(model)
    with pytest.raises(ConfigError, match="attention=se or cbam"):
        channel_gates(model, _image())
    with pytest.raises(ConfigError, match="channels must be"):
        channel_gates(_model(tmp_path, "attention=se"), _image(), top_k=0)


def _face(seed=0):
    rng = np.random.default_rng(seed)
    crop = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    mask = np.zeros((96, 96), np.float32)
    mask[30:60, 20:70] = 1
    return FaceInput(
        crop, np.zeros((478, 3)), mask, _image(seed), torch.as_tensor(mask), (0, 0, 96, 96), 1.0, 1
    )


def test_explain_adds_the_views_that_apply(swin, tmp_path):
    se = _model(tmp_path, "attention=se", "backbone=efficientnet_lite0", "backbone.weights=null")
    expl = explain(se, _face(), np.zeros((0, 3)), size=80, layers=[0, 4], channels=4)
    assert {"gradcam_stage0", "gradcam_stage4", "layers", "channel_gates", "channel_map"} <= set(expl.images)
    assert "window_attention" not in expl.images
    assert expl.images["layers"].shape[1] > 2 * 80  # two stages, each with its colour bar
    # stage 4 is the stage the attention uses: the same Grad-CAM as the panel's
    assert np.array_equal(expl.images["gradcam_stage4"], expl.images["gradcam"])
    assert not np.array_equal(expl.images["gradcam_stage0"], expl.images["gradcam"])
    swin = explain(swin, _face(), np.zeros((0, 3)), size=80, window_block=[1, -1])
    assert "window_attention" in swin.images and "channel_gates" not in swin.images
    assert "layers" not in swin.images  # layers=[] draws none


def test_cli_layers_writes_the_row(trained_ckpt, media, tmp_path):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "visualize",
            overrides=[
                f"ckpt_path={trained_ckpt}",
                f"input={media['single_face.jpg']}",
                f"paths.output_dir={tmp_path}",
                "size=96",
                "layers=[0,1,2]",
            ],
        )
    with contextlib.redirect_stdout(io.StringIO()):
        res = visualize(cfg)
    assert {"layers", "gradcam_stage0", "gradcam_stage1", "gradcam_stage2"} <= set(res["paths"])
    row = cv2.imread(str(res["paths"]["layers"]))
    assert row.shape[1] > 3 * 96 and row.shape[0] > 96  # three tiles, their colour bars, under a title
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        bad = compose("visualize", overrides=[f"ckpt_path={trained_ckpt}", "input=x.jpg", "layers=[a]"])
    with pytest.raises(ConfigError, match=r"layers must be a list of integers"):
        int_list(bad, "layers")
