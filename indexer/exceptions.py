"""Errors raised by the vector index.

``retriable`` follows the root contract: an unreachable or overloaded engine may
answer later (the index worker retries, the API answers 503), while a bad row, a
bad filter or a schema conflict never will (dead-letter it, answer 4xx/500).
"""

from __future__ import annotations

from crossfeed.exceptions import CrossfeedError, InvalidInputError


class VectorIndexError(CrossfeedError):
    """Base class of every index error."""


class IndexUnavailableError(VectorIndexError):
    """The engine could not be reached, timed out or is rate limiting: try again later."""

    retriable = True


class IndexOperationError(VectorIndexError):
    """The engine rejected an operation for a reason retrying will not fix."""


class IndexSchemaError(VectorIndexError):
    """The existing collection does not match what this code expects (e.g. its dimension)."""


class IndexNotReadyError(VectorIndexError):
    """``ensure_ready`` was not called (or failed) before the index was used."""


class InvalidRowError(VectorIndexError, InvalidInputError):
    """A row cannot be stored as given (wrong dimension, oversized primary key...)."""


class InvalidFilterError(VectorIndexError, InvalidInputError):
    """A search filter value failed validation."""


class InvalidCollectionNameError(VectorIndexError, InvalidInputError):
    """Not a valid Milvus collection name."""


class CollectionRefusedError(VectorIndexError):
    """A collection operation refused: not one of this deployment's, or the one serving."""
