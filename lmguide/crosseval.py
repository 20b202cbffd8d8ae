"""Score one checkpoint on several data sets, one table: ``python -m lmguide.crosseval ckpt_path=...
sets=[celebdf,dfdc] 'roots={celebdf:/data/Celeb-DF-v2,dfdc:/data/dfdc}'``.

Each set is a layout of ``conf/data/`` (any ``conf/data/<layout>.yaml``; a set of another name is given
its layout in ``layouts``), its root in ``roots`` and further overrides of its data in
``set_overrides``; ``overrides`` apply to every set. The checkpoint's training config is re-composed
with each set's data (as ``lmguide.eval data=<layout>`` does), the set's cache prepared (or reused),
and its ``split`` (test) scored by :mod:`lmguide.evaluation.scoring`, the path eval uses: the same faces give
the same numbers, under the same keys (``auc``, ``video_auc``, ``cal_acc``, ...). No validation split is
needed or scored: ``cal_*`` is taken at the threshold the checkpoint stores (training's, calibrated on its
own validation split), never calibrated on a set scored here; a checkpoint without one gets no ``cal_*``,
and a warning says so.

Writes into the run directory (``logs/crosseval/runs/<date>``): ``crosseval.md`` and
``crosseval.json`` (:mod:`lmguide.evaluation.crosseval_table`: per set frame and video AUC with people-level
bootstrap intervals, EER, AP, ACC, videos, frames, and the frames without a face), and
``predictions.csv`` (one row per scored frame, its ``split`` column the set's name).

``runs=<training run or multirun folder>`` scores every job's ``checkpoints/best.ckpt`` instead and
writes each job's table into ``<job>/crosseval/``; ``python -m lmguide.sweep_report <folder>`` then
pairs the jobs by seed per set (``<set>/auc``, ``<set>/video_auc``, and on the same faces).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from lmguide.runs.cli import check_argv, friendly_errors
from lmguide.runs.errors import ConfigError, LmguideError
from lmguide.runs.runtime import CONF_DIR

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class SetError(LmguideError):
    """A data set of the table that cannot be built or scored; the message names the set."""


@dataclass(frozen=True)
class DataSet:
    name: str
    layout: str
    root: str | None
    overrides: tuple[str, ...]


def layouts_available() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem != "base")


def _mapping(cfg: DictConfig, key: str) -> dict:
    value = cfg.get(key)
    if value is None:
        return {}
    if not isinstance(value, DictConfig):
        raise ConfigError(f"{key} must be a mapping of set name to value, e.g. '{key}={{celebdf:...}}'")
    return {str(k): v for k, v in value.items()}


def plan_sets(cfg: DictConfig) -> list[DataSet]:
    """The sets of ``cfg`` (``sets``, ``roots``, ``layouts``, ``set_overrides``), each checked: a known
    layout, a plain unique name that is no training split, no root or override for a set not listed."""
    from lmguide.evaluation.crosseval_table import RESERVED

    sets = None if OmegaConf.is_missing(cfg, "sets") else cfg.sets
    names = [str(sets)] if isinstance(sets, str) else [str(s) for s in sets or []]
    if not isinstance(sets, str | ListConfig) or not names:
        raise ConfigError("sets must list the data sets to score, e.g. sets=[celebdf,dfdc]")
    roots, layouts, extra = (_mapping(cfg, k) for k in ("roots", "layouts", "set_overrides"))
    for key, mapping in (("roots", roots), ("layouts", layouts), ("set_overrides", extra)):
        if stray := [k for k in mapping if k not in names]:
            raise ConfigError(
                f"{key}.{stray[0]}: no set {stray[0]!r} in sets={names}; add it to sets or fix the name"
            )
    known = layouts_available()
    out = []
    for name in names:
        if not _NAME.fullmatch(name) or name in RESERVED:
            raise ConfigError(
                f"sets: {name!r} cannot name a set (letters, digits, _ . -; not one of {list(RESERVED)})"
            )
        layout = str(layouts.get(name, name))
        if layout not in known:
            where = f"layouts.{name}={layout}" if name in layouts else f"sets: {name}"
            raise ConfigError(
                f"{where} is no data layout (conf/data/<layout>.yaml); known: {', '.join(known)}; a set of "
                f"another name takes its layout from 'layouts={{{name}:<layout>}}'"
            )
        more = extra.get(name)
        more = [] if more is None else [str(o) for o in more] if isinstance(more, ListConfig) else [str(more)]
        root = roots.get(name)
        out.append(DataSet(name, layout, None if root is None else str(root), tuple(more)))
    if len({s.name for s in out}) < len(out):
        raise ConfigError(f"sets={names} names a set twice; give the second its own name and 'layouts='")
    return out


def set_overrides(ds: DataSet, common) -> list[str]:
    """The overrides of the checkpoint's training config that make it score ``ds``."""
    quoted = None if ds.root is None else ds.root.replace("'", "\\'")  # a path with , [ ] or spaces
    root = [] if quoted is None else [f"data.root='{quoted}'"]
    # every face of the set is scored as its split: no held-out sources of the training data
    return [f"data={ds.layout}", *root, "data.test_sources=null", *[str(o) for o in common], *ds.overrides]


def _set_error(ds: DataSet, err: Exception) -> SetError:
    from lmguide.data.layouts.base import MissingRoot

    if isinstance(err, MissingRoot):
        return SetError(
            f"set {ds.name} (data={ds.layout}) has no root: give it as 'roots={{{ds.name}:/path/to/it}}'"
        )
    return SetError(f"set {ds.name} (data={ds.layout}): {err}")


def _datamodule(ckpt: dict, ckpt_path, ds: DataSet, common, split: str, out_dir: Path, cache: dict):
    """The set's data module, set up (one per distinct data config: the jobs of a sweep share it)."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    from lmguide.evaluation.scoring import build_datamodule
    from lmguide.training.checkpoint import checkpoint_config

    try:
        run_cfg = checkpoint_config(ckpt, set_overrides(ds, common), out_dir, source=ckpt_path)
        key = OmegaConf.to_yaml(run_cfg.data, resolve=True)
        if key not in cache:
            cache[key] = build_datamodule(run_cfg, [split])
    except InstantiationException as err:
        raise _set_error(ds, err.__cause__ or err) from None
    except (LmguideError, OmegaConfBaseException) as err:
        raise _set_error(ds, err) from None
    return cache[key]


def score_checkpoint(
    cfg: DictConfig, ckpt_path, sets: list[DataSet], out_dir: Path, cache: dict | None = None
) -> dict:
    """Score ``ckpt_path`` on every set; writes the table and ``predictions.csv`` into ``out_dir`` and
    returns the table (:mod:`lmguide.evaluation.crosseval_table`)."""
    from lmguide.evaluation import crosseval_table
    from lmguide.evaluation.metrics import score_split
    from lmguide.evaluation.predictions import NAME, write_predictions
    from lmguide.evaluation.scoring import (
        manifest_counts,
        model_threshold,
        scoring_device,
        split_metrics,
        unit_of,
    )
    from lmguide.training.checkpoint import load_model, read_checkpoint

    cache = {} if cache is None else cache
    where = scoring_device(cfg.get("device"), cfg.get("precision"))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = read_checkpoint(ckpt_path)
    model, _ = load_model(ckpt_path, output_dir=out_dir)  # as trained: no set's data changes it
    threshold, note = model_threshold(model)  # the stored one, or None (and a warning): never calibrated here
    unit = unit_of(model)
    rows, full, scored = [], {}, {}
    for ds in sets:
        dm = _datamodule(ckpt, ckpt_path, ds, cfg.overrides, cfg.split, out_dir, cache)
        data = dm.datasets.get(cfg.split)
        if data is None or len(data) == 0:
            raise SetError(
                f"set {ds.name} (data={ds.layout}) has no usable face in its {cfg.split} split "
                f"({manifest_counts(dm, cfg.split)['manifest_rows']} manifest rows): check its root, or "
                "score another split= (a folder tree without split folders holds a hash share out as test)"
            )
        log.info("scoring %s (data=%s): %d %ss", ds.name, ds.layout, len(data), unit)
        res = scored[ds.name] = score_split(
            model, data, dm.eval_batch_size, num_workers=dm.num_workers, **where
        )
        # the set's row: the statistics without a split, the set's name standing for it
        metrics = split_metrics(res, unit, threshold, cfg.video_agg, int(cfg.seed))
        metrics.update(manifest_counts(dm, cfg.split))
        full[ds.name] = {"layout": ds.layout, "root": ds.root, "overrides": set_overrides(ds, cfg.overrides)}
        full[ds.name]["metrics"] = metrics
        rows.append(crosseval_table.table_row(ds.name, ds.layout, ds.root, metrics, unit))
    table = {
        "ckpt_path": str(ckpt_path),
        "split": cfg.split,
        "unit": unit,
        "video_agg": cfg.video_agg,
        "threshold": threshold,
        "threshold_note": note,
        "rows": rows,
        "sets": full,
    }
    crosseval_table.write(out_dir, table)
    write_predictions(out_dir / NAME, scored)  # its split column: the set's name
    return table


def run_jobs(root) -> tuple[list[Path], list[Path]]:
    """``(checkpoints, jobs without one)`` of a training run or multirun folder: every job directory
    (``.hydra/overrides.yaml``) and its ``checkpoints/best.ckpt``."""
    from lmguide.runs.errors import InputMissing

    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputMissing(f"runs={root} is not a folder: give a training run or multirun folder")
    jobs = sorted({p.parent.parent for p in root.glob("**/.hydra/overrides.yaml")})
    found = [j / "checkpoints" / "best.ckpt" for j in jobs if (j / "checkpoints" / "best.ckpt").is_file()]
    missing = [j for j in jobs if not (j / "checkpoints" / "best.ckpt").is_file()]
    if not found:
        raise InputMissing(f"runs={root} holds no training job with checkpoints/best.ckpt")
    return found, missing


def crosseval(cfg: DictConfig) -> list[dict]:
    """Every table the command writes (one, or one per job of ``runs=``)."""
    from lmguide.evaluation.crosseval_table import FOLDER, JSON

    if cfg.video_agg not in ("mean", "max"):
        raise ConfigError(f"video_agg must be mean or max, got {cfg.video_agg!r}")
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got {cfg.split!r}")
    if bool(cfg.ckpt_path) == bool(cfg.runs):
        raise ConfigError("give one of ckpt_path=<file.ckpt> (one checkpoint) or runs=<training run folder>")
    sets = plan_sets(cfg)
    out_dir = Path(cfg.paths.output_dir)
    if cfg.ckpt_path:
        table = score_checkpoint(cfg, cfg.ckpt_path, sets, out_dir)
        _print(table, out_dir)
        return [table]
    ckpts, missing = run_jobs(cfg.runs)
    done = [c.parent.parent for c in ckpts if (c.parent.parent / FOLDER / JSON).exists()]
    if done and not cfg.overwrite:
        raise ConfigError(
            f"{done[0] / FOLDER} exists ({len(done)} job(s) scored before): give overwrite=true to replace"
        )
    cache: dict = {}
    tables = []
    for ckpt in ckpts:
        job_out = ckpt.parent.parent / FOLDER
        tables.append(score_checkpoint(cfg, ckpt, sets, job_out, cache))
        _print(tables[-1], job_out)
    for job in missing:
        print(f"not scored: {job} has no checkpoints/best.ckpt (a failed or unfinished job)")
    print(f"{len(ckpts)} checkpoint(s) scored; pair them per set: python -m lmguide.sweep_report {cfg.runs}")
    return tables


def _print(table: dict, out_dir: Path) -> None:
    from lmguide.evaluation.crosseval_table import markdown

    print(markdown(table), end="")
    print(f"written to {out_dir}: crosseval.md crosseval.json predictions.csv")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="crosseval")
@friendly_errors
def main(cfg: DictConfig) -> None:
    crosseval(cfg)


if __name__ == "__main__":
    check_argv()
    main()
