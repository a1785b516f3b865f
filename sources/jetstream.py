"""Bluesky Jetstream messages -> crossfeed events (pure functions, no I/O).

Jetstream (v1, ``/subscribe``) sends one JSON object per WebSocket message::

    {"did": "did:plc:...", "time_us": 1732..., "kind": "commit",
     "commit": {"rev": "...", "operation": "create", "collection": "app.bsky.feed.post",
                "rkey": "3l...", "record": {...}, "cid": "bafy..."}}

``kind`` is ``commit``, ``identity`` or ``account`` (the last two arrive whatever
``wantedCollections`` says). Deletes have ``"operation": "delete"`` and no record.
Newer servers wrap messages as ``{"$type": "message", "payload": {...}}``; the
envelope is unwrapped here so both read the same.

A post record (``app.bsky.feed.post``) becomes a :class:`~crossfeed.core.schema.Post`:
its id is the AT URI ``at://<did>/app.bsky.feed.post/<rkey>`` (a delete names the same
URI, so its tombstone has the post's key), the author is the DID, hashtags come from
the ``app.bsky.richtext.facet#tag`` facets and ``record.tags``, the language is the
first of ``langs``, and images and videos (``app.bsky.embed.images`` / ``.video``, or
the ``media`` of ``.recordWithMedia``) become URLs built from their blob CIDs with
:class:`BlobUrls` templates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

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
from crossfeed.sources.exceptions import MalformedEventError, SourceConfigError

POST_COLLECTION = "app.bsky.feed.post"
TAG_FEATURE = "app.bsky.richtext.facet#tag"
SOURCE = "bluesky"

_DID = re.compile(r"^did:[a-z]+:[A-Za-z0-9._:%-]{1,512}$")
_RKEY = re.compile(r"^[A-Za-z0-9._~:-]{1,512}$")
_CID = re.compile(r"^[A-Za-z0-9]{8,256}$")
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class BlobUrls:
    """URL templates for blobs, with ``{did}`` and ``{cid}`` (both percent-encoded).

    Images default to Bluesky's image CDN (serves any account's images); videos to
    ``com.atproto.sync.getBlob`` on a PDS (default the bsky.social entryway, which
    serves the accounts it hosts: point it at another PDS or a blob proxy otherwise).
    """

    image: str = "https://cdn.bsky.app/img/feed_fullsize/plain/{did}/{cid}@jpeg"
    video: str = "https://bsky.social/xrpc/com.atproto.sync.getBlob?did={did}&cid={cid}"

    def __post_init__(self) -> None:
        for name in ("image", "video"):
            template = getattr(self, name)
            if not template.lower().startswith(("http://", "https://")):
                raise SourceConfigError(f"{name} URL template must be http(s): {template!r}")
            try:
                template.format(did="d", cid="c")
            except (KeyError, IndexError, ValueError) as exc:
                raise SourceConfigError(
                    f"{name} URL template may only use {{did}} and {{cid}}: {template!r}"
                ) from exc

    def url(self, kind: str, did: str, cid: str) -> str:
        template = self.image if kind == "image" else self.video
        return template.format(did=quote(did, safe=":"), cid=quote(cid, safe=""))


@dataclass(frozen=True)
class JetstreamMessage:
    """The parts of a message the connector needs besides its meaning."""

    time_us: int
    key: str  # identifies the event, for dropping the duplicates a rewind replays
    event: SourceEvent


def post_uri(did: str, rkey: str) -> str:
    return f"at://{did}/{POST_COLLECTION}/{rkey}"


def _blob_cid(blob: Any) -> tuple[str, str | None] | None:
    """``(cid, mime)`` of a blob ref, current (``ref.$link``) or legacy (``cid``) form."""
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    cid = ref.get("$link") if isinstance(ref, dict) else blob.get("cid")
    if not isinstance(cid, str) or not _CID.match(cid):
        return None
    mime = blob.get("mimeType")
    return cid, mime if isinstance(mime, str) else None


def _media(embed: Any, did: str, urls: BlobUrls) -> tuple[list[MediaItem], list[str]]:
    """Media items of an embed and the alt texts of its images."""
    if not isinstance(embed, dict):
        return [], []
    kind = embed.get("$type")
    if kind == "app.bsky.embed.recordWithMedia":
        return _media(embed.get("media"), did, urls)
    items: list[MediaItem] = []
    alts: list[str] = []
    if kind == "app.bsky.embed.images":
        for image in embed.get("images") or []:
            if not isinstance(image, dict):
                continue
            blob = _blob_cid(image.get("image"))
            if blob is None:
                continue
            items.append(MediaItem(kind="image", url=urls.url("image", did, blob[0]), mime=blob[1]))
            alt = image.get("alt")
            if isinstance(alt, str) and alt.strip():
                alts.append(alt.strip())
    elif kind == "app.bsky.embed.video":
        blob = _blob_cid(embed.get("video"))
        if blob is not None:
            items.append(MediaItem(kind="video", url=urls.url("video", did, blob[0]), mime=blob[1]))
        alt = embed.get("alt")
        if isinstance(alt, str) and alt.strip():
            alts.append(alt.strip())
    return items[:MAX_MEDIA], alts


def _tags(record: dict[str, Any]) -> list[str]:
    tags: list[str] = []
    for facet in record.get("facets") or []:
        features = facet.get("features") if isinstance(facet, dict) else None
        for feature in features or []:
            if isinstance(feature, dict) and feature.get("$type") == TAG_FEATURE:
                tag = feature.get("tag")
                if isinstance(tag, str) and tag.strip():
                    tags.append(tag.strip().lstrip("#"))
    for tag in record.get("tags") or []:
        if isinstance(tag, str) and tag.strip():
            tags.append(tag.strip().lstrip("#"))
    return list(dict.fromkeys(t for t in tags if t))[:MAX_TAGS]


def _created_at(record: dict[str, Any], time_us: int) -> datetime:
    """``createdAt`` (client-chosen, may be garbage) else when the relay saw it."""
    value = record.get("createdAt")
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return when if when.tzinfo else when.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(time_us / 1_000_000, tz=UTC)


def post_from_record(
    did: str, rkey: str, record: dict[str, Any], *, cid: str | None, time_us: int, urls: BlobUrls
) -> Post:
    """The :class:`Post` of an ``app.bsky.feed.post`` record (ValueError when it has no
    text, tags or media, or a field is out of bounds)."""
    text = record.get("text", "")
    if not isinstance(text, str):
        raise MalformedEventError("bad_record", "record.text is not a string")
    langs = [x for x in record.get("langs") or [] if isinstance(x, str)]
    lang = next((x for x in langs if len(x) <= 16 and _LANG.match(x)), None)
    media, alts = _media(record.get("embed"), did, urls)
    metadata: dict[str, Any] = {
        "uri": post_uri(did, rkey),
        "url": f"https://bsky.app/profile/{did}/post/{rkey}",
        "did": did,
        "rkey": rkey,
        "time_us": time_us,
    }
    if cid:
        metadata["cid"] = cid
    if langs:
        metadata["langs"] = langs[:8]
    if alts:
        metadata["alt"] = alts
    if isinstance(record.get("reply"), dict):
        metadata["reply"] = True
    return Post(
        id=post_uri(did, rkey),
        source=SOURCE,
        author=did,
        created_at=_created_at(record, time_us),
        text=text,
        tags=_tags(record),
        media=media,
        lang=lang,
        metadata=metadata,
    )


def parse_message(raw: str | bytes, urls: BlobUrls) -> JetstreamMessage:
    """What one Jetstream message means; :class:`MalformedEventError` when it cannot be
    read at all (its label: ``json``, ``shape``)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEventError("json", f"not JSON: {exc}") from exc
    if isinstance(data, dict) and data.get("$type") == "message" and "payload" in data:
        data = data["payload"]  # the v2 envelope
    if not isinstance(data, dict):
        raise MalformedEventError("shape", "a message is not a JSON object")
    time_us, did, kind = data.get("time_us"), data.get("did"), data.get("kind")
    if isinstance(time_us, bool) or not isinstance(time_us, int) or time_us <= 0:
        raise MalformedEventError("shape", "time_us is missing or not a positive integer")
    if not isinstance(did, str) or not _DID.match(did):
        raise MalformedEventError("shape", f"did is missing or invalid: {str(did)[:80]!r}")
    if kind != "commit":
        label = kind if kind in ("identity", "account") else "other_kind"
        return JetstreamMessage(time_us, f"{did}/{kind}/{time_us}", Skip(label))
    commit = data.get("commit")
    if not isinstance(commit, dict):
        raise MalformedEventError("shape", "a commit message has no commit object")
    collection, rkey, operation = (
        commit.get("collection"),
        commit.get("rkey"),
        commit.get("operation"),
    )
    if not isinstance(rkey, str) or not _RKEY.match(rkey) or rkey in (".", ".."):
        raise MalformedEventError("shape", f"commit rkey is missing or invalid: {rkey!r}")
    rev = commit.get("rev") if isinstance(commit.get("rev"), str) else str(time_us)
    key = f"{did}/{collection}/{rkey}/{operation}/{rev}"
    if collection != POST_COLLECTION:
        return JetstreamMessage(time_us, key, Skip("other_collection"))
    uri = post_uri(did, rkey)
    if operation == "delete":
        return JetstreamMessage(time_us, key, Erase(uri))
    if operation not in ("create", "update"):
        raise MalformedEventError("shape", f"unknown commit operation {operation!r}")
    record = commit.get("record")
    raw_bytes = raw if isinstance(raw, bytes) else raw.encode("utf-8")
    if not isinstance(record, dict):
        return JetstreamMessage(
            time_us, key, Malformed("bad_record", "a post commit has no record", raw_bytes, uri)
        )
    cid = commit.get("cid") if isinstance(commit.get("cid"), str) else None
    try:
        post = post_from_record(did, rkey, record, cid=cid, time_us=time_us, urls=urls)
    except MalformedEventError as exc:
        return JetstreamMessage(time_us, key, Malformed(exc.label, exc.message, raw_bytes, uri))
    except ValidationError as exc:
        if is_empty_post_error(exc.errors()):
            return JetstreamMessage(time_us, key, Skip("empty_post"))
        first = exc.errors()[0]
        detail = f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
        event = Malformed("invalid_post", f"post {uri}: {detail}", raw_bytes, uri, "validate")
        return JetstreamMessage(time_us, key, event)
    return JetstreamMessage(time_us, key, Produce(post))
