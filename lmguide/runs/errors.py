"""The one base class of the mistakes a user can fix: a bad path, value, file or config key.

The commands report an :class:`LmguideError` as one line (``error: …``) with exit code 1
(:func:`lmguide.runs.cli.friendly_errors`); anything else is a bug and keeps its traceback.
:func:`require_number` is the one range check of a numeric config value.
"""

import math


class LmguideError(Exception):
    """An ordinary mistake; the message names the file or key and the fix."""


class ConfigError(LmguideError, ValueError):
    """A config value out of range or of the wrong type; the message names the key."""


class InputMissing(LmguideError, FileNotFoundError):
    """An input path that does not exist or holds nothing to work on; the message names it."""


class VisualizeError(LmguideError, RuntimeError):
    """An input that cannot be explained: missing or unreadable image, no face, no landmarks."""


class ExportError(LmguideError, RuntimeError):
    """A checkpoint that cannot be exported in the asked format, or an exported file that cannot be
    read back (the message names the reason)."""


def require_number(
    key: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    low_open: bool = False,
    high_open: bool = False,
    example=None,
):
    """``value`` checked as a finite number (a whole one with ``integer``) in the range ``low`` ..
    ``high`` (inclusive unless ``low_open`` / ``high_open``); an int with ``integer``, else a float.

    Anything else (a bool, a string, NaN, ∞, a value out of range) is a :class:`ConfigError` of one
    line that names ``key``, the range and a value that would do, e.g.
    ``optim.lr must be a number > 0, got -1 (e.g. optim.lr=0.001)``."""
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = number and (not integer or float(value).is_integer())
    ok = ok and (low is None or value > low or (not low_open and value == low))
    ok = ok and (high is None or value < high or (not high_open and value == high))
    if ok:
        return int(value) if integer else float(value)
    kind = "a whole number" if integer else "a number"
    if low is not None and high is not None:
        span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        span = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        span = f"{'<' if high_open else '<='} {high:g}"
    else:
        span = ""
    if example is None:
        example = _example(low, high, integer, low_open, high_open)
    what = f"{kind} {span}" if span else kind
    raise ConfigError(f"{key} must be {what}, got {value!r} (e.g. {key}={example})")


def _example(low, high, integer: bool, low_open: bool, high_open: bool):
    """A value inside the range, for the error message's fix."""
    if low is None:
        guess = 1 if high is None else (high - 1 if high_open or integer else high)
    elif not low_open:
        guess = low
    elif high is None:
        guess = math.floor(low) + 1 if integer else low + 1
    else:
        guess = (low + high) / 2
    return int(guess) if integer else f"{guess:g}"
