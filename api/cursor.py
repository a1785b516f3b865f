"""Search pagination cursors: opaque, signed, bound to one query and one index epoch.

A cursor says where the previous page ended: how many posts were already served
(``offset``) and the last one's sort key (its score and post id; posts are ordered by
score, best first, ties by post id, as :func:`crossfeed.retrieval.hits.best_per_post`
orders them). The next page is the posts strictly after that key, so a page never
repeats a post an earlier page showed, even if a deeper search ranks posts a little
differently.

It also carries the index epoch it was issued under and a fingerprint of the query
(kind, normalised text / image hash / post id, filters, model version). A cursor is
accepted only with the same query and while the epoch is unchanged: a cursor from
another query is a 422 (:class:`InvalidCursorError`), one from an older epoch a 409
(:class:`StaleCursorError`: the index changed, start again from the first page).

Tokens are ``base64url(JSON) "." base64url(HMAC-SHA256)``, signed with
``CROSSFEED_CURSOR_SECRET`` (a random per-process key when unset, which is fine for
one API process; several replicas behind a load balancer need the same secret).
A token that was altered fails the signature check (422).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

from crossfeed.api.exceptions import InvalidCursorError, StaleCursorError

CURSOR_VERSION = 1
_SIG_BYTES = 16


@dataclass(frozen=True)
class Page:
    """Where a page ended: posts served so far, and the last post's sort key."""

    offset: int
    epoch: int | None
    last_score: float
    last_post_id: str

    def after(self, score: float, post_id: str) -> bool:
        """Whether a post with this key sorts strictly after the page's last post."""
        return (-score, post_id) > (-self.last_score, self.last_post_id)


def query_fingerprint(
    *, kind: str, identity: str, filters: dict[str, Any], model_version: str
) -> str:
    """A short digest of everything that decides which posts a query returns, in which
    order (``top_k`` only sizes pages, so a client may change it between pages)."""
    material = json.dumps(
        {"kind": kind, "query": identity, "filters": filters, "model": model_version},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(material.encode("utf-8", errors="surrogatepass")).digest()
    return _b64(digest[:16])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Makes and checks cursors with one secret key."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a cursor secret needs at least 16 bytes")
        self._key = secret

    @classmethod
    def random(cls) -> CursorCodec:
        return cls(secrets.token_bytes(32))

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_SIG_BYTES]

    def encode(self, page: Page, fingerprint: str) -> str:
        body = json.dumps(
            {
                "v": CURSOR_VERSION,
                "o": page.offset,
                "e": page.epoch,
                "s": page.last_score,
                "p": page.last_post_id,
                "f": fingerprint,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def decode(self, token: str, *, fingerprint: str, epoch: int | None) -> Page:
        """The page ``token`` continues, or an error saying why it cannot be used."""
        head, dot, sig = token.partition(".")
        try:
            body, mac = _unb64(head), _unb64(sig)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursorError("cursor is not a crossfeed search cursor") from exc
        if not dot or not hmac.compare_digest(mac, self._sign(body)):
            raise InvalidCursorError(
                "cursor is not valid here: altered, or issued by an API with another "
                "CROSSFEED_CURSOR_SECRET (or before a restart without one)"
            )
        try:
            data = json.loads(body)
            page = Page(
                offset=int(data["o"]),
                epoch=None if data["e"] is None else int(data["e"]),
                last_score=float(data["s"]),
                last_post_id=str(data["p"]),
            )
            version, issued_for = data["v"], data["f"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCursorError("cursor is malformed") from exc
        if version != CURSOR_VERSION or page.offset < 1 or not math.isfinite(page.last_score):
            raise InvalidCursorError("cursor is malformed")
        if issued_for != fingerprint:
            raise InvalidCursorError(
                "cursor belongs to another query: send it with the same text (or image, or "
                "post id) and filters as the page it came from"
            )
        if page.epoch != epoch:
            raise StaleCursorError(
                f"the index changed since this cursor was issued (epoch {page.epoch}, now "
                f"{epoch}): search again from the first page"
            )
        return page
