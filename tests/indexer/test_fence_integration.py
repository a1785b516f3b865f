"""The write fence on the real Milvus: a bounded-staleness index shows a search given the
fence every row written before it, at once (what makes the search cache race-free)."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from crossfeed.core.settings import MilvusSettings
from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.indexer.milvus import MilvusIndex

pytestmark = pytest.mark.integration

DIM = 16


def _row(post: str) -> IndexRow:
    v = np.random.default_rng(zlib.crc32(post.encode())).standard_normal(DIM)
    return IndexRow(
        row_id=f"{post}:text:0",
        post_id=post,
        item=0,
        modality="text",
        vector=(v / np.linalg.norm(v)).tolist(),
        created_at_ms=1_700_000_000_000,
        author="a",
        text=post,
        tags=(),
        lang="en",
        model_version="v1",
        media_ref="",
    )


@pytest.fixture
def bounded(engines: object, unique_name: Callable[[str], str]) -> Iterator[MilvusIndex]:
    idx = MilvusIndex(MilvusSettings(CROSSFEED_COLLECTION=unique_name("fence_test")))
    assert idx.write_fence() is None
    idx.ensure_ready(DIM)
    yield idx
    idx.drop()
    idx.close()


def test_a_fenced_search_sees_every_row_written_before_the_fence(bounded: MilvusIndex) -> None:
    reader = MilvusIndex(MilvusSettings(CROSSFEED_COLLECTION=bounded.collection))  # the API's
    reader.ensure_ready(DIM)
    try:
        fences = []
        for i in range(4):
            row = _row(f"post{i}")
            bounded.upsert([row])
            fence = bounded.write_fence()
            assert fence is not None and (not fences or fence > fences[-1])
            fences.append(fence)
            hits = reader.search(row.vector, 3, SearchFilter(), fence=fence)
            assert hits and hits[0].row.post_id == f"post{i}", f"write {i} not visible"
    finally:
        reader.close()


def test_a_fence_from_the_future_is_ignored_rather_than_waited_for(bounded: MilvusIndex) -> None:
    bounded.upsert([_row("p")])
    bogus = int((time.time() + 3600) * 1000) << 18  # an hour ahead of this clock
    started = time.monotonic()
    assert bounded.search(_row("p").vector, 1, SearchFilter(), fence=bogus) is not None
    assert time.monotonic() - started < 5  # Milvus would wait for it until the RPC timeout


def test_a_fenced_search_misses_every_row_deleted_before_the_fence(bounded: MilvusIndex) -> None:
    """Milvus 2.3 answers deletes with timestamp 0: the fence must still cover them (an
    erased post found by the next search, the bug this caught)."""
    reader = MilvusIndex(MilvusSettings(CROSSFEED_COLLECTION=bounded.collection))
    reader.ensure_ready(DIM)
    try:
        for i in range(3):
            row = _row(f"gone{i}")
            bounded.upsert([row])
            assert reader.search(row.vector, 1, SearchFilter(), fence=bounded.write_fence())
            before = bounded.write_fence()
            assert bounded.delete_posts([row.post_id]) == 1
            fence = bounded.write_fence()
            assert fence is not None and before is not None and fence > before
            hits = reader.search(row.vector, 3, SearchFilter(), fence=fence)
            assert all(h.row.post_id != row.post_id for h in hits), f"delete {i} still visible"
    finally:
        reader.close()
