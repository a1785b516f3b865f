"""``DELETE /v1/posts/{id}`` (admin scope): forget a post, everywhere, within seconds.

Two paths meet here, so the answer is immediate and nothing is forgotten later:

1. a **tombstone** (the post's key, no value) goes to ``posts.raw`` first: the stream
   then releases the post's repost claim and writes a tombstone to the compacted
   ``posts.clean`` (a later ``crossfeed reindex`` has nothing to bring back), and every
   model version's workers erase it too;
2. the API runs the same :class:`~crossfeed.indexer.erasure.Eraser` at once: the erasure
   ledger (erase wins over copies still on their way), the post's rows in every collection
   of this deployment, and the index epoch (cached results go stale); its thumbnails go too.

If the broker is unreachable nothing is erased and the answer is 503 (retriable): retry.
Erasing a post that was never indexed (or is still on its way) is allowed and keeps it out.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path
from starlette.convertors import PathConvertor, register_url_convertor

from crossfeed.api.deps import CallerDep, LiveDep, StateDep
from crossfeed.api.exceptions import ApiError
from crossfeed.api.models import ERRORS, PRINTABLE_ID, ErasureResponse
from crossfeed.core.schema import MAX_ID_CHARS

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")


class _PostIdConvertor(PathConvertor):
    """A post id in a path (ids may hold "/"), except one ending in "/media/<n>": that path
    is a post's thumbnail (GET only), so DELETE there is a 405, never the erasure of a
    "post" named ``x/media/1``."""

    regex = r"(?!.*/media/[0-9]+$).+"


register_url_convertor("erasable_post_id", _PostIdConvertor())


class ErasureUnavailableError(ApiError):
    status_code = 503


@router.delete(
    "/posts/{post_id:erasable_post_id}", response_model=ErasureResponse, responses=ERRORS
)
async def erase_post(
    state: StateDep,
    live: LiveDep,
    caller: CallerDep,
    post_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=PRINTABLE_ID)],
) -> ErasureResponse:
    """Erase a post: its rows in every collection, cached results, its thumbnails, its
    repost claim; a tombstone keeps it out of later re-indexing. Idempotent. Answers once
    no query can find it."""
    if state.eraser is None or state.tombstones is None:
        raise ErasureUnavailableError("erasure is not configured in this API process")
    await state.tombstones.send(post_id)
    by = f"key:{caller.id}" if caller is not None else "unauthenticated (auth off)"
    report = await state.eraser.erase(post_id, by=by)
    if live.thumbnails is not None:
        await live.thumbnails.forget(post_id)
    return ErasureResponse(**report.to_json())
