"""Sweeper and launcher configs: Optuna over λ/lr/weights, joblib on one machine, SLURM via submitit.

Composition is checked in the fast tier; each plugin runs a real (tiny) sweep in the slow tier, the
SLURM launcher through submitit's local executor (the same launcher code, no cluster)."""

from __future__ import annotations

import json

import pytest
import yaml
from hydra import compose, initialize_config_dir

from lmguide.runs.runtime import CONF_DIR
from tests.conftest import FAST_DATA, run_cli


def _compose(overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, "paths.output_dir=/tmp/x"], return_hydra_config=True)


def test_optuna_search_space_and_objective():
    cfg = _compose(["hparams_search=optuna"])
    sw = cfg.hydra.sweeper
    assert sw._target_.endswith("OptunaSweeper") and sw.direction == "maximize"
    assert set(sw.params) == {"loss.lambda_lm", "optim.lr", "loss.w_crop", "loss.w_drop"}
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"


def test_sweep_lambda_is_the_readme_grid():
    cfg = _compose(["sweep=lambda"])
    assert dict(cfg.hydra.sweeper.params) == {"loss.lambda_lm": "0,0.1,0.3,1.0", "seed": "0,1,2"}
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"


def test_slurm_tasks_follow_the_trainer_devices():
    cfg = _compose(["launcher=submitit_slurm", "trainer.devices=8", "hydra.launcher.partition=gpu"])
    ln = cfg.hydra.launcher
    assert ln._target_.endswith("SlurmLauncher") and ln.partition == "gpu"
    assert ln.tasks_per_node == ln.gpus_per_node == cfg.trainer.devices == 8 and ln.nodes == 1
    # sized per GPU (one task each): CPUs for its loader workers, memory per GPU, requeued when preempted
    assert ln.cpus_per_task > cfg.data.num_workers >= 8 and ln.mem_per_gpu and ln.mem_gb is None
    assert ln.additional_parameters.requeue is True and ln.signal_delay_s > 0 and ln.max_num_timeout > 0


def test_slurm_job_script_asks_per_gpu_resources_and_a_requeue(tmp_path, monkeypatch):
    """The sbatch script submitit writes from conf/launcher/submitit_slurm.yaml, built as the Hydra plugin
    builds it (a stub ``srun`` on PATH stands in for the cluster)."""
    import os

    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    cfg = _compose(["launcher=submitit_slurm", "trainer=ddp", "hydra.launcher.partition=gpu"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params = {k: v for k, v in params.items() if k not in ("_target_", "submitit_folder")}
    timeouts = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path, slurm_max_num_timeout=timeouts)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m lmguide.train", "%j")
    for line in ("--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=12", "--mem-per-gpu=64G"):
        assert f"#SBATCH {line}\n" in script
    assert "#SBATCH --requeue\n" in script and "#SBATCH --signal=USR2@120\n" in script
    assert "--mem=" not in script  # memory per GPU, not a fixed amount per node


def test_joblib_jobs_get_a_device_each():
    cfg = _compose(["launcher=joblib"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    assert cfg.trainer.devices == 1  # no GPU here (a job k gets [k mod n] where there are n GPUs)


def _sweep(tmp_path, cache_dir, args: list[str]):
    proc = run_cli(
        "lmguide.train",
        [*args, "trainer.fast_dev_run=true", *FAST_DATA, f"hydra.sweep.dir={tmp_path}"],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    for j in jobs:
        assert "val/auc" in json.loads((j / "metrics.json").read_text()), j
    assert (tmp_path / "sweep_report.md").exists()
    return jobs


@pytest.mark.slow
def test_optuna_runs_trials_and_reports_the_best(tmp_path, cache_dir):
    jobs = _sweep(tmp_path, cache_dir, ["hparams_search=optuna", "hydra.sweeper.n_trials=2"])
    assert len(jobs) == 2
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    aucs = [json.loads((j / "metrics.json").read_text())["val/auc"] for j in jobs]
    assert best["best_value"] == pytest.approx(max(aucs)) and 0 <= best["best_params"]["loss.lambda_lm"] <= 1


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes(tmp_path, cache_dir):
    jobs = _sweep(tmp_path, cache_dir, ["-m", "launcher=joblib", "loss.lambda_lm=0,1"])
    assert [j.name for j in jobs] == ["0", "1"]


@pytest.mark.slow
def test_submitit_local_executor_runs_the_slurm_code_path(tmp_path, cache_dir):
    jobs = _sweep(tmp_path, cache_dir, ["-m", "launcher=submitit_local", "loss.lambda_lm=0.3"])
    assert len(jobs) == 1 and list((tmp_path / ".submitit").iterdir())
