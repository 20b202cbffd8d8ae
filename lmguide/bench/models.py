"""``python -m lmguide.bench models``: size, speed and memory of every backbone with and without attention.

For each backbone × attention (``none`` and ``multi`` by default) at 224 px: parameter count,
forward + backward time per image (median over ``--steps`` after a warm-up; cross-entropy on the
logits plus the mean of the attention maps, so every part gets a gradient) and peak memory: on a
GPU ``torch.cuda.max_memory_allocated`` during the step; on CPU the peak resident memory of the case's
own process (each case runs in a fresh subprocess) above what it held once the model was built.
The first case (``efficientnet_b0`` + ``none``) is the baseline of the ratio column.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

ATTENTIONS = ("none", "multi")


def _rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(backbone: str, attention: str, size: int, batch: int, steps: int) -> dict:
    """Build the model from the real config and time forward + backward (runs in this process)."""
    import statistics
    import time

    import hydra
    import torch
    import torch.nn.functional as F

    from lmguide.runs.config_guard import compose_train_config

    torch.manual_seed(0)
    cfg = compose_train_config(
        ["paths.output_dir=.", f"backbone={backbone}", f"attention={attention}", f"data.image_size={size}"]
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = hydra.utils.instantiate(cfg.model).to(device).train()
    clip = int(getattr(model.backbone, "clip_frames", 0) or 0)
    shape = (batch, clip, 3, size, size) if clip else (batch, 3, size, size)
    x = torch.randn(*shape, device=device)
    y = (torch.arange(batch) % 2).to(device)
    params = sum(p.numel() for p in model.parameters())
    rss_built = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        out = model(x, y)
        loss = F.cross_entropy(out.logits, y) + out.maps.float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    images = batch * (clip or 1)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mb() - rss_built
    return {
        "backbone": backbone,
        "timm_name": getattr(model.backbone, "name", backbone),
        "attention": attention,
        "params_m": params / 1e6,
        "ms_per_image": 1e3 * statistics.median(times) / images,
        "peak_mem_mb": peak,
        "images_per_step": images,
        "device": str(device),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m lmguide.bench models", description=__doc__.splitlines()[0])
    from lmguide.models.backbones import BACKBONES  # every conf/backbone option, one registry

    p.add_argument("--backbones", nargs="*", default=list(BACKBONES))
    p.add_argument("--attentions", nargs="*", default=list(ATTENTIONS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4, help="images per step (clips per step for video models)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per case after 2 warm-up steps")
    p.add_argument("--out", default="bench_results/models.json")
    p.add_argument("--case", nargs=2, metavar=("BACKBONE", "ATTENTION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:  # a child process: one case, JSON on the last stdout line
        print(json.dumps(run_case(*args.case, args.size, args.batch, args.steps)))
        return {}

    from lmguide.bench.report import machine, print_table, write_json

    results, failed = [], []
    for bb in args.backbones:
        for att in args.attentions:
            opts = ["--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps)]
            cmd = [sys.executable, "-m", "lmguide.bench", "models", "--case", bb, att, *opts]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                reason = (proc.stderr.strip().splitlines() or ["?"])[-1]
                failed.append({"backbone": bb, "attention": att, "error": reason})
                print(f"{bb} + {att}: failed: {reason}", file=sys.stderr)
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{bb} + {att}: {r['params_m']:.1f} M params, {r['ms_per_image']:.0f} ms/image", flush=True)
    base = results[0]["ms_per_image"] if results else 1.0
    report = {
        "benchmark": "models",
        **machine(),
        "image_size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "baseline": f"{results[0]['backbone']} + {results[0]['attention']}" if results else None,
        "results": [{**r, "ratio_to_baseline": r["ms_per_image"] / base} for r in results],
        "failed": failed,
    }
    rows = [
        [f"{r['backbone']} + {r['attention']}", f"{r['params_m']:.1f}", f"{r['ms_per_image']:.0f}",
         f"{r['ratio_to_baseline']:.2f}", f"{r['peak_mem_mb']:.0f}"]
        for r in report["results"]
    ]  # fmt: skip
    mem = "peak GPU MiB" if results and results[0]["device"].startswith("cuda") else "peak RSS MiB over build"
    print_table(
        f"models at {args.size} px, batch {args.batch}, forward + backward (median of {args.steps})",
        ["backbone + attention", "params (M)", "ms/image", "x baseline", mem],
        rows,
    )
    write_json(args.out, report)
    return report
