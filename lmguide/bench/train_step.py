"""``python -m lmguide.bench train``: training-step throughput, measured side by side in one process.

Each case is the real model built from the real config (Hydra compose) and timed on the same random
batch: forward, WS-DAN views, composite loss, backward, Adam step. The baseline is the unguided
objective (``loss.lambda_lm=0``); every other case is reported as a ratio to it, so machine noise
cancels out. Cases run interleaved (round-robin) and the median step time is kept.

    python -m lmguide.bench train                # default cases, 128 px, batch 16
    python -m lmguide.bench train --steps 20 --out bench_results/train_step.json
    python -m lmguide.bench train --compile inductor --cases "demo job (maps on stage 3, stage 4 pooled)"

``--compile BACKEND`` adds, for each case, a twin whose network parts go through ``trainer.compile``'s
path (:func:`lmguide.training.compile.compile_model`), with its first step (the compilation) timed apart.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch

CASES = {
    "baseline (lambda=0)": ["loss.lambda_lm=0"],
    "guided ratio (lambda=1)": ["loss=ratio", "loss.lambda_lm=1"],
    "guided simple (lambda=1)": ["loss=simple", "loss.lambda_lm=1"],
    "guided ratio, NCHW memory": ["loss=ratio", "loss.lambda_lm=1", "model.channels_last=false"],
    "guided ratio, no WS-DAN views": ["loss=ratio", "loss.lambda_lm=1", "loss.w_crop=0", "loss.w_drop=0"],
    # make train's model (Lite0: 3 maps on stage 3, stage 4 pooled, per_head) and the previous default
    # (4 maps on stage 4, ratio): the cost of the finer maps
    "demo job (maps on stage 3, stage 4 pooled)": ["experiment=demo"],
    "previous demo job (maps on stage 4)": [
        "experiment=demo",
        "backbone.attn_index=null",
        "loss=ratio",
        "attention.num_maps=4",
    ],
}


def _build(overrides: list[str], image_size: int):
    import hydra

    from lmguide.runs.config_guard import compose_train_config

    cfg = compose_train_config(["paths.output_dir=.", f"data.image_size={image_size}", *overrides])
    model = hydra.utils.instantiate(cfg.model)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    return model, opt


def _batch(n: int, size: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, size // 3 : size // 2, size // 4 : 3 * size // 4] = 1
    regions = torch.zeros(n, 3, size, size)  # per_head's eyes, nose, mouth: three bands of the mask
    for r in range(3):
        regions[:, r, size // 3 : size // 2, (r + 1) * size // 5 : (r + 2) * size // 5] = 1
    return {
        "image": torch.randn(n, 3, size, size, generator=g).to(device),
        "mask": mask.to(device),
        "region_masks": regions.to(device),  # read by per_head only
        "label": (torch.arange(n) % 2).to(device),
        "video": torch.arange(n).to(device),
    }


#: autocast dtypes of the precisions :func:`_step` takes besides fp32 (``bench gpu``)
AUTOCAST = {"bf16": torch.bfloat16, "16-mixed": torch.float16}


def _step(model, opt, batch, precision: str = "fp32", scaler=None, losses: list | None = None) -> float:
    """One training step (forward, loss, backward, optimizer step) in seconds, the device synced.
    ``precision``: fp32, bf16 (autocast) or 16-mixed (fp16 autocast, ``scaler`` a GradScaler scales the
    loss); ``losses`` receives the step's loss."""
    import contextlib

    dev = batch["image"].device
    t = time.perf_counter()
    dtype = AUTOCAST.get(precision)
    with torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        loss = model.training_step(batch, 0)
    if precision == "16-mixed":
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    if losses is not None:
        losses.append(float(loss.detach()))
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m lmguide.bench train", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="timed steps per case (after 2 warm-up steps)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=128, help="image size (the demo trains at 128)")
    p.add_argument("--cases", nargs="*", default=list(CASES), help="subset of case names")
    p.add_argument("--out", default="bench_results/train_step.json")
    p.add_argument(
        "--compile", default=None, help="add a compiled twin of each case (a trainer.compile value)"
    )
    p.add_argument("--compile-mode", default=None, help="its trainer.compile_mode")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    built = {}
    for name in args.cases:
        model, opt = _build(CASES[name], args.size)
        model.to(device)
        model.log = lambda *a, **k: None  # no trainer attached: logging is a no-op
        built[name] = (model, opt)
    batch = _batch(args.batch, args.size, device)
    first_step: dict[str, float] = {}
    if args.compile:
        from lmguide.training.compile import compile_model, compile_stats

        for name in list(built):
            model = copy.deepcopy(built[name][0])
            twin = f"{name}, compiled ({args.compile})"
            compile_model(model, args.compile, args.compile_mode)
            built[twin] = (model, torch.optim.Adam(model.parameters(), lr=1e-4))
            first_step[twin] = _step(*built[twin], batch)  # the compilation, timed apart
    times: dict[str, list[float]] = {n: [] for n in built}
    for i in range(args.steps + 2):
        for name, (model, opt) in built.items():  # interleaved: drift hits every case alike
            dt = _step(model, opt, batch)
            if i >= 2:
                times[name].append(dt)

    base = statistics.median(times[args.cases[0]])
    results = []
    for name, ts in times.items():
        med = statistics.median(ts)
        results.append(
            {
                "case": name,
                "median_step_s": med,
                "images_per_s": args.batch / med,
                "ratio_to_baseline": med / base,
                "steps": len(ts),
                **({"first_step_s": first_step[name]} if name in first_step else {}),
            }
        )
    report = {
        "benchmark": "train_step",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "batch": args.batch,
        "image_size": args.size,
        "baseline": args.cases[0],
        "results": results,
        **({"compile_stats": compile_stats()} if args.compile else {}),
    }

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"train step, batch {args.batch} x {args.size}px on {device} (median of {args.steps})"
    )
    for col in ("case", "s/step", "img/s", "x baseline"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in results:
        table.add_row(
            r["case"],
            f"{r['median_step_s']:.3f}",
            f"{r['images_per_s']:.1f}",
            f"{r['ratio_to_baseline']:.2f}",
        )
    Console().print(table)
    for name, secs in first_step.items():
        print(f"{name}: first step (compilation) {secs:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out}")
    return report
