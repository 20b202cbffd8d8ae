"""Rebuilding models from checkpoints: round trip, overrides, and refusals with clear messages."""

import pickle
from pathlib import Path

import pytest
import torch

from lmguide.training.checkpoint import CheckpointError, load_model, read_checkpoint


def test_round_trip_rebuilds_the_trained_model(trained_ckpt):
    model, cfg = load_model(trained_ckpt)
    assert cfg.attention.num_maps == 2  # the run's own CLI override is replayed
    saved = read_checkpoint(trained_ckpt)["state_dict"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert not model.training
    x = torch.randn(2, 3, cfg.data.image_size, cfg.data.image_size)
    assert model(x).maps.shape[1] == 2


def test_new_overrides_apply_on_top(trained_ckpt):
    _, cfg = load_model(trained_ckpt, ["data.batch_size=3"])
    assert cfg.data.batch_size == 3 and cfg.attention.num_maps == 2


def test_other_architecture_is_refused(trained_ckpt):
    with pytest.raises(CheckpointError, match="another backbone or attention"):
        load_model(trained_ckpt, ["attention.num_maps=3"])


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.ckpt")


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this would have run",))

    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "lmguide_config": {}, "x": Evil()}, f)
    with pytest.raises(CheckpointError, match="refusing"):
        read_checkpoint(path)


def test_not_an_lmguide_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not an lmguide training checkpoint"):
        read_checkpoint(path)


# --- a checkpoint's config never chooses code (issue 13, item 1) ---------------------------------------


def _tampered(trained_ckpt, tmp_path, **changes):
    """A copy of the honest checkpoint with some of its entries replaced."""
    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    ckpt.update(changes)
    path = tmp_path / "tampered.ckpt"
    torch.save(ckpt, path)
    return path, ckpt


def _pickle_bomb(marker) -> bytes:
    """Bytes that create ``marker`` when unpickled with ``weights_only=False``."""

    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Bomb())


def test_torch_load_payload_in_stored_config_is_refused(trained_ckpt, tmp_path):
    """The reported payload: the stored config asks for torch.load(weights_only=False) of pickle bytes."""
    marker = tmp_path / "ran"
    model = {
        "_target_": "torch.load",
        "f": {"_target_": "io.BytesIO", "initial_bytes": _pickle_bomb(marker)},
        "weights_only": False,
    }
    path, ckpt = _tampered(trained_ckpt, tmp_path, lmguide_overrides=None)
    ckpt["lmguide_config"]["model"] = model
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"tampered\.ckpt.*never instantiated"):
        load_model(path, output_dir=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("overrides", "offending"),
    [
        (["model._target_=torch.load", "+model.weights_only=false"], "model._target_"),
        (["model._target_=builtins.open", "+model.file=MARKER", "+model.mode=w"], "model._target_"),
        (["+model.head._partial_=false"], "_partial_"),
        (["+model.x={_target_:builtins.open,file:MARKER,mode:w}"], "_target_"),
        (["+model.x=${oc.env:HOME}"], "interpolation"),
        (["hydra.run.dir=/tmp"], "Hydra's own settings"),
        (["loss.lambda_lm=choice(0,1)"], "sweep"),
        (["backbone=../../../tmp/evil"], "names no file conf/backbone"),
    ],
)
def test_recorded_overrides_that_choose_code_are_refused(trained_ckpt, tmp_path, overrides, offending):
    marker = tmp_path / "ran"
    path, ckpt = _tampered(trained_ckpt, tmp_path)
    recorded = ckpt["lmguide_overrides"]
    recorded["overrides"] = [*recorded["overrides"], *(o.replace("MARKER", str(marker)) for o in overrides)]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="refusing .*tampered.ckpt") as err:
        load_model(path, output_dir=tmp_path)
    assert offending in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("choices", "offending"),
    [({"backbone": "../../evil"}, "conf/backbone"), ({"os": "system"}, "'os' is not a config group")],
)
def test_recorded_choices_must_be_files_of_conf(trained_ckpt, tmp_path, choices, offending):
    path, ckpt = _tampered(trained_ckpt, tmp_path)
    ckpt["lmguide_overrides"]["choices"].update(choices)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=offending):
        load_model(path, output_dir=tmp_path)


def test_a_target_outside_conf_is_refused_whatever_brings_it(trained_ckpt, tmp_path):
    """The final check covers the caller's overrides too (visualize's payload came as an override)."""
    with pytest.raises(CheckpointError, match=r"model._target_='torch.load' is not a target"):
        load_model(trained_ckpt, ["model._target_=torch.load"], output_dir=tmp_path)


def test_allowlist_is_conf_targets():
    from lmguide.runs.config_guard import allowed_targets

    targets = allowed_targets()
    assert "lmguide.models.module.LandmarkGuidedDetector" in targets and "torch.optim.Adam" in targets
    assert not {"torch.load", "builtins.open", "os.system", "io.BytesIO"} & targets


def test_safe_replay_keeps_plain_overrides():
    from lmguide.runs.config_guard import safe_replay

    recorded = {
        "choices": {"backbone": "vit", "experiment": None},
        "overrides": ["loss.lambda_lm=0.3", "+data.extra=[1,'a b',{k:2}]", "~callbacks.overlay"],
    }
    assert safe_replay(recorded) == ["backbone=vit", *recorded["overrides"]]


#: written by ``python -m lmguide.train`` at c1b2776, before the helpers moved into packages
#: (``lmguide.callbacks`` -> ``lmguide.training.callbacks``...): a tiny Lite0 (stages 0-2, no wheel
#: weights) after 2 steps, whose stored config still names the old module paths
BEFORE_MOVE = Path(__file__).parent / "data" / "checkpoint_before_move.ckpt"


def test_a_checkpoint_written_before_the_package_move_still_loads(tmp_path):
    ckpt = read_checkpoint(BEFORE_MOVE)
    stored = repr(ckpt["lmguide_config"])
    assert "lmguide.callbacks.AttentionOverlay" in stored and "lmguide.training" not in stored
    model, cfg = load_model(BEFORE_MOVE, output_dir=tmp_path)
    assert cfg.callbacks.attention_overlay._target_ == "lmguide.training.callbacks.AttentionOverlay"
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    assert model.val_threshold["value"] == pytest.approx(0.6043180823326111)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p_fake = torch.softmax(model(x).logits, 1)[:, 1]
    # P(fake) the model gave this input when it was loaded by the code of c1b2776
    assert p_fake.tolist() == pytest.approx([0.5200747847557068, 0.6677486896514893], abs=1e-6)
