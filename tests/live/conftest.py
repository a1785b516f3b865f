"""Factories of subscriptions and index rows embedded with the hashing embedder."""

from __future__ import annotations

from typing import Any

import pytest

from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.live.base import Subscription

EMB = HashingEmbedder(dim=32)


@pytest.fixture
def make_sub() -> Any:
    def make(sid: str, text: str, min_score: float = 0.6, **flt: Any) -> Subscription:
        return Subscription(
            id=sid,
            name=sid,
            kind="text",
            query=text,
            min_score=min_score,
            filter=SearchFilter(model_version=EMB.version, **flt),
            filters={},
            vector=EMB.embed_texts([text])[0],
            model_version=EMB.version,
            created_at_ms=1,
        )

    return make


@pytest.fixture
def make_row() -> Any:
    def make(post: str, text: str) -> IndexRow:
        return IndexRow(
            row_id=f"{post}:text:0",
            post_id=post,
            item=0,
            modality="text",
            vector=EMB.embed_texts([text])[0].tolist(),
            created_at_ms=1_000,
            author="a",
            text=text,
            tags=(),
            lang="en",
            model_version=EMB.version,
            media_ref="",
        )

    return make
