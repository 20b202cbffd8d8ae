"""``python -m lmguide.bench loader``: can the data pipeline keep up with training?

Images/s from the cached demo index through the whole training input path (PNG decode, self-blended
fake, albumentations, tensors, collation into batches) with 0 and ``data.num_workers`` loader
workers, against the images/s the default model's training step consumes (forward, WS-DAN views,
composite loss, backward, Adam), both measured in this run at the training batch size. Target: the
loader is >= 3x faster than training consumes on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _loader_rate(dm, workers: int, batches: int, warmup: int = 2) -> float:
    """Images/s over ``batches`` training batches after ``warmup`` (worker start-up excluded), running
    through as many epochs as that takes (the demo's train split is ~10 batches). Many batches keep the
    head start of the prefetched queue (2 per worker) small against the total."""
    dm.num_workers = workers
    loader = dm.train_dataloader()
    n, seen, t0 = 0, 0, time.perf_counter()
    while seen < warmup + batches:
        for batch in loader:
            seen += 1
            if seen == warmup:
                t0 = time.perf_counter()
            elif seen > warmup:
                n += batch["image"].shape[0]
            if seen >= warmup + batches:
                break
    rate = n / (time.perf_counter() - t0)
    del loader
    return rate


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m lmguide.bench loader", description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=50, help="timed batches per loader setting")
    p.add_argument("--steps", type=int, default=6, help="timed training steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench_results/loader.json")
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides of the train config (e.g. data.batch_size=32)"
    )
    args = p.parse_args(argv)

    import hydra
    import torch

    from lmguide.bench.report import machine, print_table, write_json
    from lmguide.bench.train_step import _batch, _step
    from lmguide.runs.config_guard import compose_train_config

    cfg = compose_train_config(["paths.output_dir=.", *args.overrides])
    torch.manual_seed(0)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    workers = sorted({0, int(cfg.data.num_workers)})

    model = hydra.utils.instantiate(cfg.model)
    model.train()
    model.log = lambda *a, **k: None  # no trainer attached
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = _batch(dm.batch_size, dm.image_size, torch.device("cpu"))

    loader: dict[int, list[float]] = {w: [] for w in workers}
    train: list[float] = []
    for _ in range(args.repeats):  # interleaved rounds: drift hits both alike
        for w in workers:
            loader[w].append(_loader_rate(dm, w, args.batches))
        for i in range(args.steps + 1):
            dt = _step(model, opt, batch)
            if i:
                train.append(dm.batch_size / dt)
    rates = {w: statistics.median(v) for w, v in loader.items()}
    train_rate = statistics.median(train)
    main_w = int(cfg.data.num_workers)
    report = {
        "benchmark": "loader",
        **machine(),
        "batch": dm.batch_size,
        "image_size": dm.image_size,
        "self_blend": dm.fakes is not None,
        "loader_images_per_s": {str(w): r for w, r in rates.items()},
        "train_images_per_s": train_rate,
        "ratio_loader_to_train": rates[main_w] / train_rate,
        "num_workers": main_w,
        "target": 3.0,
    }
    rows = [[f"loader, {w} workers", f"{r:.1f}", f"{r / train_rate:.2f}"] for w, r in rates.items()]
    rows.append(["training step (default model)", f"{train_rate:.1f}", "1.00"])
    print_table(
        f"loader vs training, batch {dm.batch_size} x {dm.image_size}px (median of {args.repeats})",
        ["case", "images/s", "x training"],
        rows,
    )
    print(f"loader ({main_w} workers) / training: x{report['ratio_loader_to_train']:.1f} (target 3)")
    write_json(args.out, report)
    return report
