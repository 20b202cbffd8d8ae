"""Clip (video) models in predict and visualize: a file's faces cut into clips as training cuts them.

Training's cache holds, per video, the faces of ``data.faces.frames_per_video`` evenly spaced frames (or
every ``frames_every``-th), the largest per frame (``video_faces=largest``); :class:`ClipDataset` groups
the faces of one face index into a track, ordered by frame, and cuts it with
:func:`~lmguide.data.clips.clip_windows`: windows of ``clip_frames`` consecutive sampled frames (the
last one overlapping so every frame is used), a shorter track repeat-padded to one clip, a track under
``data.clip_min_frames`` skipped. Predict samples a video with the same settings (the checkpoint's
``data.faces``), crops with the same :class:`~lmguide.data.faces.FacePipeline`, and cuts here with the
same function, so a clip's score is the model's output on the clip training would cut from that video.
A still image is a one-frame track: repeat-padded to one clip, as training pads the demo's stills.

One difference remains: the cache keeps only faces FaceMesh finds landmarks on (it needs them for the
mask); predict does not run FaceMesh, so a face without landmarks is in predict's track, not in the
cache's, and the windows after it shift by one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmguide.data.clips import clip_windows
from lmguide.data.faces import FaceSettings
from lmguide.inference.results import ClipResult, FrameResult


@dataclass(frozen=True)
class ClipSpec:
    """How a clip model's tracks are cut: ``frames`` per clip (``data.clip_frames``), tracks under
    ``min_frames`` skipped (``data.clip_min_frames``), ``batch_size`` clips per forward pass."""

    frames: int
    min_frames: int = 1
    batch_size: int = 4


def clip_spec(model, run_cfg, batch_size: int) -> ClipSpec | None:
    """The :class:`ClipSpec` of a clip model from :func:`~lmguide.training.checkpoint.load_model` (its run's
    ``data.clip_frames`` and ``clip_min_frames``); None for a frame model. ``batch_size``: face crops per
    pass, so ``batch_size // frames`` clips (at least one)."""
    frames = getattr(model, "clip_frames", None)
    if not frames:
        return None
    data = run_cfg.data
    frames = int(data.get("clip_frames") or frames)
    min_frames = int(data.get("clip_min_frames") or 1)
    return ClipSpec(frames, min_frames, max(1, int(batch_size) // frames))


def clip_sampling(fs: FaceSettings) -> tuple[int | None, int | None, str]:
    """``(frames_per_video, frames_every, description)``: the video frames the training cache sampled."""
    if fs.frames_every:
        return None, int(fs.frames_every), f"every {fs.frames_every}th frame (data.faces.frames_every)"
    n = int(fs.frames_per_video)
    return n, None, f"{n} evenly spaced frames (data.faces.frames_per_video)"


@torch.inference_mode()
def score_tracks(
    model, tracks: dict[int, list[tuple[FrameResult, torch.Tensor]]], spec: ClipSpec, device: torch.device
) -> tuple[list[ClipResult], list[str]]:
    """``(clips scored, notes)`` of one file: ``tracks`` maps a face index to its ``(frame result, model
    input (3, S, S))`` pairs; each track is cut with :func:`clip_windows` and every clip scored. Notes
    name the tracks that were repeat-padded or skipped (never silent)."""
    clips: list[ClipResult] = []
    inputs: list[torch.Tensor] = []
    notes: list[str] = []
    for face in sorted(tracks):
        track = sorted(tracks[face], key=lambda e: e[0].frame)
        n = len(track)
        windows = clip_windows(n, spec.frames, spec.min_frames)
        who = f"face {face}: {n} frame(s)"
        if not windows:
            notes.append(
                f"{who} < data.clip_min_frames={spec.min_frames}, too short for a clip: skipped, as training "
                "skips it"
            )
            continue
        padded = n < spec.frames
        if padded:
            notes.append(f"{who} < clip_frames={spec.frames}: repeat-padded to one clip, as training pads it")
        for w in windows:
            clips.append(ClipResult(len(clips), face, [track[j][0].frame for j in w], padded=padded))
            inputs.append(torch.stack([track[j][1] for j in w]))  # (T, 3, S, S)
    for i in range(0, len(clips), spec.batch_size):
        x = torch.stack(inputs[i : i + spec.batch_size]).to(device)  # (B, T, 3, S, S)
        probs = model(x).logits.float().softmax(-1)[:, 1].cpu().tolist()
        for c, p in zip(clips[i : i + spec.batch_size], probs, strict=True):
            c.prob_fake = float(p)
    return clips, notes
