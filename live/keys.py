"""Where live monitoring keeps its state in Redis: one place names every key.

Everything of one subscription shares the hash tag ``{<id>}`` (its record, its event
stream, its dedupe marks), so the script that records matches touches one slot only.

==========================================  ==========================================
``<p>:live:subs``                            set of subscription ids
``<p>:live:subs:version``                    counter, bumped on every create / delete
``<p>:live:{<id>}:sub``                      the subscription (JSON)
``<p>:live:{<id>}:events``                   its matches, a Redis Stream (MAXLEN ~ N)
``<p>:live:{<id>}:seen:<post id>``           "already recorded", with a TTL (dedupe)
``<p>:live:freshness``                       hash: newest event time, index lag, ...
``<p>:live:rate:<unix second>``              hash ``<stage>:in|out`` -> count (TTL 3 min)
``<p>:live:deadletters``                     hash ``<stage>|<reason label>`` -> count
``<p>:thumb:<post id>:<item>[:m<moment>]``   a JPEG thumbnail (TTL)
==========================================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LiveKeys:
    prefix: str  # RedisSettings.key_prefix

    @property
    def subs(self) -> str:
        return f"{self.prefix}:live:subs"

    @property
    def subs_version(self) -> str:
        return f"{self.prefix}:live:subs:version"

    def sub(self, sub_id: str) -> str:
        return f"{self.prefix}:live:{{{sub_id}}}:sub"

    def events(self, sub_id: str) -> str:
        return f"{self.prefix}:live:{{{sub_id}}}:events"

    def seen(self, sub_id: str, post_id: str) -> str:
        return f"{self.prefix}:live:{{{sub_id}}}:seen:{post_id}"

    def seen_pattern(self, sub_id: str) -> str:
        return f"{self.prefix}:live:{{{sub_id}}}:seen:*"

    @property
    def freshness(self) -> str:
        return f"{self.prefix}:live:freshness"

    def rate(self, second: int) -> str:
        return f"{self.prefix}:live:rate:{int(second)}"

    @property
    def deadletters(self) -> str:
        return f"{self.prefix}:live:deadletters"

    def repost(self, post_id: str) -> str:
        """A repost's id -> the original post it repeats (written by the normalize stage)."""
        return f"{self.prefix}:repost:{post_id}"

    def thumb(self, post_id: str, item: int, moment: int | None = None) -> str:
        base = f"{self.prefix}:thumb:{post_id}:{int(item)}"
        return base if moment is None else f"{base}:m{int(moment)}"
