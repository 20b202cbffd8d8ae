"""Ordinary mistakes end in one readable line (issue 13): the pieces, tested without starting a CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException

from lmguide.runs.cli import check_argv, check_writable, friendly_errors
from lmguide.runs.errors import ConfigError, LmguideError


def _exit_line(capsys, fn, *args):
    with pytest.raises(SystemExit) as err:
        fn(*args)
    assert err.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_an_lmguide_error_is_one_line_and_exit_1(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @friendly_errors
    def task(cfg):
        raise ConfigError("frames_every must be >= 1 (or null), got 0")

    assert _exit_line(capsys, task, None) == "error: frames_every must be >= 1 (or null), got 0"


def test_a_bad_value_met_while_instantiating_is_one_line(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @friendly_errors
    def task(cfg):
        try:
            raise ValueError("backbone.name 'no_such_net' is not a timm model")
        except ValueError as cause:
            raise InstantiationException("Error in call to target 'TimmBackbone'") from cause

    assert "backbone.name 'no_such_net'" in _exit_line(capsys, task, None)


def test_bugs_and_debug_mode_keep_the_traceback(monkeypatch):
    @friendly_errors
    def bug(cfg):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        bug(None)

    @friendly_errors
    def mistake(cfg):
        raise LmguideError("a mistake")

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(LmguideError):
        mistake(None)


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["input=/data/my", "face.jpg", "ckpt_path=x"], "quote the value that holds a space"),
        (["seed"], "is not key=value"),
    ],
)
def test_unquoted_spaces_get_a_hint(capsys, argv, expect):
    line = _exit_line(capsys, check_argv, argv)
    assert expect in line
    if "quote" in line:
        assert "\"input='/data/my face.jpg'\"" in line


def test_flags_and_their_values_are_not_mistaken_for_paths():
    check_argv(["-m", "seed=0,1", "--cfg", "job", "-cn", "train", "--info", "config", "hydra.verbose=true"])


def test_an_output_that_cannot_be_written_is_refused_before_work(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"output=.*file/out.csv cannot be written"):
        check_writable(a_file / "out.csv", "output")
    with pytest.raises(ConfigError, match="is a folder: give a file name"):
        check_writable(tmp_path, "output")
    with pytest.raises(ConfigError, match="output_dir=.*cannot be written"):
        check_writable(a_file / "panels", "output_dir", folder=True)
    check_writable(tmp_path / "new" / "out.csv", "output")  # a missing folder is created
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=abc", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("loss.lambda_lm=-0.1", "loss.lambda_lm"),
    ],
)
def test_bad_numbers_are_named_before_any_data_is_prepared(tmp_path, override, key):
    from lmguide.training.fit import check_numbers

    from .conftest import compose_cfg

    cfg = compose_cfg([override], tmp_path)
    with pytest.raises(ConfigError, match="^" + re.escape(key) + " must be a number"):
        check_numbers(cfg)
    check_numbers(compose_cfg([], tmp_path))


# -- checkpoints that are not what they claim ---------------------------------------------------------


def test_empty_and_random_files_get_their_own_reason(tmp_path):
    from lmguide.training.checkpoint import CheckpointError, read_checkpoint

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.ckpt is empty \(0 bytes\)"):
        read_checkpoint(empty)
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        read_checkpoint(noise)


def test_nan_weights_are_refused_at_load(trained_ckpt, tmp_path):
    from lmguide.training.checkpoint import CheckpointError, load_model

    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][key] = torch.full_like(ckpt["state_dict"][key], float("nan"))
    path = tmp_path / "nan.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=rf"non-finite weights .*{key}"):
        load_model(path, output_dir=tmp_path)


# -- media -----------------------------------------------------------------------------------------------


def test_a_truncated_jpeg_is_a_decode_error_not_a_faceless_frame(media, tmp_path):
    from lmguide.data.media import MediaError, read_image

    src = media["single_face.jpg"]
    data = src.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="truncated JPEG"):
        read_image(cut)
    assert read_image(src).shape[2] == 3


# -- run directories -----------------------------------------------------------------------------------


def _holder(run, seconds=60):
    code = (
        "import sys, time; from pathlib import Path; from lmguide.runs.lock import RunLock;"
        f"lk = RunLock(Path({str(run)!r})); assert lk.acquire(); print('locked', flush=True);"
        f"time.sleep({seconds})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_run_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    from lmguide.runs.lock import RunLock

    proc = _holder(tmp_path)
    try:
        lock = RunLock(tmp_path)
        assert not lock.acquire()
        assert f"pid {proc.pid}" in lock.holder()
    finally:
        proc.kill()  # kill -9: no clean-up runs, the kernel drops the lock
        proc.wait()
    deadline = time.monotonic() + 10
    while not lock.acquire():
        assert time.monotonic() < deadline, "a killed holder's lock was not released"
        time.sleep(0.05)
    lock.release()


def test_forked_children_do_not_keep_the_lock(tmp_path):
    import os

    from lmguide.runs.lock import RunLock

    lock = RunLock(tmp_path)
    assert lock.acquire()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its fork handlers have run by now; it says so and stays alive
        os.write(ready_w, b"1")
        time.sleep(3)
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        lock.release()
        other = RunLock(tmp_path)
        assert other.acquire(), "a forked child kept the lock after its parent released it"
        other.release()
    finally:
        os.waitpid(pid, 0)


def _guard_config(run, **extra):
    from omegaconf import OmegaConf

    return OmegaConf.create({"task_name": "train", "hydra": {"run": {"dir": str(run)}}, **extra})


def test_a_finished_run_is_kept_unless_overwrite(tmp_path, capsys):
    from lmguide.runs.lock import RunDirGuard

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"old")
    guard = RunDirGuard()
    line = _exit_line(capsys, guard.on_run_start, _guard_config(run))
    assert "already holds an interrupted run: use resume=" in line
    guard.on_run_end(None)
    (run / "metrics.json").write_text("{}")
    guard = RunDirGuard()
    assert "already holds a finished run" in _exit_line(capsys, guard.on_run_start, _guard_config(run))
    guard.on_run_end(None)
    guard = RunDirGuard()
    guard.on_run_start(_guard_config(run, overwrite=True))  # the old outputs go, the run may start
    assert not (run / "metrics.json").exists() and not (run / "checkpoints").exists()
    guard.on_run_end(None)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"old")
    guard = RunDirGuard()
    guard.on_run_start(_guard_config(run, resume=str(run)))  # resume= continues it
    assert (run / "checkpoints" / "last.ckpt").exists()
    guard.on_run_end(None)


def test_a_run_dir_in_use_is_refused(tmp_path, capsys):
    from lmguide.runs.lock import RunDirGuard

    proc = _holder(tmp_path)
    try:
        line = _exit_line(capsys, RunDirGuard().on_run_start, _guard_config(tmp_path))
        assert f"in use by another lmguide run (pid {proc.pid}" in line
    finally:
        proc.kill()
        proc.wait()


def test_an_uncreatable_run_dir_is_refused(tmp_path, capsys):
    from lmguide.runs.lock import RunDirGuard

    (tmp_path / "file").write_text("x")
    line = _exit_line(capsys, RunDirGuard().on_run_start, _guard_config(tmp_path / "file" / "run"))
    assert "cannot be created or written" in line and "hydra.run.dir" in line


# -- faces ----------------------------------------------------------------------------------------------


def test_a_tile_detection_inside_a_larger_face_is_dropped(monkeypatch):
    """The reported case: on an 8000-px photo of one person a 162-px tile 'face' in the hair."""
    from lmguide.data.faces import Detection, FaceDetector

    big = Detection((2000.0, 2500.0, 5000.0, 5500.0), 0.9)  # the face, found on the whole image
    hair = Detection((3300.0, 1500.0, 3462.0, 1662.0), 0.61)  # above the forehead, inside its region
    other = Detection((7000.0, 7000.0, 7200.0, 7200.0), 0.8)  # a small face far from it

    def fake_run(self, rgb, ox=0, oy=0):
        if (ox, oy) == (0, 0) and rgb.shape[0] == 8000:
            return [big]
        found = []
        for d in (hair, other):
            x0, y0 = d.box[:2]
            if ox <= x0 < ox + 320 and oy <= y0 < oy + 320:  # reported by the tile that holds it
                found.append(d)
        return found

    monkeypatch.setattr(FaceDetector, "_run", fake_run)
    det = FaceDetector.__new__(FaceDetector)
    det.tile_size, det.tile_above, det.nms_iou, det.region_scale = 640, 1000, 0.3, 1.8
    found = det.detect(np.zeros((8000, 8000, 3), np.uint8))
    assert [d.box for d in found] == [big.box, other.box]


@pytest.mark.slow
def test_one_face_on_a_large_photo_of_one_person(media):
    """A single-face photo scaled to 8000 px is scanned in 600+ tiles; it still holds one face."""
    import cv2

    from lmguide.data.faces import FaceDetector

    with FaceDetector() as det:
        for name in ("single_face.jpg", "0-f1-su-ph.jpg"):
            rgb = cv2.cvtColor(cv2.imread(str(media[name])), cv2.COLOR_BGR2RGB)
            for side in (3000, 8000):
                k = side / max(rgb.shape[:2])
                big = cv2.resize(rgb, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
                assert len(det.detect(big)) == 1, (name, side)


def test_predict_reports_each_face_as_well_as_the_files_verdict_score():
    """Two faces in one photo: the table shows both scores, so a stray second face is visible, and the
    file's score is its most suspect face's (the verdict rule), never a mean that hides it."""
    from io import StringIO

    from rich.console import Console

    from lmguide.inference.results import FileResult, FrameResult, print_table

    r = FileResult("group.jpg", "image")
    r.frames = [FrameResult(0, "ok", face=0, prob_fake=0.47), FrameResult(0, "ok", face=1, prob_fake=0.73)]
    assert r.face_scores == {0: 0.47, 1: 0.73} and r.prob_fake == pytest.approx(0.73)
    out = StringIO()
    print_table(Console(file=out, width=200), [r])
    assert "0: 0.4700  1: 0.7300" in out.getvalue() and "any face >= threshold" in out.getvalue()


def test_csv_cells_a_spreadsheet_would_run_are_kept_as_text(tmp_path):
    """OWASP's CSV-injection rule: a file named like a formula is written with a leading quote."""
    import csv

    from lmguide.inference.results import FileResult, FrameResult, write_output

    names = ['=HYPERLINK("http://x","y").jpg', "+1.jpg", "-2.jpg", "@SUM(A1).jpg", "plain.jpg"]
    results = []
    for n in names:
        r = FileResult(n, "image")
        r.frames = [FrameResult(0, "ok", face=0, prob_fake=0.4)]
        results.append(r)
    write_output(tmp_path / "p.csv", results)
    with open(tmp_path / "p.csv", newline="") as f:
        files = [row["file"] for row in csv.DictReader(f) if row["level"] == "file"]
    assert files == [f"'{n}" for n in names[:4]] + ["plain.jpg"]


@pytest.mark.parametrize(("old", "new"), [("workers=2", "data.prepare_workers")])
def test_a_second_key_of_one_knob_is_refused_naming_the_one_key(old, new):
    from lmguide.runs.cli import check_renamed

    key = old.split("=")[0]
    with pytest.raises(ConfigError, match="^" + re.escape(f"{key} was renamed: use {new}")):
        check_renamed([old])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("data.source.val_fraction=0.2", "data.source.split_fractions.val"),
        ("data.source.test_fraction=0.2", "data.source.split_fractions.test"),
    ],
)
def test_celebdf_fractions_are_split_fractions_and_old_checkpoints_still_rebuild(old, new, tmp_path):
    from lmguide.runs.cli import check_renamed
    from lmguide.runs.config_guard import safe_replay

    from .conftest import compose_cfg

    key = old.split("=")[0]
    with pytest.raises(ConfigError, match="^" + re.escape(f"{key} was renamed: use {new}")):
        check_renamed([old])
    replay = safe_replay({"choices": {"data": "celebdf"}, "overrides": [old]})
    assert replay == ["data=celebdf", f"{new}=0.2"]
    cfg = compose_cfg(replay, tmp_path)
    assert cfg.data.source.split_fractions[new.rsplit(".", 1)[1]] == 0.2


@pytest.mark.parametrize(("value", "fakes"), [("false", None), ("true", "lmguide.data.fakes.SelfBlend")])
def test_self_blend_is_one_key_data_fakes_and_old_checkpoints_still_rebuild(value, fakes, tmp_path):
    from lmguide.runs.cli import check_renamed
    from lmguide.runs.config_guard import safe_replay

    from .conftest import compose_cfg

    with pytest.raises(ConfigError, match=r"^data\.self_blend was renamed: use data\.fakes=null .* on$"):
        check_renamed([f"data.self_blend={value}"])
    # a checkpoint that recorded the old switch is rebuilt with the override that means the same
    replay = safe_replay({"choices": {"data": "demo"}, "overrides": [f"data.self_blend={value}"]})
    cfg = compose_cfg(replay, tmp_path)
    assert (cfg.data.fakes or {}).get("_target_") == fakes
    # the one key, on a layout with fakes of its own: off by default, data/fakes=self_blend turns it on
    root = f"data.root={tmp_path}"
    assert compose_cfg(["data=ffpp", root], tmp_path).data.fakes is None
    on = compose_cfg(["data=ffpp", root, "data/fakes=self_blend"], tmp_path).data.fakes
    assert on["_target_"] == "lmguide.data.fakes.SelfBlend"


def test_the_blend_masks_follow_the_loss_from_its_one_key(tmp_path):
    import hydra

    from lmguide.data.datamodule import for_model
    from lmguide.runs.cli import check_renamed, moved

    from .conftest import compose_cfg

    with pytest.raises(
        ConfigError, match=r"^data\.landmark_apply_to was renamed: use loss\.landmark\.apply_to"
    ):
        check_renamed(["data.landmark_apply_to=fake_blend"])
    assert moved("data.landmark_apply_to=fake_blend") == "loss.landmark.apply_to=fake_blend"
    for apply_to, blend in (("both", False), ("fake_blend", True)):
        cfg = compose_cfg([f"loss.landmark.apply_to={apply_to}", "data.image_size=64"], tmp_path)
        assert "landmark_apply_to" not in cfg.data
        assert for_model(cfg.data, hydra.utils.instantiate(cfg.model)).blend_masks is blend
