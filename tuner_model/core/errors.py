"""Errors the library raises on purpose. Each carries a one-line message meant for a user."""


class TunerError(Exception):
    """Base class: anything the CLI or the API may show to a user as it is."""


class ImageError(TunerError):
    """The input image is missing, unreadable, of an unsupported kind or too large."""


class BlobError(TunerError):
    """A blob is malformed, truncated, corrupted, of a foreign kind or asks for too much."""


class Stopped(TunerError):
    """Work stopped from outside (core/stop.py): the reason is the message."""


class FitCancelled(Stopped):
    """An encode (or one image of a batch) was cancelled by its caller's check (core/stop.py)."""


class ConfigError(TunerError, ValueError):
    """A model or fit parameter is out of range."""
