"""A flat Grad-CAM says why (issue 30): the reason read from the stage's gradients and activations, in
the explanation's warnings and written on its pictures, which carry colour bars."""

from __future__ import annotations

import hydra
import numpy as np
import pytest
import torch

from lmguide.viz import heat as heat_mod
from lmguide.viz.explain import FaceInput, explain
from lmguide.viz.gradcam import flat_cam_reason, grad_cam_checked

from .conftest import compose_cfg

SIZE = 64


def _model(tmp_path):
    cfg = compose_cfg([f"data.image_size={SIZE}", "attention.num_maps=2"], tmp_path)
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model).eval()


def _image(seed=0):
    return torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _deaf(model):
    """``model`` whose fake logit no longer depends on the features: its gradients are zero."""
    with torch.no_grad():
        model.head.fc.weight[1] = 0
    return model


def _face():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    mask = np.zeros((96, 96), np.float32)
    mask[30:60, 20:70] = 1
    return FaceInput(crop, np.zeros((478, 3)), mask, _image(), torch.as_tensor(mask), (0, 0, 96, 96), 1.0, 1)


def test_the_reason_of_a_flat_map_is_read_from_gradients_and_activations():
    flat, shaped = np.zeros((8, 8), np.float32), np.eye(8, dtype=np.float32)
    acts = [torch.rand(1, 3, 4, 4) + 0.1]  # positive, as after a ReLU
    zero = [torch.zeros(1, 3, 4, 4)]
    assert "gradients are zero" in flat_cam_reason(flat, zero, acts)
    assert "gradients are zero" in flat_cam_reason(flat, [], [])  # the stage never got a gradient
    lowering = [torch.full((1, 3, 4, 4), -0.5)]  # every channel weight negative: ReLU keeps nothing
    assert "every location lowers the fake score" in flat_cam_reason(flat, lowering, acts)
    tiny = [torch.full((1, 3, 4, 4), 1e-9)]  # scaled by max + 1e-7: flattened by pytorch-grad-cam
    assert "near zero" in flat_cam_reason(flat, tiny, acts, "real")
    assert "the real score" in flat_cam_reason(flat, tiny, acts, "real")
    assert flat_cam_reason(shaped, zero, acts) == ""  # not flat: nothing to say


def test_a_deaf_score_gives_a_flat_grad_cam_with_its_reason(tmp_path):
    model = _model(tmp_path)
    cam, warning = grad_cam_checked(model, _image())
    assert cam.std() > 0 and warning == ""
    cam, warning = grad_cam_checked(_deaf(model), _image())
    assert np.ptp(cam) == 0
    assert warning.startswith("flat Grad-CAM: the fake score's gradients are zero for this face")


def test_explain_writes_the_warning_on_the_picture_and_returns_it(tmp_path, monkeypatch):
    drawn = []  # (texts, colour bars) of every figure drawn

    def spy(fig):
        bars = [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
        drawn.append(([" ".join(t.get_text().split()) for t in fig.texts], bars))
        return original(fig)

    original = heat_mod.figure_rgb
    monkeypatch.setattr(heat_mod, "figure_rgb", spy)
    fine = explain(_model(tmp_path), _face(), np.zeros((0, 3)), size=80)
    assert fine.warnings == []
    n_heat = len([k for k in fine.images if k not in ("face", "mask", "panel")])
    # one colour bar per heat tile; the panel's two: mean attention and Grad-CAM, not the face or mask
    assert sorted(len(bars) for _, bars in drawn) == [1] * n_heat + [2]
    assert fine.images["gradcam"].shape[0] == 80 and fine.images["gradcam"].shape[1] > 80

    drawn.clear()
    deaf = explain(_deaf(_model(tmp_path)), _face(), np.zeros((0, 3)), size=80)
    (warning,) = deaf.warnings
    assert warning.startswith("Grad-CAM (fake): flat Grad-CAM: the fake score's gradients are zero")
    on_picture = warning.removeprefix("Grad-CAM (fake): ")
    written = [texts for texts, _ in drawn if on_picture in texts]
    assert len(written) == 3  # gradcam, gradcam_heatmap and the panel
    assert not np.array_equal(deaf.images["gradcam"], fine.images["gradcam"])


@pytest.mark.parametrize("stage", [0, None])
def test_grad_cam_is_unchanged_by_the_check(tmp_path, stage):
    from lmguide.viz.gradcam import grad_cam

    model = _model(tmp_path)
    cam, _ = grad_cam_checked(model, _image(1), 1, stage)
    np.testing.assert_array_equal(cam, grad_cam(model, _image(1), 1, stage))
