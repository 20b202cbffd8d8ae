"""Training callbacks: per-epoch seeding (exact resume), the seed's minimum-lr stop, a validation
at the last step, the per-validation attention overlays."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch

from lmguide.viz.overlays import attention_panel

log = logging.getLogger(__name__)


class EpochSeed(L.Callback):
    """Seed the global RNGs (torch, numpy, random) from ``(seed, epoch)`` at every training epoch start.

    What a training step draws from them (the WS-DAN view thresholds, dropout, the samples of a
    loader without workers) then depends on the epoch alone, so a run resumed from an end-of-epoch
    checkpoint repeats the uninterrupted run's draws exactly. The data order and the worker seeds
    follow ``(seed, epoch)`` too (:class:`~lmguide.data.datamodule.EpochShuffle`)."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        s = (self.seed * 1_000_003 + 7919 * (trainer.current_epoch + 1)) % 2**32
        torch.manual_seed(s)  # every device's generator too
        np.random.seed(s)
        random.seed(s)


class MinLRStopping(L.Callback):
    """Stop once every learning rate has fallen below ``factor`` x its initial value.

    Only with ReduceLROnPlateau, whose reductions have no end of their own; a schedule in steps
    (``scheduler=cosine``) sets its floor itself and ends at ``trainer.max_steps``, so it is left alone."""

    def __init__(self, factor: float = 1e-5):
        self.factor = factor
        self._initial: list[float] | None = None

    def state_dict(self) -> dict:
        return {"initial": self._initial}

    def load_state_dict(self, state_dict: dict) -> None:
        self._initial = state_dict.get("initial")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._initial is not None:  # resumed: the lrs of the run's start, not the reduced ones
            return
        plateau = getattr(pl_module, "plateau", None) is not None or any(
            isinstance(c.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            for c in trainer.lr_scheduler_configs
        )
        self._initial = (
            [g.get("initial_lr", g["lr"]) for g in trainer.optimizers[0].param_groups] if plateau else None
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the plateau steps after each validation (every trainer.val_check_interval batches)
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.on_train_epoch_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._initial is None:
            return
        lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
        if self._initial and all(lr < i * self.factor for lr, i in zip(lrs, self._initial, strict=True)):
            log.info("learning rate %.3g fell below %.0e x its start: stopping", lrs[0], self.factor)
            trainer.should_stop = True


class ValidateLastStep(L.Callback):
    """Validate after the last training step when ``trainer.max_steps`` ends the run between two
    scheduled validations (mid-epoch, or between ``val_check_interval`` batches).

    Without it, the steps after the last scheduled validation are never scored: a run shorter than
    one epoch writes no best checkpoint at all, and a longer one tests weights up to
    ``val_check_interval - 1`` steps old. Lightning validates after a batch when the trainer is asked
    to stop, so the callback asks at the last step; a step that is validated anyway is left alone."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps is None or trainer.max_steps < 0 or trainer.global_step < trainer.max_steps:
            return
        if not trainer.enable_validation:
            return
        trainer.should_stop = True  # Lightning then runs the validation loop before the fit ends


class AttentionOverlay(L.Callback):
    """After each validation: overlays of the attention on one real and one fake validation face,
    saved as ``<dirpath>/val_step<step>.png`` and sent to the TensorBoard and W&B loggers."""

    def __init__(self, dirpath: str, every_n_validations: int = 1):
        self.dirpath = Path(dirpath)
        self.every = max(1, every_n_validations)
        self._count = 0
        self.last_path: Path | None = None

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._count += 1
        if (self._count - 1) % self.every:
            return
        ds = trainer.datamodule.datasets["val"]
        idx = [0, 1] if ds.fakes is not None else [0]  # first real face and the fake made from it
        items = [ds[i] for i in idx]
        x = torch.stack([it["image"] for it in items]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        out = pl_module(x)
        pl_module.train(was_training)
        prob = out.logits.softmax(-1)[:, 1].cpu()
        maps_per_item = out.maps
        if x.dim() == 5:  # clips: the first frame of each clip with its maps, P(fake) of the clip
            maps_per_item = out.maps.reshape(x.shape[0], x.shape[1], *out.maps.shape[1:])[:, 0]
            items = [{**it, "image": it["image"][0], "mask": it["mask"][0]} for it in items]
        rows = []
        for it, maps, p in zip(items, maps_per_item, prob, strict=True):
            kind = "fake" if int(it["label"]) else "real"
            rows.append(
                attention_panel(
                    it["image"], maps, it["mask"], f"{kind}  P(fake)={p:.2f}  step {trainer.global_step}"
                )
            )
        panel = np.concatenate(rows, axis=0)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"val_step{trainer.global_step:06d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        self.last_path = path
        for lg in trainer.loggers:
            name = type(lg).__name__
            if name == "TensorBoardLogger":
                lg.experiment.add_image("val/attention", panel, trainer.global_step, dataformats="HWC")
            elif name == "WandbLogger":
                lg.log_image("val/attention", [panel], step=trainer.global_step)
