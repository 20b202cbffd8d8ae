"""lmguide.data.faces.inference_pipeline: the one place a trained run's face preprocessing is built."""

from __future__ import annotations

from lmguide.data.faces import face_settings, inference_pipeline

from .conftest import compose_cfg


def test_inference_pipeline_is_the_runs_faces_size_and_channels(tmp_path):
    rgb = compose_cfg(["data.image_size=96", "data.faces.face_size=160"], tmp_path)
    with inference_pipeline(rgb) as faces:
        assert faces.fs == face_settings(rgb.data.faces) and faces.fs.face_size == 160
        assert faces.image_size == 96 and faces.channels is None and not faces.crop_small
    masks = compose_cfg(["model.landmark_channels=true"], tmp_path)
    with inference_pipeline(masks, crop_small=True) as faces:
        assert faces.channels is not None and tuple(faces.channels.regions) == tuple(masks.data.mask.regions)
        assert faces.crop_small
