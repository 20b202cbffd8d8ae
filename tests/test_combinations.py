"""Every backbone x attention x head x landmark-loss form the configs allow trains a step; a combination
that cannot work is refused with a message that says why.

The full product (11 backbones x 6 attentions x 5 heads x 5 forms x one or two feature levels: 2,360
allowed cases) is covered
pairwise: :func:`all_pairs` picks cases until every allowed pair of two factors' values (a backbone
with an attention, an attention with a head, a head with a form, ...) meets in at least one case. A
fault that needs two factors to show (the way Swin's window had to fit the 64 px grid, or a margin
head's logits the clip model's LSTM) is caught by some case; one that needs three at once may not be.
The fast tier keeps every attention x head on the default backbone.
"""

from __future__ import annotations

from itertools import combinations, product

import hydra
import pytest
import torch

from tests.conftest import compose_cfg

BACKBONES = ["efficientnet_b0", "efficientnet_b4", "xception", "resnet50", "vit", "vit_small", "swin",
             "efficientnet_lstm", "efficientnet_lite0", "efficientnet_lite1",
             "efficientnet_lite2"]  # fmt: skip
ATTENTIONS = ["multi", "cbam", "se", "nonlocal", "vit_cls", "none"]
HEADS = ["softmax", "arcface", "cosface", "sphereface", "lsoftmax"]
FORMS = ["simple", "ratio", "mse", "kl", "per_head"]
#: the attention on the backbone's out_index level (one), or one level finer with out_index pooled (two)
LEVELS = ["one", "two"]
FACTORS = {"backbone": BACKBONES, "attention": ATTENTIONS, "head": HEADS, "loss": FORMS, "levels": LEVELS}
VIT = {"vit", "vit_small"}
#: per_head gives each of the 3 regions its own map: multi with num_maps=3 or the ViT's heads
PER_HEAD_ATTENTIONS = {"multi", "vit_cls"}


def allowed(case: dict[str, str]) -> bool:
    """Whether a (partial) case is one the configs accept."""
    if case.get("attention") == "vit_cls" and case.get("backbone", "vit") not in VIT:
        return False
    if case.get("attention") == "vit_cls" and case.get("levels") == "two":  # reads the out_index block
        return False
    return not (case.get("loss") == "per_head" and case.get("attention", "multi") not in PER_HEAD_ATTENTIONS)


def _pairs(case: dict[str, str]) -> set[tuple]:
    return {((f, case[f]), (g, case[g])) for f, g in combinations(FACTORS, 2) if f in case and g in case}


def all_pairs(factors: dict[str, list[str]] = FACTORS) -> list[dict[str, str]]:
    """A deterministic all-pairs (pairwise) covering of the allowed cases: greedily, each new case is the
    allowed full case that covers the most pairs not yet covered (ties: the first in product order)."""
    names = list(factors)
    full = (dict(zip(names, v, strict=True)) for v in product(*factors.values()))
    candidates = [c for c in full if allowed(c)]
    todo = set().union(*(_pairs(c) for c in candidates))  # every pair some allowed case contains
    cases = []
    while todo:
        best = max(candidates, key=lambda c: len(_pairs(c) & todo))
        cases.append(best)
        todo -= _pairs(best)
    return cases


PAIRWISE = all_pairs()


def test_the_pairwise_cases_cover_every_allowed_pair_and_only_allowed_cases():
    full = [dict(zip(FACTORS, v, strict=True)) for v in product(*FACTORS.values())]
    every = set().union(*(_pairs(c) for c in full if allowed(c)))
    covered = set().union(*(_pairs(c) for c in PAIRWISE))
    assert covered == every
    assert all(allowed(c) for c in PAIRWISE)
    # an allowed pair never met by the product would be a factor value no case can use
    assert {("backbone", "swin"), ("loss", "per_head")} in [set(p) for p in every]
    assert (("attention", "cbam"), ("loss", "per_head")) not in every
    assert len(PAIRWISE) < 0.03 * sum(allowed(c) for c in full)  # 66 of the 2,360 allowed cases


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many tiny steps: one intra-op thread avoids oversubscribing the 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def one_step(
    backbone: str,
    attention: str,
    head: str,
    tmp_path,
    size: int = 64,
    loss: str = "ratio",
    levels: str = "one",
) -> dict[str, float]:
    """Build the composed model, run one training step, return the gradient norm per part. ``levels="two"``:
    the attention one level below the backbone's out_index (backbone.attn_index), out_index pooled."""
    overrides = [
        f"backbone={backbone}",
        f"attention={attention}",
        f"head={head}",
        f"loss={loss}",
        f"data.image_size={size}",
    ]
    if attention == "multi":
        overrides.append(f"attention.num_maps={3 if loss == 'per_head' else 2}")
    cfg = compose_cfg(overrides, tmp_path)
    if levels == "two":
        cfg.backbone.attn_index = cfg.backbone.out_index - 1
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
    if loss == "per_head":  # eyes, nose, mouth: three disjoint bands
        regions = torch.zeros(*lead, 3, size, size)
        for r in range(3):
            regions[..., r, (r + 1) * size // 5 : (r + 2) * size // 5, size // 4 : 3 * size // 4] = 1
        batch["region_masks"] = regions
    out = model.training_step(batch, 0)
    assert torch.isfinite(out), (backbone, attention, head, loss, out)
    out.backward()
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


@pytest.mark.parametrize("attention", sorted(set(ATTENTIONS) - PER_HEAD_ATTENTIONS - {"vit_cls"}))
def test_per_head_with_a_single_map_attention_is_refused_with_the_reason(attention, tmp_path):
    with pytest.raises(Exception, match="per_head"):
        one_step("efficientnet_b0", attention, "softmax", tmp_path, size=32, loss="per_head")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backbone", "attention", "head", "loss", "levels"),
    [tuple(c.values()) for c in PAIRWISE],
    ids=["-".join(c.values()) for c in PAIRWISE],
)
def test_every_allowed_pair_of_settings_trains_a_step(backbone, attention, head, loss, levels, tmp_path):
    _check(one_step(backbone, attention, head, tmp_path, loss=loss, levels=levels), attention)
