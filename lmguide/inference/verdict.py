"""One rule turns face scores into a file's verdict: predict, visualize, the page and the HTML report all
call :func:`decide`, so one file never gets two verdicts.

* ``aggregate=any`` (the default): an image is fake when **any** of its faces is at or above the
  checkpoint's threshold; a video is fake when ``min_fake_frames`` sampled frames **in a row** (frames
  with a scored face, in frame order) each hold a face at or above it, so one stray frame does not
  condemn a video (a video with fewer scored frames needs all of them). A clip model's clips already
  span a stretch of frames: any clip at or above the threshold makes the file fake. The file's score is
  the one the rule compared with the threshold: the highest face (image), the highest score that a run
  of ``min_fake_frames`` frames all reach (video: the best window's lowest frame), the highest clip.
* ``aggregate=mean``: the mean over all scored faces (or clips) against the threshold, as before;
  a single fake face among real ones can hide in it.

Either way ``score >= threshold`` is the verdict, so a file row's P(fake), threshold and verdict agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from lmguide.runs.errors import ConfigError

AGGREGATES = ("any", "mean")


@dataclass(frozen=True)
class VerdictRule:
    aggregate: str = "any"
    min_fake_frames: int = 2

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        k = self.min_fake_frames
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"min_fake_frames must be a whole number >= 1, got {k!r}")

    def describe(self, kind: str = "image", clips: bool = False) -> str:
        """The rule in words, for the file row (``kind``: image or video; ``clips``: a clip model)."""
        if self.aggregate == "mean":
            return "mean of its " + ("clips" if clips else "faces") + " >= threshold"
        if clips:
            return "any clip >= threshold"
        if kind == "video":
            return f"{self.min_fake_frames} sampled frames in a row with a face >= threshold"
        return "any face >= threshold"


def rule_from(cfg) -> VerdictRule:
    """The rule of a command's config (keys ``aggregate`` and ``min_fake_frames``; defaults when absent)."""
    get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    return VerdictRule(str(get("aggregate", "any")), get("min_fake_frames", 2))


@dataclass
class Verdict:
    label: str | None  # fake / real; None when nothing was scored or there is no threshold
    score: float | None  # what the rule compared with the threshold
    rule: str  # the rule in words
    fake_frames: list[int] = field(default_factory=list)  # frames (clips: clip indices) >= threshold
    run: tuple[int, int] | None = None  # a video's deciding run of frames (first, last), when fake


def decide(
    units: Sequence[tuple[int, float]],
    threshold: float | None,
    rule: VerdictRule | None = None,
    kind: str = "image",
    clips: bool = False,
) -> Verdict:
    """The verdict on one file from ``units``: ``(frame, P(fake))`` per scored face (an image's faces
    all carry frame 0), or ``(clip, P(fake))`` per clip of a clip model (``clips=True``)."""
    rule = rule or VerdictRule()
    text = rule.describe(kind, clips)
    units = [(int(f), float(p)) for f, p in units if p is not None and not math.isnan(p)]
    if not units:
        return Verdict(None, None, text)
    by_frame: dict[int, float] = {}
    for f, p in units:  # a frame is as fake as its most suspect face
        by_frame[f] = max(p, by_frame.get(f, -math.inf))
    frames = sorted(by_frame)
    over = [] if threshold is None else [f for f in frames if by_frame[f] >= threshold]
    run = None
    if rule.aggregate == "mean":
        score = sum(p for _, p in units) / len(units)
    elif clips or kind != "video":
        score = max(by_frame.values())
    else:
        k = min(rule.min_fake_frames, len(frames))
        lows = [min(by_frame[f] for f in frames[i : i + k]) for i in range(len(frames) - k + 1)]
        best = max(range(len(lows)), key=lambda i: lows[i])
        score = lows[best]
        if threshold is not None and score >= threshold:
            run = (frames[best], frames[best + k - 1])
    label = None if threshold is None else ("fake" if score >= threshold else "real")
    return Verdict(label, score, text, over, run)
