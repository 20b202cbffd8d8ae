"""lmguide.data.datasets: what each item is (real, the data set's own fake, a fake made here) is a field
of the item, carried into predictions.csv, never parsed back out of a key."""

from __future__ import annotations

import torch

from lmguide.evaluation.predictions import read_predictions, write_predictions


def test_every_item_says_what_it_is(demo_datamodule):
    dm = demo_datamodule
    dm.setup("test")
    test, swaps = dm.datasets["test"], dm.datasets["test_swaps"]
    for ds in (dm.datasets["train"], test, swaps):
        kinds = ds.item_kinds
        assert len(kinds) == len(ds) == len(ds.labels)
        assert all((kind == "real") == (label == 0) for kind, label in zip(kinds, ds.labels, strict=True))
    assert set(test.item_kinds) == {"real", "self-blend"} and set(swaps.item_kinds) == {"real", "swap"}
    # a layout's own fakes (real-fake data sets, e.g. FF++) are "fake", not a self-blend
    ds = dm.datasets["test"]
    rows, fakes = ds.rows, ds.fakes
    try:
        ds.rows, ds.fakes = [dict(rows[0], label=1), rows[1]], None
        assert ds.item_kinds == ["fake", "real"]
    finally:
        ds.rows, ds.fakes = rows, fakes


def test_predictions_carry_the_kind_and_read_old_files_without_it(tmp_path):
    res = {
        "key": ["a/f0", "a/f0-other-name", "b/f0"],
        "person": ["a", "a", "b"],
        "video": ["a", "x", "b"],
        "label": torch.tensor([0, 1, 1]),
        "prob": torch.tensor([0.1, 0.8, 0.7]),
        "source": ["p", "p", "q"],
        "kind": ["real", "swap", "fake"],
    }
    path = write_predictions(tmp_path / "predictions.csv", {"test": res})
    assert read_predictions(path)["test"]["kind"] == ["real", "swap", "fake"]
    old = tmp_path / "old.csv"  # written before the kind and source columns: kind from the label alone
    old.write_text("split,key,person,video,label,p_fake\ntest,a/f0,a,a,0,0.1\ntest,sbi:a/f0,a,sbi:a,1,0.9\n")
    assert read_predictions(old)["test"]["kind"] == ["real", "fake"]
