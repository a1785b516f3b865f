"""The one place a Milvus client is made: URI, token and timeout from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crossfeed.core.settings import MilvusSettings
from crossfeed.indexer.exceptions import IndexUnavailableError

if TYPE_CHECKING:
    from pymilvus import MilvusClient


def milvus_client(
    settings: MilvusSettings, *, timeout_s: float = 10.0, dedicated: bool = True
) -> MilvusClient:
    """A connected ``MilvusClient``; :class:`IndexUnavailableError` (retriable) when Milvus
    cannot be reached. ``dedicated`` gives the client its own channel (pymilvus otherwise
    shares one per URI, and closing one client would close the others')."""
    from pymilvus import MilvusClient

    token = settings.token.get_secret_value() if settings.token else ""
    try:
        return MilvusClient(uri=settings.uri, token=token, timeout=timeout_s, dedicated=dedicated)
    except Exception as exc:
        raise IndexUnavailableError(f"cannot reach Milvus at {settings.uri}: {exc}") from exc
