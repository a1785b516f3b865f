"""Media resolution: roots, symlinks, traversal, URL policy, size caps, decoding."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from crossfeed.core.schema import MediaItem
from crossfeed.encoders.exceptions import MediaDecodeError
from crossfeed.streams.exceptions import (
    MediaError,
    MediaFetchError,
    MediaRefusedError,
    MediaTooLargeError,
)
from crossfeed.streams.media import (
    DecodeLimits,
    MediaFetcher,
    MediaPolicy,
    decode_image_bytes,
    decode_video_bytes,
    is_public_address,
)

LIMITS = DecodeLimits(max_bytes=1 << 20, max_pixels=10_000_000, video_fps=1.0, video_max_frames=4)


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.png").write_bytes(b"inside")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"top secret")
    (root / "escape.png").symlink_to(outside)
    (root / "inner-link.png").symlink_to(root / "sub" / "ok.png")
    (root / "big.bin").write_bytes(b"x" * 2048)
    return {"root": root, "outside": outside}


def _fetcher(roots: list[Path], **kw: object) -> MediaFetcher:
    return MediaFetcher(MediaPolicy(media_roots=tuple(roots), **kw))  # type: ignore[arg-type]


def _path(p: str | Path) -> MediaItem:
    return MediaItem(kind="image", path=str(p))


def test_paths_inside_root_are_read(layout: dict[str, Path]) -> None:
    f = _fetcher([layout["root"]])
    assert f.fetch(_path("sub/ok.png")) == b"inside"  # relative: looked up under the root
    assert f.fetch(_path(layout["root"] / "sub" / "ok.png")) == b"inside"
    assert f.fetch(_path("inner-link.png")) == b"inside"  # symlink staying inside is fine
    assert f.fetch(_path("sub/../sub/ok.png")) == b"inside"


@pytest.mark.parametrize(
    "raw",
    [
        "../secret.txt",
        "sub/../../secret.txt",
        "escape.png",  # symlink escaping the root
        "/etc/passwd",
        "../does-not-exist.png",
    ],
)
def test_paths_escaping_root_are_refused(layout: dict[str, Path], raw: str) -> None:
    with pytest.raises(MediaRefusedError):
        _fetcher([layout["root"]]).fetch(_path(raw))


def test_absolute_path_to_outside_file_is_refused(layout: dict[str, Path]) -> None:
    with pytest.raises(MediaRefusedError, match="outside"):
        _fetcher([layout["root"]]).fetch(_path(layout["outside"]))


def test_missing_file_and_no_roots(layout: dict[str, Path]) -> None:
    with pytest.raises(MediaError, match="not found") as info:
        _fetcher([layout["root"]]).fetch(_path("sub/missing.png"))
    assert not isinstance(info.value, MediaRefusedError)
    with pytest.raises(MediaRefusedError, match="no media roots"):
        _fetcher([]).fetch(_path("sub/ok.png"))
    with pytest.raises(MediaRefusedError, match="NUL"):
        _fetcher([layout["root"]]).fetch(_path("sub/ok.png\x00.jpg"))


def test_directory_and_size_cap(layout: dict[str, Path]) -> None:
    f = _fetcher([layout["root"]], max_bytes=1024)
    with pytest.raises(MediaError, match="regular file"):
        f.fetch(_path("sub"))
    with pytest.raises(MediaTooLargeError):
        f.fetch(_path("big.bin"))


def test_inline_size_cap_and_bad_base64() -> None:
    f = _fetcher([], max_bytes=100)
    ok = MediaItem(kind="image", data_base64=base64.b64encode(b"a" * 100).decode())
    assert f.fetch(ok) == b"a" * 100
    with pytest.raises(MediaTooLargeError):
        f.fetch(MediaItem(kind="image", data_base64=base64.b64encode(b"a" * 200).decode()))
    with pytest.raises(MediaError, match="base64"):
        f.fetch(MediaItem(kind="image", data_base64="@@@@"))


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("fe80::1", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def _resolver(mapping: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        return mapping[host]

    return resolve


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/a.png", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http://127.0.0.1/a.png", "non-public"),
        ("http://[::1]:8080/a.png", "non-public"),
        ("http://localhost/a.png", "loopback"),
        ("http://internal.example/a.png", "non-public"),  # resolves to a private address
        ("http://user:pw@example.com/a.png", "credentials"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),
    ],
)
def test_urls_refused(url: str, reason: str) -> None:
    f = MediaFetcher(
        MediaPolicy(),
        resolver=_resolver({"internal.example": ["10.0.0.5"], "example.com": ["93.184.216.34"]}),
    )
    with pytest.raises(MediaRefusedError, match=reason):
        f.check_url(url)


def _mock(handler):  # type: ignore[no-untyped-def]
    return MediaFetcher(
        MediaPolicy(max_bytes=1000),
        resolver=_resolver({"cdn.example": ["93.184.216.34"], "evil.example": ["127.0.0.1"]}),
        transport=httpx.MockTransport(handler),
        sleep=lambda s: None,
    )


def test_url_fetch_ok_and_size_cap() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/small.png":
            return httpx.Response(200, content=b"png-bytes")
        return httpx.Response(200, content=b"x" * 5000)

    f = _mock(handler)
    assert f.fetch(MediaItem(kind="image", url="https://cdn.example/small.png")) == b"png-bytes"
    with pytest.raises(MediaTooLargeError):
        f.fetch(MediaItem(kind="image", url="https://cdn.example/huge.png"))


def test_redirect_to_private_host_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://evil.example/internal"})

    with pytest.raises(MediaRefusedError, match="non-public"):
        _mock(handler).fetch(MediaItem(kind="image", url="https://cdn.example/a.png"))


def test_http_errors_client_vs_server() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(404 if request.url.path == "/gone" else 503)

    f = _mock(handler)
    with pytest.raises(MediaError, match="404") as info:
        f.fetch(MediaItem(kind="image", url="https://cdn.example/gone"))
    assert not info.value.retriable and calls["n"] == 1
    with pytest.raises(MediaFetchError, match="gave up after 3"):
        f.fetch(MediaItem(kind="image", url="https://cdn.example/flaky"))
    assert calls["n"] == 4


def test_decode_helpers(png, mp4) -> None:  # type: ignore[no-untyped-def]
    assert decode_image_bytes(png(), LIMITS).size == (16, 16)
    frames = decode_video_bytes(mp4(frames=10), LIMITS)
    assert 1 <= len(frames) <= LIMITS.video_max_frames
    times = [t for t, _ in frames]
    assert times == sorted(times) and times[0] >= 0
    with pytest.raises(MediaDecodeError):
        decode_image_bytes(png()[:40], LIMITS)
    with pytest.raises(MediaDecodeError):
        decode_video_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, LIMITS)


def test_threads_share_one_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embed stage fetches from several threads: they must make one client, not four."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    made: list[object] = []

    class SlowClient:
        def __init__(self, **kw: object) -> None:
            time.sleep(0.05)  # widen the window in which an unlocked check races
            made.append(self)

        def close(self) -> None:
            pass

    monkeypatch.setattr(httpx, "Client", SlowClient)
    fetcher = _fetcher([])
    start = threading.Barrier(4)

    def get() -> object:
        start.wait()
        return fetcher._http()

    with ThreadPoolExecutor(4) as pool:
        clients = list(pool.map(lambda _: get(), range(4)))
    assert len(made) == 1 and all(c is made[0] for c in clients)
