"""``python -m lmguide.bench export``: face crops per second of the exported model against PyTorch eager.

The inference graph of :mod:`lmguide.export` (crop in, P(fake) and attention maps out) runs on the same
batches in three runtimes, one after the other within each repeat so that they share the machine's
noise: PyTorch eager (the LightningModule's own forward under ``torch.inference_mode``), onnxruntime
on CPU (the exported ``.onnx``; idle threads not spinning, so they take no CPU from the next runtime's
turn) and TorchScript (the traced ``.pt``), all with the same thread count.
Each repeat times ``--batches`` batches after one warm-up batch; the figure is the median over
``--repeats``. The model is ``--ckpt`` (exported as ``lmguide.export`` does) or, without one, an
untrained model of the train config with the given overrides (speed does not depend on the weights).
Timed inputs are random crops of the model's input size. The parity columns come from real face crops:
the first ``--parity-crops`` of the demo val split (prepared if needed) through the eval transform, run
at once (a batch size the files were not traced at), max |difference| to eager.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

RUNTIMES = ("pytorch_eager", "onnxruntime", "torchscript")


def _demo_crops(cfg, n: int):
    """The first ``n`` items of the demo val split (real faces, eval transform): (n, 3, S, S)."""
    import hydra
    import torch

    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    ds = dm.datasets["val"]
    return torch.stack([ds[i]["image"] for i in range(min(n, len(ds)))])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m lmguide.bench export", description=__doc__.splitlines()[0])
    p.add_argument(
        "--ckpt", default=None, help="a training checkpoint (default: untrained model of the config)"
    )
    p.add_argument("--batch", type=int, default=16, help="crops per forward pass")
    p.add_argument("--batches", type=int, default=8, help="timed batches per runtime and repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads", type=int, default=None, help="intra-op threads of every runtime (default: torch's)"
    )
    p.add_argument(
        "--parity-crops", type=int, default=16, help="demo val crops for the parity check (0: skip)"
    )
    p.add_argument("--out", default="bench_results/export.json")
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides of the train config (e.g. backbone=resnet50)"
    )
    args = p.parse_args(argv)

    import hydra
    import numpy as np
    import torch

    from lmguide.bench.report import machine, print_table, write_json
    from lmguide.inference.graph import (
        InferenceGraph,
        _write_onnx,
        _write_torchscript,
        load_exported,
        onnx_session,
        refuse_clip_model,
        run_exported,
    )
    from lmguide.runs.config_guard import compose_train_config

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    if args.ckpt:
        from lmguide.training.checkpoint import load_model

        model, cfg = load_model(args.ckpt, args.overrides)
    else:
        cfg = compose_train_config(["paths.output_dir=.", *args.overrides])
        model = hydra.utils.instantiate(cfg.model).eval()
    refuse_clip_model(model, cfg, args.ckpt or "the composed model")  # nothing to benchmark
    size = int(cfg.data.image_size)
    graph = InferenceGraph(model).eval()
    x = torch.randn(args.batch, 3, size, size)

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        onnx_path, ts_path = Path(tmp) / "model.onnx", Path(tmp) / "model.pt"
        example = x[:1]
        _write_onnx(graph, example, onnx_path, {}, opset=17)
        _write_torchscript(graph, example, ts_path, {})
        session = onnx_session(onnx_path, threads=threads, spinning=False)  # no busy threads after it
        scripted = load_exported(ts_path)

        def eager(batch):
            with torch.inference_mode():
                out = model(batch)
                return out.logits.softmax(-1)[:, 1], out.maps

        xn = x.numpy()
        runners = {
            "pytorch_eager": lambda: eager(x),
            "onnxruntime": lambda: run_exported(session, xn),
            "torchscript": lambda: run_exported(scripted, x),
        }
        crops = _demo_crops(cfg, args.parity_crops) if args.parity_crops > 0 else x
        ref = [t.numpy() for t in eager(crops)]
        diffs = {"inputs": f"{len(crops)} demo val crops" if args.parity_crops > 0 else "random"}
        for name, runner in (("onnxruntime", session), ("torchscript", scripted)):
            got = run_exported(runner, crops.numpy())
            diffs[name] = {
                "prob_fake": float(np.abs(got[0] - ref[0]).max()),
                "attention": float(np.abs(got[1] - ref[1]).max()),
            }
        print(f"parity on {diffs['inputs']} (max |diff| to eager): " + ", ".join(
            f"{n} P(fake) {diffs[n]['prob_fake']:.1e} attention {diffs[n]['attention']:.1e}"
            for n in ("onnxruntime", "torchscript")
        ), flush=True)  # fmt: skip
        rates: dict[str, list[float]] = {r: [] for r in RUNTIMES}
        for rep in range(args.repeats):
            for name, run in runners.items():
                run()  # warm-up
                t = time.perf_counter()
                for _ in range(args.batches):
                    run()
                rates[name].append(args.batches * args.batch / (time.perf_counter() - t))
            line = ", ".join(f"{n} {rates[n][-1]:.1f}" for n in RUNTIMES)
            print(f"repeat {rep + 1}/{args.repeats}: crops/s {line}", flush=True)

    med = {n: statistics.median(v) for n, v in rates.items()}
    report = {
        "benchmark": "export",
        **machine(),
        "threads": threads,
        "model": f"{cfg.model.backbone.name} + {str(cfg.model.attention._target_).rsplit('.', 1)[-1]}",
        "checkpoint": args.ckpt,
        "image_size": size,
        "batch": args.batch,
        "batches": args.batches,
        "repeats": args.repeats,
        "crops_per_s": med,
        "crops_per_s_repeats": rates,
        "ratio_to_eager": {n: med[n] / med["pytorch_eager"] for n in RUNTIMES},
        "max_abs_diff_to_eager": diffs,
    }
    rows = [
        [n, f"{med[n]:.1f}", f"{1e3 * args.batch / med[n]:.1f}", f"{med[n] / med['pytorch_eager']:.2f}"]
        for n in RUNTIMES
    ]
    print_table(
        f"{report['model']} at {size} px, batch {args.batch}, {threads} threads "
        f"(median of {args.repeats} x {args.batches} batches)",
        ["runtime", "crops/s", "ms/batch", "x eager"],
        rows,
    )
    write_json(args.out, report)
    return report
