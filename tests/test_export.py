"""``lmguide.export``: ONNX and TorchScript files of the tiny CLI-trained checkpoint, checked against the
PyTorch module on real demo face crops (dynamic batch, metadata, refusals)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lmguide.inference.graph import (
    MAPS_TOL,
    PROB_TOL,
    ExportError,
    export_model,
    load_exported,
    read_metadata,
    run_exported,
)
from lmguide.runs.errors import ConfigError
from lmguide.training.checkpoint import load_model

from .conftest import compose_cfg, missing_checkpoint_line, run_cli

pytest.importorskip("onnxruntime")

N_CROPS = 3


@pytest.fixture(scope="module")
def model_and_cfg(trained_ckpt):
    return load_model(trained_ckpt)


@pytest.fixture(scope="module")
def raw_crops(demo_datamodule) -> list[np.ndarray]:
    """Real demo face crops as cached by prepare (uint8 RGB, face_size px), from the val split."""
    ds = demo_datamodule.datasets["val"]
    rows = [r for r in ds.rows][:N_CROPS]
    assert len(rows) == N_CROPS
    return [cv2.cvtColor(cv2.imread(str(ds.root / r["image"])), cv2.COLOR_BGR2RGB) for r in rows]


@pytest.fixture(scope="module")
def crops(raw_crops, model_and_cfg) -> torch.Tensor:
    """The crops through the eval transform of the checkpoint's run, as predict feeds them: (N, 3, S, S)."""
    from lmguide.data.transforms import build_transform

    tf = build_transform(int(model_and_cfg[1].data.image_size))
    return torch.stack([tf(image=c)["image"] for c in raw_crops])


@pytest.fixture(scope="module")
def reference(model_and_cfg, crops):
    """P(fake) and maps of the training module itself (its own forward, not the export wrapper)."""
    model = model_and_cfg[0]
    with torch.inference_mode():
        out = model(crops)
    return out.logits.softmax(-1)[:, 1].numpy(), out.maps.numpy()


@pytest.fixture(scope="module")
def onnx_file(trained_ckpt, cache_dir, tmp_path_factory) -> Path:
    """Exported through the CLI without output=: the file lands in the export's run dir."""
    run = tmp_path_factory.mktemp("export_onnx")
    proc = run_cli(
        "lmguide.export", [f"ckpt_path={trained_ckpt}", "format=onnx", f"hydra.run.dir={run}"], run, cache_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "check at batch 2" in proc.stdout
    return run / "model.onnx"


@pytest.fixture(scope="module")
def torchscript_file(trained_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export_ts") / "detector.pt"
    path, report = export_model(trained_ckpt, "torchscript", output=out)
    assert path == out and report["check"]["prob_fake"] <= PROB_TOL
    return path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_parity_on_real_crops_at_another_batch(fmt, request, crops, reference):
    """Traced at batch 1, run at batch 3 on real crops: the module's P(fake) within 1e-4, maps 1e-3."""
    path = request.getfixturevalue(f"{fmt}_file")
    prob, maps = run_exported(load_exported(path), crops.numpy())
    ref_prob, ref_maps = reference
    assert prob.shape == (N_CROPS,) and maps.shape == ref_maps.shape
    assert np.abs(prob - ref_prob).max() <= PROB_TOL
    assert np.abs(maps - ref_maps).max() <= MAPS_TOL
    one_prob, one_maps = run_exported(load_exported(path), crops[:1].numpy())  # and at batch 1
    assert np.abs(one_prob - ref_prob[:1]).max() <= PROB_TOL
    assert np.abs(one_maps - ref_maps[:1]).max() <= MAPS_TOL


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_metadata_crops_and_normalises_as_in_training(fmt, request, model_and_cfg, raw_crops, reference):
    """A consumer with only the file and its metadata (no lmguide, no albumentations) resizes and
    normalises a raw crop and gets the module's P(fake) on lmguide's own eval transform."""
    path = request.getfixturevalue(f"{fmt}_file")
    meta = read_metadata(path)
    cfg = model_and_cfg[1]
    inp = meta["input"]
    size = int(cfg.data.image_size)
    assert inp["name"] == "image" and inp["shape"] == ["batch", 3, size, size] and inp["image_size"] == size
    assert meta["faces"]["face_size"] == cfg.data.faces.face_size
    assert meta["faces"]["crop_scale"] == cfg.data.faces.face_scale  # crop: scaled
    assert meta["faces"]["min_face_size"] == cfg.data.faces.min_face_size
    assert meta["model"]["backbone"] == cfg.model.backbone.name and meta["model"]["num_maps"] == 2
    assert len(meta["source"]["checkpoint_sha256"]) == 64
    assert raw_crops[0].shape[:2] == (meta["faces"]["face_size"],) * 2
    mean, std = np.array(inp["mean"], np.float32), np.array(inp["std"], np.float32)
    x = np.stack(
        [
            ((cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) * inp["scale"] - mean) / std)
            .astype(np.float32)
            .transpose(2, 0, 1)
            for c in raw_crops
        ]
    )
    prob, _ = run_exported(load_exported(path), x)
    assert np.abs(prob - reference[0]).max() <= 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_metadata_holds_the_crop_rule_and_the_verdict_threshold(fmt, request, model_and_cfg):
    """How predict cuts a face and where its verdict flips, as values a consumer can compute with."""
    from lmguide.data.faces import face_settings
    from lmguide.training.checkpoint import verdict_threshold

    meta = read_metadata(request.getfixturevalue(f"{fmt}_file"))
    model, cfg = model_and_cfg
    fs = face_settings(cfg.data.faces)
    assert meta["crop"] == {
        **meta["crop"],
        "center": "box_center",
        "square": True,
        "scale": fs.crop_scale,
        "size": fs.face_size,
        "resample_down": "area",
        "resample_up": "linear",
        "fill": [0, 0, 0],
        "color": "RGB",
        "dtype": "uint8",
    }
    assert meta["input"]["resample"] == "area" and meta["input"]["layout"] == "NCHW"
    assert meta["faces"]["detector"] == fs.detector and meta["faces"]["image_faces"] == fs.image_faces
    threshold, note = verdict_threshold(model)
    fake_if = "prob_fake >= threshold"
    assert meta["verdict"] == {
        "threshold": threshold, "fake_if": fake_if, "note": note, "file_rule": "any", "min_fake_frames": 2
    }  # fmt: skip


def test_metadata_threshold_is_the_one_training_calibrated(trained_ckpt, tmp_path):
    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    ckpt["lmguide_threshold"] = {"value": 0.3125, "step": 7}
    torch.save(ckpt, tmp_path / "calibrated.ckpt")
    path, _ = export_model(tmp_path / "calibrated.ckpt", "torchscript", out_dir=tmp_path, check=False)
    verdict = read_metadata(path)["verdict"]
    assert verdict["threshold"] == 0.3125
    assert verdict["note"] == "calibrated on the validation split at step 7 (max balanced accuracy)"


def test_metadata_of_an_older_export_is_refused_by_name(torchscript_file, tmp_path):
    """A file written before ``crop`` and ``verdict`` existed: read_metadata names what it lacks."""
    files = {k: json.dumps(v) for k, v in read_metadata(torchscript_file).items()}
    del files["crop"], files["verdict"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated (still supported)
        torch.jit.save(torch.jit.load(str(torchscript_file)), str(tmp_path / "old.pt"), _extra_files=files)
    with pytest.raises(ExportError, match=r"lacks the lmguide metadata \['crop', 'verdict'\]: .*again"):
        read_metadata(tmp_path / "old.pt")


def test_onnx_metadata_props_are_json(onnx_file):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert set(props) == {"input", "outputs", "crop", "faces", "verdict", "model", "source"}
    assert json.loads(props["input"])["std"] == pytest.approx([0.229, 0.224, 0.225])
    graph = onnx.load(str(onnx_file)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["prob_fake", "attention"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic


def make_checkpoint(path: Path, overrides: list[str]) -> Path:
    """An untrained checkpoint in lmguide's format (state dict + recorded overrides), built from the
    real config: what a training run with ``overrides`` would write, minus the training."""
    cfg = compose_cfg(overrides, path.parent)
    model = hydra.utils.instantiate(cfg.model)
    ckpt = {
        "state_dict": model.state_dict(),
        "lmguide_config": OmegaConf.to_container(cfg.model, resolve=False),
        "lmguide_overrides": {"choices": {}, "overrides": overrides},
    }
    torch.save(ckpt, path)
    return path


def test_clip_model_is_refused_with_the_reason(tmp_path):
    ckpt = make_checkpoint(tmp_path / "clip.ckpt", ["backbone=efficientnet_lstm", "backbone.clip_frames=2"])
    with pytest.raises(ExportError, match="video \\(clip\\) model .* single face-crop graph"):
        export_model(ckpt, "onnx", out_dir=tmp_path)
    assert not list(tmp_path.glob("model.*"))


def test_failed_trace_is_one_line_naming_the_combination(trained_ckpt, tmp_path, monkeypatch):
    """A graph that does not survive tracing (here: one that bakes the traced batch size in) is refused,
    with the backbone and attention named, and no file is left behind."""
    from lmguide.inference import graph as export

    real = export.InferenceGraph.forward

    def batch_baked(self, image):
        prob, maps = real(self, image)
        return prob.reshape(1), maps.reshape(1, *maps.shape[1:])  # batch 1 only

    monkeypatch.setattr(export.InferenceGraph, "forward", batch_baked)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")
    with pytest.raises(ExportError) as err:
        export_model(trained_ckpt, "onnx", output=out, overwrite=True)
    msg = str(err.value)
    assert "\n" not in msg and "backbone efficientnet_b0 + attention MultiAttention" in msg
    assert out.read_bytes() == b"an earlier export" and sorted(tmp_path.iterdir()) == [out]


def test_output_suffix_must_match_the_format(trained_ckpt, tmp_path):
    with pytest.raises(ExportError, match="ends in .onnx"):
        export_model(trained_ckpt, "torchscript", output=tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="ends in .onnx"):
        export_model(trained_ckpt, "onnx", output=tmp_path / "m.pt")


OUTPUT_CASES = {
    "under_a_file": "output={out} cannot be written: {tmp}/somefile.txt is a file, not a folder; give "
    "output= a path inside a folder",
    "exists": "output={out} exists: give overwrite=true to replace it, or another output=",
    "link": "output={out} is a symbolic link: lmguide does not write through links; give a file path",
    "folder": "output={out} is a folder: give a file name, e.g. output={out}/model.onnx",
}


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_cli_unusable_output_is_one_line_before_the_checkpoint_is_read(case, cache_dir, tmp_path):
    """An output= that cannot or must not be written: one line naming it and the fix, exit code 1, and
    found before the checkpoint is read (it does not exist here: its own error would come first)."""
    (tmp_path / "somefile.txt").write_text("a file, not a folder")
    (tmp_path / "elsewhere.onnx").write_bytes(b"another file")
    out = {
        "under_a_file": tmp_path / "somefile.txt" / "model.onnx",
        "exists": tmp_path / "elsewhere.onnx",
        "link": tmp_path / "link.onnx",
        "folder": tmp_path / "exports.onnx",
    }[case]
    if case == "link":
        out.symlink_to(tmp_path / "elsewhere.onnx")
    if case == "folder":
        out.mkdir()
    args = [f"ckpt_path={tmp_path / 'nope.ckpt'}", f"output={out}", f"hydra.run.dir={tmp_path / 'run'}"]
    args += ["overwrite=true"] if case == "link" else []  # a link is refused even then
    proc = run_cli("lmguide.export", args, tmp_path, cache_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line == "error: " + OUTPUT_CASES[case].format(out=out, tmp=tmp_path)
    assert (tmp_path / "elsewhere.onnx").read_bytes() == b"another file"


def test_existing_output_is_refused_before_the_model_is_loaded(trained_ckpt, tmp_path, monkeypatch):
    import lmguide.training.checkpoint

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(lmguide.training.checkpoint, "load_model", no_load)
    out = tmp_path / "m.pt"
    out.write_bytes(b"an earlier export")
    with pytest.raises(ConfigError, match=f"^output={re.escape(str(out))} exists: give overwrite=true"):
        export_model(trained_ckpt, "torchscript", output=out)
    assert out.read_bytes() == b"an earlier export"


def test_cli_overwrite_true_replaces_an_earlier_export(trained_ckpt, cache_dir, tmp_path):
    out = tmp_path / "exports" / "model.pt"
    out.parent.mkdir()
    out.write_bytes(b"an earlier export")
    args = [f"ckpt_path={trained_ckpt}", "format=torchscript", f"output={out}", "overwrite=true"]
    proc = run_cli("lmguide.export", [*args, "check=false", f"hydra.run.dir={tmp_path}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_metadata(out)["source"]["checkpoint"] == trained_ckpt.name
    assert sorted(out.parent.iterdir()) == [out]  # no temp file left beside it


def test_cli_missing_checkpoint_is_one_line(cache_dir, tmp_path):
    code, line, missing = missing_checkpoint_line("lmguide.export", tmp_path, cache_dir)
    assert code == 1 and line == f"error: checkpoint {missing} does not exist"


def test_cli_bad_format_is_one_line(trained_ckpt, cache_dir, tmp_path):
    args = [f"ckpt_path={trained_ckpt}", "format=tflite", f"hydra.run.dir={tmp_path}"]
    proc = run_cli("lmguide.export", args, tmp_path, cache_dir)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: format must be one of onnx, torchscript")


SLOW_CASES = [
    ["backbone=vit", "attention=vit_cls"],
    ["attention=cbam"],
    ["attention=se"],
    ["attention=nonlocal"],
    ["attention=none"],
    ["backbone=resnet50"],
    ["backbone=xception"],
    ["backbone=swin"],
    ["head=arcface"],
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", SLOW_CASES, ids=lambda o: "+".join(v.split("=")[1] for v in o))
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_backbones_and_attentions_export(fmt, overrides, tmp_path):
    """Every tested backbone / attention / margin head exports and passes the batch-2 parity check."""
    ckpt = make_checkpoint(tmp_path / "m.ckpt", overrides)
    path, report = export_model(ckpt, fmt, out_dir=tmp_path)
    assert report["check"]["prob_fake"] <= PROB_TOL and report["check"]["attention"] <= MAPS_TOL
    x = torch.randn(
        3, 3, report["metadata"]["input"]["image_size"], report["metadata"]["input"]["image_size"]
    )
    prob, maps = run_exported(load_exported(path), x.numpy())
    assert prob.shape == (3,) and maps.shape[0] == 3
