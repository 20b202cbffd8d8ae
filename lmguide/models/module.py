"""The LightningModule: backbone -> attention -> head, the WS-DAN views and the composite loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from lmguide.losses.center import CenterLoss
from lmguide.losses.composite import CompositeLoss
from lmguide.losses.landmark import attention_in_mask
from lmguide.metrics import VideoScores, detection_metrics
from lmguide.models.views import attention_crop, attention_drop


@dataclass
class Output:
    logits: torch.Tensor  # (B, 2)
    maps: torch.Tensor  # (B, M, h, w) attention maps; clips: (B*T, M, h, w), one set per frame
    features: torch.Tensor  # (B, D) pooled part features; clips: the clip feature of the temporal model


class LandmarkGuidedDetector(L.LightningModule):
    """Binary real/fake detector whose attention maps are guided towards landmark regions.

    Args:
        backbone: module mapping images (B, 3, S, S) to a feature map with ``out_channels``. A video
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
    ):
        super().__init__()
        self.backbone = backbone
        self.attention = attention(channels=backbone.out_channels)
        if hasattr(self.attention, "bind"):  # modules that read the backbone's internals (vit_cls)
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
        self.attn_ratio = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.mask_area = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.run_config: dict | None = None  # the composed Hydra config, stored in checkpoints
        self.run_overrides: dict | None = None  # its group choices and CLI overrides, stored too
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # -- model -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Output:
        """``labels`` reach the head only in training (margin heads add their margin to the true class);
        without them the logits are the margin-free scores used for evaluation.
        ``x``: images (B, 3, S, S), or clips (B, T, 3, S, S) for a clip model."""
        clip = self._check_input(x)
        if clip:
            b, t = x.shape[:2]
            x = x.flatten(0, 1)  # the B*T frames
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fmap = self.backbone(x)  # (B, C, h, w)
        feats, maps = self.attention(fmap)  # (B, D), (B, M, h, w)
        if clip:
            feats = self.temporal(feats.reshape(b, t, -1))  # (B, D_clip)
        return Output(self.head(feats, labels), maps, feats)

    def _check_input(self, x: torch.Tensor) -> bool:
        """True for a clip batch; a clip model given frames, or a frame model given clips, is refused."""
        if self.clip_frames:
            if x.dim() != 5:
                raise ValueError(
                    f"this is a clip model (backbone {self.backbone.name} with an LSTM over "
                    f"{self.clip_frames} frames): it takes clips (B, T, 3, S, S), got {tuple(x.shape)}"
                )
            return True
        if x.dim() != 4:
            raise ValueError(f"expected images (B, 3, S, S), got {tuple(x.shape)}")
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

    @staticmethod
    def _frames(t: torch.Tensor) -> torch.Tensor:
        """Clips' per-frame tensors (B, T, ...) as frames (B*T, ...); frame batches unchanged."""
        return t.flatten(0, 1) if t.dim() == 5 else t

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and dm is not None and hasattr(dm, "class_weights"):
            self.class_weight.copy_(dm.class_weights())

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y, mask = batch["image"], batch["label"], batch["mask"]
        out = self(x, y)
        frames, mask = self._frames(x), self._frames(mask)  # clips: per-frame views and landmark loss
        logits_aux = logits_aug = None
        if self.loss.needs_views:
            with torch.no_grad():
                maps = out.maps.detach()
                views = torch.cat(
                    [
                        attention_crop(frames, maps, self.crop_threshold).reshape(x.shape),
                        attention_drop(frames, maps, self.drop_threshold).reshape(x.shape),
                    ]
                )
            logits_aux, logits_aug = self(views, y.repeat(2)).logits.chunk(2)
        center = self.center(out.features, y) if self.loss.w_center > 0 else None
        # extra landmark targets (per_head, apply_to=fake_blend), per frame like the mask
        extra = {k: self._frames(batch[k]) for k in ("region_masks", "blend_mask") if k in batch}
        total, parts = self.loss(
            logits=out.logits,
            labels=y,
            maps=out.maps,
            mask=mask,
            center=center,
            logits_aux=logits_aux,
            logits_aug=logits_aug,
            class_weight=self.class_weight,
            frame_labels=y.repeat_interleave(x.shape[1]) if x.dim() == 5 else None,
            step=self.global_step,
            **extra,
        )
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
        return total

    def _eval_step(self, batch: dict, stage: str) -> None:
        x, y, mask = batch["image"], batch["label"], batch["mask"]
        out = self(x)
        mask = self._frames(mask)
        prob = out.logits.softmax(-1)[:, 1]
        self.log(
            f"{stage}/loss",
            torch.nn.functional.cross_entropy(out.logits, y),
            batch_size=x.shape[0],
            prog_bar=stage == "val",
            sync_dist=True,  # DDP: the mean over every rank's batches, like the torchmetrics metrics
        )
        self.metrics[stage].update(prob, y)
        self.video_scores[stage].update(prob, y, batch["video"])
        self.attn_ratio[stage].update(attention_in_mask(out.maps, mask))
        self.mask_area[stage].update(mask.flatten(1).mean(1))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        self.log_dict(self.metrics[stage].compute(), prog_bar=False)
        self.metrics[stage].reset()
        vs, vy = self.video_scores[stage].compute()
        vs, vy = vs.reshape(-1), vy.reshape(-1)  # torchmetrics squeezes a single video to a scalar
        vm = self.video_metrics[stage](vs, vy)
        self.log_dict(vm)
        self.log(f"{stage}/n_videos", float(len(vy)))
        self.video_metrics[stage].reset()
        self.video_scores[stage].reset()
        self.log(f"{stage}/attn_in_lm", self.attn_ratio[stage].compute())
        self.log(f"{stage}/mask_area", self.mask_area[stage].compute())
        self.attn_ratio[stage].reset()
        self.mask_area[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        """ReduceLROnPlateau steps after each validation epoch on ``scheduler_monitor``; any other
        scheduler (e.g. ``scheduler=cosine``) is a schedule in optimizer steps, stepped after each one."""
        opt = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(optimizer=opt)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config = {"interval": "epoch", "monitor": self.scheduler_monitor}
        else:
            config = {"interval": "step"}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "frequency": 1, **config}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["lmguide_config"] = self.run_config
        if self.run_overrides is not None:
            checkpoint["lmguide_overrides"] = self.run_overrides
