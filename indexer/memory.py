"""A brute-force, in-process :class:`VectorIndex` for unit tests and tiny demos.

It stores rows exactly as :class:`~crossfeed.indexer.milvus.MilvusIndex` would
(same validation and truncation, same filter semantics, cosine scores), so code
tested against it behaves the same against Milvus. Thread-safe: the API calls it
from a thread pool.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from crossfeed.indexer.base import Hit, IndexRow, SearchFilter, VectorIndex
from crossfeed.indexer.exceptions import IndexNotReadyError, IndexSchemaError
from crossfeed.indexer.filters import matches, validate_filter
from crossfeed.indexer.schema import check_vector, prepare_row


class InMemoryIndex(VectorIndex):
    """Rows in a dict keyed by ``row_id``; search is an exact scan."""

    def __init__(self, dim: int | None = None) -> None:
        self._dim = dim
        self._rows: dict[str, IndexRow] = {}
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {"upsert": 0, "search": 0, "get_post": 0}

    def ensure_ready(self, dim: int) -> None:
        with self._lock:
            if self._dim is not None and self._dim != dim:
                raise IndexSchemaError(
                    f"in-memory index has dimension {self._dim}, asked for {dim}"
                )
            self._dim = dim

    def _require_dim(self) -> int:
        if self._dim is None:
            raise IndexNotReadyError("call ensure_ready(dim) before using the index")
        return self._dim

    def upsert(self, rows: Sequence[IndexRow]) -> int:
        dim = self._require_dim()
        prepared = [prepare_row(r, dim) for r in rows]  # all-or-nothing, like one Milvus call
        with self._lock:
            self.calls["upsert"] += 1
            for row in prepared:
                self._rows[row.row_id] = row
        return len(prepared)

    def search(
        self, vector: Sequence[float], top_k: int, flt: SearchFilter, *, fence: int | None = None
    ) -> list[Hit]:
        # Every write is visible at once here, so any fence is already satisfied.
        dim = self._require_dim()
        query = np.asarray(check_vector(vector, dim, "query vector"), dtype=np.float32)
        flt = validate_filter(flt)
        with self._lock:
            self.calls["search"] += 1
            candidates = [r for r in self._rows.values() if matches(r, flt)]
        if not candidates or top_k <= 0:
            return []
        matrix = np.asarray([r.vector for r in candidates], dtype=np.float32)
        # Cosine, like the Milvus collection's metric: robust to vectors that drifted
        # slightly off unit length.
        norms = np.linalg.norm(matrix, axis=1) * max(float(np.linalg.norm(query)), 1e-12)
        scores = (matrix @ query) / np.maximum(norms, 1e-12)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [Hit(row=replace(candidates[i], vector=()), score=float(scores[i])) for i in order]

    def get_post(self, post_id: str) -> list[IndexRow]:
        self._require_dim()
        with self._lock:
            self.calls["get_post"] += 1
            rows = [r for r in self._rows.values() if r.post_id == post_id]
        return sorted(rows, key=lambda r: r.item)

    def delete_posts(self, post_ids: Sequence[str]) -> int:
        gone = set(post_ids)
        with self._lock:
            doomed = [k for k, r in self._rows.items() if r.post_id in gone]
            for key in doomed:
                del self._rows[key]
        return len(doomed)

    def count(self) -> int:
        with self._lock:
            return len(self._rows)

    def ping(self) -> bool:
        return True
