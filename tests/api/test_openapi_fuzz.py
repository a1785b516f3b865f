"""The whole HTTP API fuzzed from its own OpenAPI schema: no 5xx, every answer as documented.

Runs over the in-memory fakes (HashingEmbedder, InMemoryIndex, MemorySearchCache), so it
needs no engine. `make test` runs a short pass (30 examples per operation).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.live import LiveServices
from crossfeed.api.metrics import ApiMetrics
from crossfeed.api.tombstones import MemoryTombstones
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.erasure import Eraser, MemoryErasureLedger, RemovedRows
from crossfeed.indexer.memory import InMemoryIndex

# Stands in for the broker, so /readyz is ready (a 503 there is a server error to the fuzzer):
# it accepts and closes connections, so thousands of readiness checks never fill its backlog.
_BROKER = socket.socket()
_BROKER.bind(("127.0.0.1", 0))
_BROKER.listen(64)


def _accept_forever() -> None:
    while True:
        conn, _ = _BROKER.accept()
        conn.close()


threading.Thread(target=_accept_forever, name="fuzz-broker", daemon=True).start()


def _app() -> object:
    s = Settings()
    s.kafka.bootstrap = f"127.0.0.1:{_BROKER.getsockname()[1]}"  # a port that accepts
    s.api.retry_budget_s = 0.0
    index = InMemoryIndex(dim=16)
    cache = MemorySearchCache(prefix="fuzz", ttl_s=60)
    return create_app(
        s,
        embedder=HashingEmbedder(dim=16),
        index=index,
        cache=cache,
        metrics=ApiMetrics(),
        live=LiveServices.memory(),  # subscriptions in process: no engine behind the fuzzer
        # Erasure over the same fakes: the stand-in broker above speaks no Kafka, so the
        # default tombstone producer would wait out its timeout on every DELETE.
        eraser=Eraser(
            MemoryErasureLedger(),
            lambda post_id: RemovedRows({"memory": index.delete_posts([post_id])}),
            cache,
        ),
        tombstones=MemoryTombstones(),
    )


# Per operation; `CROSSFEED_FUZZ_EXAMPLES=1000 pytest tests/api/test_openapi_fuzz.py` for a
# long run.
EXAMPLES = int(os.environ.get("CROSSFEED_FUZZ_EXAMPLES", "30"))
APP = _app()
# Event streams (`/v1/stats/stream`, `/v1/subscriptions/{id}/events`) never end on their
# own: a fuzzer would wait out each one. They have tests of their own (resume, heartbeats,
# backpressure); every other operation is fuzzed.
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(
    path_regex=r"/(stream|events)$"
)


@pytest.fixture(scope="module", autouse=True)
def _lifespan() -> Iterator[None]:
    with TestClient(APP):  # runs the app's lifespan (state) for the whole module
        yield


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    response = case.call()
    case.validate_response(response, excluded_checks=_semantic_rejections(case, response))


_SEMANTIC = ("empty once normalised", "since must be earlier than until")


def _semantic_rejections(case: schemathesis.Case, response: schemathesis.Response) -> list[Any]:
    """Checks to skip for answers no schema can predict; everything else must hold.

    An upload's bytes are "format: binary": no schema can say they must decode as an image
    (nor that the multipart `filters` string must parse as SearchFilters). Tag filters are
    normalised like the stream's hashtags: a schema cannot say which strings normalise to
    nothing ("(((" does), that `since` comes before `until`, nor which strings are
    cursors the API signed. Such schema-valid
    requests are rightly refused with 422.
    """
    if case.media_type == "multipart/form-data":
        # Multipart fields are strings: a "negative" case that turns a field into an array
        # or an object cannot be sent as one, so only the positive/negative data checks go.
        return [positive_data_acceptance, negative_data_rejection]
    if response.status_code == 422:
        error = response.json().get("error", {})
        if error.get("type") == "InvalidCursorError":  # an opaque, signed token
            return [positive_data_acceptance]
        details = error.get("details") or []
        if details and all(any(m in d.get("msg", "") for m in _SEMANTIC) for d in details):
            return [positive_data_acceptance]
    return []
