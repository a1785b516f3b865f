"""Subscriptions as JSON (vectors as base64 float32), shared by every store."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from crossfeed.indexer.base import SearchFilter
from crossfeed.live.base import Subscription


def filter_to_dict(flt: SearchFilter) -> dict[str, Any]:
    return {
        "modalities": list(flt.modalities),
        "since_ms": flt.since_ms,
        "until_ms": flt.until_ms,
        "tags": list(flt.tags),
        "lang": flt.lang,
        "exclude_post_ids": list(flt.exclude_post_ids),
        "model_version": flt.model_version,
    }


def filter_from_dict(data: dict[str, Any]) -> SearchFilter:
    return SearchFilter(
        modalities=tuple(data.get("modalities") or ()),
        since_ms=data.get("since_ms"),
        until_ms=data.get("until_ms"),
        tags=tuple(data.get("tags") or ()),
        lang=data.get("lang"),
        exclude_post_ids=tuple(data.get("exclude_post_ids") or ()),
        model_version=data.get("model_version"),
    )


def encode(sub: Subscription) -> str:
    vector = np.asarray(sub.vector, dtype="<f4")
    return json.dumps(
        {
            "id": sub.id,
            "name": sub.name,
            "kind": sub.kind,
            "query": sub.query,
            "min_score": sub.min_score,
            "filter": filter_to_dict(sub.filter),
            "filters": sub.filters,
            "vector": base64.b64encode(vector.tobytes()).decode("ascii"),
            "model_version": sub.model_version,
            "created_at_ms": sub.created_at_ms,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode(raw: bytes | str) -> Subscription:
    """A stored subscription; ValueError (or KeyError) when it is not one."""
    data = json.loads(raw)
    vector = np.frombuffer(base64.b64decode(data["vector"]), dtype="<f4").astype(np.float32)
    return Subscription(
        id=str(data["id"]),
        name=str(data["name"]),
        kind=str(data["kind"]),
        query=str(data["query"]),
        min_score=float(data["min_score"]),
        filter=filter_from_dict(data["filter"]),
        filters=dict(data.get("filters") or {}),
        vector=vector,
        model_version=str(data["model_version"]),
        created_at_ms=int(data["created_at_ms"]),
    )
