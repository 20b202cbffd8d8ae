"""What a checkpoint may say about the run that wrote it: names and plain values, never code.

A checkpoint is a shared file: people download them. Its tensors are read with
``torch.load(weights_only=True)``, and its *config* is treated the same way. The model is rebuilt only
from this repository's own config files (``conf/``):

* a recorded group choice must name a file of that group in ``conf/`` (``backbone=vit`` means
  ``conf/backbone/vit.yaml``; ``../x`` or an unknown name is refused);
* a recorded override must set a key that names no Hydra instantiation key (``_target_``,
  ``_partial_``, ``_args_``, ``_convert_``, ``_recursive_``) to a plain value: a number, a string, a
  bool, null, or a list/dict of those; no interpolation (``${...}``: resolvers are code), no sweep,
  no ``hydra.*`` key, no ``@package``;
* after composing, every ``_target_`` in the whole config must be one that appears in ``conf/``.

The resolved config a checkpoint also stores (``lmguide_config``) is never used to build anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

from lmguide.runs.cli import check_renamed, moved
from lmguide.runs.errors import LmguideError
from lmguide.runs.runtime import CONF_DIR

#: keys through which a config names or calls code (hydra.utils.instantiate)
SPECIAL_KEYS = ("_target_", "_partial_", "_args_", "_convert_", "_recursive_")


class UntrustedConfig(LmguideError, ValueError):
    """A recorded choice, override or target that the project's own config files do not allow."""


@lru_cache(maxsize=4)
def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, frozenset[str]]:
    """``{group: option names}`` for every config group under ``conf_dir`` (Hydra's own excluded)."""
    groups = {}
    for d in sorted(p for p in conf_dir.rglob("*") if p.is_dir()):
        group = d.relative_to(conf_dir).as_posix()
        if group == "hydra" or group.startswith("hydra/"):
            continue
        groups[group] = frozenset(p.stem for p in d.glob("*.yaml"))
    return groups


@lru_cache(maxsize=4)
def allowed_targets(conf_dir: Path = CONF_DIR) -> frozenset[str]:
    """Every ``_target_`` written in the project's config files: the only code a config may name."""
    import yaml

    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k == "_target_" and isinstance(v, str):
                    found.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in sorted(conf_dir.rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return frozenset(found)


def _plain(value, where: str) -> None:
    """Refuse anything but scalars and lists/dicts of them, interpolations and instantiation keys."""
    if value is None or isinstance(value, bool | int | float):
        return
    if isinstance(value, str):
        if "${" in value:
            raise UntrustedConfig(f"{where}: value {value!r} is an interpolation (resolvers run code)")
        return
    if isinstance(value, list | tuple):
        for v in value:
            _plain(v, where)
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or any(s in k for s in SPECIAL_KEYS) or "${" in k:
                raise UntrustedConfig(f"{where}: key {k!r} inside the value is not allowed")
            _plain(v, where)
        return
    raise UntrustedConfig(f"{where}: value of type {type(value).__name__} is not a plain value")


def _check_choice(group: str, choice, where: str) -> None:
    groups = config_groups()
    if group not in groups:
        raise UntrustedConfig(f"{where}: {group!r} is not a config group of conf/")
    if choice is None:
        return
    if not isinstance(choice, str) or choice not in groups[group]:
        raise UntrustedConfig(
            f"{where}: {group}={choice!r} names no file conf/{group}/<name>.yaml "
            f"(known: {', '.join(sorted(groups[group]))})"
        )


def safe_replay(recorded) -> list[str]:
    """The Hydra overrides that rebuild a recorded run (``{"choices": …, "overrides": […]}``), each
    checked as the module docstring says; raises :class:`UntrustedConfig` naming the offending entry."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException

    if not isinstance(recorded, Mapping) or set(recorded) - {"choices", "overrides"}:
        raise UntrustedConfig("lmguide_overrides: expected only 'choices' and 'overrides'")
    choices = recorded.get("choices") or {}
    overrides = recorded.get("overrides") or []
    if not isinstance(choices, Mapping) or not isinstance(overrides, list | tuple):
        raise UntrustedConfig("lmguide_overrides: 'choices' must be a mapping and 'overrides' a list")
    replay = []
    for group, choice in choices.items():
        if group == "hydra" or str(group).startswith("hydra/"):
            continue  # Hydra's own groups are recorded by Hydra and never replayed
        _check_choice(str(group), choice, f"recorded choice {group}={choice!r}")
        if choice is not None:
            replay.append(f"{group}={choice}")
    parser = OverridesParser.create()
    groups = config_groups()
    overrides = [moved(t) if isinstance(t, str) else t for t in overrides]  # checkpoints of older keys
    check_renamed(overrides)
    for text in overrides:
        where = f"recorded override {text!r}"
        if not isinstance(text, str):
            raise UntrustedConfig(f"{where}: not a string")
        try:
            ov = parser.parse_override(text)
        except HydraException as err:
            raise UntrustedConfig(f"{where}: not a valid override ({str(err).splitlines()[0]})") from None
        key = ov.key_or_group
        if any(s in key for s in SPECIAL_KEYS):
            raise UntrustedConfig(f"{where}: key {key!r} names a Hydra instantiation key")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise UntrustedConfig(f"{where}: Hydra's own settings are never taken from a checkpoint")
        if ov.package is not None:
            raise UntrustedConfig(f"{where}: @package overrides are not replayed")
        if ov.value_type is not None and ov.value_type != ValueType.ELEMENT:
            raise UntrustedConfig(f"{where}: a sweep is not a value")
        if key in groups:
            _check_choice(key, ov.value(), where)
        else:
            _plain(ov.value(), where)
        replay.append(text)
    return replay


def _targets(node, path: str = "") -> Iterable[tuple[str, object]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            if k == "_target_":
                yield here, v
            yield from _targets(v, here)
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from _targets(v, f"{path}[{i}]")


def check_targets(cfg) -> None:
    """Every ``_target_`` in ``cfg`` (a DictConfig or mapping; ``hydra`` excluded) must be one of the
    project's own (:func:`allowed_targets`), written literally (not an interpolation)."""
    from omegaconf import DictConfig, OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    allowed = allowed_targets()
    for where, target in _targets({k: v for k, v in tree.items() if k != "hydra"}):
        if not isinstance(target, str) or target not in allowed:
            raise UntrustedConfig(
                f"{where}={target!r} is not a target of lmguide's config files (conf/); refusing to build it"
            )


def compose_train_config(overrides: list[str]):
    """``conf/train.yaml`` composed with ``overrides``, inside an lmguide ``@hydra.main`` (whose search
    path is ``conf/``) or outside one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=overrides)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)
