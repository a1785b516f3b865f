"""Mastodon statuses and streaming events -> events, over the recorded session."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossfeed.sources.base import Erase, Malformed, Produce, Skip
from crossfeed.sources.mastodon_status import html_to_text, stream_event

BLOCKS = (
    (Path(__file__).parent / "fixtures" / "mastodon_public.sse").read_text().strip().split("\n\n")
)
HOST = "social.example"


def _event(i: int):  # type: ignore[no-untyped-def]
    lines = BLOCKS[i].split("\n")
    name = lines[0].removeprefix("event: ")
    data = lines[1].removeprefix("data: ") if len(lines) > 1 else ""
    return stream_event(name, data, HOST)[0]


def test_update_with_html_entities_and_a_hashtag_link() -> None:
    event = _event(1)
    assert isinstance(event, Produce)
    post = event.post
    assert post.id == "mastodon:social.example:113500000000000001"
    assert post.source == "mastodon" and post.author == "@ana@social.example"
    assert post.text == "Morning coffee & a good book ☕ #coffee"
    assert post.tags == ["coffee"] and post.lang == "en"
    assert (
        post.metadata and post.metadata["url"] == "https://social.example/@ana/113500000000000001"
    )


def test_paragraphs_links_and_media_kinds() -> None:
    post = _event(2).post  # type: ignore[union-attr]
    assert post.author == "@ben@other.example"
    assert post.text == (
        "Line one\nline two with https://example.org/a/very/long/path\n\nSecond paragraph"
    )
    assert [m.kind for m in post.media] == ["image", "video"]  # gifv is a video; audio left out
    assert post.lang == "de"
    storm = _event(3).post  # type: ignore[union-attr]
    assert [m.kind for m in storm.media] == ["video"] and storm.tags == ["weather", "StormChasing"]
    assert storm.metadata["sensitive"] is True and storm.metadata["spoiler_text"] == "storm footage"  # type: ignore[index]


def test_delete_edit_and_other_events() -> None:
    assert _event(5) == Erase("mastodon:social.example:113500000000000001")
    edit = _event(6)
    assert isinstance(edit, Produce) and edit.post.text == "Line one, edited"
    assert _event(7) == Skip("event_notification")
    assert _event(8).label == "json"  # type: ignore[union-attr]  # cut short
    assert _event(9) == Skip("reblog")
    assert isinstance(_event(10), Malformed) and _event(10).label == "bad_delete"  # type: ignore[union-attr]
    assert _event(11) == Skip("event_filters_changed")
    assert stream_event("something.new", "{}", HOST)[0] == Skip("event_other")


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("<p>x &lt;3 &#x1F600;</p>", "x <3 😀"),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("plain", "plain"),
        ("<p>  spaced   out  </p>", "spaced out"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text
