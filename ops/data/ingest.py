"""``crossfeed ingest bluesky|mastodon``: run a connector in the foreground.

::

    crossfeed ingest bluesky [--url wss://jetstream2.us-east.bsky.network/subscribe]
    MASTODON_ACCESS_TOKEN=... crossfeed ingest mastodon --url https://mastodon.social --tag cats

Posts go to ``posts.raw`` (``CROSSFEED_TOPIC_RAW``), deletes as tombstones, unreadable
frames to ``posts.deadletter``. The cursor and a status file (``crossfeed status``)
live under ``<CROSSFEED_STATE_DIR>/sources/``; Prometheus metrics are served on
127.0.0.1 (``--metrics-port``). SIGINT/SIGTERM stop it after flushing what it
produced and saving its cursor (a second signal stops it at once). The process
starts no children.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from crossfeed.core.settings import KafkaSettings, SourceSettings, StateSettings
from crossfeed.exceptions import ConfigError
from crossfeed.sources.base import Connector, PostSink, RunReport
from crossfeed.sources.metrics import SourceMetrics
from crossfeed.sources.state import CursorStore, endpoint_key, sources_dir

log = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    settings = SourceSettings()
    p = sub.add_parser("ingest", help="stream posts from a social service into posts.raw")
    services = p.add_subparsers(dest="service", metavar="SERVICE", required=True)

    b = services.add_parser("bluesky", help="Bluesky, through a Jetstream server")
    b.add_argument(
        "--url",
        default=settings.jetstream_url,
        help="Jetstream subscribe endpoint (CROSSFEED_JETSTREAM_URL; default %(default)s)",
    )
    b.add_argument("--did", action="append", default=[], help="only these accounts (repeatable)")
    b.add_argument("--rewind", type=float, default=5.0, help="seconds replayed on reconnect")
    b.add_argument("--image-url-template", default=None, help="URL of an image blob: {did} {cid}")
    b.add_argument("--video-url-template", default=None, help="URL of a video blob: {did} {cid}")
    _common(b, settings)
    b.set_defaults(func=_cmd_bluesky)

    m = services.add_parser("mastodon", help="a Mastodon instance's streaming API")
    m.add_argument(
        "--url",
        default=settings.mastodon_url or None,
        required=not settings.mastodon_url,
        help="the instance, e.g. https://mastodon.social (CROSSFEED_MASTODON_URL)",
    )
    m.add_argument("--tag", help="a hashtag stream instead of the public timeline")
    m.add_argument("--local", action="store_true", help="only the instance's own posts")
    m.add_argument("--only-media", action="store_true", help="only posts with media (public)")
    m.add_argument(
        "--token-file",
        type=Path,
        help="file holding the access token (else MASTODON_ACCESS_TOKEN); never pass it inline",
    )
    m.add_argument("--no-catch-up", action="store_true", help="no timeline catch-up on reconnect")
    m.add_argument(
        "--allow-insecure", action="store_true", help="allow plain http to another machine"
    )
    _common(m, settings)
    m.set_defaults(func=_cmd_mastodon)


def _common(p: argparse.ArgumentParser, settings: SourceSettings) -> None:
    p.add_argument("--topic", default=None, help="default posts.raw (CROSSFEED_TOPIC_RAW)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=settings.metrics_port,
        help="Prometheus metrics on 127.0.0.1:PORT (0: a free port; -1: none)",
    )
    p.add_argument(
        "--quiet-warn",
        type=float,
        default=settings.quiet_warn_s,
        help="warn after this many seconds without an event (default %(default)s)",
    )
    p.add_argument("--fresh", action="store_true", help="ignore the saved cursor")
    p.add_argument("--no-create-topics", action="store_true")


def _serve_metrics(metrics: SourceMetrics, port: int) -> tuple[Any, str | None]:
    if port < 0:
        return None, None
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on 127.0.0.1:{port}: {exc}") from exc
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    log.info("metrics on %s", url)
    return server, url


def _sink(args: argparse.Namespace) -> tuple[PostSink, KafkaSettings]:
    from crossfeed.sources.kafka import KafkaPostSink
    from crossfeed.streams.topics import ensure_topics

    kafka = KafkaSettings()
    if args.topic:
        kafka.topic_raw = args.topic
    if not args.no_create_topics:
        ensure_topics(kafka, [kafka.topic_raw, kafka.topic_deadletter])
    return KafkaPostSink(kafka, client_id=f"crossfeed-ingest-{args.service}"), kafka


def run_connector(connector: Connector) -> RunReport:
    """Run until SIGINT/SIGTERM (then flush and stop; a second signal stops at once)."""

    async def main() -> RunReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            log.info("%s received; flushing and stopping", signal.Signals(signum).name)
            stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)  # a second signal acts at once

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        return await connector.run(stop)

    return asyncio.run(main())


def _prepare(args: argparse.Namespace, source: str, endpoint: str) -> dict[str, Any]:
    """Everything a connector takes besides its own options."""
    state = sources_dir(StateSettings().state_dir)
    key = endpoint_key(source, endpoint)
    store = CursorStore(state / f"{key}.cursor.json")
    if args.fresh and store.path.exists():
        store.path.unlink()
    metrics = SourceMetrics()
    server, url = _serve_metrics(metrics, args.metrics_port)
    return {
        "metrics": metrics,
        "cursor_store": store,
        "status_path": state / f"{key}.status.json",
        "metrics_url": url,
        "quiet_warn_s": args.quiet_warn,
        "_server": server,
    }


def _finish(build: Any, args: argparse.Namespace, source: str, endpoint: str) -> int:
    """Make the sink, the metrics server and the connector (``build(sink, **extra)``), run
    it, and release all three whatever happens."""
    sink, _ = _sink(args)
    server = None
    try:
        extra = _prepare(args, source, endpoint)
        server = extra.pop("_server")
        connector: Connector = build(sink, **extra)
        report = run_connector(connector)
    finally:
        sink.close()
        if server is not None:
            server.shutdown()
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items())) or "nothing"
    print(f"{connector.source}: {report.reason}: {counts}")
    return 0


def _cmd_bluesky(args: argparse.Namespace) -> int:
    from crossfeed.sources.bluesky import BlueskyConnector, check_url
    from crossfeed.sources.jetstream import BlobUrls

    url = check_url(args.url)
    defaults = BlobUrls()
    blobs = BlobUrls(
        image=args.image_url_template or defaults.image,
        video=args.video_url_template or defaults.video,
    )

    def build(sink: PostSink, **extra: Any) -> Connector:
        return BlueskyConnector(
            sink, url=url, dids=args.did, blob_urls=blobs, rewind_s=args.rewind, **extra
        )

    return _finish(build, args, "bluesky", url + " " + ",".join(sorted(args.did)))


def _token(args: argparse.Namespace) -> SecretStr:
    if args.token_file is not None:
        path: Path = args.token_file.expanduser()
        try:
            return SecretStr(path.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {path}: {exc}") from exc
    token = SourceSettings().mastodon_token
    if token is None or not token.get_secret_value().strip():
        raise ConfigError(
            "a Mastodon access token is needed (since Mastodon 4.2 every stream wants one): "
            "set MASTODON_ACCESS_TOKEN or pass --token-file"
        )
    return token


def _cmd_mastodon(args: argparse.Namespace) -> int:
    from crossfeed.sources.mastodon import MastodonConnector, check_url

    url = check_url(args.url, what="--url", allow_insecure=args.allow_insecure)
    token = _token(args)
    stream = f"{url} tag={args.tag} local={args.local} media={args.only_media}"

    def build(sink: PostSink, **extra: Any) -> Connector:
        return MastodonConnector(
            sink,
            url=url,
            token=token,
            tag=args.tag,
            local=args.local,
            only_media=args.only_media,
            catch_up=not args.no_catch_up,
            allow_insecure=args.allow_insecure,
            **extra,
        )

    return _finish(build, args, "mastodon", stream)
