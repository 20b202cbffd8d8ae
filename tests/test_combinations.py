"""Every backbone x attention x head the configs allow trains a step; a combination that cannot work is
refused with a message that says why."""

from __future__ import annotations

import hydra
import pytest
import torch

from tests.conftest import compose_cfg

BACKBONES = ["efficientnet_b0", "efficientnet_b4", "xception", "resnet50", "vit", "vit_small", "swin",
             "efficientnet_lstm", "efficientnet_lite0", "efficientnet_lite1",
             "efficientnet_lite2"]  # fmt: skip
ATTENTIONS = ["multi", "cbam", "se", "nonlocal", "vit_cls", "none"]
HEADS = ["softmax", "arcface", "cosface", "sphereface", "lsoftmax"]
VIT = {"vit", "vit_small"}


def allowed(backbone: str, attention: str) -> bool:
    return attention != "vit_cls" or backbone in VIT


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many tiny steps: one intra-op thread avoids oversubscribing the 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def one_step(backbone: str, attention: str, head: str, tmp_path, size: int = 64) -> dict[str, float]:
    """Build the composed model, run one training step, return the gradient norm per part."""
    overrides = [f"backbone={backbone}", f"attention={attention}", f"head={head}", f"data.image_size={size}"]
    if attention == "multi":
        overrides.append("attention.num_maps=2")
    cfg = compose_cfg(overrides, tmp_path)
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model)
    model.log = lambda *a, **k: None  # no trainer attached
    clip = getattr(model.backbone, "clip_frames", None)
    lead = (2, 2) if clip else (2,)  # two clips of two frames: the LSTM takes any length
    mask = torch.zeros(*lead, 1, size, size)
    mask[..., size // 3 : size // 2, size // 4 : 3 * size // 4] = 1
    batch = {
        "image": torch.randn(*lead, 3, size, size),
        "mask": mask,
        "label": torch.tensor([0, 1]),
        "video": torch.tensor([0, 1]),
    }
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss), (backbone, attention, head, loss)
    loss.backward()
    norms = {}
    for part in ("backbone", "attention", "head"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        norms[part] = float(sum(g.norm() for g in grads if g is not None)) if grads else float("nan")
    return norms


def _check(norms: dict[str, float], attention: str) -> None:
    assert norms["backbone"] > 0 and norms["head"] > 0, norms
    if attention not in ("none", "vit_cls"):  # those two add no parameters of their own
        assert norms["attention"] > 0, norms


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("attention", [a for a in ATTENTIONS if a != "vit_cls"])
def test_every_attention_and_head_trains_on_the_default_backbone(attention, head, tmp_path):
    _check(one_step("efficientnet_b0", attention, head, tmp_path, size=32), attention)


@pytest.mark.parametrize("head", ["softmax", "arcface"])
def test_vit_cls_trains_on_the_vit(head, tmp_path):
    _check(one_step("vit", "vit_cls", head, tmp_path), "vit_cls")


@pytest.mark.parametrize("backbone", sorted(set(BACKBONES) - VIT))
def test_vit_cls_on_a_cnn_is_refused_with_the_reason(backbone, tmp_path):
    with pytest.raises(Exception, match="vit_cls needs a ViT backbone"):
        one_step(backbone, "vit_cls", "softmax", tmp_path)


SLOW_CASES = [
    (b, a, h)
    for b in BACKBONES
    for a in ATTENTIONS
    for h in HEADS
    if allowed(b, a) and not (b == "efficientnet_b0" and a != "vit_cls")  # the fast tier covers those
]


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "attention", "head"), SLOW_CASES)
def test_every_allowed_combination_trains_a_step(backbone, attention, head, tmp_path):
    _check(one_step(backbone, attention, head, tmp_path), attention)
