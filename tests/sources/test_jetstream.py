"""Jetstream messages -> events, over the recorded session's frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossfeed.sources.base import Erase, Malformed, Produce, Skip
from crossfeed.sources.exceptions import MalformedEventError, SourceConfigError
from crossfeed.sources.jetstream import BlobUrls, parse_message

FRAMES = (Path(__file__).parent / "fixtures" / "jetstream_session.jsonl").read_text().splitlines()
URLS = BlobUrls()


def _event(i: int):  # type: ignore[no-untyped-def]
    return parse_message(FRAMES[i], URLS).event


def test_text_post_with_facet_hashtag() -> None:
    event = _event(0)
    assert isinstance(event, Produce)
    post = event.post
    assert post.id == "at://did:plc:4qqizocrnriintskkh6jjdqr/app.bsky.feed.post/3lbqaaaaaaaa2"
    assert post.source == "bluesky" and post.author == "did:plc:4qqizocrnriintskkh6jjdqr"
    assert post.tags == ["CatsOfBluesky"] and post.lang == "en"
    assert post.created_at.isoformat() == "2024-11-19T07:06:40.123000+00:00"
    assert post.metadata and post.metadata["url"].startswith("https://bsky.app/profile/did:plc:")
    assert post.metadata["time_us"] == json.loads(FRAMES[0])["time_us"]


def test_images_become_cdn_urls_with_alt_texts_and_record_tags() -> None:
    post = _event(1).post  # type: ignore[union-attr]
    assert [m.kind for m in post.media] == ["image", "image"]
    url = post.media[0].url
    assert url is not None and url.startswith(
        "https://cdn.bsky.app/img/feed_fullsize/plain/did:plc:ewvi7nxzyoun6zhxrhs64oiz/bafkrei"
    )
    assert post.media[0].mime == "image/jpeg" and post.media[1].mime == "image/png"
    assert post.tags == ["photography", "sunset"]
    assert post.lang == "en-GB" and post.metadata["alt"] == ["orange sky over boats"]  # type: ignore[index]


def test_video_and_record_with_media() -> None:
    video = _event(3).post  # type: ignore[union-attr]
    assert [m.kind for m in video.media] == ["video"]
    assert (
        video.media[0].url
        and "com.atproto.sync.getBlob?did=did:web:carol.example.com&cid=bafkrei"
        in video.media[0].url
    )
    quote = _event(5).post  # type: ignore[union-attr]
    assert [m.kind for m in quote.media] == ["image"] and quote.tags == ["DogsOfBluesky"]


def test_delete_names_the_post_it_erases() -> None:
    event = _event(6)
    assert event == Erase(_event(0).post.id)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("index", "reason"),
    [(2, "identity"), (4, "other_collection"), (8, "account"), (9, "empty_post")],
)
def test_what_is_skipped_and_why(index: int, reason: str) -> None:
    assert _event(index) == Skip(reason)


def test_unreadable_frames_raise_with_a_label() -> None:
    with pytest.raises(MalformedEventError) as cut:
        parse_message(FRAMES[7], URLS)
    assert cut.value.label == "json"
    with pytest.raises(MalformedEventError) as no_rkey:
        parse_message(FRAMES[10], URLS)
    assert no_rkey.value.label == "shape" and "rkey" in no_rkey.value.message
    for bad in ("[]", "{}", '{"did": "x", "time_us": 1, "kind": "commit"}', '"text"'):
        with pytest.raises(MalformedEventError):
            parse_message(bad, URLS)


def test_v2_envelope_garbage_dates_and_updates() -> None:
    wrapped = _event(11).post  # type: ignore[union-attr]
    assert wrapped.text == "wrapped in the v2 envelope" and wrapped.lang == "fr"
    frame = json.loads(FRAMES[12])
    odd = _event(12).post  # type: ignore[union-attr]
    assert odd.lang is None  # not a language tag
    assert odd.created_at.timestamp() == frame["time_us"] / 1_000_000  # from time_us
    edit = parse_message(FRAMES[13], URLS)
    assert edit.event.post.id == _event(1).post.id  # type: ignore[union-attr]
    assert edit.key != parse_message(FRAMES[1], URLS).key  # not a duplicate of the create


def test_a_bad_record_is_dead_lettered_not_skipped() -> None:
    frame = json.loads(FRAMES[0])
    frame["commit"]["record"]["text"] = "x" * 20_000  # over the wire schema's limit
    event = parse_message(json.dumps(frame), URLS).event
    assert isinstance(event, Malformed) and event.label == "invalid_post"
    assert event.stage == "validate" and event.post_id and "text" in event.detail
    frame["commit"]["record"]["text"] = 12
    event = parse_message(json.dumps(frame), URLS).event
    assert isinstance(event, Malformed) and event.label == "bad_record"


def test_blob_url_templates_are_checked_and_values_encoded() -> None:
    urls = BlobUrls(image="https://blobs.example/{did}/{cid}.jpg")
    assert (
        urls.url("image", "did:web:a/b", "bafkrei")
        == "https://blobs.example/did:web:a%2Fb/bafkrei.jpg"
    )
    for bad in ("ftp://x/{cid}", "https://x/{nope}", "https://x/{0}"):
        with pytest.raises(SourceConfigError):
            BlobUrls(image=bad)
