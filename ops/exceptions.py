"""Errors of the operations layer (``crossfeed up/down/status`` and friends).

They derive from :class:`~crossfeed.exceptions.CrossfeedError`, so the CLI prints
them as one clear line instead of a traceback.
"""

from __future__ import annotations

from crossfeed.exceptions import CrossfeedError


class OpsError(CrossfeedError):
    """An operations command could not do what it was asked."""


class EngineStartError(OpsError):
    """An engine could not be started or did not become ready in time.

    Retriable: a busy port or a slow machine may be fine on the next try.
    """

    retriable = True


class EngineStopError(OpsError):
    """An engine that ``up`` started would not stop, even after SIGKILL."""


class BinaryIntegrityError(OpsError):
    """A bundled engine binary is missing or its sha256 differs from the pinned one.

    Never retriable: running an unverified binary is refused outright.
    """

    retriable = False


class ProduceError(OpsError):
    """Kafka did not accept some posts (broker down, timeout, rejected write)."""

    retriable = True


class BenchError(OpsError):
    """A benchmark could not run (an engine missing, a worker died, nothing indexed)."""
