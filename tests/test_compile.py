"""trainer.compile: the network parts through torch.compile. The whole run is traced with aot_eager
(TorchDynamo and AOTAutograd, as inductor sees it, without generating code); inductor itself is checked
on the model's own layers (attention and head), forward and backward, against eager."""

from __future__ import annotations

import copy
import json

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from lmguide.runs.errors import ConfigError
from lmguide.runs.runtime import CONF_DIR
from lmguide.training.compile import BACKENDS, MODES, PARTS, compile_backend, compile_mode, compile_model
from tests.conftest import FAST_DATA, run_cli


@pytest.mark.parametrize(("value", "backend"), [(False, None), (None, None), (True, "inductor")])
def test_true_is_inductor_and_false_is_no_compile(value, backend):
    assert compile_backend(value) == backend
    if backend is None:
        model = torch.nn.Linear(2, 2)
        assert compile_model(model, value) is model


@pytest.mark.parametrize("value", ["fast", "torch._dynamo.backends.debugging.eager", 1, "Inductor"])
def test_a_backend_outside_the_list_is_refused_by_name(value):
    with pytest.raises(ConfigError, match=r"trainer\.compile=.* is not a choice.*aot_eager"):
        compile_backend(value)
    assert all(compile_backend(b) == b for b in BACKENDS)


@pytest.mark.parametrize(
    ("mode", "backend", "match"),
    [
        ("fastest", "inductor", "is not a choice"),
        ("max-autotune", "aot_eager", "is inductor's"),
        (1, "inductor", ""),
    ],
)
def test_a_compile_mode_outside_the_list_or_without_inductor_is_refused(mode, backend, match):
    with pytest.raises(ConfigError, match=rf"trainer\.compile_mode=.*{match}"):
        compile_mode(mode, backend)
    assert compile_mode(None, "aot_eager") is None
    assert all(compile_mode(m, "inductor") == m for m in MODES)


def test_the_network_parts_are_compiled_in_place_and_the_step_stays_eager():
    """Backbone, attention and head are compiled each on its own, in place: the LightningModule (its
    loss, metrics and logging) is not wrapped, and the checkpoint keys do not change."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", "paths.output_dir=/tmp/lmguide_test_compile"])
    model = hydra.utils.instantiate(cfg.model)
    keys = list(model.state_dict())
    assert compile_model(model, "eager") is model
    compiled = [
        n for n in PARTS if getattr(model, n, None) is not None and model.get_submodule(n)._compiled_call_impl
    ]
    assert compiled == ["backbone", "attention", "head"]
    assert model._compiled_call_impl is None and model.loss._compiled_call_impl is None
    assert list(model.state_dict()) == keys


@pytest.mark.slow
def test_trainer_compile_traces_the_whole_run(cache_dir, tmp_path):
    """fit, validate, test and the end-of-run scoring all go through the compiled module (the backbone
    cut to its first three stages: less for dynamo to trace, the same path)."""
    args = ["trainer.compile=aot_eager", "trainer.fast_dev_run=true", "attention.num_maps=2", *FAST_DATA]
    args += ["backbone.out_index=2"]
    proc = run_cli("lmguide.train", [*args, f"hydra.run.dir={tmp_path}"], tmp_path, cache_dir, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test/auc"] <= 1.0
    assert metrics["compile/graphs"] >= 1 and metrics["compile/frames"] >= 1, metrics


class _OwnLayers(torch.nn.Module):
    """The model's own layers above the timm backbone: the attention (two levels) and the head."""

    def __init__(self, model):
        super().__init__()
        self.attention, self.head = model.attention, model.head

    def forward(self, fine, deep):
        feats, maps = self.attention((fine, deep))
        return self.head(feats), maps


@pytest.mark.slow
def test_inductor_compiles_our_layers_to_the_eager_outputs_and_gradients():
    """Inductor's generated kernels for the attention and the head (our code; timm's backbones are in
    torch's own inductor benchmarks) give eager's outputs and input gradients."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", "paths.output_dir=/tmp/lmguide_test_compile"])
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model).eval()  # eval: batch-norm statistics stay put
    with torch.no_grad():
        fine, deep = model.backbone(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    top = _OwnLayers(model)
    outs = []
    compiled = compile_model(copy.deepcopy(top), True)  # its attention and head compiled in place
    assert compiled.attention._compiled_call_impl is not None and top.attention._compiled_call_impl is None
    for m in (top, compiled):
        inputs = [t.clone().requires_grad_(True) for t in (fine, deep)]
        logits, maps = m(*inputs)
        (logits.square().sum() + maps.sum()).backward()
        outs.append((logits.detach(), maps.detach(), *(t.grad for t in inputs)))
    for eager, compiled, what in zip(*outs, ("logits", "maps", "grad fine", "grad deep"), strict=True):
        torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4, msg=what)
        assert eager.abs().sum() > 0, what
