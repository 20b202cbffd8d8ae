"""What predict reads from a folder, and what it says about what it does not read (issue 30's low items:
FIFOs, dangling links and link loops were skipped without a line; a FIFO input was called a folder)."""

from __future__ import annotations

import os
import shutil

import pytest

from lmguide.inference.scorer import list_inputs
from lmguide.runs.errors import ConfigError, InputMissing


@pytest.fixture
def folder(tmp_path, media):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(media["single_face.jpg"], d / "sub" / "face.jpg")
    (d / "notes.txt").write_text("x")
    os.mkfifo(d / "pipe.jpg")
    (d / "gone.jpg").symlink_to(d / "nowhere.jpg")
    (d / "loop.jpg").symlink_to(d / "loop.jpg")
    (d / ".hidden.jpg").write_text("x")
    return d


def test_a_folder_lists_what_it_skips_with_the_reason(folder):
    files, ignored = list_inputs(folder)
    assert [name for _, name in files] == ["sub/face.jpg"]
    assert {p.name: why for p, why in ignored} == {
        "gone.jpg": "a dangling symbolic link",
        "loop.jpg": "a symbolic link loop",
        "notes.txt": "not an image or video",
        "pipe.jpg": "a FIFO (named pipe), not a regular file",
    }


def test_a_fifo_or_a_dangling_link_as_input_is_named_for_what_it_is(folder):
    with pytest.raises(ConfigError, match=r"pipe.jpg is a FIFO \(named pipe\), not a regular file"):
        list_inputs(folder / "pipe.jpg")
    with pytest.raises(ConfigError, match="gone.jpg is a dangling symbolic link"):
        list_inputs(folder / "gone.jpg")
    with pytest.raises(InputMissing, match="does not exist"):
        list_inputs(folder / "absent.jpg")
