"""Standing queries through the client, against the real API on a loopback port: create,
list, get, read matches (typed, resumable), watch (deletes its subscription when the
caller stops), and delete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from crossfeed.api.app import create_app
from crossfeed.api.cache import MemorySearchCache
from crossfeed.api.live import LiveServices
from crossfeed.api.metrics import ApiMetrics
from crossfeed.client import AsyncClient, Client, ClientInputError, NotFoundError
from crossfeed.core.settings import Settings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import IndexRow
from crossfeed.live.base import Match
from crossfeed.live.memory import MemorySubscriptions
from crossfeed.live.percolator import event_payload


@pytest.fixture
def store() -> MemorySubscriptions:
    return MemorySubscriptions()


@pytest.fixture
def live_url(
    serve: Callable[[Any], str],
    api_settings: Settings,
    embedder: HashingEmbedder,
    index: Any,
    cache: MemorySearchCache,
    store: MemorySubscriptions,
) -> str:
    api_settings.live.sse_heartbeat_s = 0.2
    app = create_app(
        api_settings,
        embedder=embedder,
        index=index,
        cache=cache,
        metrics=ApiMetrics(),
        live=LiveServices.memory(store),
    )
    return serve(app)


def _row(post_id: str, moment: int | None = None) -> IndexRow:
    return IndexRow(
        row_id=f"{post_id}:video:1" if moment is not None else f"{post_id}:text:0",
        post_id=post_id,
        item=1 if moment is not None else 0,
        modality="video" if moment is not None else "text",
        vector=[0.0] * 4,
        created_at_ms=1_714_521_600_000,
        author="@a",
        text=f"text of {post_id}",
        tags=("pets",),
        lang="en",
        model_version="v",
        media_ref="",
        moment=moment,
        start_ms=2000 if moment is not None else None,
        end_ms=4000 if moment is not None else None,
    )


def _record(store: MemorySubscriptions, sub_id: str, *rows: IndexRow) -> None:
    """What the index stage's percolator records: the same payload function."""
    now = int(time.time() * 1000)
    matches = [Match(sub_id, r.post_id, 0.8, event_payload(sub_id, r, 0.8, now)) for r in rows]
    assert store.record(matches) == len(rows)


def test_subscribe_read_matches_resume_and_unsubscribe(
    live_url: str, store: MemorySubscriptions
) -> None:
    with Client(live_url) as client:
        sub = client.subscribe("cute cats", min_score=0.3, filters={"tags": ["#Pets"]}, name="c")
        assert sub.name == "c" and sub.filters == {"tags": ["pets"]}
        assert [s.id for s in client.subscriptions().subscriptions] == [sub.id]
        assert client.get_subscription(sub.id).min_score == 0.3
        _record(store, sub.id, _row("p1"), _row("p2", moment=1), _row("p3"))

        stream = client.matches(sub.id)
        first = [next(stream) for _ in range(2)]
        stream.close()
        assert [m.post_id for m in first] == ["p1", "p2"]
        assert first[0].subscription == sub.id and first[0].score == 0.8
        assert first[1].moment is not None and first[1].moment.start_s == 2.0
        assert first[1].event_id is not None

        resumed = client.matches(sub.id, last_event_id=first[1].event_id)
        assert next(resumed).post_id == "p3"  # no gap, no repeat
        resumed.close()

        client.unsubscribe(sub.id)
        with pytest.raises(NotFoundError):
            client.get_subscription(sub.id)
        with pytest.raises(NotFoundError):
            client.unsubscribe(sub.id)


def test_a_stream_ends_when_its_subscription_is_deleted(
    live_url: str, store: MemorySubscriptions
) -> None:
    with Client(live_url) as client:
        sub = client.subscribe(post_id="cats1", min_score=0.5)
        _record(store, sub.id, _row("p1"))
        stream = client.matches(sub.id)
        assert next(stream).post_id == "p1"
        client.unsubscribe(sub.id)
        assert list(stream) == []  # the server's "deleted" event ends the iteration


def test_image_subscriptions_and_argument_checks(
    live_url: str, make_picture: Callable[[tuple[int, int, int]], bytes]
) -> None:
    with Client(live_url) as client:
        sub = client.subscribe(image=make_picture((200, 10, 10)), min_score=0.9)
        assert sub.query.kind == "image" and sub.query.image_sha256
        for bad in (
            {"min_score": 0.5},
            {"text": "a", "post_id": "b", "min_score": 0.5},
            {"text": "a", "min_score": 1.5},
            {"text": "a", "min_score": True},
        ):
            with pytest.raises(ClientInputError):
                client.subscribe(**bad)
        with pytest.raises(ClientInputError):
            client.get_subscription("")


async def test_async_watch_deletes_its_subscription_when_the_caller_stops(
    live_url: str, store: MemorySubscriptions
) -> None:
    async with AsyncClient(live_url) as client:
        watching = client.watch("red car", min_score=0.2)
        first = asyncio.ensure_future(watching.__anext__())
        for _ in range(100):
            if store.load():
                break
            await asyncio.sleep(0.05)
        [sub] = store.load()
        _record(store, sub.id, _row("car9"))
        match = await asyncio.wait_for(first, timeout=10)
        assert match.post_id == "car9" and match.subscription == sub.id
        await watching.aclose()
        assert store.load() == []
        assert (await client.subscriptions()).total == 0


def test_crossfeed_watch_prints_matches_and_deletes_its_subscription(
    live_url: str, store: MemorySubscriptions, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    from crossfeed.ops.cli import main

    def feed() -> None:  # the index stage's part: matches for the subscription once made
        for _ in range(200):
            if store.load():
                break
            time.sleep(0.02)
        [sub] = store.load()
        _record(store, sub.id, _row("m1"), _row("m2", moment=0))

    feeder = threading.Thread(target=feed)
    feeder.start()
    code = main(["watch", "cute cats", "--url", live_url, "--min-score", "0.4", "--count", "2"])
    feeder.join()
    out, err = capsys.readouterr()
    assert code == 0 and "watching 'text: cute cats'" in err
    lines = out.splitlines()
    assert len(lines) == 2 and "m1" in lines[0] and "0.800" in lines[0] and "#pets" in lines[0]
    assert "[video 2.0-4.0s]" in lines[1]
    assert store.load() == []  # deleted on exit

    code = main(["watch", "--url", live_url, "--post", "x", "--after", "1-0"])
    assert code == 2 and "--after goes with --subscription" in capsys.readouterr().err
