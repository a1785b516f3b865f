"""The percolator: new rows against every standing query in one product, filters, dedupe."""

from __future__ import annotations

import numpy as np
import pytest

from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import IndexRow, SearchFilter
from crossfeed.live.base import Subscription
from crossfeed.live.memory import MemorySubscriptions
from crossfeed.live.percolator import Percolator

EMB = HashingEmbedder(dim=32)
V = EMB.version


def sub(sid: str, text: str, min_score: float = 0.6, **flt: object) -> Subscription:
    return Subscription(
        id=sid,
        name=sid,
        kind="text",
        query=text,
        min_score=min_score,
        filter=SearchFilter(model_version=V, **flt),  # type: ignore[arg-type]
        filters={},
        vector=EMB.embed_texts([text])[0],
        model_version=V,
        created_at_ms=0,
    )


def row(post: str, text: str, *, item: int = 0, modality: str = "text", **kw: object) -> IndexRow:
    return IndexRow(
        row_id=f"{post}:{modality}:{item}",
        post_id=post,
        item=item,
        modality=modality,
        vector=EMB.embed_texts([text])[0].tolist(),
        created_at_ms=int(kw.pop("created_at_ms", 1_000)),  # type: ignore[call-overload]
        author="a",
        text=text,
        tags=tuple(kw.pop("tags", ())),  # type: ignore[arg-type]
        lang=str(kw.pop("lang", "en")),
        model_version=str(kw.pop("model_version", V)),
        media_ref="",
    )


async def _store(*subs: Subscription) -> MemorySubscriptions:
    store = MemorySubscriptions()
    for s in subs:
        await store.create(s, limit=100)
    return store


async def test_only_rows_above_a_subscriptions_threshold_match() -> None:
    store = await _store(sub("cats", "cute cats sleeping"), sub("cars", "red sports car"))
    perc = Percolator(store)
    new = perc.percolate(
        [row("p1", "cute cats sleeping"), row("p2", "red sports car"), row("p3", "tax forms")]
    )
    assert new == 2
    cats = await store.read_events("cats", "0", count=10, block_s=0)
    cars = await store.read_events("cars", "0", count=10, block_s=0)
    assert [e.data["post_id"] for e in cats] == ["p1"]
    assert [e.data["post_id"] for e in cars] == ["p2"]
    assert cats[0].data["score"] == pytest.approx(1.0, abs=1e-5)


async def test_filters_of_a_standing_query_apply_like_a_search() -> None:
    store = await _store(
        sub("fr", "chats mignons", 0.5, lang="fr"),
        sub("tagged", "chats mignons", 0.5, tags=("pets",)),
        sub("images", "chats mignons", 0.5, modalities=("image",)),
        sub("recent", "chats mignons", 0.5, since_ms=5_000),
    )
    perc = Percolator(store)
    perc.percolate(
        [
            row("en", "chats mignons", lang="en", tags=("pets",)),
            row("old", "chats mignons", lang="fr", created_at_ms=10),
            row("new", "chats mignons", lang="fr", created_at_ms=9_000),
        ]
    )

    async def posts(sid: str) -> list[str]:
        return sorted(
            e.data["post_id"] for e in await store.read_events(sid, "0", count=9, block_s=0)
        )

    assert await posts("fr") == ["new", "old"]
    assert await posts("tagged") == ["en"]
    assert await posts("images") == []  # every row here is a text row
    assert await posts("recent") == ["new"]


async def test_a_post_matches_once_per_subscription_even_when_replayed() -> None:
    store = await _store(sub("cats", "cute cats"))
    perc = Percolator(store)
    batch = [
        row("p1", "cute cats"),
        row("p1", "cute cats and a dog", item=1, modality="image"),
    ]
    assert perc.percolate(batch) == 1  # the post's best row only
    assert perc.percolate(batch) == 0  # at-least-once replay: nothing new
    [event] = await store.read_events("cats", "0", count=10, block_s=0)
    assert event.data["row_id"] == "p1:text:0"  # the better of its two rows


async def test_rows_of_another_model_version_never_match() -> None:
    store = await _store(sub("cats", "cute cats", 0.1))
    perc = Percolator(store)
    assert perc.percolate([row("p1", "cute cats", model_version="other-v")]) == 0


async def test_new_and_deleted_subscriptions_are_picked_up_by_version() -> None:
    store = await _store(sub("a", "cute cats"))
    perc = Percolator(store)
    assert perc.refresh() is True and perc.active == 1
    assert perc.refresh() is False  # nothing changed: no reload
    await store.create(sub("b", "red car"), limit=10)
    await store.delete("a")
    assert perc.refresh() is True and perc.active == 1
    assert perc.percolate([row("x", "cute cats"), row("y", "red car")]) == 1


async def test_ten_thousand_subscriptions_are_one_matrix_product() -> None:
    """Scoring goes through one (rows x subscriptions) product: the feed is read once and
    every subscription sees every row (a planted match at the far end is found)."""
    store = MemorySubscriptions()
    rng = np.random.default_rng(0)
    for i in range(10_000):
        vec = rng.standard_normal(32).astype(np.float32)
        s = sub(f"s{i}", "x", 0.99)
        await store.create(
            Subscription(**{**s.__dict__, "vector": vec / np.linalg.norm(vec)}), limit=20_000
        )
    await store.create(sub("planted", "breaking news volcano", 0.99), limit=20_000)
    perc = Percolator(store)
    perc.refresh()
    batch = [row(f"p{i}", f"noise {i}") for i in range(31)] + [row("v", "breaking news volcano")]
    found = perc.match(batch)
    assert ("planted", "v") in {(m.sub_id, m.post_id) for m in found}
    assert perc.active == 10_001
