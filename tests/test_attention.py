"""The attention modules: map shapes and ranges, the ViT CLS-attention hooks, gradients, and one
training step of the composed model for every ``attention=`` option."""

from __future__ import annotations

import copy

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from lmguide.bench.train_step import _batch
from lmguide.models.attention import (
    ATTENTION,
    CBAMAttention,
    NonLocalAttention,
    SEAttention,
    ViTClsAttention,
)
from lmguide.models.backbones import TimmBackbone
from lmguide.runs.runtime import CONF_DIR

from .conftest import compose_cfg

SIZE = 64
CNN_ATTENTIONS = ["multi", "cbam", "se", "nonlocal", "none"]
SUM_TO_ONE = {"se", "nonlocal", "none", "vit_cls"}  # maps that are distributions over positions


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared CPU: two OpenMP threads competing with other jobs make a 0.1 s step
    take seconds; one thread keeps the file well under a minute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbones() -> dict[str, TimmBackbone]:
    torch.manual_seed(0)
    return {
        "efficientnet_b0": TimmBackbone("efficientnet_b0", out_index=3),
        "vit": TimmBackbone("vit_tiny_patch16_224", out_index=11, img_size=SIZE),
    }


def _build(name: str, backbone: TimmBackbone):
    attention = ATTENTION[name](channels=backbone.out_channels)
    if hasattr(attention, "bind"):
        attention.bind(backbone)
    return attention


def _vit_block(backbone: TimmBackbone):
    net = backbone.model
    return net.model.get_submodule(net.feature_info.module_name()[-1])


def test_every_config_option_is_registered():
    names = {p.stem for p in (CONF_DIR / "attention").glob("*.yaml")}
    assert names == set(ATTENTION)
    for name in names:
        cfg = OmegaConf.load(CONF_DIR / "attention" / f"{name}.yaml")
        assert cfg._partial_ is True
        assert hydra.utils.get_class(cfg._target_) is ATTENTION[name]


@pytest.mark.parametrize(
    "name,backbone",
    [(n, b) for n in CNN_ATTENTIONS for b in ("efficientnet_b0", "vit")] + [("vit_cls", "vit")],
)
def test_maps_have_the_documented_shape_and_range(name, backbone, backbones):
    bb = backbones[backbone]
    attention = _build(name, bb)
    with torch.no_grad():
        fmap = bb(torch.randn(3, 3, SIZE, SIZE))
        feats, maps = attention(fmap)
    h, w = fmap.shape[-2:]
    expected_m = {"multi": 4, "vit_cls": 3}.get(name, 1)  # multi's default num_maps; ViT-Tiny's heads
    assert maps.shape == (3, expected_m, h, w)
    assert feats.shape == (3, attention.out_features)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    if name == "cbam":
        assert (maps > 0).all() and (maps < 1).all()  # a sigmoid gate
    if name in SUM_TO_ONE:
        assert torch.allclose(maps.sum((2, 3)), torch.ones(3, expected_m), atol=1e-5)
    if name == "vit_cls":
        attention.unbind()


def test_vit_cls_equals_softmax_of_the_blocks_qkv(backbones):
    bb = backbones["vit"]
    attention = _build("vit_cls", bb)
    attn = _vit_block(bb).attn
    seen: list[torch.Tensor] = []
    handle = attn.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            _, maps = attention(bb(torch.randn(2, 3, SIZE, SIZE)))
    finally:
        handle.remove()
        attention.unbind()
    x = seen[-1]  # (B, N, C): the normalised tokens entering the attention
    b, n, c = x.shape
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, attn.num_heads, c // attn.num_heads)
    q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, heads, N, d)
    probs = torch.softmax(q @ k.transpose(-2, -1) * (c // attn.num_heads) ** -0.5, dim=-1)
    cls = probs[:, :, 0, 1:]  # one prefix token (the class token) in ViT-Tiny
    cls = cls / cls.sum(-1, keepdim=True)
    grid = bb.model.model.patch_embed.grid_size
    assert torch.allclose(maps, cls.reshape(b, attn.num_heads, *grid), atol=1e-5)


def test_vit_cls_bind_unbind_and_copies(backbones):
    bb = backbones["vit"]
    attn = _vit_block(bb).attn
    before = attn.fused_attn
    attention = _build("vit_cls", bb)
    assert attention.num_heads == 3 and attn.fused_attn is False
    assert not any(p is q for p in attention.parameters() for q in bb.parameters())  # not a submodule
    assert attention.state_dict() == {}
    with pytest.raises(RuntimeError, match="has not run"):
        attention(torch.zeros(1, 192, 4, 4))
    pair = torch.nn.ModuleDict({"backbone": bb, "attention": attention})
    twin = copy.deepcopy(pair)  # the hooks follow the copy
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        a = pair["attention"](pair["backbone"](x))[1]
        b = twin["attention"](twin["backbone"](x))[1]
    assert torch.allclose(a, b)
    twin["attention"].unbind()
    attention.unbind()
    assert attn.fused_attn == before
    with pytest.raises(RuntimeError, match="bind"):
        attention(torch.zeros(1, 192, 4, 4))
    with pytest.raises(ValueError, match="192 wide"):
        ViTClsAttention(channels=100).bind(bb)


@pytest.mark.parametrize(
    "make,key",
    [
        (lambda: CBAMAttention(112, reduction=0), "attention.reduction"),
        (lambda: CBAMAttention(112, kernel_size=4), "attention.kernel_size"),
        (lambda: CBAMAttention(112, kernel_size=0), "attention.kernel_size"),
        (lambda: SEAttention(112, reduction=-1), "attention.reduction"),
        (lambda: SEAttention(112, reduction=2.5), "attention.reduction"),
        (lambda: NonLocalAttention(112, reduction=0), "attention.reduction"),
        (lambda: NonLocalAttention(112, zero_init="yes"), "attention.zero_init"),
        (lambda: ATTENTION["none"](0), "attention.channels"),
        (lambda: ViTClsAttention(0), "attention.channels"),
    ],
)
def test_bad_parameters_are_refused_by_key(make, key):
    with pytest.raises(ValueError, match=key):
        make()


@pytest.mark.parametrize("name", CNN_ATTENTIONS + ["vit_cls"])
def test_a_loss_on_the_maps_reaches_backbone_and_attention(name, backbones):
    bb = backbones["vit" if name == "vit_cls" else "efficientnet_b0"]
    attention = _build(name, bb)
    bb.zero_grad(set_to_none=True)
    try:
        _, maps = attention(bb(torch.randn(2, 3, SIZE, SIZE)))
    finally:
        if name == "vit_cls":
            attention.unbind()
    top = maps[..., : maps.shape[-2] // 2, :]
    (top.sum() / maps.sum()).backward()  # share of the attention in the upper half
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in bb.parameters())
    # what the map itself is computed from (nonlocal: g and the output projection only feed the features)
    driven = {
        "multi": ["conv.0.weight"],
        "cbam": ["channel_mlp.0.weight", "channel_mlp.2.weight", "spatial_conv.weight"],
        "se": ["excite.0.weight", "excite.2.weight"],
        "nonlocal": ["theta.weight", "phi.weight"],
        "none": [],
        "vit_cls": [],
    }[name]
    params = dict(attention.named_parameters())
    for key in driven:
        assert params[key].grad is not None and params[key].grad.abs().sum() > 0, key
    if name == "vit_cls":  # no parameters of its own: the hooked block's q/k projection learns
        assert _vit_block(bb).attn.qkv.weight.grad.abs().sum() > 0
    bb.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "name,backbone",
    [(n, "efficientnet_b0") for n in CNN_ATTENTIONS] + [("vit_cls", "vit"), ("cbam", "vit")],
)
def test_the_composed_model_trains_one_step(name, backbone, tmp_path):
    torch.manual_seed(0)
    cfg = compose_cfg([f"attention={name}", f"backbone={backbone}", f"data.image_size={SIZE}"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    model.log = lambda *a, **k: None
    model.train()
    loss = model.training_step(_batch(4, SIZE, torch.device("cpu")), 0)
    assert torch.isfinite(loss)
    loss.backward()

    def nonzero(p):
        return p.grad is not None and bool(p.grad.abs().sum() > 0)

    assert any(nonzero(p) for p in model.backbone.parameters())
    assert all(nonzero(p) for p in model.head.parameters())
    # every attention parameter is reached, except the non-local value and output projections: the
    # output BatchNorm's scale starts at zero (zero_init), so in the first step only that scale learns
    frozen_at_init = {"g.weight", "g.bias", "out.0.weight"} if name == "nonlocal" else set()
    for key, p in model.attention.named_parameters():
        assert nonzero(p) != (key in frozen_at_init), key
    if name == "none" or name == "vit_cls":
        assert not list(model.attention.parameters())


def test_vit_cls_refuses_a_cnn_backbone(tmp_path):
    cfg = compose_cfg(["attention=vit_cls", "backbone=efficientnet_b0", f"data.image_size={SIZE}"], tmp_path)
    message = "attention=vit_cls needs a ViT backbone (backbone=vit), got efficientnet_b0"
    with pytest.raises(Exception) as err:  # Hydra wraps it in an InstantiationException
        hydra.utils.instantiate(cfg.model)
    assert isinstance(err.value.__cause__, ValueError) and str(err.value.__cause__) == message
