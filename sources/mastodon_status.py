"""Mastodon statuses and streaming events -> crossfeed events (pure functions, no I/O).

The streaming API sends server-sent events: ``update`` (a new status, its JSON in
``data``), ``status.update`` (an edit: the whole status again), ``delete`` (``data``
is the status id) and others (notifications, filters, announcements) that are not
posts. A status becomes a :class:`~crossfeed.core.schema.Post`:

* id ``mastodon:<instance host>:<status id>``: a delete names only the id, so the
  tombstone's key must be derivable from it (the instance's own id, also for remote
  statuses it relays);
* author ``@user@host`` (local accounts get the instance's host);
* text from the HTML ``content`` (paragraphs and line breaks kept, links as their
  full URLs, entities decoded); hashtags from ``tags``; ``language``;
* media: ``image`` -> image, ``gifv`` and ``video`` -> video (their ``url``, else
  ``remote_url``); audio and unknown attachments are left out;
* boosts (``reblog`` set) are skipped: the boosted status is a post of its own.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

from pydantic import ValidationError

from crossfeed.core.schema import MAX_MEDIA, MAX_TAGS, MediaItem, Post
from crossfeed.sources.base import (
    Erase,
    Malformed,
    Produce,
    Skip,
    SourceEvent,
    is_empty_post_error,
)
from crossfeed.sources.exceptions import MalformedEventError

SOURCE = "mastodon"
_STATUS_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MEDIA_KINDS = {"image": "image", "gifv": "video", "video": "video"}
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
_OTHER_EVENTS = frozenset(
    {
        "notification",
        "conversation",
        "filters_changed",
        "announcement",
        "announcement.reaction",
        "announcement.delete",
        "encrypted_message",
        "notifications_merged",
    }
)


class _TextExtractor(HTMLParser):
    """Visible text of a status' HTML: ``<br>`` as a line break, paragraphs apart."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")
        elif tag == "li":
            self.parts.append("\n- ")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def text(self) -> str:
        joined = "".join(self.parts)
        lines = [" ".join(line.split()) for line in joined.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


def post_id(instance: str, status_id: str) -> str:
    return f"mastodon:{instance}:{status_id}"


def _author(account: Any, instance: str) -> str:
    if not isinstance(account, dict) or not isinstance(account.get("acct"), str):
        raise MalformedEventError("bad_status", "status has no account.acct")
    acct = account["acct"].lstrip("@")
    return f"@{acct}" if "@" in acct else f"@{acct}@{instance}"


def _media(attachments: Any) -> tuple[list[MediaItem], list[str]]:
    items: list[MediaItem] = []
    alts: list[str] = []
    for media in attachments or []:
        if not isinstance(media, dict):
            continue
        kind = _MEDIA_KINDS.get(str(media.get("type")))
        url = media.get("url") or media.get("remote_url")
        if kind is None or not isinstance(url, str) or not url.startswith(("http://", "https://")):
            continue
        items.append(MediaItem(kind=kind, url=url))  # type: ignore[arg-type]
        if isinstance(media.get("description"), str) and media["description"].strip():
            alts.append(media["description"].strip())
    return items[:MAX_MEDIA], alts


def status_to_post(status: dict[str, Any], instance: str) -> Post:
    """The :class:`Post` of a status (MalformedEventError / ValidationError when it cannot
    be one)."""
    sid = status.get("id")
    if not isinstance(sid, str) or not _STATUS_ID.match(sid):
        raise MalformedEventError("bad_status", f"status id is missing or invalid: {sid!r}")
    content = status.get("content") or ""
    if not isinstance(content, str):
        raise MalformedEventError("bad_status", "status content is not a string")
    tags = [
        t["name"].lstrip("#")
        for t in status.get("tags") or []
        if isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"].strip()
    ]
    media, alts = _media(status.get("media_attachments"))
    language = status.get("language")
    lang = language if isinstance(language, str) and _LANG.match(language) else None
    metadata: dict[str, Any] = {"instance": instance, "status_id": sid}
    for name in ("url", "uri", "visibility", "spoiler_text", "in_reply_to_id"):
        value = status.get(name)
        if isinstance(value, str) and value:
            metadata[name] = value
    if status.get("sensitive") is True:
        metadata["sensitive"] = True
    if alts:
        metadata["alt"] = alts
    return Post(
        id=post_id(instance, sid),
        source=SOURCE,
        author=_author(status.get("account"), instance),
        created_at=status.get("created_at"),  # type: ignore[arg-type]  # validated by Post
        text=html_to_text(content),
        tags=list(dict.fromkeys(tags))[:MAX_TAGS],
        media=media,
        lang=lang,
        metadata=metadata,
    )


def status_event(status: Any, instance: str, raw: bytes) -> SourceEvent:
    """What a status (from the stream or a timeline page) means."""
    if not isinstance(status, dict):
        return Malformed("bad_status", "a status is not a JSON object", raw)
    if status.get("reblog"):
        return Skip("reblog")
    try:
        return Produce(status_to_post(status, instance))
    except MalformedEventError as exc:
        return Malformed(exc.label, exc.message, raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        pid = post_id(instance, str(status.get("id")))
        if is_empty_post_error(exc.errors()):
            return Skip("empty_post")
        detail = f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
        return Malformed("invalid_post", f"status {pid}: {detail}", raw, pid, "validate")


def stream_event(event: str, data: str, instance: str) -> tuple[SourceEvent, str | None]:
    """``(what it means, the status id it names)`` for one server-sent event."""
    raw = f"event: {event}\ndata: {data}".encode()
    if event in ("update", "status.update"):
        try:
            status = json.loads(data)
        except ValueError as exc:
            return Malformed("json", f"{event} data is not JSON: {exc}", raw), None
        sid = status.get("id") if isinstance(status, dict) else None
        return status_event(status, instance, raw), sid if isinstance(sid, str) else None
    if event == "delete":
        sid = data.strip().strip('"')
        if not _STATUS_ID.match(sid):
            return Malformed("bad_delete", f"delete names no status id: {data[:80]!r}", raw), None
        return Erase(post_id(instance, sid)), None
    # Other events (notification, filters_changed, announcement...): not posts. The label
    # is one of a known set, never the server's free text (metrics labels stay bounded).
    return Skip(f"event_{event}" if event in _OTHER_EVENTS else "event_other"), None
