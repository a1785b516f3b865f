"""Errors of retrieval: a post asked for cannot stand for a query."""

from __future__ import annotations

from crossfeed.exceptions import CrossfeedError


class RetrievalError(CrossfeedError):
    """Base class of retrieval's errors."""


class PostNotIndexedError(RetrievalError):
    """The post has no rows in the index (never indexed, or erased)."""


class ModelVersionMismatchError(RetrievalError):
    """A post's stored vectors come from another model version than the one serving."""
