"""Persistent training workers stay exact (every sample's randomness is keyed by (seed, epoch, index)),
validation every N batches (``trainer.val_check_interval``) with the plateau counting validations, a
``kill -9`` resume in that mode, and ``python -m lmguide.bench run``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
from torch.utils.data import DataLoader

from lmguide.data.datamodule import EpochShuffle
from lmguide.data.datasets import sample_key, sample_seed

from .conftest import FAST_DATA, KILL_DATA, kill_during_training, run_cli


def test_sample_seed_is_a_function_of_seed_epoch_and_index():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 3 * 3 * 50 and all(0 <= x < 2**31 for x in seeds)
    assert sample_key(7) == (0, 7) and sample_key((3, 7)) == (3, 7)
    s = EpochShuffle(10, seed=1, keys=True)
    keys = list(s)
    assert {e for e, _ in keys} == {0} and sorted(i for _, i in keys) == list(range(10))
    assert [i for _, i in keys] == list(EpochShuffle(10, seed=1))  # the same order as plain indices


def _epochs(ds, workers: int, persistent: bool, epochs: int = 3) -> list[list[dict]]:
    """Every batch of ``epochs`` epochs, drawn the way the DataModule's training loader draws them."""
    now = {"epoch": 0}
    sampler = EpochShuffle(len(ds), seed=0, epoch_fn=lambda: now["epoch"], keys=True)
    loader = DataLoader(
        ds,
        batch_size=4,
        sampler=sampler,
        generator=torch.Generator().manual_seed(0),
        num_workers=workers,
        persistent_workers=persistent,
    )
    out = []
    for e in range(epochs):
        now["epoch"] = e
        sampler.set_epoch(e)
        out.append(list(loader))
    return out


def test_training_samples_do_not_depend_on_the_workers(demo_datamodule):
    """0 workers, 2 workers started each epoch and 2 persistent workers give the same batches, epoch
    after epoch; each epoch draws new fakes and augmentations."""
    ds = demo_datamodule.datasets["train"]
    ref = _epochs(ds, 0, False)
    for workers, persistent in ((2, False), (2, True)):
        got = _epochs(ds, workers, persistent)
        for e, (a, b) in enumerate(zip(ref, got, strict=True)):
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"]), e
    first = {int(v): img for b in ref[0] for v, img in zip(b["video"], b["image"], strict=True)}
    assert not all(  # a new epoch: new fakes and augmentations of the same faces
        torch.equal(img, first.get(int(v), img * 0))
        for b in ref[1]
        for v, img in zip(b["video"], b["image"], strict=True)
    )
    one = ds[(1, 5)]["image"]
    assert torch.equal(one, ds[(1, 5)]["image"]) and not torch.equal(one, ds[(2, 5)]["image"])


def test_the_training_loader_keeps_its_workers(demo_datamodule):
    dm = demo_datamodule
    workers, persistent = dm.num_workers, dm.persistent_workers
    try:
        dm.num_workers = 2
        assert dm.train_dataloader().persistent_workers and dm.val_dataloader().persistent_workers
        dm.persistent_workers = False
        assert not dm.train_dataloader().persistent_workers
        assert dm.train_dataloader().sampler.keys  # (epoch, index) keys either way
    finally:
        dm.num_workers, dm.persistent_workers = workers, persistent


# --------------------------------------------------------------------------- validation every N batches


class _CountingModel(BoringModel):
    def __init__(self):
        super().__init__()
        self.validated_at: list[int] = []

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at.append(self.trainer.global_step)


@pytest.mark.parametrize(
    ("max_steps", "every_n_epoch", "interval", "validated"),
    [
        (5, 1, 1.0, [5]),  # shorter than the 8-batch epoch: never validated without the callback
        (11, 1, 1.0, [8, 11]),  # the epoch end, then the 3 steps after it
        (5, None, 2, [2, 4, 5]),
        (6, None, 2, [2, 4, 6]),  # the last step is validated anyway: once
    ],
)
def test_the_last_step_is_validated_once(tmp_path, max_steps, every_n_epoch, interval, validated):
    from lightning import Trainer

    from lmguide.training.callbacks import ValidateLastStep

    model = _CountingModel()
    train = DataLoader(RandomDataset(32, 8), batch_size=1)  # 8 batches per epoch
    val = DataLoader(RandomDataset(32, 2), batch_size=1)
    trainer = Trainer(
        max_steps=max_steps,
        check_val_every_n_epoch=every_n_epoch,
        val_check_interval=interval,
        callbacks=[ValidateLastStep()],
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, train, val)
    assert trainer.global_step == max_steps and model.validated_at == validated


def test_a_fit_restored_at_an_epoch_end_goes_on_as_the_uninterrupted_one(tmp_path):
    """Validation every 3 batches, 2 batches per epoch: restored from the end of epoch 0, the fit
    starts epoch 1 (its start hook included) and validates after the same steps; plain Lightning
    trains one extra batch in epoch 0 instead (the first case)."""
    from lightning import Callback, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lmguide.runs.resume import restart_after_epoch_end

    class Events(Callback):
        def __init__(self):
            self.seen: list[tuple] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.seen.append(("epoch", trainer.current_epoch))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append(("batch", trainer.current_epoch, trainer.global_step, batch_idx))

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.seen.append(("val", trainer.global_step))

    def fit(max_steps: int, patched: bool, ckpt: Path | None = None) -> list[tuple]:
        events = Events()
        last = ModelCheckpoint(dirpath=tmp_path, filename="last", save_on_train_epoch_end=True)
        trainer = Trainer(
            max_steps=max_steps,
            check_val_every_n_epoch=None,
            val_check_interval=3,
            callbacks=[last, events],
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        if patched:
            restart_after_epoch_end(trainer)
        loaders = [DataLoader(RandomDataset(32, 2), batch_size=1) for _ in range(2)]
        trainer.fit(BoringModel(), *loaders, ckpt_path=ckpt)
        return events.seen

    full = fit(8, True)
    assert full[:3] == [("epoch", 0), ("batch", 0, 0, 0), ("batch", 0, 1, 1)]
    for patched in (False, True):
        (tmp_path / "last.ckpt").unlink(missing_ok=True)
        assert fit(2, patched) == full[:3]
        resumed = fit(8, patched, tmp_path / "last.ckpt")
        assert (resumed == full[3:]) is patched
        assert patched or resumed[0] == ("batch", 0, 2, 2)  # Lightning alone: a 3rd batch in epoch 0


# 2 batches per epoch, validation every 3 batches (mid-epoch), 2 persistent loader workers
RUN = [
    "attention.num_maps=2",
    "+trainer.limit_train_batches=2",
    "trainer.check_val_every_n_epoch=null",
    "trainer.val_check_interval=3",
    *KILL_DATA,
]
STEPS = 8


def _train(run: Path, extra: list[str], cache_dir: Path) -> None:
    proc = run_cli("lmguide.train", [*RUN, *extra, f"hydra.run.dir={run}"], run.parent, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _validated_steps(run: Path) -> list[int]:
    import csv

    rows = [r for f in sorted(run.glob("csv/**/metrics.csv")) for r in csv.DictReader(f.open())]
    return sorted({int(r["step"]) for r in rows if r.get("val/auc")})


@pytest.fixture(scope="module")
def reference(cache_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ref_interval") / "run"
    _train(run, [f"trainer.max_steps={STEPS}"], cache_dir)
    return run


@pytest.mark.slow
def test_validation_every_n_batches_steps_the_plateau_per_validation(reference):
    ckpt = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS and ckpt["epoch"] == STEPS // 2 - 1
    # validations after batches 3 and 6 (mid-epoch: epochs hold 2), none at the other epoch ends
    # and one after the last step (ValidateLastStep): the step logged with a validation is 0-based;
    # then the best checkpoint is validated again after the fit (logged at step 8)
    *during_fit, again = _validated_steps(reference)
    assert during_fit == [2, 5, 7] and again == STEPS
    assert ckpt["lmguide_plateau"]["last_epoch"] == 3  # patience counts validations


@pytest.mark.slow
def test_kill_9_with_mid_epoch_validations_then_resume_equals_an_uninterrupted_run(
    reference, cache_dir, tmp_path
):
    rng = random.Random(14)
    for trial, min_step in enumerate((4,)):  # the 3rd of 4 epochs (test_resume's kill test: the 2nd)
        run = tmp_path / f"run{trial}"
        run.parent.mkdir(parents=True, exist_ok=True)
        args = [*RUN, f"trainer.max_steps={STEPS}"]
        step = kill_during_training(args, run, run.parent, cache_dir, min_step, rng.uniform(0.0, 1.0))
        assert 0 < step < STEPS and not (run / "metrics.json").exists()
        proc = run_cli("lmguide.train", [f"resume={run}"], tmp_path, cache_dir)
        assert proc.returncode == 0, proc.stderr[-3000:]
        a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
        a.pop("wall_time_s"), b.pop("wall_time_s")
        assert a == pytest.approx(b, abs=1e-6)
        ca, cb = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (run, reference))
        assert ca["global_step"] == cb["global_step"] == STEPS
        for k, v in ca["state_dict"].items():
            torch.testing.assert_close(v, cb["state_dict"][k], rtol=0, atol=1e-6, msg=k)
        assert ca["lmguide_plateau"] == cb["lmguide_plateau"]
        sa, sb = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
        for i in sa:
            torch.testing.assert_close(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"], rtol=0, atol=1e-7)


@pytest.mark.slow
def test_bench_run_splits_the_wall_time(cache_dir, tmp_path):
    out = tmp_path / "run.json"
    run = [o for o in RUN[:4] if not o.startswith("attention.num_maps")]  # the demo job: per_head, 3 maps
    args = ["run", "--steps", "4", "--out", str(out), *run, *FAST_DATA, "trainer.log_every_n_steps=1"]
    proc = run_cli("lmguide.bench", args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    phases = rep["phases_s"]
    assert rep["steps"] == 4 and rep["epochs"] == 2 and rep["validations"] == 2  # after 3 and 4
    assert phases["training steps"] > 0 and phases["validation"] > 0 and phases["loader start-up"] > 0
    assert sum(phases.values()) == pytest.approx(rep["wall_s"], rel=1e-6)
    assert rep["everything_but_steps_share"] == pytest.approx(1 - phases["training steps"] / rep["wall_s"])
    assert "everything but the training steps:" in proc.stdout


# --------------------------------------------------------------------------- attention overlays


@pytest.mark.parametrize(
    ("labels", "drawn"),
    [
        ([0, 1, 0, 1], [0, 1]),  # self-blended fakes: a real face and the fake made from it
        ([0, 0, 0, 1, 1], [0, 3]),  # folder/CSV/FF++ layouts: reals first, then fakes
        ([1, 1, 0], [2, 0]),  # real first in the panel wherever it sits
        ([0, 0], [0]),  # one class: its first item
    ],
)
def test_overlay_items_are_one_real_and_one_fake_whatever_the_layout(labels, drawn):
    from lmguide.training.callbacks import overlay_items

    assert overlay_items(labels) == drawn


def test_the_overlay_draws_a_real_and_a_fake_of_a_layout_without_self_blends(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import cv2
    import hydra

    import lmguide.training.callbacks
    from lmguide.training.callbacks import AttentionOverlay
    from lmguide.viz.heat import render

    from .conftest import compose_cfg

    class Folder(torch.utils.data.Dataset):  # a folder layout's val split: 3 reals, then 2 fakes
        labels = [0, 0, 0, 1, 1]
        fakes = None

        def __init__(self):
            self.read: list[int] = []

        def __getitem__(self, i):
            self.read.append(i)
            g = torch.Generator().manual_seed(i)
            mask = torch.zeros(1, 64, 64)
            mask[:, 20:40, 20:40] = 1
            return {"image": torch.rand(3, 64, 64, generator=g), "mask": mask, "label": self.labels[i]}

    model = hydra.utils.instantiate(compose_cfg(["attention.num_maps=2"], tmp_path).model)
    ds = Folder()
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        global_step=5,
        loggers=[],
        datamodule=SimpleNamespace(datasets={"val": ds}),
    )
    drawn = []  # the text of each figure drawn

    def spy(fig):
        drawn.append([" ".join(t.get_text().split()) for t in fig.texts])
        return render(fig)

    monkeypatch.setattr(lmguide.training.callbacks, "render", spy)
    cb = AttentionOverlay(str(tmp_path / "overlays"))
    cb.on_validation_epoch_end(trainer, model)
    assert ds.read == [0, 3]
    panel = cv2.imread(str(cb.last_path))
    one = AttentionOverlay(str(tmp_path / "one"))
    Folder.labels = [0, 0]
    one.on_validation_epoch_end(trainer, model)
    assert panel.shape[0] > cv2.imread(str(one.last_path)).shape[0] + 64  # two rows: real, then fake
    rows = [t.split()[0] for t in drawn[0] if "P(fake)=" in t]
    assert rows == ["real", "fake"]
    assert {"face", "mean of 2 maps", "map 0", "map 1"} <= set(drawn[0])  # the columns say what they are
    assert any(t.startswith("validation at step 5: attention maps") for t in drawn[0])
    assert all(w.startswith(("step 5, real face: ", "step 5, fake face: ")) for w in cb.last_warnings)
