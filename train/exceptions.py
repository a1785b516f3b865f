"""Errors raised by :mod:`crossfeed.train` beyond the encoders' own.

Fitting problems use :class:`crossfeed.encoders.exceptions.TrainingError`; the
classes here are about benchmark data on disk.
"""

from __future__ import annotations

from crossfeed.exceptions import ConfigError, InvalidInputError


class DatasetNotFoundError(ConfigError):
    """A benchmark's data directory (or a file in it) is missing."""


class DatasetFormatError(InvalidInputError):
    """Benchmark files exist but do not have the expected content or shapes."""
