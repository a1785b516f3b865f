"""Errors of the source connectors."""

from __future__ import annotations

from crossfeed.exceptions import ConfigError, CrossfeedError, InvalidInputError


class SourceError(CrossfeedError):
    """A connector cannot go on."""


class SourceConfigError(SourceError, ConfigError):
    """A connector option is missing or invalid (a URL, a token, a template)."""


class SourceRefusedError(SourceError):
    """The service refused the connection for good (4xx on the handshake: a bad token,
    a bad filter); retrying would not help."""


class DeliveryError(SourceError):
    """Kafka did not accept what the connector produced; its cursor was not advanced, so a
    restart resumes from the last delivered event."""

    retriable = True


class MalformedEventError(SourceError, InvalidInputError):
    """A frame from the service could not be read; ``label`` is its counted reason."""

    def __init__(self, label: str, message: str) -> None:
        super().__init__(message)
        self.label = label
