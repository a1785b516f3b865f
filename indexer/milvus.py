"""The Milvus-backed :class:`VectorIndex` (pymilvus ``MilvusClient``).

One collection holds every item vector of every post (schema in
:mod:`crossfeed.indexer.schema`), under an HNSW index with the COSINE metric, so a
hit's score is the cosine similarity whatever small drift the unit vectors have.

Connections: the client is created lazily and owns its gRPC channel (``dedicated``),
so closing it really closes it. Any connection-class failure drops the client; the
next call reconnects and, as after every (re)connect, makes sure the collection
exists and is loaded before it searches. Every RPC gets ``timeout_s``: pymilvus
would otherwise retry an unreachable server for minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
from pymilvus import DataType, MilvusClient, MilvusException

from crossfeed.core.settings import MilvusSettings
from crossfeed.indexer.base import Hit, IndexRow, SearchFilter, VectorIndex
from crossfeed.indexer.client import milvus_client
from crossfeed.indexer.exceptions import (
    IndexNotReadyError,
    IndexOperationError,
    IndexSchemaError,
    IndexUnavailableError,
    InvalidFilterError,
    VectorIndexError,
)
from crossfeed.indexer.filters import build_expression, post_expression, posts_expression
from crossfeed.indexer.schema import (
    AUTHOR_MAX_BYTES,
    ID_MAX_BYTES,
    LANG_MAX_BYTES,
    MAX_SUGGESTED_TAGS,
    MAX_TAGS,
    MEDIA_REF_MAX_BYTES,
    MODALITY_MAX_BYTES,
    MODEL_VERSION_MAX_BYTES,
    MOMENT_FIELDS,
    OPTIONAL_FIELDS,
    SCALAR_FIELDS,
    SOURCE_MAX_BYTES,
    TAG_MAX_BYTES,
    TEXT_MAX_BYTES,
    VECTOR_FIELD,
    check_vector,
    entity_to_row,
    prepare_row,
    row_to_entity,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

METRIC = "COSINE"
# Milvus caps topk (and HNSW ef) at 16384.
MAX_TOP_K = 16_384
# Rows per upsert RPC: 500 rows of 384 floats plus 8 KiB text stay far below gRPC's
# 64 MiB message cap while amortising the round trip.
UPSERT_CHUNK = 500
# A write fence further ahead of the local clock than this is ignored (see _consistency_for).
FENCE_MAX_AHEAD_S = 60.0


def mutation_fence(result: Any) -> int:
    """The fence a search needs to see a mutation: its hybrid timestamp (physical ms << 18).

    Milvus 2.3 answers deletes with timestamp 0; then the local clock just after the call
    returned stands in (the delete was acknowledged before it, so a search fenced at it waits
    for the delete, give or take the clock skew between this host and Milvus' TSO).
    """
    stamp = int(getattr(result, "timestamp", 0) or 0)
    return stamp if stamp > 0 else int(time.time() * 1000) << 18


# Statuses after which the same call may succeed: engine down, slow, or throttling.
_RETRIABLE_GRPC = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}
_CONNECT_FAILED = 2  # pymilvus Status.CONNECT_FAILED; also Milvus' "service unavailable"
_RATE_LIMIT = 8
_NOT_LOADED = 101  # Milvus ErrCollectionNotLoaded


def is_retriable(exc: BaseException) -> bool:
    """Whether a pymilvus/gRPC failure is about reachability rather than the request."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, grpc.RpcError):
        return exc.code() in _RETRIABLE_GRPC  # type: ignore[attr-defined]
    if isinstance(exc, MilvusException):
        code = exc.code
        if isinstance(code, grpc.StatusCode):
            return code in _RETRIABLE_GRPC
        if code in (_CONNECT_FAILED, _RATE_LIMIT):
            return True
        text = str(exc.message).lower()
        return "retry timeout" in text or "unavailable" in text or "fail connecting" in text
    return False


def _not_loaded(exc: BaseException) -> bool:
    return isinstance(exc, MilvusException) and (
        exc.code == _NOT_LOADED or "not loaded" in str(exc.message).lower()
    )


class MilvusIndex(VectorIndex):
    """A :class:`VectorIndex` over one Milvus collection.

    ``consistency_level`` applies to searches and post look-ups: "Bounded" (Milvus'
    default, a few seconds of staleness) suits the API; tests that read their own
    writes at once use "Strong". ``count`` is always strong. A search given a
    ``fence`` (an index worker's :meth:`write_fence`, published with the cache epoch)
    waits until Milvus holds every write before it, so a result cached under an epoch
    always contains the rows that epoch announced.
    """

    def __init__(
        self,
        settings: MilvusSettings,
        *,
        timeout_s: float = 10.0,
        consistency_level: str = "Bounded",
    ) -> None:
        self._settings = settings
        self._collection = settings.collection
        self._timeout = timeout_s
        self._consistency = consistency_level
        self._client: MilvusClient | None = None
        self._dim: int | None = None
        self._loaded = False
        self._absent: frozenset[str] = frozenset()  # optional fields the collection lacks
        self._fence: int | None = None  # the newest mutation timestamp of our upserts
        self._lock = threading.RLock()

    @property
    def collection(self) -> str:
        return self._collection

    # ------------------------------------------------------------------ connection

    def _connect(self) -> MilvusClient:
        try:
            return milvus_client(self._settings, timeout_s=self._timeout)
        except IndexUnavailableError as exc:  # retriable or not, as the cause says
            raise self._translate(exc.__cause__ or exc, "connect") from exc

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client, self._loaded = self._client, None, False
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken channel may fail; nothing to do about it
                log.debug("closing the Milvus client failed", exc_info=True)

    def _translate(self, exc: BaseException, action: str) -> VectorIndexError:
        if isinstance(exc, VectorIndexError):
            return exc
        where = f"Milvus {action} ({self._settings.uri}, collection {self._collection})"
        if is_retriable(exc):
            return IndexUnavailableError(f"{where} failed: {exc}")
        return IndexOperationError(f"{where} was rejected: {exc}")

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Map failures to index errors; forget the client when the connection failed."""
        try:
            yield
        except VectorIndexError:
            raise
        except Exception as exc:
            err = self._translate(exc, action)
            if err.retriable:
                self._drop_client()
            raise err from exc

    def _ready_client(self) -> MilvusClient:
        """A connected client whose collection exists and is loaded."""
        with self._lock:
            if self._dim is None:
                raise IndexNotReadyError("call ensure_ready(dim) before using the index")
            if self._client is None or not self._loaded:
                self._prepare(self._dim)
            assert self._client is not None
            return self._client

    def _call(self, action: str, fn: Callable[[MilvusClient], T]) -> T:
        """Run ``fn`` on a ready client; reload once when Milvus says "not loaded"."""
        with self._errors(action):
            client = self._ready_client()
            try:
                return fn(client)
            except MilvusException as exc:
                if not _not_loaded(exc):
                    raise
                log.info("collection %s was not loaded; loading it", self._collection)
                with self._lock:
                    self._loaded = False
                return fn(self._ready_client())

    # ------------------------------------------------------------------ schema

    def _schema(self, dim: int) -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row_id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
        schema.add_field("post_id", DataType.VARCHAR, max_length=ID_MAX_BYTES)
        schema.add_field("item", DataType.INT64)
        schema.add_field("modality", DataType.VARCHAR, max_length=MODALITY_MAX_BYTES)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("author", DataType.VARCHAR, max_length=AUTHOR_MAX_BYTES)
        schema.add_field(
            "tags",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=MAX_TAGS,
            max_length=TAG_MAX_BYTES,
        )
        schema.add_field("lang", DataType.VARCHAR, max_length=LANG_MAX_BYTES)
        schema.add_field("model_version", DataType.VARCHAR, max_length=MODEL_VERSION_MAX_BYTES)
        schema.add_field("media_ref", DataType.VARCHAR, max_length=MEDIA_REF_MAX_BYTES)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
        schema.add_field(
            "suggested_tags",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=MAX_SUGGESTED_TAGS,
            max_length=TAG_MAX_BYTES,
        )
        for name in ("moment", "start_ms", "end_ms"):  # -1 = not a moment
            schema.add_field(name, DataType.INT64)
        schema.add_field("source", DataType.VARCHAR, max_length=SOURCE_MAX_BYTES)
        return schema

    @property
    def _output_fields(self) -> list[str]:
        return [f for f in SCALAR_FIELDS if f not in self._absent]

    def _index_params(self) -> Any:
        params = MilvusClient.prepare_index_params()
        params.add_index(
            field_name=VECTOR_FIELD,
            index_type="HNSW",
            index_name="vector_hnsw",
            metric_type=METRIC,
            params={
                "M": self._settings.hnsw_m,
                "efConstruction": self._settings.hnsw_ef_construction,
            },
        )
        return params

    def _check_existing(self, client: MilvusClient, dim: int) -> None:
        info = client.describe_collection(self._collection, timeout=self._timeout)
        fields = {f["name"]: f for f in info.get("fields", [])}
        missing = [n for n in (*SCALAR_FIELDS, VECTOR_FIELD) if n not in fields]
        absent = frozenset(missing) & OPTIONAL_FIELDS
        if absent and absent != self._absent:
            log.warning(
                "collection %s predates fields %s: they are not stored; re-index into a "
                "fresh collection (crossfeed reindex) to get them",
                self._collection,
                sorted(absent),
            )
        self._absent = absent
        missing = [n for n in missing if n not in absent]
        if missing:
            raise IndexSchemaError(
                f"collection {self._collection!r} exists but lacks fields {missing}; "
                "use another collection name or drop it"
            )
        existing_dim = int(fields[VECTOR_FIELD].get("params", {}).get("dim", -1))
        if existing_dim != dim:
            raise IndexSchemaError(
                f"collection {self._collection!r} stores {existing_dim}-dimensional vectors "
                f"but the encoder produces {dim}: vectors of another model version; back-fill "
                "this version into its own collection (crossfeed reindex --model-version V) and "
                "set CROSSFEED_COLLECTION, or pin CROSSFEED_MODEL_VERSION to the collection's"
            )
        if not client.list_indexes(
            self._collection, field_name=VECTOR_FIELD, timeout=self._timeout
        ):
            log.info("collection %s has no vector index; creating HNSW", self._collection)
            client.create_index(self._collection, self._index_params(), timeout=self._timeout)

    def _prepare(self, dim: int) -> None:
        """Connect if needed, create or check the collection, load it. Caller holds the lock."""
        if self._client is None:
            self._client = self._connect()
            self._loaded = False
        client = self._client
        if client.has_collection(self._collection, timeout=self._timeout):
            self._check_existing(client, dim)
        else:
            log.info("creating Milvus collection %s (dim %d)", self._collection, dim)
            self._absent = frozenset()
            client.create_collection(
                self._collection,
                schema=self._schema(dim),
                index_params=self._index_params(),
                timeout=self._timeout,
            )
        client.load_collection(self._collection, timeout=self._timeout)
        self._loaded = True

    # ------------------------------------------------------------------ VectorIndex

    def ensure_ready(self, dim: int) -> None:
        if dim <= 0:
            raise IndexSchemaError(f"dimension must be positive, got {dim}")
        with self._errors("setup"), self._lock:
            self._prepare(dim)
            self._dim = dim

    def upsert(self, rows: Sequence[IndexRow]) -> int:
        if self._dim is None:
            raise IndexNotReadyError("call ensure_ready(dim) before using the index")
        dim = self._dim
        prepared = [prepare_row(r, dim) for r in rows]  # validate all first
        if self._absent & MOMENT_FIELDS:
            # A collection from before moments cannot tell them from whole videos.
            kept = [r for r in prepared if r.moment is None]
            if len(kept) < len(prepared):
                log.info(
                    "collection %s has no moment fields: %d video moment rows not stored",
                    self._collection,
                    len(prepared) - len(kept),
                )
            prepared = kept
        entities = [row_to_entity(r, self._absent) for r in prepared]
        written = 0
        for start in range(0, len(entities), UPSERT_CHUNK):
            chunk = entities[start : start + UPSERT_CHUNK]

            def send(client: MilvusClient, chunk: list[dict[str, object]] = chunk) -> int:
                # The connection's upsert (what MilvusClient.upsert wraps) also returns the
                # mutation timestamp, the fence a search needs to see these rows.
                res = client._get_connection().upsert_rows(
                    self._collection, chunk, timeout=self._timeout
                )
                with self._lock:
                    self._fence = max(self._fence or 0, int(res.timestamp)) or self._fence
                return int(res.upsert_count)

            written += self._call("upsert", send)
        return written

    def write_fence(self) -> int | None:
        """The hybrid timestamp of this object's newest upsert (Milvus' TSO clock)."""
        return self._fence

    def _consistency_for(self, fence: int | None) -> dict[str, Any]:
        """Search consistency: at least ``fence`` when given and sane, else the default.

        A fence is a Milvus hybrid timestamp (physical milliseconds << 18); one more than
        a minute ahead of this clock cannot come from a sane server and would make the
        search wait until it times out, so it is ignored (with a warning).
        """
        if not fence or fence <= 0:
            return {"consistency_level": self._consistency}
        ahead_s = ((fence >> 18) / 1000) - time.time()
        if ahead_s > FENCE_MAX_AHEAD_S:
            log.warning("ignoring a write fence %.0f s in the future", ahead_s)
            return {"consistency_level": self._consistency}
        return {"consistency_level": "Customized", "guarantee_timestamp": int(fence)}

    def search(
        self, vector: Sequence[float], top_k: int, flt: SearchFilter, *, fence: int | None = None
    ) -> list[Hit]:
        if self._dim is None:
            raise IndexNotReadyError("call ensure_ready(dim) before using the index")
        if not 1 <= top_k <= MAX_TOP_K:
            raise IndexOperationError(f"top_k must be in 1..{MAX_TOP_K}, got {top_k}")
        query = check_vector(vector, self._dim, "query vector")
        if flt.sources and "source" in self._absent:
            raise InvalidFilterError(
                f"collection {self._collection!r} was created before posts' source was stored, "
                "so it cannot filter by source; back-fill a fresh collection (crossfeed reindex)"
            )
        expr = build_expression(flt)  # validates; raises InvalidFilterError
        ef = self._settings.hnsw_ef_filtered if flt.narrows() else self._settings.hnsw_ef
        params = {"metric_type": METRIC, "params": {"ef": min(MAX_TOP_K, max(ef, top_k))}}
        result = self._call(
            "search",
            lambda c: c.search(
                self._collection,
                data=[query],
                filter=expr,
                limit=top_k,
                output_fields=self._output_fields,
                search_params=params,
                timeout=self._timeout,
                **self._consistency_for(fence),
            ),
        )
        hits = result[0] if result else []
        return [Hit(row=entity_to_row(h["entity"]), score=float(h["distance"])) for h in hits]

    def get_post(self, post_id: str) -> list[IndexRow]:
        expr = post_expression(post_id)
        rows = self._call(
            "query",
            lambda c: c.query(
                self._collection,
                filter=expr,
                output_fields=[*self._output_fields, VECTOR_FIELD],
                timeout=self._timeout,
                consistency_level=self._consistency,
            ),
        )
        return sorted((entity_to_row(r) for r in rows), key=lambda r: r.item)

    def delete_posts(self, post_ids: Sequence[str]) -> int:
        if not post_ids:
            return 0
        if self._dim is None and not self._attach():
            return 0  # no collection: nothing to delete
        expr = posts_expression(post_ids)

        def send(client: MilvusClient) -> int:
            # As for upserts: the connection's call also returns the mutation timestamp,
            # which joins this object's write fence (the next epoch bump publishes it).
            res = client._get_connection().delete(self._collection, expr, timeout=self._timeout)
            with self._lock:
                self._fence = max(self._fence or 0, mutation_fence(res))
            return int(res.delete_count)

        return self._call("delete", send)

    def count(self) -> int:
        """Rows stored; 0 before the collection exists. Needs no ``ensure_ready``."""
        if self._dim is None and not self._attach():
            return 0
        rows = self._call(
            "count",
            lambda c: c.query(
                self._collection,
                filter="",
                output_fields=["count(*)"],
                timeout=self._timeout,
                consistency_level="Strong",
            ),
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def _attach(self) -> bool:
        """Adopt an existing collection's dimension (for observers that embed nothing)."""
        with self._errors("describe"), self._lock:
            if self._client is None:
                self._client = self._connect()
                self._loaded = False
            if not self._client.has_collection(self._collection, timeout=self._timeout):
                return False
            info = self._client.describe_collection(self._collection, timeout=self._timeout)
            fields = {f["name"]: f for f in info.get("fields", [])}
            dim = int(fields.get(VECTOR_FIELD, {}).get("params", {}).get("dim", 0))
            if dim <= 0:
                raise IndexSchemaError(f"collection {self._collection!r} has no vector field")
            self._prepare(dim)
            self._dim = dim
            return True

    def ping(self) -> bool:
        """True when the server answers a cheap RPC (does not need ``ensure_ready``)."""
        try:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
                    self._loaded = False
                client = self._client
            client.get_server_version(timeout=min(self._timeout, 3.0))
        except Exception:
            log.debug("Milvus ping failed", exc_info=True)
            self._drop_client()
            return False
        return True

    def readiness(self) -> str | None:
        """Ready when the server answers and the collection is loaded (or does not exist yet:
        the first write creates it). A collection that is not loaded (after a restart) is
        asked to load in the background, so readiness follows without a search paying for
        it."""
        from pymilvus.client.types import LoadState

        if not self.ping():
            return "does not answer"
        try:
            with self._lock:
                client = self._client
            if client is None:
                return "does not answer"
            if not client.has_collection(self._collection, timeout=3.0):
                return None
            state = client.get_load_state(self._collection, timeout=3.0)
            load = state.get("state")
            if load == LoadState.Loaded:
                return None
            if load == LoadState.Loading:
                return f"collection {self._collection} is loading ({state.get('progress', '?')}%)"
            client.load_collection(self._collection, timeout=3.0, _async=True)
            return f"collection {self._collection} is not loaded; loading it"
        except Exception as exc:
            log.debug("Milvus readiness check failed", exc_info=True)
            return f"readiness check failed: {exc}"

    def drop(self) -> None:
        """Drop the collection (tests and re-indexing); the index needs ensure_ready again."""
        with self._errors("drop"), self._lock:
            if self._client is None:
                self._client = self._connect()
            if self._client.has_collection(self._collection, timeout=self._timeout):
                self._client.drop_collection(self._collection, timeout=self._timeout)
            self._loaded = False
            self._dim = None

    def close(self) -> None:
        self._drop_client()
