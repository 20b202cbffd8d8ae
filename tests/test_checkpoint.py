"""Rebuilding models from checkpoints: round trip, overrides, and refusals with clear messages."""

import pickle

import pytest
import torch

from lmguide.checkpoint import CheckpointError, load_model, read_checkpoint


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
