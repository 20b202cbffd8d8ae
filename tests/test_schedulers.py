"""LR schedulers: the cosine schedule's values, how the module hands each scheduler to Lightning, the
min-lr stop (plateau only) and a short cosine run through the CLI."""

from __future__ import annotations

import math
from types import SimpleNamespace

import hydra
import pytest
import torch

from lmguide.training.callbacks import MinLRStopping

from .conftest import FAST_DATA, compose_cfg, run_cli


def _lrs(scheduler_partial, steps: int, lr: float = 0.1) -> list[float]:
    """The lr used by each of ``steps`` optimizer steps (scheduler stepped after each, as Lightning does)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = scheduler_partial(optimizer=opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_config_warms_up_linearly_then_decays_to_the_floor_at_max_steps(tmp_path):
    cfg = compose_cfg(
        [
            "scheduler=cosine",
            "trainer.max_steps=20",
            "scheduler.warmup_steps=4",
            "scheduler.min_lr_factor=0.1",
        ],
        tmp_path,
    )
    assert cfg.scheduler.total_steps == 20  # ${trainer.max_steps}
    lrs = _lrs(hydra.utils.instantiate(cfg.scheduler), steps=23, lr=0.1)
    expected = {
        0: 0.1 * 1 / 4,  # warm-up: (s + 1) / W
        1: 0.1 * 2 / 4,
        3: 0.1,  # last warm-up step: full lr
        4: 0.1,  # cosine starts at the full lr
        8: 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))),  # a quarter of the decay
        12: 0.1 * (0.1 + 0.9 * 0.5),  # half-way: the mean of lr and floor
        19: 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 15 / 16))),  # the last step of the run
        20: 0.01,  # floor at trainer.max_steps
        22: 0.01,  # and it stays there
    }
    for step, lr in expected.items():
        assert lrs[step] == pytest.approx(lr, rel=1e-9), step
    decay = lrs[4:21]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))


def test_cosine_without_warm_up_starts_at_the_full_lr():
    from lmguide.training.schedulers import warmup_cosine

    lrs = _lrs(lambda optimizer: warmup_cosine(optimizer, total_steps=10), steps=11, lr=1.0)
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"total_steps": -1}, "max_steps"),
        ({"total_steps": 10, "warmup_steps": 10}, "warmup_steps"),
        ({"total_steps": 10, "min_lr_factor": 2.0}, "min_lr_factor"),
    ],
)
def test_cosine_refuses_bad_settings_by_name(kwargs, match):
    from lmguide.training.schedulers import warmup_cosine

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=match):
        warmup_cosine(opt, **kwargs)


@pytest.mark.parametrize("scheduler", ["plateau", "cosine"])
def test_configure_optimizers_steps_each_scheduler_at_its_interval(scheduler, tmp_path):
    cfg = compose_cfg([f"scheduler={scheduler}", "attention.num_maps=2"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    conf = model.configure_optimizers()
    if scheduler == "cosine":  # a schedule in optimizer steps: Lightning steps it after each one
        assert isinstance(conf["optimizer"], torch.optim.Adam) and model.plateau is None
        sched = conf["lr_scheduler"]
        assert isinstance(sched["scheduler"], torch.optim.lr_scheduler.LambdaLR)
        assert sched["interval"] == "step" and "monitor" not in sched
        return
    # plateau: stepped by the module after every validation of a fit (its patience counts validations),
    # before any checkpoint of that point is written (Lightning would step it after the epoch's last.ckpt)
    assert isinstance(conf, torch.optim.Adam)
    assert (
        isinstance(model.plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
        and model.plateau.optimizer is conf
    )

    def trainer(sanity: bool = False, fn: str = "fit", metrics: dict | None = None):
        return SimpleNamespace(
            callback_metrics=metrics or {}, sanity_checking=sanity, state=SimpleNamespace(fn=fn)
        )

    values = {"val/loss": torch.tensor(0.7), "val/auc": torch.tensor(0.5)}
    for skipped in (trainer(sanity=True), trainer(fn="validate")):  # the sanity check, trainer.validate()
        model._trainer = skipped
        model._step_plateau(values)
    assert model.plateau.last_epoch == 0
    model._trainer = trainer()
    model._step_plateau(values)
    model._step_plateau({**values, "val/loss": torch.tensor(0.9)})  # once per validation
    assert model.plateau.last_epoch == 2 and model.plateau.best == pytest.approx(0.7)
    assert model.plateau.num_bad_epochs == 1
    ckpt = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    again = hydra.utils.instantiate(cfg.model)
    again.on_load_checkpoint(ckpt)
    again.configure_optimizers()
    assert again.plateau.state_dict() == model.plateau.state_dict()
    with pytest.raises(KeyError, match="scheduler_monitor='val/loss' was not logged"):
        model._step_plateau({"val/auc": torch.tensor(0.5)})


def test_no_scheduler_returns_the_optimizer_alone(tmp_path):
    cfg = compose_cfg(["model.scheduler=null", "attention.num_maps=2"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    assert isinstance(model.configure_optimizers(), torch.optim.Adam)


def _flat_loss_run(scheduler_cfg: dict, lr: float, validations: int = 200) -> tuple[int | None, float]:
    """The project's plateau config stepped on a flat val loss after every validation, the min-lr stop
    checking after each, as in a fit: (the validation that stopped the run or None, the last lr)."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = hydra.utils.instantiate(scheduler_cfg)(optimizer=opt)
    module = SimpleNamespace(
        plateau=sched if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) else None
    )
    trainer = SimpleNamespace(
        optimizers=[opt],
        lr_scheduler_configs=[] if module.plateau else [SimpleNamespace(scheduler=sched)],
        should_stop=False,
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
    )
    stop = MinLRStopping(factor=1e-5)
    stop.on_train_start(trainer, module)
    for n in range(1, validations + 1):
        if module.plateau:
            module.plateau.step(1.0)  # val/loss never improves after the first validation
        else:
            opt.step()
            sched.step()
        stop.on_validation_end(trainer, module)
        if trainer.should_stop:
            return n, opt.param_groups[0]["lr"]
    return None, opt.param_groups[0]["lr"]


def _scheduler_cfg(name: str, tmp_path, *overrides: str) -> dict:
    return compose_cfg([f"scheduler={name}", *overrides], tmp_path).model.scheduler


@pytest.mark.parametrize("lr", [1e-4, 3e-4, 1e-3])
def test_min_lr_stop_fires_when_the_real_plateau_reaches_its_floor(lr, tmp_path):
    # patience 10: the first validation sets the best, each cut takes 11 more; 5 cuts of x0.1 reach 1e-5
    n, last = _flat_loss_run(_scheduler_cfg("plateau", tmp_path), lr)
    assert n == 1 + 5 * 11 and last == pytest.approx(lr * 1e-5, rel=1e-9)


def test_min_lr_stop_honours_a_higher_plateau_min_lr(tmp_path):
    n, last = _flat_loss_run(_scheduler_cfg("plateau", tmp_path, "+scheduler.min_lr=1e-6"), 1e-4)
    assert n == 1 + 2 * 11 and last == pytest.approx(1e-6)


def test_min_lr_stop_refuses_an_eps_that_holds_the_lr_above_its_floor(tmp_path):
    from lmguide.runs.errors import ConfigError

    # PyTorch's default eps (1e-8) skips the last cut 1e-8 -> 1e-9: the stop could never fire
    with pytest.raises(ConfigError, match="scheduler.eps=1e-08 .* set scheduler.eps=0"):
        _flat_loss_run(_scheduler_cfg("plateau", tmp_path, "scheduler.eps=1e-8"), 1e-4)


def test_min_lr_stop_leaves_a_schedule_in_steps_alone(tmp_path):
    cfg = _scheduler_cfg("cosine", tmp_path, "scheduler.min_lr_factor=0.0", "trainer.max_steps=20")
    n, last = _flat_loss_run(cfg, 1e-4, validations=20)
    assert n is None and last == pytest.approx(0.0, abs=1e-12)  # at its own zero floor, still running


@pytest.mark.slow
def test_cli_fit_with_cosine_steps_the_schedule_every_optimizer_step(cache_dir, tmp_path):
    args = [
        "scheduler=cosine",
        "scheduler.warmup_steps=1",
        "scheduler.min_lr_factor=0.5",
        "trainer.max_steps=4",
        "+trainer.limit_train_batches=2",  # 2 epochs of 2 steps: per-epoch stepping would stop at 2
        "attention.num_maps=2",
        "test=false",
        *FAST_DATA,
        f"hydra.run.dir={tmp_path}",
    ]
    proc = run_cli("lmguide.train", args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 4 and ckpt["epoch"] == 1
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 4  # one scheduler step per optimizer step
    # after 4 steps with W=1, T=4: the floor, 0.5 x the Adam lr of conf/optim/adam.yaml
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.5e-4)
