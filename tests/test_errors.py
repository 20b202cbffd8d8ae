"""lmguide.runs.errors.require_number: the one range check behind every numeric config value, and the sites
that use it (train, composite loss, attention, heads, datamodule, datasets, transforms, app)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmguide.runs.errors import ConfigError, require_number


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        (
            dict(low=0, low_open=True, example=1e-3),
            -1,
            "optim.lr must be a number > 0, got -1 (e.g. optim.lr=0.001)",
        ),
        (dict(low=1, integer=True), 2.5, "optim.lr must be a whole number >= 1, got 2.5 (e.g. optim.lr=1)"),
        (
            dict(low=0, high=1, high_open=True),
            1,
            "optim.lr must be a number in [0, 1), got 1 (e.g. optim.lr=0)",
        ),
        (dict(low=0), True, "optim.lr must be a number >= 0, got True (e.g. optim.lr=0)"),
        (dict(low=0), "abc", "optim.lr must be a number >= 0, got 'abc' (e.g. optim.lr=0)"),
        (dict(), math.nan, "optim.lr must be a number, got nan (e.g. optim.lr=1)"),
        (dict(high=3, high_open=True), math.inf, "optim.lr must be a number < 3, got inf (e.g. optim.lr=2)"),
    ],
)
def test_one_line_names_the_key_the_range_and_a_value_that_would_do(kwargs, value, message):
    with pytest.raises(ConfigError) as err:
        require_number("optim.lr", value, **kwargs)
    assert str(err.value) == message


def test_good_values_come_back_as_int_or_float():
    assert require_number("k", 3.0, low=1, integer=True) == 3
    assert type(require_number("k", 3.0, low=1, integer=True)) is int
    assert type(require_number("k", 2, low=0)) is float
    assert require_number("k", 0, low=0, high=1) == 0.0 and require_number("k", 1, low=0, high=1) == 1.0


def _composite(**kw):
    from lmguide.losses.composite import CompositeLoss
    from lmguide.losses.landmark import LandmarkLoss

    return CompositeLoss(LandmarkLoss(), **kw)


def _datamodule(**kw):
    from lmguide.data.datamodule import FaceDataModule
    from lmguide.data.faces import FaceSettings
    from lmguide.data.masks import MaskSpec

    return FaceDataModule(None, FaceSettings(), MaskSpec(), "/nonexistent", **kw)


def _transform(size):
    from lmguide.data.transforms import build_transform

    return build_transform(size)


def _clips(**kw):
    from lmguide.data.clips import ClipDataset
    from lmguide.data.transforms import build_transform

    return ClipDataset([], Path("."), Path("."), build_transform(64), **kw)


def _head(name, **kw):
    from lmguide.models import heads

    return getattr(heads, name)(8, **kw)


def _app(**kw):
    from lmguide.app import check_options

    base = dict(port=7860, frames_per_video=8, max_megapixels=4, max_faces=4, max_upload_mb=50)
    check_options(OmegaConf.create({**base, **kw}))


def _train(override, tmp_path):
    from lmguide.training.fit import check_numbers

    from .conftest import compose_cfg

    check_numbers(compose_cfg([override], tmp_path))


def _attention(name, **kw):
    from lmguide.models.attention import ATTENTION

    return ATTENTION[name](112, **kw)


#: every site of a numeric config value: (call, the key its message names)
SITES = [
    (lambda: _train("data.image_size=16", Path.cwd()), "data.image_size"),
    (lambda: _composite(w_crop=-1), "loss.w_crop"),
    (lambda: _composite(lambda_lm=math.inf), "loss.lambda_lm"),
    (lambda: _composite(lambda_warmup_steps=2.5), "loss.lambda_warmup_steps"),
    (lambda: _attention("se", reduction=0), "attention.reduction"),
    (lambda: _attention("multi", num_maps=0), "attention.num_maps"),
    (lambda: _head("ArcFaceHead", s=0), "head.s"),
    (lambda: _head("ArcFaceHead", dropout=1.0), "head.dropout"),
    (lambda: _head("CosFaceHead", m=2.0), "head.m"),
    (lambda: _head("LSoftmaxHead", base=-1), "head.base"),
    (lambda: _datamodule(batch_size=0), "data.batch_size"),
    (lambda: _datamodule(prepare_workers=0), "data.prepare_workers"),
    (lambda: _datamodule(clip_frames=4, clip_min_frames=5), "data.clip_min_frames"),
    (lambda: _clips(frames=0), "data.clip_frames"),
    (lambda: _transform(16), "data.image_size"),
    (lambda: _app(port=70000), "port"),
    (lambda: _app(max_faces=0), "max_faces"),
]


@pytest.mark.parametrize(("call", "key"), SITES, ids=[key for _, key in SITES])
def test_every_numeric_key_is_refused_in_the_same_words(call, key, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        call()
    text = str(err.value)
    assert "\n" not in text
    k = re.escape(key)
    assert re.fullmatch(rf"{k} must be a (whole )?number.*, got .+ \(e\.g\. {k}=[^ ]+\)", text), text
