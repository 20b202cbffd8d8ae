"""``python -m lmguide.bench gpu``: the GPU check, one script, a few minutes.

On the first CUDA device (``--device cpu`` runs the same checks on the CPU, to try the script):

* **steps/s** of the default job's model (``experiment=demo``) in fp32, bf16 (autocast) and 16-mixed
  (fp16 autocast with a GradScaler), on one random batch at the training batch size, interleaved;
* **bf16 vs fp32 parity**: two copies of one initialisation trained ``--parity-steps`` steps on the same
  batches, fp32 and bf16; the loss after the last step and the largest gap along the way;
* **the real job**: ``make train``'s job cut to ``--run-steps`` steps in bf16 on the device, with
  loader workers, while a thread samples GPU utilisation (NVML through torch, else nvidia-smi); the
  phase timer of ``bench run`` splits its fit into training steps and loader waits;
* **loader- or compute-bound**: the loader's images/s (``data.num_workers`` workers) against what the
  bf16 step consumes, and the loader waits' share of the fit.

Printed and written as JSON (``--out``); extra arguments are Hydra overrides of the job.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

import lightning as L
import torch

from lmguide.runs.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "16-mixed")


def utilisation() -> float | None:
    """GPU utilisation in % now: NVML through torch, else nvidia-smi; None when neither answers."""
    with contextlib.suppress(Exception):
        return float(torch.cuda.utilization())
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return float(out.stdout.split()[0])
    return None


class UtilisationSampler(L.Callback):
    """Samples GPU utilisation every ``every`` s from the first training batch to the end of the fit."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            u = utilisation()
            if u is not None:
                self.samples.append(u)

    def on_train_start(self, trainer, pl_module) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


#: the sampler of the latest run in this process (the callback is built by Hydra from the config)
SAMPLER: UtilisationSampler | None = None


def _sampler(every: float = 0.2) -> UtilisationSampler:
    global SAMPLER
    SAMPLER = UtilisationSampler(every)
    return SAMPLER


def _quiet(model):
    model.log = lambda *a, **k: None  # no trainer attached: logging is a no-op
    return model


def main(argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    p = argparse.ArgumentParser(prog="python -m lmguide.bench gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (the first GPU) or cpu (to try the script)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per precision (after 3 warm-up)")
    p.add_argument("--parity-steps", type=int, default=20)
    p.add_argument("--parity-tol", type=float, default=0.05, help="largest relative loss gap called parity")
    p.add_argument("--run-steps", type=int, default=150, help="steps of the real job (0: skip it)")
    p.add_argument("--run-precision", default="bf16-mixed", help="the real job's trainer.precision")
    p.add_argument("--loader-batches", type=int, default=30)
    p.add_argument("--out", default="bench_results/gpu.json")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the job (e.g. data.image_size=224)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "bench gpu: no CUDA device is visible (torch.cuda.is_available() is False): run it on a GPU "
            "machine, or with --device cpu to try the script here"
        )
    if args.device not in ("cuda", "cpu"):
        raise ConfigError(f"bench gpu: --device={args.device!r} is not a choice: use cuda or cpu")
    device = torch.device(args.device)

    import hydra
    from omegaconf import open_dict

    from lmguide.bench.loader import _loader_rate
    from lmguide.bench.report import machine, print_table, write_json
    from lmguide.bench.train_step import _batch, _step
    from lmguide.runs.config_guard import compose_train_config

    job = ["experiment=demo", *args.overrides]
    cfg = compose_train_config(["paths.output_dir=.", *job])
    n, size = int(cfg.data.batch_size), int(cfg.data.image_size)
    torch.manual_seed(0)
    base = _quiet(hydra.utils.instantiate(cfg.model)).to(device).train()
    batch = _batch(n, size, device)

    # steps/s per precision, interleaved so drift hits each alike
    built = {}
    for prec in PRECISIONS:
        m = _quiet(copy.deepcopy(base))
        scaler = torch.amp.GradScaler(device.type, enabled=prec == "16-mixed")
        built[prec] = (m, torch.optim.Adam(m.parameters(), lr=float(cfg.optim.lr)), scaler)
    times: dict[str, list[float]] = {prec: [] for prec in PRECISIONS}
    for i in range(args.steps + 3):
        for prec, (m, opt, scaler) in built.items():
            dt = _step(m, opt, batch, prec, scaler)
            if i >= 3:
                times[prec].append(dt)
    step_s = {prec: statistics.median(ts) for prec, ts in times.items()}
    del built

    # bf16 vs fp32 parity: one initialisation, the same batches
    losses: dict[str, list[float]] = {}
    for prec in ("fp32", "bf16"):
        m = _quiet(copy.deepcopy(base))
        opt = torch.optim.Adam(m.parameters(), lr=float(cfg.optim.lr))
        g = torch.Generator().manual_seed(1)
        losses[prec] = []
        for _ in range(args.parity_steps):
            b = dict(batch, image=torch.randn(n, 3, size, size, generator=g).to(device))
            _step(m, opt, b, prec, losses=losses[prec])
    gaps = [abs(a - b) / max(abs(a), 1e-8) for a, b in zip(losses["fp32"], losses["bf16"], strict=True)]
    parity = {
        "steps": args.parity_steps,
        "fp32_loss": losses["fp32"][-1],
        "bf16_loss": losses["bf16"][-1],
        "last_relative_gap": gaps[-1],
        "largest_relative_gap": max(gaps),
        "tolerance": args.parity_tol,
        "ok": gaps[-1] <= args.parity_tol,
    }

    # the loader against the bf16 step
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    workers = int(cfg.data.num_workers)
    loader_rate = _loader_rate(dm, workers, args.loader_batches)
    compute_rate = n / step_s["bf16"]

    run: dict = {}
    if args.run_steps > 0:
        from lmguide.bench import run as bench_run
        from lmguide.training.fit import train

        out_dir = tempfile.mkdtemp(prefix="lmguide_bench_gpu_")
        accel = "gpu" if device.type == "cuda" else "cpu"
        rcfg = compose_train_config(
            [
                *job,
                f"trainer.max_steps={args.run_steps}",
                f"trainer.accelerator={accel}",
                f"++trainer.precision={args.run_precision}",
                f"paths.output_dir={out_dir}",
            ]
        )
        with open_dict(rcfg):
            rcfg.callbacks.bench_phase_timer = {"_target_": f"{bench_run.__name__}.PhaseTimer"}
            rcfg.callbacks.bench_gpu_util = {"_target_": f"{__name__}._sampler"}
        t0 = time.perf_counter()
        try:
            train(rcfg)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        timer, samples = bench_run.LAST, (SAMPLER.samples if SAMPLER else [])
        fit = timer.marks["fit_end"] - timer.marks["fit_start"]
        waits = timer.t.get("loader_waits", 0.0) + timer.t.get("loader_startup", 0.0)
        run = {
            "precision": args.run_precision,
            "steps": timer.steps,
            "wall_s": time.perf_counter() - t0,
            "fit_s": fit,
            "steps_per_s": timer.steps / max(timer.t.get("steps", 0.0), 1e-9),
            "loader_wait_share": waits / fit,
            "utilisation_median": statistics.median(samples) if samples else None,
            "utilisation_samples": len(samples),
        }
    bound = "loader" if loader_rate < compute_rate or run.get("loader_wait_share", 0.0) > 0.1 else "compute"

    report = {
        "benchmark": "gpu",
        **machine(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "job": job,
        "batch": n,
        "image_size": size,
        "steps_per_s": {prec: 1 / s for prec, s in step_s.items()},
        "parity": parity,
        "loader_images_per_s": loader_rate,
        "loader_workers": workers,
        "compute_images_per_s_bf16": compute_rate,
        "run": run,
        "bound": bound,
        "total_s": time.perf_counter() - t_start,
    }
    rows = [[f"train step, {prec}", f"{1 / s:.2f}", f"{n / s:.0f}"] for prec, s in step_s.items()]
    rows.append([f"loader, {workers} workers", "", f"{loader_rate:.0f}"])
    if run:
        rows.append([f"the job, {run['precision']}, {run['steps']} steps", f"{run['steps_per_s']:.2f}", ""])
    print_table(f"bench gpu on {report['device']}: batch {n} x {size}px", ["case", "steps/s", "img/s"], rows)
    print(
        f"bf16 vs fp32 loss after {parity['steps']} steps: {parity['bf16_loss']:.4f} vs "
        f"{parity['fp32_loss']:.4f} (gap {100 * parity['last_relative_gap']:.1f} %, largest "
        f"{100 * parity['largest_relative_gap']:.1f} %): {'parity' if parity['ok'] else 'NO PARITY'}"
    )
    if run:
        util = run["utilisation_median"]
        print(
            f"the job: GPU utilisation median {'n/a' if util is None else f'{util:.0f} %'} over "
            f"{run['utilisation_samples']} samples; loader waits {100 * run['loader_wait_share']:.1f} % "
            "of the fit"
        )
    print(
        f"{bound}-bound: the loader gives {loader_rate:.0f} img/s against {compute_rate:.0f} img/s the bf16 "
        f"step takes; total {report['total_s']:.0f} s"
    )
    write_json(args.out, report)
    return report
