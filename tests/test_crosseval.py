"""lmguide.crosseval: one checkpoint on several data sets, one table equal to the per-set eval numbers,
its metrics against the definitions (DeepfakeBench's video AUC), the pairing of a sweep per set, and
the one-line refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from lmguide.evaluation.predictions import read_predictions

from .conftest import compose_entry, run_cli

#: the two sets: the demo's test people against face swaps, and a real/fake folder tree of demo media
SETS = ("demo_swaps", "folder")
FOLDER_OVERRIDES = 'set_overrides={folder:["data.source.group_by_folder=true"]}'


def folder_tree(media: dict[str, Path], root: Path) -> Path:
    """``root/{val,test}/{real,fake}/``: demo photos and videos, one video without a face, one frame
    folder (a clip of three images); the ``fake`` files are demo media too (a label is all a set needs)."""
    img = {k: cv2.imread(str(media[k])) for k in ("0-f1-su-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg")}
    files = {
        "val/real/a.jpg": img["0-f1-su-ph.jpg"],
        "val/fake/b.png": img["15-f13-anc-ph.jpg"][:, ::-1],
        "test/fake/c.png": img["45-m7-di-ph.jpg"],
    }
    face = cv2.imread(str(media["single_face.jpg"]))
    for i, scale in enumerate((1.0, 0.8, 0.6)):  # one clip of three frames (group_by_folder)
        files[f"test/fake/clip/{i}.png"] = (face * scale).astype(np.uint8)
    for rel, im in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), im)
    videos = {"single_face.mp4": 0, "no_face.mp4": 0, "face_noface.mov": 0, "WolfgangLanger_Pexels.mp4": 1}
    for name, label in videos.items():
        (root / "test" / ("real", "fake")[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(media[name], root / "test" / ("real", "fake")[label] / name)
    return root


def _crosseval(ckpt, out: Path, tree: Path, *extra: str) -> list[dict]:
    from lmguide.crosseval import crosseval

    sets = f"sets=[{','.join(SETS)}]"
    cfg = compose_entry(
        "crosseval", f"ckpt_path={ckpt}", f"paths.output_dir={out}", sets, f"roots={{folder:{tree}}}",
        FOLDER_OVERRIDES, *extra,
    )  # fmt: skip
    return crosseval(cfg)


@pytest.fixture(scope="module")
def scored(trained_ckpt, media, cache_dir, tmp_path_factory):
    """crosseval of the trained checkpoint on both sets: (table, its output folder, the folder tree)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LMGUIDE_CACHE_DIR", str(cache_dir))  # the composed configs' paths.cache_dir
    try:
        tree = folder_tree(media, tmp_path_factory.mktemp("tree"))
        out = tmp_path_factory.mktemp("crosseval")
        (table,) = _crosseval(trained_ckpt, out, tree)
        yield table, out, tree
    finally:
        mp.undo()


def _eer(labels, scores) -> float:
    """The equal error rate from its definition: on the ROC's every threshold, the point where the
    false-negative and false-positive rates are closest, their mean there."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def test_table_follows_the_definitions_from_the_same_predictions(scored):
    """Frame AUC, EER and AP over the frames of predictions.csv; video AUC (DeepfakeBench's) the AUC of
    each video's mean frame P(fake); ACC at the checkpoint's stored threshold; counts."""
    table, out, _ = scored
    preds = read_predictions(out / "predictions.csv")
    assert set(preds) == set(SETS) and [r["set"] for r in table["rows"]] == list(SETS)
    saved = json.loads((out / "crosseval.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(table["rows"]))
    thr = table["threshold"]
    assert table["unit"] == "frame" and 0 <= thr <= 1 and "validation" in table["threshold_note"]
    for row in table["rows"]:
        p = preds[row["set"]]
        y, s = np.array(p["label"]), np.array(p["p_fake"])
        assert 0 < y.sum() < len(y), row["set"]  # both classes
        assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
        assert row["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-4)
        assert row["eer"] == pytest.approx(_eer(y, s), abs=1e-6)
        assert row["cal_acc"] == pytest.approx(float(((s >= thr) == y).mean()), abs=1e-6)
        videos = sorted(set(p["video"]))
        vs = np.array([s[[v == w for w in p["video"]]].mean() for v in videos])
        vy = np.array([y[p["video"].index(v)] for v in videos])
        assert row["n_frames"] == len(y) and row["n_videos"] == len(videos)
        assert row["video_auc"] == pytest.approx(roc_auc_score(vy, vs), abs=1e-6)
        assert row["video_eer"] == pytest.approx(_eer(vy, vs), abs=1e-6)
        assert row["auc_ci95_lo"] <= row["auc"] <= row["auc_ci95_hi"]
    folder = table["rows"][1]
    assert folder["n_no_face"] >= 3  # no_face.mp4's frames (and face_noface.mov's faceless ones)
    assert folder["n_videos_without_face"] >= 1  # no_face.mp4: absent from the video AUC, counted here
    assert table["sets"]["folder"]["metrics"]["statuses"]["no_face"] == folder["n_no_face"]
    md = (out / "crosseval.md").read_text()
    assert "| demo_swaps |" in md and "| folder |" in md and "no face" in md


@pytest.mark.slow
def test_table_equals_per_set_eval(scored, trained_ckpt, tmp_path, monkeypatch, cache_dir):
    """Each row holds the numbers ``lmguide.eval data=<layout>`` reports for that set's test split."""
    from lmguide.eval import evaluate
    from lmguide.evaluation.crosseval_table import row_keys

    monkeypatch.setenv("LMGUIDE_CACHE_DIR", str(cache_dir))
    table, _, tree = scored
    for row in table["rows"]:
        extra = [f"data.root={tree}", "data.source.group_by_folder=true"] if row["set"] == "folder" else []
        ov = json.dumps([f"data={row['layout']}", *extra])
        cfg = compose_entry("eval", f"ckpt_path={trained_ckpt}", f"paths.output_dir={tmp_path / row['set']}",
                            f"overrides={ov}")  # fmt: skip
        metrics = evaluate(cfg)
        assert metrics["threshold_val"] == table["threshold"]
        for key in row_keys("frame"):
            assert row[key] == metrics[f"test/{key}"], (row["set"], key)


def test_sweep_report_pairs_two_checkpoints_per_set(scored, trained_ckpt, tmp_path, monkeypatch, cache_dir):
    """``crosseval runs=<sweep>`` writes each job's crosseval/ folder; sweep_report then shows a column
    per set and pairs λ 1 against λ 0 by seed on it, by metric and on the same faces."""
    from lmguide.evaluation.crosseval_table import FOLDER
    from lmguide.sweep_report import report

    monkeypatch.setenv("LMGUIDE_CACHE_DIR", str(cache_dir))
    _, _, tree = scored
    sweep = tmp_path / "sweep"
    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(0)
    for num, lam in enumerate((0, 1)):  # two checkpoints: the trained one, and its weights jittered
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- loss.lambda_lm={lam}\n- seed=0\n")
        (job / "metrics.json").write_text(json.dumps({"val/auc": 0.5, "test/auc": 0.5 + lam / 10}))
        (job / "checkpoints").mkdir()
        if lam:
            sd = ckpt["state_dict"]
            for k, v in sd.items():
                if v.is_floating_point() and "head" in k:
                    sd[k] = v + 0.5 * torch.randn(v.shape, generator=gen)
        torch.save(ckpt, job / "checkpoints" / "best.ckpt")
    (sweep / "2" / ".hydra").mkdir(parents=True)  # a failed job: named, not scored
    (sweep / "2" / ".hydra" / "overrides.yaml").write_text("- loss.lambda_lm=1\n- seed=1\n")
    cfg = compose_entry("crosseval", f"runs={sweep}", f"paths.output_dir={tmp_path / 'out'}", "sets=[folder]",
                        f"roots={{folder:{tree}}}", FOLDER_OVERRIDES)  # fmt: skip
    from lmguide.crosseval import crosseval

    tables = crosseval(cfg)
    assert len(tables) == 2 and all((sweep / n / FOLDER / "crosseval.json").exists() for n in "01")
    aucs = [t["rows"][0]["auc"] for t in tables]
    paths = report(sweep)
    md = paths["markdown"].read_text()
    assert "folder AUC" in md and "folder video AUC" in md
    paired = paths["paired"].read_text().splitlines()
    row = next(ln for ln in paired if ",folder AUC (crosseval)," in ln)
    assert float(row.split(",")[5]) == pytest.approx(aucs[1] - aucs[0], abs=1e-5)
    faces = paths["faces"].read_text()
    assert "folder AUC (crosseval)" in faces
    with pytest.raises(Exception, match="overwrite=true"):
        crosseval(cfg)  # a job's table is never replaced silently


def test_grammar_names_roots_layouts_and_overrides():
    from lmguide.crosseval import plan_sets, set_overrides

    cfg = compose_entry(
        "crosseval", "ckpt_path=x.ckpt", "sets=[celebdf,nt,demo]", "layouts={nt:ffpp}",
        "roots={celebdf:/data/Celeb-DF-v2,nt:/d/ff}", 'set_overrides={nt:["data.source.methods=[NT]"]}',
    )  # fmt: skip
    sets = plan_sets(cfg)
    assert [(s.name, s.layout, s.root) for s in sets] == [
        ("celebdf", "celebdf", "/data/Celeb-DF-v2"),
        ("nt", "ffpp", "/d/ff"),
        ("demo", "demo", None),
    ]
    assert set_overrides(sets[1], ["data.eval_batch_size=64"]) == [
        "data=ffpp", "data.root='/d/ff'", "data.test_sources=null", "data.eval_batch_size=64",
        "data.source.methods=[NT]",
    ]  # fmt: skip
    assert set_overrides(sets[2], []) == ["data=demo", "data.test_sources=null"]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["sets=[celebdf,nosuch]"], "sets: nosuch is no data layout (conf/data/<layout>.yaml); known:"),
        (["sets=[celebdf]", "roots={celbdf:/x}"], "roots.celbdf: no set 'celbdf' in sets=['celebdf']"),
        (["sets=[test]"], "sets: 'test' cannot name a set"),
        ([], "sets must list the data sets to score, e.g. sets=[celebdf,dfdc]"),
        (["sets=[demo]", "ckpt_path=null"], "give one of ckpt_path=<file.ckpt> (one checkpoint) or runs="),
    ],
)
def test_bad_sets_are_refused_by_name(args, expect):
    from lmguide.crosseval import crosseval
    from lmguide.runs.errors import ConfigError

    cfg = compose_entry("crosseval", "ckpt_path=x.ckpt", *args)
    with pytest.raises(ConfigError) as err:
        crosseval(cfg)
    assert str(err.value).startswith(expect), str(err.value)


def test_cli_one_line_errors(trained_ckpt, tmp_path, cache_dir):
    """A missing root and an unreadable checkpoint: ``error: <the key or file, and the fix>``, exit 1."""
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    cases = [
        ([f"ckpt_path={trained_ckpt}", "sets=[celebdf,demo_swaps]"],
         "error: set celebdf (data=celebdf) has no root: give it as 'roots={celebdf:/path/to/it}'"),
        ([f"ckpt_path={bad}", "sets=[demo]"], f"error: {bad} is not a PyTorch checkpoint"),
        (["ckpt_path=x.ckpt", "sets=[celebdf,nosuch]"], "error: sets: nosuch is no data layout"),
    ]  # fmt: skip
    for args, start in cases:
        proc = run_cli("lmguide.crosseval", [*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, cache_dir)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and last.startswith(start), proc.stderr[-2000:]


def _fake_table(auc: float) -> dict:
    from lmguide.evaluation.crosseval_table import row_keys

    row = {"set": "celebdf", "layout": "celebdf", "root": "/d", "undefined": None}
    row |= {k: (3 if k.startswith("n_") else auc) for k in row_keys("frame")}  # counts, statistics
    return {"ckpt_path": "x.ckpt", "split": "test", "unit": "frame", "video_agg": "mean", "threshold": 0.5,
            "threshold_note": "stored", "rows": [row], "sets": {}}  # fmt: skip


def test_sweep_report_reads_a_crosseval_multirun_and_names_a_broken_table(tmp_path):
    """``crosseval -m ckpt_path=a,b``: its jobs hold crosseval.json, no metrics.json; the report at the
    end of that multirun shows them as finished, with the set's columns. A table that cannot be read is
    listed as broken, by file."""
    from lmguide.evaluation.crosseval_table import write
    from lmguide.sweep_report import report

    for num, auc in enumerate((0.6, 0.7)):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- ckpt_path=run{num}/best.ckpt\n")
        write(job, _fake_table(auc))
    (tmp_path / "2" / ".hydra").mkdir(parents=True)
    (tmp_path / "2" / ".hydra" / "overrides.yaml").write_text("- ckpt_path=run2/best.ckpt\n")
    (tmp_path / "2" / "crosseval.json").write_text('{"rows": 1}')
    md = report(tmp_path)["markdown"].read_text()
    assert "| celebdf AUC | celebdf video AUC |" in md
    assert "| ckpt_path=run1/best.ckpt | ? | " in md and "| 0.700 | 0.700 |" in md  # no seed recorded
    assert "3 jobs, 2 finished" in md and "broken (unreadable metrics.json)" in md and "crosseval.json" in md
