"""Errors raised by :mod:`crossfeed.encoders`.

Bad media is the caller's problem and never retriable (the same bytes fail the
same way); a missing model file or head version is a configuration problem.
"""

from __future__ import annotations

from crossfeed.exceptions import ConfigError, CrossfeedError, InvalidInputError


class EncoderError(CrossfeedError):
    """Base class of errors raised by the encoders package."""


class MediaDecodeError(InvalidInputError):
    """An image or video could not be decoded, or exceeds a size limit.

    Raised for corrupt data, unsupported formats, oversized files and
    decompression bombs. Never retriable: the same input fails the same way.
    """

    retriable = False


class ModelLoadError(ConfigError):
    """A tower (text or image model) could not be loaded from local files."""


class HeadVersionError(ConfigError):
    """A projection-head version is missing, malformed or fails its checksum."""


class TrainingError(EncoderError):
    """Fitting a head failed (too little usable data, degenerate features)."""
