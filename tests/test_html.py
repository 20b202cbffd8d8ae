"""``predict ... report=html`` (issue 30): one self-contained page per input, holding the verdict, every
face and frame score, the pictures, the checkpoint's sha256, threshold, provenance and AUCs, and a
caveat; it opens offline in headless Chromium."""

from __future__ import annotations

import html
import re
import shutil

import pytest

from lmguide.data.cache import sha256_file
from lmguide.inference.html import CAVEAT, report_name
from lmguide.predict import predict
from lmguide.runs.errors import ConfigError
from lmguide.training.provenance import provenance_line

from .test_app_browser import browser  # noqa: F401 (the headless Chromium fixture)
from .test_predict import predict_cfg


@pytest.fixture(scope="module")
def reports(trained_ckpt, media, tmp_path_factory):
    """predict with report=html over a folder: a photo of several faces and a video."""
    tmp = tmp_path_factory.mktemp("report")
    src = tmp / "in"
    (src / "clips").mkdir(parents=True)
    shutil.copy(media["multi_face.jpg"], src / "group.jpg")
    shutil.copy(media["single_face.mp4"], src / "clips" / "talk.mp4")
    out = tmp / "pages"
    results = predict(
        predict_cfg(trained_ckpt, src, tmp, "report=html", f"report_dir={out}", "print_frames=false")
    )
    return {r.file: r for r in results}, out, tmp, src


def test_one_page_per_file_with_the_verdict_scores_and_model(reports, trained_ckpt):
    results, out, _, _ = reports
    assert sorted(p.name for p in out.iterdir()) == ["clips__talk.mp4.html", "group.jpg.html"]
    model = __import__("torch").load(trained_ckpt, map_location="cpu", weights_only=True)
    line = provenance_line(model.get("lmguide_provenance"))
    for name, page_name in (("group.jpg", "group.jpg.html"), ("clips/talk.mp4", "clips__talk.mp4.html")):
        r = results[name]
        page = (out / page_name).read_text()
        d = r.decision
        assert f"P(fake) {d.score:.4f} → <b class='{d.label}'>{d.label}</b>" in page
        assert html.escape(d.rule) in page and f"threshold {r.threshold:.4f}" in page
        for f in r.frames:  # every face and sampled frame has its row and score
            assert f"<tr><td>{f.frame}</td><td>{f.face}</td><td>ok</td><td>{f.prob_fake:.4f}</td>" in page
        assert sha256_file(trained_ckpt) in page and html.escape(line) in page
        assert html.escape(CAVEAT) in page
        assert re.search(r"<td>test</td><td>0\.\d{3}</td><td>\[0\.\d{3}, [01]\.\d{3}\]</td>", page)
        # self-contained: pictures embedded, nothing fetched, nothing run
        assert "<script" not in page and "http://" not in page and "https://" not in page
        assert "src='data:image/png;base64," in page
    group = (out / "group.jpg.html").read_text()
    faces = [f for f in results["group.jpg"].frames if f.prob_fake is not None]
    assert len(faces) > 1 and group.count("Grad-CAM (fake)</figcaption>") == min(len(faces), 8)
    assert "Timeline" in (out / "clips__talk.mp4.html").read_text() and "Timeline" not in group


def test_bad_report_values_and_existing_pages_are_refused_before_scoring(reports, trained_ckpt):
    _, out, tmp, src = reports
    with pytest.raises(ConfigError, match="report must be null or html, got 'pdf'"):
        predict(predict_cfg(trained_ckpt, src, tmp, "report=pdf"))
    with pytest.raises(ConfigError, match=r"(group.jpg|clips__talk.mp4).html exists: give overwrite=true"):
        predict(predict_cfg(tmp / "not-loaded.ckpt", src, tmp, "report=html", f"report_dir={out}"))


def test_report_names_are_safe_and_unique():
    taken: set[str] = set()
    assert report_name("a/b c.jpg", taken) == "a__b_c.jpg.html"
    assert report_name("a/b c.jpg", taken) == "a__b_c.jpg-2.html"
    assert report_name("../../etc/passwd", taken) == "etc__passwd.html"
    assert report_name("<script>.png", taken) == "script_.png.html"


@pytest.mark.slow
def test_the_page_opens_offline_in_headless_chromium(reports, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    results, out, _, _ = reports
    page = out / "group.jpg.html"
    browser.get(page.as_uri())
    assert results["group.jpg"].verdict in browser.find_element(By.TAG_NAME, "b").text
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images and all(
        browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im)
        for im in images
    )
    # nothing left the page: every request Chromium logged is the file itself or embedded data
    requests = [
        e["message"] for e in browser.get_log("performance") if "Network.requestWillBeSent" in e["message"]
    ]
    assert requests and all("file://" in m or "data:" in m for m in requests)
