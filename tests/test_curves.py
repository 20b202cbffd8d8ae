"""confusion.png says what it counts (issue 30): the split, the threshold and where the threshold comes
from, with the faces at the threshold counted as fake, as binary_report and predict count them."""

from __future__ import annotations

from pathlib import Path

import matplotlib.figure
import pytest
import torch

from lmguide.evaluation.metrics import binary_report
from lmguide.evaluation.run_report import log_test_curves
from lmguide.viz.curves import plot_curves

SCORES = torch.tensor([0.10, 0.30, 0.42, 0.42, 0.60, 0.90, 0.20, 0.45])
LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])


@pytest.fixture
def confusions(monkeypatch) -> dict[str, dict]:
    """Per PNG saved: its title and (confusion.png) the counts drawn."""
    saved: dict[str, dict] = {}
    save = matplotlib.figure.Figure.savefig

    def spy(fig, path, *a, **k):
        ax = fig.axes[0]
        image = ax.get_images()
        saved[Path(path).stem] = {
            "title": ax.get_title(),
            "counts": image[0].get_array().tolist() if image else None,
        }
        return save(fig, path, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    return saved


def test_the_confusion_title_names_the_split_and_the_threshold_and_its_source(tmp_path, confusions):
    plot_curves(SCORES, LABELS, 0.42, tmp_path, "test (frames)", "calibrated on val")
    title = confusions["confusion"]["title"]
    assert title.startswith("test (frames)")
    assert "P(fake) >= 0.420" in title and "calibrated on val" in title


def test_a_face_at_the_threshold_is_counted_as_fake_as_binary_report_counts_it(tmp_path, confusions):
    plot_curves(SCORES, LABELS, 0.42, tmp_path, "test (frames)")
    (tn, fp), (fn, tp) = confusions["confusion"]["counts"]
    rep = binary_report(SCORES, LABELS, 0.42)
    assert (tp + tn) / len(LABELS) == pytest.approx(rep["acc"])
    assert (tn, fp, fn, tp) == (2, 2, 1, 3)  # both 0.42 faces are called fake


def test_the_run_draws_its_test_confusion_at_the_calibrated_threshold(tmp_path, confusions):
    res = {"prob": SCORES, "label": LABELS}
    log_test_curves(res, tmp_path, [], threshold=0.45)
    title = confusions["confusion"]["title"]
    assert title.startswith("test (frames)") and "0.450" in title and "calibrated on val" in title
    log_test_curves(res, tmp_path / "no_val", [], threshold=None)  # a val split of one class
    title = confusions["confusion"]["title"]
    assert "0.500" in title and "no threshold calibrated on val" in title
    assert (tmp_path / "curves" / "confusion.png").exists()
