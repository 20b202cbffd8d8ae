"""Attention on a finer stage than the deepest features (backbone.attn_index, TwoLevelAttention): the
default job's maps resolve the regions while the classifier still uses every pretrained stage."""

from __future__ import annotations

import hydra
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from lmguide.models.attention import MultiAttention
from lmguide.models.attention.two_level import TwoLevelAttention, attention_input, inner_attention
from lmguide.models.backbones import TimmBackbone
from lmguide.runs.runtime import CONF_DIR


def _compose(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/lmguide_test_two_level", *overrides])


def test_the_default_job_guides_maps_of_at_least_8x8_with_stage_4_in_use():
    cfg = _compose("experiment=demo")
    model = hydra.utils.instantiate(cfg.model).eval()
    size = int(cfg.data.image_size)
    bb = model.backbone
    assert bb.out_index == 4 and bb.attn_index is not None and bb.attn_index < 4
    assert isinstance(model.attention, TwoLevelAttention) and bb.global_channels == 320  # Lite0's stage 4
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fine, deep = bb(x)
        out = model(x)
    assert out.maps.shape[-2] >= 8 and out.maps.shape[-1] >= 8, out.maps.shape
    assert tuple(out.maps.shape[-2:]) == (size // bb.reduction,) * 2 == tuple(fine.shape[-2:])
    assert tuple(deep.shape[1:]) == (320, size // 32, size // 32)  # the deepest stage is computed...
    # ...and used: the prediction moves when only stage 4 changes
    stage4 = bb.model.model.get_submodule(bb.model.feature_info.module_name()[-1])
    with torch.no_grad():
        for p in stage4.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        moved = model(x)
    assert not torch.allclose(moved.logits, out.logits, atol=1e-4)
    assert torch.equal(moved.maps, out.maps)  # the maps come from the finer stage, before stage 4


def test_features_are_the_inner_features_and_the_pooled_deep_map_unit_normed():
    torch.manual_seed(0)
    inner = MultiAttention(channels=8, num_maps=2)
    two = TwoLevelAttention(inner, global_channels=5)
    fine, deep = torch.randn(3, 8, 6, 6), torch.randn(3, 5, 3, 3)
    feats, maps = two((fine, deep))
    inner_feats, inner_maps = inner(fine)
    assert two.out_features == inner.out_features + 5 == feats.shape[1]
    assert two.num_maps == 2 and torch.equal(maps, inner_maps)
    ref = F.normalize(torch.cat([inner_feats, F.normalize(deep.mean((2, 3)), dim=-1)], -1), dim=-1)
    torch.testing.assert_close(feats, ref)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3))
    assert inner_attention(two) is inner and inner_attention(inner) is inner
    assert attention_input((fine, deep)) is fine and attention_input(fine) is fine


@pytest.mark.parametrize("attention", ["multi", "cbam", "se", "nonlocal", "none"])
def test_every_map_attention_trains_on_two_levels(attention):
    """One step of the composed model: the landmark loss on the fine maps and the CE through both levels
    reach both stages, for every attention kind that works on a feature map."""
    cfg = _compose(
        "backbone=efficientnet_b0", "backbone.out_index=4", "backbone.attn_index=2", f"attention={attention}",
        "data.image_size=64",
    )  # fmt: skip
    model = hydra.utils.instantiate(cfg.model)
    model.log = lambda *a, **k: None
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., 20:40, 16:48] = 1
    batch = {"image": torch.randn(2, 3, 64, 64), "mask": mask, "label": torch.tensor([0, 1])}
    loss = model.training_step({**batch, "video": torch.arange(2)}, 0)
    loss.backward()
    assert torch.isfinite(loss)
    bb = model.backbone
    assert model(batch["image"]).maps.shape[-1] == 64 // 8  # stride 8 at attn_index 2
    stages = bb.model.feature_info.module_name()
    for name in stages:  # the fine stage and the deepest both get gradients
        grads = [p.grad for p in bb.model.model.get_submodule(name).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_attn_index_equal_to_out_index_is_one_level_and_bad_values_are_refused():
    bb = TimmBackbone("efficientnet_b0", out_index=3, attn_index=3)
    assert bb.attn_index is None and bb.global_channels == 0
    assert bb(torch.randn(1, 3, 64, 64)).shape == (1, bb.out_channels, 4, 4)
    for bad in (4, -1, 1.5, True, "2"):
        with pytest.raises(
            ValueError, match=r"backbone.attn_index must be null or an integer in 0..out_index"
        ):
            TimmBackbone("efficientnet_b0", out_index=3, attn_index=bad)


def test_vit_cls_refuses_two_levels():
    cfg = _compose("backbone=vit", "attention=vit_cls", "backbone.attn_index=6", "data.image_size=64")
    with pytest.raises(Exception) as err:  # Hydra wraps it in an InstantiationException
        hydra.utils.instantiate(cfg.model)
    assert isinstance(err.value.__cause__, ValueError)
    assert "backbone.attn_index does not apply to it" in str(err.value.__cause__)
