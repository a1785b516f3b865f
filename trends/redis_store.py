"""The trend state in Redis: shared by every worker and API process, bounded by TTLs.

=========================================  ============================================
``<p>:a:<window>:<item>``                   set of authors (distinct authors, idempotent)
``<p>:n:<window>``                          hash item -> distinct authors (grows only when
                                            the set above grew, in the same script)
``<p>:m:<window>:<item>``                   set of member post ids (capped)
``<p>:t:<window>:<item>``                   hash term -> count (cluster labels; item ``*``
                                            is the background)
``<p>:s:<post id>``                         a sample (JSON: text, media ref)
``<p>:pc:<post id>``                        the post's cluster id (reposts find it here)
``<p>:d:<item>``                            first-detected event time of a running trend
``<p>:wm`` / ``<p>:first``                  newest event time seen / first window seen
``<p>:cb`` / ``<p>:cb:ver`` / ``<p>:cb:lock``  clusters (id -> weight, window, centroid),
                                            their version, the writers' lock
=========================================  ============================================

Every key has a TTL: counts, members, samples and labels the tracker's history (plus
the late allowance); the watermark, the first window and the codebook (capped by
``max_clusters``) ``state_ttl_s`` (a week), renewed on every write, so an idle
deployment forgets everything together.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import redis

from crossfeed.trends.base import TrendSample
from crossfeed.trends.cluster import Codebook, decode_cluster, encode_cluster
from crossfeed.trends.exceptions import TrendsUnavailableError
from crossfeed.trends.store import Entry, TrendStore, first_unique

T = TypeVar("T")
MEMBER_CAP = 2000
LOCK_TTL_MS = 10_000
LOCK_WAIT_S = 5.0

# Per entry: KEYS authors, counts, members; ARGV (after ttl, cap): author, item, member.
_ADD = """
local ttl = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local added = 0
for e = 0, (#KEYS / 3) - 1 do
  local ak, ck, mk = KEYS[e * 3 + 1], KEYS[e * 3 + 2], KEYS[e * 3 + 3]
  local author, item, member = ARGV[e * 3 + 3], ARGV[e * 3 + 4], ARGV[e * 3 + 5]
  if redis.call('SADD', ak, author) == 1 then
    redis.call('HINCRBY', ck, item, 1)
    redis.call('EXPIRE', ak, ttl)
    redis.call('EXPIRE', ck, ttl)
    added = added + 1
  end
  if redis.call('SCARD', mk) < cap then
    redis.call('SADD', mk, member)
    redis.call('EXPIRE', mk, ttl)
  end
end
return added
"""
_MAX = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return ARGV[1]
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return cur
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_ENTRIES_PER_CALL = 500


def _s(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class RedisStore(TrendStore):
    def __init__(self, client: redis.Redis, prefix: str, state_ttl_s: int = 7 * 86_400) -> None:
        self.r = client
        self.p = prefix
        self.state_ttl_s = state_ttl_s
        self._add = client.register_script(_ADD)
        self._max = client.register_script(_MAX)
        self._unlock = client.register_script(_UNLOCK)
        self._codebook: Codebook | None = None

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise TrendsUnavailableError(f"trend state (Redis) unavailable: {exc}") from exc

    # ---------------------------------------------------------------- counts

    def add(self, entries: Sequence[Entry], ttl_s: float) -> None:
        ttl = max(1, int(ttl_s))
        for i in range(0, len(entries), _ENTRIES_PER_CALL):
            chunk = entries[i : i + _ENTRIES_PER_CALL]
            keys: list[str] = []
            args: list[Any] = [ttl, MEMBER_CAP]
            for e in chunk:
                keys += [
                    f"{self.p}:a:{e.window}:{e.item}",
                    f"{self.p}:n:{e.window}",
                    f"{self.p}:m:{e.window}:{e.item}",
                ]
                args += [e.author, e.item, e.member]
            self._call(partial(self._add, keys=keys, args=args))

    def counts(self, windows: Sequence[int]) -> list[dict[str, int]]:
        def run() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for w in windows:
                pipe.hgetall(f"{self.p}:n:{w}")
            return list(pipe.execute())

        return [{_s(k): int(v) for k, v in h.items()} for h in self._call(run)]

    def members(self, item: str, windows: Sequence[int], limit: int) -> list[str]:
        ordered = sorted(windows, reverse=True)

        def run() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for w in ordered:
                pipe.smembers(f"{self.p}:m:{w}:{item}")
            return list(pipe.execute())

        return first_unique((sorted(_s(m) for m in got) for got in self._call(run)), limit)

    # ------------------------------------------------------- samples, labels

    def put_samples(self, samples: Sequence[TrendSample], ttl_s: float) -> None:
        def run() -> None:
            pipe = self.r.pipeline(transaction=False)
            for s in samples:
                value = json.dumps({"text": s.text, "media_ref": s.media_ref})
                pipe.set(f"{self.p}:s:{s.post_id}", value, ex=max(1, int(ttl_s)))
            pipe.execute()

        if samples:
            self._call(run)

    def samples(self, post_ids: Sequence[str]) -> list[TrendSample]:
        if not post_ids:
            return []
        raw = self._call(lambda: self.r.mget([f"{self.p}:s:{p}" for p in post_ids]))
        out = []
        for pid, value in zip(post_ids, raw, strict=True):
            if value is None:
                continue
            try:
                data = json.loads(value)
                out.append(TrendSample(pid, str(data.get("text", "")), data.get("media_ref")))
            except (ValueError, AttributeError):
                continue
        return out

    def add_terms(self, rows: Sequence[tuple[int, str, Sequence[str]]], ttl_s: float) -> None:
        merged: dict[str, Counter[str]] = {}
        for window, item, words in rows:
            merged.setdefault(f"{self.p}:t:{window}:{item}", Counter()).update(words)

        def run() -> None:
            pipe = self.r.pipeline(transaction=False)
            for key, counter in merged.items():
                for term, n in counter.items():
                    pipe.hincrby(key, term, n)
                pipe.expire(key, max(1, int(ttl_s)))
            pipe.execute()

        if merged:
            self._call(run)

    def terms(self, item: str, windows: Sequence[int]) -> Counter[str]:
        def run() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for w in windows:
                pipe.hgetall(f"{self.p}:t:{w}:{item}")
            return list(pipe.execute())

        out: Counter[str] = Counter()
        for h in self._call(run):
            out.update({_s(k): int(v) for k, v in h.items()})
        return out

    # ------------------------------------------------------- time, detection

    def advance_watermark(self, event_time: float) -> float:
        return float(
            self._call(
                lambda: self._max(keys=[f"{self.p}:wm"], args=[event_time, self.state_ttl_s])
            )
        )

    def watermark(self) -> float | None:
        raw = self._call(lambda: self.r.get(f"{self.p}:wm"))
        return float(raw) if raw is not None else None

    def first_window(self, window: int) -> int:
        key = f"{self.p}:first"

        def run() -> list[Any]:
            pipe = self.r.pipeline(transaction=True)
            pipe.set(key, window, nx=True, ex=self.state_ttl_s)
            pipe.get(key)
            return list(pipe.execute())

        raw = self._call(run)[-1]
        return int(raw) if raw is not None else window

    def mark_detected(self, item: str, event_time: float, ttl_s: float) -> float:
        key = f"{self.p}:d:{item}"

        def run() -> list[Any]:
            pipe = self.r.pipeline(transaction=True)
            pipe.set(key, event_time, nx=True)
            pipe.expire(key, max(1, int(ttl_s)))
            pipe.get(key)
            return list(pipe.execute())

        return float(self._call(run)[-1])

    def detected(self, item: str) -> float | None:
        raw = self._call(lambda: self.r.get(f"{self.p}:d:{item}"))
        return float(raw) if raw is not None else None

    def set_cluster_of(self, mapping: Mapping[str, int], ttl_s: float) -> None:
        def run() -> None:
            pipe = self.r.pipeline(transaction=False)
            for pid, cid in mapping.items():
                pipe.set(f"{self.p}:pc:{pid}", cid, ex=max(1, int(ttl_s)))
            pipe.execute()

        if mapping:
            self._call(run)

    def cluster_of(self, post_ids: Sequence[str]) -> dict[str, int]:
        if not post_ids:
            return {}
        raw = self._call(lambda: self.r.mget([f"{self.p}:pc:{p}" for p in post_ids]))
        return {p: int(v) for p, v in zip(post_ids, raw, strict=True) if v is not None}

    # -------------------------------------------------------------- codebook

    def _load_codebook(self) -> Codebook:
        def run() -> list[Any]:
            pipe = self.r.pipeline(transaction=True)
            pipe.get(f"{self.p}:cb:ver")
            pipe.hgetall(f"{self.p}:cb")
            return list(pipe.execute())

        ver_raw, rows = self._call(run)
        book = Codebook(version=int(ver_raw or 0))
        for field_, raw in rows.items():
            name = _s(field_)
            if name == "next":
                book.next_id = int(raw)
            else:
                cid = int(name)
                book.clusters[cid] = decode_cluster(cid, raw)
        return book

    @contextmanager
    def codebook(self) -> Iterator[Codebook]:
        lock, token = f"{self.p}:cb:lock", uuid.uuid4().hex
        deadline = time.monotonic() + LOCK_WAIT_S
        while not self._call(lambda: self.r.set(lock, token, nx=True, px=LOCK_TTL_MS)):
            if time.monotonic() > deadline:
                raise TrendsUnavailableError("the trend clusters are locked by another writer")
            time.sleep(0.01)
        try:
            ver_raw = self._call(lambda: self.r.get(f"{self.p}:cb:ver"))
            ver = int(ver_raw or 0)
            if self._codebook is None or self._codebook.version != ver:
                self._codebook = self._load_codebook()
            book = self._codebook
            book.changed.clear()
            book.removed.clear()
            yield book
            if book.changed or book.removed:
                self._save(book)
        except BaseException:
            self._codebook = None  # half-applied changes: reload next time
            raise
        finally:
            self._call(lambda: self._unlock(keys=[lock], args=[token]))

    def _save(self, book: Codebook) -> None:
        def run() -> list[Any]:
            pipe = self.r.pipeline(transaction=True)
            for cid in book.changed:
                pipe.hset(f"{self.p}:cb", str(cid), encode_cluster(book.clusters[cid]))
            if book.removed:
                pipe.hdel(f"{self.p}:cb", *[str(c) for c in book.removed])
            pipe.hset(f"{self.p}:cb", "next", book.next_id)
            pipe.expire(f"{self.p}:cb", self.state_ttl_s)
            pipe.incr(f"{self.p}:cb:ver")
            pipe.expire(f"{self.p}:cb:ver", self.state_ttl_s)
            return list(pipe.execute())

        book.version = int(self._call(run)[-2])
        book.changed.clear()
        book.removed.clear()

    def close(self) -> None:
        self.r.close()
