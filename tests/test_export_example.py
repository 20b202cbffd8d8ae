"""``lmguide.export_example``: the README's onnxruntime example, run as the README shows it, gives
predict's P(fake) and verdict on demo photos and on a face crop cut as predict cuts it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from lmguide.inference.graph import export_model

from .conftest import run_cli
from .test_predict import predict_cfg

pytest.importorskip("onnxruntime")

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = Path(__file__).resolve().parent.parent / "lmguide" / "export_example.py"
PHOTOS = ("single_face.jpg", "multi_face.jpg")  # one face; five faces (the most suspect decides)
RESULT = re.compile(r"^(?P<name>\S+): P\(fake\) (?P<p>[0-9.]+) -> (?P<verdict>fake|real) \((.*, )?threshold")


def readme_export_blocks() -> tuple[str, list[str]]:
    """The README's Export section: its ``python`` block and its ``python -m lmguide.export_example``
    command lines."""
    text = README.read_text()
    section = text.split("\n## Export\n", 1)[1].split("\n## ", 1)[0]
    (python,) = re.findall(r"```python\n(.*?)```", section, re.S)
    commands = [
        line.split("#", 1)[0].split()
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.startswith("python -m lmguide.export_example")
    ]
    return python, commands


@pytest.fixture(scope="module")
def model_file(trained_ckpt, tmp_path_factory) -> Path:
    path, _ = export_model(trained_ckpt, "onnx", output=tmp_path_factory.mktemp("example") / "model.onnx")
    return path


@pytest.fixture(scope="module")
def photos(media, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(media[name], folder / name)
    return folder


@pytest.fixture(scope="module")
def predicted(trained_ckpt, photos, tmp_path_factory) -> dict:
    """predict's own results on the photos (PyTorch, the checkpoint): name -> FileResult."""
    from lmguide.predict import predict

    results = predict(predict_cfg(trained_ckpt, photos, tmp_path_factory.mktemp("predict")))
    assert [r.file for r in results] == sorted(PHOTOS) and all(r.status == "ok" for r in results)
    assert len(next(r for r in results if r.file == "multi_face.jpg").scores) > 1
    return {r.file: r for r in results}


@pytest.fixture(scope="module")
def face_crop(photos, trained_ckpt, tmp_path_factory) -> Path:
    """single_face.jpg's face as predict cuts it (the run's face pipeline), saved as a PNG (lossless)."""
    from lmguide.data.faces import FacePipeline, face_settings
    from lmguide.data.media import read_image
    from lmguide.training.checkpoint import load_model

    _, cfg = load_model(trained_ckpt)
    fs = face_settings(cfg.data.faces)
    with FacePipeline(fs) as faces:
        (face,) = faces(read_image(photos / "single_face.jpg"), fs.image_faces).faces
    path = tmp_path_factory.mktemp("crop") / "face.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(face.crop, cv2.COLOR_RGB2BGR))
    return path


def test_readme_shows_the_example_as_the_package_ships_it():
    python, commands = readme_export_blocks()
    assert python in EXAMPLE.read_text() and "def score(" in python and "import lmguide" not in python
    assert [c[:4] for c in commands] == [
        ["python", "-m", "lmguide.export_example", "model.onnx"],
        ["python", "-m", "lmguide.export_example", "model.onnx"],
    ]


def _run(args: list[str], tmp_path: Path, cache_dir: Path) -> dict[str, tuple[float, str]]:
    proc = run_cli("lmguide.export_example", args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [m for line in proc.stdout.splitlines() if (m := RESULT.match(line))]
    return {Path(m["name"]).name: (float(m["p"]), m["verdict"]) for m in found}


def test_readme_commands_reproduce_predict(model_file, photos, face_crop, predicted, cache_dir, tmp_path):
    """Each command of the README, its file names replaced by real ones: the photo's P(fake) (its most
    suspect face) within 1e-5 of predict's and the same verdict, for a face crop and for whole photos."""
    _, commands = readme_export_blocks()
    where = {"model.onnx": model_file, "face.png": face_crop, "photo.jpg": photos / "single_face.jpg"}
    got = {}
    for cmd in commands:
        args = [str(where.get(a, a)) for a in cmd[3:]]
        if "--photo" in args:
            args.append(str(photos / "multi_face.jpg"))  # the same command, a photo of five faces too
        got.update(_run(args, tmp_path, cache_dir))
    assert set(got) == {"face.png", *PHOTOS}
    got["single_face.jpg (crop)"] = got.pop("face.png")
    for name, (p, verdict) in got.items():
        expected = predicted[name.split(" ")[0]]
        assert p == pytest.approx(expected.prob_fake, abs=1e-5), name
        assert verdict == expected.verdict, name


def test_crop_rule_of_the_metadata_cuts_predicts_crops(model_file, photos, trained_ckpt):
    """:func:`crop`, which reads only the metadata's ``crop`` values, cuts each face of a group photo
    pixel for pixel as predict's face pipeline does, from the same detector box."""
    from lmguide.data.faces import FacePipeline, face_settings
    from lmguide.data.media import read_image
    from lmguide.export_example import crop, metadata
    from lmguide.training.checkpoint import load_model

    rule = metadata(str(model_file))["crop"]
    _, cfg = load_model(trained_ckpt)
    fs = face_settings(cfg.data.faces)
    rgb = read_image(photos / "multi_face.jpg")
    with FacePipeline(fs) as faces:
        found = faces(rgb, fs.image_faces).faces
    assert len(found) > 1
    for face in found:
        assert np.array_equal(crop(rgb, face.det.box, rule), face.crop)


def test_a_file_without_lmguide_metadata_is_one_line(model_file, face_crop, cache_dir, tmp_path):
    import onnx

    proto = onnx.load(str(model_file))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    (tmp_path / "notes.onnx").write_text("not a model")
    for path, expect in [
        (tmp_path / "bare.onnx", "lacks lmguide's metadata: export the checkpoint again"),
        (tmp_path / "notes.onnx", "cannot be read as an ONNX file"),
    ]:
        proc = run_cli("lmguide.export_example", [str(path), str(face_crop)], tmp_path, cache_dir)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and last.startswith(f"error: {path} ") and expect in last, proc.stderr
