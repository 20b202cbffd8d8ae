"""Training callbacks: per-epoch seeding (exact resume), a stop once ReduceLROnPlateau has cut the
learning rate to a floor (the plateau alone never ends a run), a validation
at the last step, the per-validation attention overlays."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch

from lmguide.runs.loggers import log_images
from lmguide.viz.heat import render, warnings_of
from lmguide.viz.overlays import attention_figure, attention_row, outline_legend

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
    """Stop once ReduceLROnPlateau has cut every learning rate to ``factor`` x its initial value.

    At the fit's start the plateau's floor (``min_lrs``) is set to that value, so its last cut lands on
    it exactly and the stop fires at the validation that makes it (a comparison with ``<`` never would:
    ``1e-4 * 0.1**5`` is ``1.0000000000000004e-09``, above ``1e-4 * 1e-5``). A plateau whose ``eps``
    would refuse that last cut (PyTorch's default ``eps=1e-8`` stops cutting near 1e-8) is refused at
    the start with the fix. Only with ReduceLROnPlateau, whose reductions have no end of their own; a
    schedule in steps (``scheduler=cosine``) sets its floor itself and ends at ``trainer.max_steps``."""

    def __init__(self, factor: float = 1e-5):
        if not 0 < factor < 1:
            raise ValueError(f"callbacks.min_lr_stop.factor must be in (0, 1), got {factor}")
        self.factor = factor
        self._initial: list[float] | None = None
        self._floors: list[float] = []

    def state_dict(self) -> dict:
        return {"initial": self._initial}

    def load_state_dict(self, state_dict: dict) -> None:
        self._initial = state_dict.get("initial")

    @staticmethod
    def _plateau(trainer: L.Trainer, pl_module: L.LightningModule | None):
        found = getattr(pl_module, "plateau", None)
        if found is None:
            found = next(
                (
                    c.scheduler
                    for c in trainer.lr_scheduler_configs
                    if isinstance(c.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
                ),
                None,
            )
        return found

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        plateau = self._plateau(trainer, pl_module)
        if plateau is None:
            self._initial, self._floors = None, []
            return
        if self._initial is None:  # resumed: the lrs of the run's start, not the reduced ones
            self._initial = [g.get("initial_lr", g["lr"]) for g in trainer.optimizers[0].param_groups]
        # the plateau's own min_lr wins where it is higher: the stop then fires when lr reaches it
        floors = [max(i * self.factor, m) for i, m in zip(self._initial, plateau.min_lrs, strict=True)]
        plateau.min_lrs = self._floors = floors
        # the last cut goes from floor / plateau.factor (or less) to the floor: it must exceed eps
        last_cut = min(floors) * (1 / plateau.factor - 1)
        if plateau.eps >= last_cut:
            from lmguide.runs.errors import ConfigError

            raise ConfigError(
                f"scheduler.eps={plateau.eps:g} stops ReduceLROnPlateau above the min-lr stop's floor "
                f"({min(floors):g} = lr x callbacks.min_lr_stop.factor): its last cut is {last_cut:g}; "
                "set scheduler.eps=0"
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the plateau steps after each validation (every epoch or every trainer.val_check_interval batches)
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        if not self._floors:
            return
        lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
        if all(lr <= f * (1 + 1e-6) for lr, f in zip(lrs, self._floors, strict=True)):
            log.info("learning rate %.3g reached its floor %.3g: stopping", lrs[0], self._floors[0])
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


def overlay_items(labels: list[int]) -> list[int]:
    """The validation items drawn after each validation: the first real and the first fake, whatever
    the layout (with self-blended fakes: the first real face and the fake made from it); one class
    only: its first item."""
    firsts = {}
    for i, lab in enumerate(labels):
        firsts.setdefault(int(lab), i)
        if len(firsts) == 2:
            break
    return [firsts[c] for c in (0, 1) if c in firsts]


class AttentionOverlay(L.Callback):
    """After each validation: overlays of the attention on one real and one fake validation face,
    saved as ``<dirpath>/val_step<step>.png`` and sent to the TensorBoard and W&B loggers
    (:func:`~lmguide.runs.loggers.log_images`). Columns: face, mean map, each map, labelled, a colour bar
    per map; a flat map is written over as such and logged (``last_warnings``)."""

    def __init__(self, dirpath: str, every_n_validations: int = 1):
        self.dirpath = Path(dirpath)
        self.every = max(1, every_n_validations)
        self._count = 0
        self.last_path: Path | None = None
        self.last_warnings: list[str] = []  # the flat maps of the last overlay drawn

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._count += 1
        if (self._count - 1) % self.every:
            return
        ds = trainer.datamodule.datasets["val"]
        idx = overlay_items(ds.labels)
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
            items = [
                {**it, **{k: it[k][0] for k in ("image", "mask", "region_masks") if k in it}} for it in items
            ]
        regions = getattr(ds, "regions", ())
        rows, labels = [], []
        for it, maps, p in zip(items, maps_per_item, prob, strict=True):
            rows.append(attention_row(it["image"], maps, it["mask"], it.get("region_masks"), regions))
            labels.append(f"{'fake' if int(it['label']) else 'real'}  P(fake)={p:.2f}")
        title = f"validation at step {trainer.global_step}: attention maps ({outline_legend(regions)})"
        self.last_warnings = [
            f"step {trainer.global_step}, {label.split()[0]} face: {w}"
            for row, label in zip(rows, labels, strict=True)
            for w in warnings_of(row)
        ]
        for w in self.last_warnings:
            log.warning("attention overlay at %s", w)
        panel = render(attention_figure(rows, labels, title))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"val_step{trainer.global_step:06d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        self.last_path = path
        log_images(trainer.loggers, {"val/attention": panel}, step=trainer.global_step)
