"""``python -m lmguide.bench run``: where the wall time of a short default run goes.

Runs the ``make train`` job (``experiment=demo``, the landmark cache reused) in this process, cut to
``--steps`` training steps, with a callback that clocks every phase:

* **training steps**: from each batch's start to its end (forward, WS-DAN views, loss, backward,
  optimizer step, logging);
* **validation**: every validation of the fit, the sanity check included (its loader start-up too);
* **loader start-up**: from each training epoch's start to its first batch (where loader workers are
  started, or woken when they persist, and the first batch is made);
* **loader waits**: the other gaps between consecutive training batches (a loader slower than training);
* **everything else**: the rest of the wall time, split as far as it is clocked into *before the fit*
  (imports, config, landmark-cache check, model and trainer build), *epoch ends* (checkpoints, hooks)
  and *after the fit* (the best checkpoint validated again, the test split, curves, summary).

Target: everything but the training steps <= 25 % of the wall time. The result is printed and written
as JSON (``--out``); extra arguments are Hydra overrides of the run (e.g. ``trainer.max_steps=...`` is
what ``--steps`` sets).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict

import lightning as L

#: the PhaseTimer of the latest run in this process (the callback is built by Hydra from the config)
LAST: PhaseTimer | None = None


class PhaseTimer(L.Callback):
    """Clocks training steps, validations, loader start-up and loader waits of a fit (seconds)."""

    def __init__(self) -> None:
        global LAST
        LAST = self
        self.t: dict[str, float] = defaultdict(float)
        self.marks: dict[str, float] = {}
        self.steps = self.validations = self.epochs = 0
        self._epoch_start: float | None = None
        self._gap_start: float | None = None
        self._batch_start = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.marks["fit_start"] = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.marks["fit_end"] = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start, self._gap_start = time.perf_counter(), None
        self.epochs += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._epoch_start is not None:
            self.t["loader_startup"] += now - self._epoch_start
            self._epoch_start = None
        elif self._gap_start is not None:
            self.t["loader_waits"] += now - self._gap_start
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.t["steps"] += now - self._batch_start
        self.steps += 1
        self._gap_start = now

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit":  # the best checkpoint validated again: clocked as after the fit
            return
        now = time.perf_counter()
        self.t["validation"] += now - self._val_start
        self.validations += 0 if trainer.sanity_checking else 1
        if self._gap_start is not None:  # a validation between two batches is not a loader wait
            self._gap_start = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._gap_start = None


def main(argv: list[str] | None = None) -> dict:
    t0 = time.perf_counter()
    p = argparse.ArgumentParser(prog="python -m lmguide.bench run", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="training steps of the run (trainer.max_steps)")
    p.add_argument("--out", default="bench_results/run.json")
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides of the demo job (e.g. trainer.val_check_interval=50)"
    )
    args = p.parse_args(argv)

    from omegaconf import open_dict

    from lmguide.bench.report import machine, print_table, write_json
    from lmguide.runs.config_guard import compose_train_config
    from lmguide.training.fit import train

    out_dir = tempfile.mkdtemp(prefix="lmguide_bench_run_")
    overrides = ["experiment=demo", f"trainer.max_steps={args.steps}", *args.overrides]
    try:
        cfg = compose_train_config([*overrides, f"paths.output_dir={out_dir}"])
        with open_dict(cfg):
            cfg.callbacks.bench_phase_timer = {"_target_": f"{__name__}.PhaseTimer"}
        metrics = train(cfg)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    wall = time.perf_counter() - t0
    timer = LAST
    assert timer is not None and "fit_start" in timer.marks, "the phase timer did not run"
    t = dict(timer.t)
    fit = timer.marks["fit_end"] - timer.marks["fit_start"]
    inside = sum(t.get(k, 0.0) for k in ("steps", "validation", "loader_startup", "loader_waits"))
    phases = {
        "training steps": t.get("steps", 0.0),
        "validation": t.get("validation", 0.0),
        "loader start-up": t.get("loader_startup", 0.0),
        "loader waits": t.get("loader_waits", 0.0),
        "before the fit": timer.marks["fit_start"] - t0,
        "epoch ends and other fit overhead": max(0.0, fit - inside),
        "after the fit (best validated again, test, summary)": wall - (timer.marks["fit_end"] - t0),
    }
    overhead = (wall - phases["training steps"]) / wall
    report = {
        "benchmark": "run",
        **machine(),
        "overrides": overrides,
        "steps": timer.steps,
        "epochs": timer.epochs,
        "validations": timer.validations,
        "wall_s": wall,
        "phases_s": phases,
        "seconds_per_step": phases["training steps"] / max(1, timer.steps),
        "everything_but_steps_share": overhead,
        "target": 0.25,
        "test_auc": metrics.get("test/auc"),
    }
    rows = [[name, f"{s:.1f}", f"{100 * s / wall:.1f}"] for name, s in phases.items()]
    rows.append(["wall time", f"{wall:.1f}", "100.0"])
    print_table(
        f"bench run: {' '.join(overrides)} ({timer.steps} steps, {timer.epochs} epochs, "
        f"{timer.validations} validations)",
        ["phase", "s", "% of wall"],
        rows,
    )
    print(
        f"everything but the training steps: {100 * overhead:.1f} % of the wall time (target <= 25 %); "
        f"{report['seconds_per_step']:.3f} s per step"
    )
    write_json(args.out, report)
    return report
