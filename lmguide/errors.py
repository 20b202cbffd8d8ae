"""The one base class of the mistakes a user can fix: a bad path, value, file or config key.

The commands report an :class:`LmguideError` as one line (``error: …``) with exit code 1
(:func:`lmguide.cli.friendly_errors`); anything else is a bug and keeps its traceback.
"""


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
