"""``python -m lmguide.bench [train|prepare|loader|models|export|run|gpu] [options]``: benchmarks.

Each benchmark prints its figures and writes them as JSON. Each measures its cases side by side in one
run against a baseline measured in the same run (medians, ratios), because the machines are noisy:

* ``train`` (default): training-step time of loss/model variants against the unguided objective.
* ``prepare``: landmark-cache build rate (decode, detect, crop, landmarks, masks, writes) against bare
  MediaPipe FaceMesh on the same frames, 1 vs 2 workers, cache bytes per frame.
* ``loader``: images/s from the cached index through augmentation to batches, against the rate at
  which the default model's training step consumes them.
* ``models``: parameters, forward + backward ms per image at 224 px and peak memory of every backbone
  with ``none`` and ``multi`` attention.
* ``export``: face crops/s of the exported model in onnxruntime and TorchScript against PyTorch eager.
* ``run``: the wall time of a short default run (``experiment=demo``) split into training steps,
  validation, loader start-up and everything else.
* ``gpu``: the GPU check: steps/s in fp32, bf16 and 16-mixed, bf16 vs fp32 loss parity, GPU
  utilisation while the default job trains, loader- or compute-bound.
"""

from __future__ import annotations

import sys

COMMANDS = ("train", "prepare", "loader", "models", "export", "run", "gpu")


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return {}
    cmd = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    if cmd == "prepare":
        from lmguide.bench.prepare import main as run
    elif cmd == "loader":
        from lmguide.bench.loader import main as run
    elif cmd == "models":
        from lmguide.bench.models import main as run
    elif cmd == "export":
        from lmguide.bench.export import main as run
    elif cmd == "run":
        from lmguide.bench.run import main as run
    elif cmd == "gpu":
        from lmguide.bench.gpu import main as run
    else:
        from lmguide.bench.train_step import main as run
    return run(argv)


if __name__ == "__main__":
    from lmguide.runs.cli import friendly_errors

    friendly_errors(lambda _: main())(None)  # an LmguideError is one line and exit 1, as in every entry
