"""The LightningModule: backbone -> attention -> head, the WS-DAN views and the composite loss."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from lmguide.evaluation.alignment import attention_in_mask
from lmguide.evaluation.metrics import VideoScores, detection_metrics, training_metrics
from lmguide.losses.center import CenterLoss
from lmguide.losses.composite import CompositeLoss, Views, per_frame
from lmguide.models.attention.two_level import TwoLevelAttention
from lmguide.models.guard import NonFiniteGuard
from lmguide.models.input_channels import RGB, widen_stem
from lmguide.models.views import attention_crop, attention_drop

log = logging.getLogger(__name__)


@dataclass
class Output:
    logits: torch.Tensor  # (B, 2)
    maps: torch.Tensor  # (B, M, h, w) attention maps; clips: (B*T, M, h, w), one set per frame
    features: torch.Tensor  # (B, D) pooled part features; clips: the clip feature of the temporal model


class LandmarkGuidedDetector(L.LightningModule):
    """Binary real/fake detector whose attention maps are guided towards landmark regions.

    Args:
        backbone: module mapping images (B, 3, S, S) to a feature map with ``out_channels`` (or to
            ``(fine, deep)`` maps when it has ``global_channels``: the attention is then wrapped in
            :class:`~lmguide.models.attention.two_level.TwoLevelAttention`). A video
            backbone (one with ``clip_frames``, e.g. :class:`~lmguide.models.backbones.FrameLSTM`)
            makes this a clip model: inputs are clips (B, T, 3, S, S); backbone and attention run on
            every frame, the attention maps (and the landmark loss, with the (B, T, 1, S, S) masks)
            stay per frame, and ``backbone.temporal(D)`` turns the T frame features into the clip
            feature the head classifies. The WS-DAN views are cut per frame.
        attention: partial taking ``channels`` (see :mod:`lmguide.models.attention`).
        head: partial taking ``in_features``.
        loss: the composite objective.
        optimizer / scheduler: partials taking params / the optimizer.
        center_beta: moving-average rate of the class centers.
        crop_threshold / drop_threshold: ranges of the WS-DAN view thresholds.
        channels_last: NHWC memory format for convolutions (about 1.5x faster on CPU for EfficientNet).
        max_bad_steps: a step whose loss or gradients hold NaN/Inf is skipped (no update, counted as
            ``train/skipped_steps``); this many in a row stop training with an error.
        landmark_channels: the masks of ``landmark_regions`` are extra input channels: inputs are
            (B, 3 + R, S, S) and the backbone's first convolution is widened, the new filters zero
            (:mod:`lmguide.models.input_channels`). ``in_channels`` says what the model takes.
    """

    def __init__(
        self,
        backbone: nn.Module,
        attention: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        loss: CompositeLoss,
        optimizer: Callable,
        scheduler: Callable | None = None,
        scheduler_monitor: str = "val/loss",
        center_beta: float = 0.05,
        crop_threshold: tuple[float, float] = (0.4, 0.6),
        drop_threshold: tuple[float, float] = (0.2, 0.5),
        channels_last: bool = True,
        max_bad_steps: int = 10,
        landmark_channels: bool = False,
        landmark_regions: Sequence[str] | None = None,
    ):
        super().__init__()
        self.landmark_regions = tuple(landmark_regions or ()) if landmark_channels else ()
        if landmark_channels and not self.landmark_regions:
            raise ValueError("model.landmark_channels=true needs model.landmark_regions (the mask's regions)")
        if self.landmark_regions:  # the weights are loaded (3 channels) by now: widening keeps them
            widen_stem(backbone, len(self.landmark_regions))
        self.in_channels = RGB + len(self.landmark_regions)
        self.guard = NonFiniteGuard(max_bad_steps)
        self._terms: dict[str, torch.Tensor] = {}  # this step's loss terms, checked before the update
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict | None = None  # from a checkpoint, loaded when the optimizer exists
        self.backbone = backbone
        self.attention = attention(channels=backbone.out_channels)
        if getattr(backbone, "global_channels", 0):  # maps from a finer stage, the deepest pooled (MAT)
            self.attention = TwoLevelAttention(self.attention, backbone.global_channels)
        elif hasattr(self.attention, "bind"):  # modules that read the backbone's internals (vit_cls)
            self.attention.bind(backbone)
        self.clip_frames: int | None = getattr(backbone, "clip_frames", None)
        self.temporal = backbone.temporal(self.attention.out_features) if self.clip_frames else None
        feat_dim = self.temporal.out_features if self.temporal is not None else self.attention.out_features
        self.head = head(in_features=feat_dim)
        self.loss = loss
        self._check_landmark_heads()
        self.center = CenterLoss(feat_dim, beta=center_beta)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_monitor = scheduler_monitor
        self.crop_threshold, self.drop_threshold = tuple(crop_threshold), tuple(drop_threshold)
        self.register_buffer("class_weight", torch.ones(2))
        self.metrics = nn.ModuleDict({s: detection_metrics(f"{s}/") for s in ("val", "test")})
        self.video_metrics = nn.ModuleDict({s: detection_metrics(f"{s}/video_") for s in ("val", "test")})
        self.video_scores = nn.ModuleDict({s: VideoScores() for s in ("val", "test")})
        self.train_attn_ratio = MeanMetric()
        self.train_metrics = training_metrics("train/")
        self.attn_ratio = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.eval_loss = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.mask_area = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.run_config: dict | None = None  # the composed Hydra config, stored in checkpoints
        self.run_overrides: dict | None = None  # its group choices and CLI overrides, stored too
        self.val_threshold: dict | None = None  # calibrated on the last validation, stored too
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # -- model -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Output:
        """``labels`` reach the head only in training (margin heads add their margin to the true class);
        without them the logits are the margin-free scores used for evaluation.
        ``x``: images (B, C, S, S), or clips (B, T, C, S, S) for a clip model; C = ``in_channels``: 3,
        or 3 + R with ``landmark_channels`` (the region masks after RGB)."""
        clip = self._check_input(x)
        if clip:
            b, t = x.shape[:2]
            x = x.flatten(0, 1)  # the B*T frames
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fmap = self.backbone(x)  # (B, C, h, w), or (fine, deep) for a two-level backbone
        feats, maps = self.attention(fmap)  # (B, D), (B, M, h, w)
        if clip:
            feats = self.temporal(feats.reshape(b, t, -1))  # (B, D_clip)
        return Output(self.head(feats, labels), maps, feats)

    def _check_input(self, x: torch.Tensor) -> bool:
        """True for a clip batch; a clip model given frames, or a frame model given clips, is refused, and
        so is an input whose channels are not ``in_channels``."""
        if x.dim() in (4, 5) and x.shape[-3] != self.in_channels:
            what = (
                f"RGB + the region masks of {list(self.landmark_regions)} (model.landmark_channels=true)"
                if self.landmark_regions
                else "RGB (model.landmark_channels=false)"
            )
            raise ValueError(
                f"this model takes {self.in_channels} input channels, {what}; got {tuple(x.shape)}"
            )
        if self.clip_frames:
            if x.dim() != 5:
                raise ValueError(
                    f"this is a clip model (backbone {self.backbone.name} with an LSTM over "
                    f"{self.clip_frames} frames): it takes clips (B, T, {self.in_channels}, S, S), "
                    f"got {tuple(x.shape)}"
                )
            return True
        if x.dim() != 4:
            raise ValueError(f"expected images (B, {self.in_channels}, S, S), got {tuple(x.shape)}")
        return False

    def _check_landmark_heads(self) -> None:
        """``per_head``: refuse fewer attention maps than landmark regions now, not at the first step.
        The map count is known up front for ``multi`` (``num_maps``) and ``vit_cls`` (the ViT's heads);
        the single-map modules give 1 (checked again on the real maps by the loss)."""
        lm = self.loss.landmark
        if not getattr(lm, "needs_regions", False) or lm.regions is None:
            return
        m = getattr(self.attention, "num_maps", None) or getattr(self.attention, "num_heads", None) or 1
        lm.head_regions(int(m))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and dm is not None and hasattr(dm, "class_weights"):
            self.class_weight.copy_(dm.class_weights())

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], batch["label"]
        out = self(x, y)
        frames, mask = per_frame(x), per_frame(batch["mask"])  # clips: per-frame views and alignment
        views = None
        if self.loss.needs_views:
            with torch.no_grad():
                maps = out.maps.detach()
                both = torch.cat(
                    [
                        attention_crop(frames, maps, self.crop_threshold).reshape(x.shape),
                        attention_drop(frames, maps, self.drop_threshold).reshape(x.shape),
                    ]
                )
            views = Views(*self(both, y.repeat(2)).logits.chunk(2))
        center = self.center(out.features, y) if self.loss.w_center > 0 else None
        total, parts = self.loss(
            out, batch, views, center=center, class_weight=self.class_weight, step=self.global_step
        )
        self._terms = {n: v.detach() for n, v in parts.items() if n != "total"}
        bs = x.shape[0]
        for name, value in parts.items():
            self.log(f"train/loss/{name}", value, batch_size=bs, prog_bar=name == "total")
        self.log("train/lambda_lm", self.loss.lambda_at(self.global_step), batch_size=bs)
        if "landmark" in parts:  # samples without a landmark target contribute zero: count them
            self.log(
                "train/empty_masks",
                float(self.loss.landmark.last_empty),
                reduce_fx="sum",
                on_step=False,
                on_epoch=True,
                batch_size=bs,
            )
        with torch.no_grad():
            self.train_attn_ratio(attention_in_mask(out.maps, mask))
        self.log("train/attn_in_lm", self.train_attn_ratio, on_step=False, on_epoch=True, batch_size=bs)
        with torch.no_grad():  # margin heads: accuracy of the margin-free logits, as evaluation scores them
            logits = self.head(out.features) if getattr(self.head, "uses_labels", False) else out.logits
        self.log("train/acc", (logits.argmax(-1) == y).float().mean(), batch_size=bs)
        self.train_metrics.update(logits.detach().softmax(-1)[:, 1], y)
        # computed over the epoch's batches and reset by Lightning at the epoch's end
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=bs)
        return total

    def _eval_step(self, batch: dict, stage: str) -> None:
        x, y, mask = batch["image"], batch["label"], batch["mask"]
        out = self(x)
        mask = per_frame(mask)
        prob = out.logits.softmax(-1)[:, 1]
        # the mean over the split's samples (every rank's under DDP), logged at the epoch's end
        self.eval_loss[stage].update(torch.nn.functional.cross_entropy(out.logits, y), weight=x.shape[0])
        self.metrics[stage].update(prob, y)
        self.video_scores[stage].update(prob, y, batch["video"])
        self.attn_ratio[stage].update(attention_in_mask(out.maps, mask))
        self.mask_area[stage].update(mask.flatten(1).mean(1))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> dict[str, torch.Tensor]:
        """Compute, log and reset the split's metrics; returns them (name -> value)."""
        values = dict(self.metrics[stage].compute())
        self.metrics[stage].reset()
        self._log_pr_curve(stage)
        vs, vy = self.video_scores[stage].compute()
        vs, vy = vs.reshape(-1), vy.reshape(-1)  # torchmetrics squeezes a single video to a scalar
        values.update(self.video_metrics[stage](vs, vy))
        values[f"{stage}/n_videos"] = torch.tensor(float(len(vy)))
        self.video_metrics[stage].reset()
        self.video_scores[stage].reset()
        for name, metric in (
            ("attn_in_lm", self.attn_ratio),
            ("mask_area", self.mask_area),
            ("loss", self.eval_loss),
        ):
            values[f"{stage}/{name}"] = metric[stage].compute()
            metric[stage].reset()
        self.log_dict({k: v for k, v in values.items() if k != f"{stage}/loss"})
        self.log(f"{stage}/loss", values[f"{stage}/loss"], prog_bar=stage == "val")
        return values

    def _log_pr_curve(self, stage: str) -> None:
        """The split's frame-level PR curve to TensorBoard/W&B (this rank's frames; not in the sanity
        check)."""
        trainer = self._trainer
        if trainer is None or trainer.sanity_checking or not trainer.is_global_zero or not self.loggers:
            return
        from torchmetrics.utilities import dim_zero_cat

        from lmguide.runs.loggers import log_pr_curve

        frames = self.video_scores[stage]
        if isinstance(frames.scores, list) and not frames.scores:
            return
        log_pr_curve(
            self.loggers, f"{stage}/pr_curve", dim_zero_cat(frames.labels), dim_zero_cat(frames.scores),
            self.global_step,
        )  # fmt: skip

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- optimisation --------------------------------------------------------------------------
    @property
    def skipped_steps(self) -> int:
        """Steps skipped for NaN/Inf over the whole run (kept in checkpoints)."""
        return self.guard.skipped

    def on_before_optimizer_step(self, optimizer) -> None:
        """Skip the update of a step whose loss terms or gradients are not finite (NonFiniteGuard)."""
        plugin = self._trainer.precision_plugin if self._trainer is not None else None
        self.guard.check(self.parameters(), self._terms, self.global_step, getattr(plugin, "scaler", None))
        if self._trainer is not None:
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    def configure_optimizers(self):
        """Any scheduler but ReduceLROnPlateau (e.g. ``scheduler=cosine``) is a schedule in optimizer
        steps, stepped by Lightning after each one. ReduceLROnPlateau is stepped here, after every
        validation of the fit on ``scheduler_monitor`` (:meth:`on_validation_epoch_end`), so its patience
        counts validations (every epoch, or every ``trainer.val_check_interval`` batches), and every
        checkpoint written after a validation holds the stepped state."""
        opt = self.optimizer_factory(params=self.parameters())
        self.plateau = None
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(optimizer=opt)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.plateau = sched
            if self._plateau_state is not None:  # resumed
                sched.load_state_dict(self._plateau_state)
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def on_validation_epoch_end(self) -> None:
        self._calibrate_threshold()
        self._step_plateau(self._eval_epoch_end("val"))

    def _calibrate_threshold(self) -> None:
        """The P(fake) threshold that maximises balanced accuracy on this validation's frames (every
        rank's), kept for the checkpoints written after it (``lmguide_threshold``): ``best.ckpt`` holds
        the one calibrated on the validation that made it best. Not in the sanity check; None when the
        validation holds one class only."""
        trainer = self._trainer
        if trainer is not None and trainer.sanity_checking:
            return
        from torchmetrics.utilities import dim_zero_cat

        from lmguide.evaluation.metrics import calibrate_threshold

        frames = self.video_scores["val"]
        with frames.sync_context():
            empty = isinstance(frames.scores, list) and not frames.scores
            s = None if empty else dim_zero_cat(frames.scores).cpu()
            y = None if empty else dim_zero_cat(frames.labels).cpu()
        if s is None or s.numel() == 0 or int(y.min()) == int(y.max()):
            self.val_threshold = None
            return
        self.val_threshold = {
            "value": calibrate_threshold(s, y),
            "split": "val",
            "step": int(self.global_step),
            "frames": int(s.numel()),
            "rule": "maximises balanced accuracy (Youden's J) on the val frames",
        }

    def _step_plateau(self, values: dict[str, torch.Tensor]) -> None:
        """Step ReduceLROnPlateau on this validation's ``scheduler_monitor`` (``values``: what it logged),
        in a fit only: not in the sanity check, not in ``trainer.validate``."""
        trainer = self._trainer
        if self.plateau is None or trainer is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return  # not the sanity check, not trainer.validate()
        value = values.get(self.scheduler_monitor, trainer.callback_metrics.get(self.scheduler_monitor))
        if value is None:
            raise KeyError(
                f"model.scheduler_monitor={self.scheduler_monitor!r} was not logged by the validation; "
                f"logged: {sorted({*values, *trainer.callback_metrics})}"
            )
        self.plateau.step(float(value))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        bad = [
            k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and not v.isfinite().all()
        ]
        if bad:  # never a silent NaN checkpoint
            raise FloatingPointError(
                f"refusing to write a checkpoint at step {self.global_step}: non-finite values in {bad[:5]}"
                f"{' and more' if len(bad) > 5 else ''}"
            )
        checkpoint["lmguide_skipped_steps"] = self.skipped_steps
        if getattr(self, "plateau", None) is not None:
            checkpoint["lmguide_plateau"] = self.plateau.state_dict()
        if self.run_config is not None:
            checkpoint["lmguide_config"] = self.run_config
        if self.run_overrides is not None:
            checkpoint["lmguide_overrides"] = self.run_overrides
        if self.val_threshold is not None:
            checkpoint["lmguide_threshold"] = self.val_threshold

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.guard.skipped = int(checkpoint.get("lmguide_skipped_steps", 0))
        self._plateau_state = checkpoint.get("lmguide_plateau")
        self.val_threshold = checkpoint.get("lmguide_threshold")
