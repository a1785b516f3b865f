"""``crossfeed bench sources``: how fast the Bluesky connector turns Jetstream frames into
``posts.raw`` messages.

A WebSocket server on 127.0.0.1 sends ``frames`` synthetic Jetstream messages (post
creates with hashtag facets, some with images or a video, a few deletes) as fast as
the connection takes them; the connector reads, parses, validates and hands them to
a sink. Two sinks, each ``repeats`` times, in one run: one that drops what it gets
(the connector's own cost: WebSocket, JSON, Post validation) and the Kafka producer
on the configured broker (``acks=all``, flushed before the clock stops) into a topic
of its own, deleted afterwards. Reported: events/s per run (n/min/p50/p95/max) and
the Kafka/no-Kafka ratio of the medians.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from crossfeed.core.schema import DeadLetter, Post
from crossfeed.core.settings import Settings
from crossfeed.ops.bench.report import BenchReport, Table, rate, ratio, summarize
from crossfeed.sources.base import PostSink

T0_US = 1_732_000_000_000_000
_WORDS = [
    "sun",
    "cat",
    "dog",
    "coffee",
    "city",
    "rain",
    "night",
    "music",
    "garden",
    "street",
    "art",
    "book",
    "sky",
    "sea",
]


def synthetic_frames(count: int, seed: int = 0) -> list[str]:
    """``count`` Jetstream v1 messages: 70% text posts, 20% with images, 5% with a video,
    5% deletes of earlier posts; every post has one hashtag facet."""
    rng = random.Random(seed)
    frames: list[str] = []
    created: list[tuple[str, str]] = []
    for i in range(count):
        did = f"did:plc:{rng.getrandbits(120):030x}"[:32]
        time_us = T0_US + i * 1_000
        roll = rng.random()
        if roll < 0.05 and created:
            did, rkey = created[rng.randrange(len(created))]
            commit: dict[str, Any] = {
                "rev": f"r{i}",
                "operation": "delete",
                "collection": "app.bsky.feed.post",
                "rkey": rkey,
            }
        else:
            rkey = f"3l{i:011d}"
            tag = rng.choice(_WORDS)
            text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 20))) + f" #{tag}"
            start = len(text.encode()) - len(tag) - 1
            record: dict[str, Any] = {
                "$type": "app.bsky.feed.post",
                "text": text,
                "langs": ["en"],
                "createdAt": "2024-11-19T07:06:40.000Z",
                "facets": [
                    {
                        "index": {"byteStart": start, "byteEnd": start + len(tag) + 1},
                        "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": tag}],
                    }
                ],
            }
            blob = {"$type": "blob", "ref": {"$link": f"bafkrei{i:052d}"}, "mimeType": "image/jpeg"}
            if roll > 0.95:
                record["embed"] = {"$type": "app.bsky.embed.video", "video": blob}
            elif roll > 0.75:
                images = [{"alt": "", "image": blob} for _ in range(rng.randint(1, 2))]
                record["embed"] = {"$type": "app.bsky.embed.images", "images": images}
            commit = {
                "rev": f"r{i}",
                "operation": "create",
                "collection": "app.bsky.feed.post",
                "rkey": rkey,
                "record": record,
                "cid": f"bafyrei{i:052d}",
            }
            created.append((did, rkey))
        frames.append(
            json.dumps({"did": did, "time_us": time_us, "kind": "commit", "commit": commit})
        )
    return frames


class _DroppingSink(PostSink):
    """Takes everything, keeps nothing: measures the connector alone."""

    def send_post(self, post: Post) -> None:
        pass

    def send_tombstone(self, post_id: str) -> None:
        pass

    def send_deadletter(self, letter: DeadLetter) -> None:
        pass

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


async def _one_run(frames: list[str], sink: PostSink) -> float:
    """Seconds from connecting to the last event handed over and flushed."""
    from websockets.asyncio.server import ServerConnection, serve

    from crossfeed.sources.bluesky import BlueskyConnector

    async def send_all(ws: ServerConnection) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with serve(send_all, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        connector = BlueskyConnector(
            sink, url=f"ws://127.0.0.1:{port}/subscribe", flush_interval_s=0.5
        )
        stop = asyncio.Event()

        async def watch() -> None:
            while sum(connector.counts.get(k, 0) for k in ("post", "delete", "skipped")) < len(
                frames
            ):
                await asyncio.sleep(0.005)
            stop.set()

        started = time.perf_counter()
        watcher = asyncio.create_task(watch())
        await connector.run(stop)
        elapsed = time.perf_counter() - started
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return elapsed


def run_sources_bench(
    settings: Settings, *, frames: int, repeats: int, seed: int, progress: bool
) -> BenchReport:
    from kafka.admin import KafkaAdminClient

    from crossfeed.sources.kafka import KafkaPostSink
    from crossfeed.streams.topics import ensure_topics

    data = synthetic_frames(frames, seed)
    topic = f"bench-sources-{uuid.uuid4().hex[:8]}.posts.raw"
    kafka = settings.kafka.model_copy(update={"topic_raw": topic, "topic_deadletter": topic})
    ensure_topics(kafka, [topic])
    modes: dict[str, Callable[[], PostSink]] = {
        "connector": _DroppingSink,
        "connector + Kafka": lambda: KafkaPostSink(kafka, client_id="crossfeed-bench-sources"),
    }
    samples: dict[str, list[float]] = {name: [] for name in modes}
    try:
        with tqdm(total=repeats * len(modes), desc="bench sources", disable=not progress) as bar:
            for _ in range(repeats):
                for name, make in modes.items():  # interleaved: load drifts hit both alike
                    sink = make()
                    try:
                        seconds = asyncio.run(_one_run(data, sink))
                    finally:
                        sink.close()
                    samples[name].append(rate(len(data), seconds) or 0.0)
                    bar.update()
    finally:
        admin = KafkaAdminClient(**_admin_kwargs(settings))
        with contextlib.suppress(Exception):
            admin.delete_topics([topic])
        admin.close()
    results: dict[str, Any] = {
        "modes": {n: {"events_per_s": samples[n], "summary": summarize(samples[n])} for n in modes}
    }
    alone, with_kafka = (results["modes"][n]["summary"]["p50"] for n in modes)
    results["kafka_vs_alone_p50"] = ratio(with_kafka, alone)
    table = Table(
        "Bluesky connector, Jetstream frames -> sink (events/s per run)",
        ["sink", "n", "min", "p50", "p95", "max"],
    )
    for name in modes:
        s = results["modes"][name]["summary"]
        table.add(name, s["n"], s["min"], s["p50"], s["p95"], s["max"])
    return BenchReport(
        name="sources",
        title="Connector throughput (Bluesky / Jetstream over a loopback WebSocket)",
        parameters={"frames": frames, "repeats": repeats, "seed": seed},
        results=results,
        tables=[table],
        notes=[
            "Kafka: acks=all on the configured broker, flushed before the clock stops; "
            f"p50 ratio Kafka/alone {results['kafka_vs_alone_p50']:.2f}.",
            "Frames: 70% text posts, 20% with images, 5% with a video, 5% deletes.",
        ],
    )


def _admin_kwargs(settings: Settings) -> dict[str, Any]:
    from kafka.admin import KafkaAdminClient

    from crossfeed.core.kafka import KafkaConnection

    return KafkaConnection(settings.kafka).kafka_python(KafkaAdminClient)
