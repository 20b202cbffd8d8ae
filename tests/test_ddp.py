"""trainer=ddp on CPU: 2 processes (gloo) train a few steps with the same metrics on both ranks, one
checkpoint set and one output directory (SyncBatchNorm needs GPUs, so it is off here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest

from lmguide.runs.runtime import ROOT_DIR
from tests.conftest import FAST_DATA, run_cli


class DumpMetrics(L.Callback):
    """Writes each rank's test metrics to ``<dir>/rank<r>.json`` (the test compares them)."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_test_end(self, trainer, pl_module) -> None:
        vals = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        (self.dirpath / f"rank{trainer.global_rank}.json").write_text(json.dumps(vals, sort_keys=True))


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{ROOT_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    args = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.sync_batchnorm=false",
        "trainer.max_steps=3",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        "+callbacks.dump._target_=tests.test_ddp.DumpMetrics",
        f"+callbacks.dump.dirpath={tmp_path}",
        *FAST_DATA,
        f"hydra.run.dir={tmp_path}",
    ]
    proc = run_cli("lmguide.train", args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for k in ("test/auc", "test/eer", "test/attn_in_lm", "test/video_auc", "test/loss"):
        assert r0[k] == pytest.approx(r1[k], abs=1e-6), k  # synced across ranks
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert json.loads((tmp_path / "metrics.json").read_text())["test/auc"] == pytest.approx(r0["test/auc"])
    assert not (tmp_path / "outputs").exists() and not list(tmp_path.glob("version_*"))
