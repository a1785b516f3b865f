"""``/v1/subscriptions``: create, list, get, delete, bad input, and the SSE event stream."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crossfeed.live.base import Match
from crossfeed.live.memory import MemorySubscriptions


def _create(client: TestClient, **body: Any) -> dict[str, Any]:
    """POST a subscription; a field given as None is left out (null is refused)."""
    fields = {"text": "cute cats", "min_score": 0.5, **body}
    r = client.post("/v1/subscriptions", json={k: v for k, v in fields.items() if v is not None})
    assert r.status_code == 201, r.text
    return r.json()


def test_create_get_list_delete(client: TestClient) -> None:
    made = _create(client, name="Cats!", filters={"tags": ["#Pets"], "lang": "en"})
    assert len(made["id"]) == 32 and made["name"] == "Cats!" and made["active"] is True
    assert made["query"] == {
        "kind": "text",
        "text": "cute cats",
        "post_id": None,
        "image_sha256": None,
    }
    assert made["filters"] == {"tags": ["pets"], "lang": "en"}
    assert made["events_url"] == f"/v1/subscriptions/{made['id']}/events"
    got = client.get(f"/v1/subscriptions/{made['id']}").json()
    assert got["id"] == made["id"] and got["last_event_id"] is None
    other = _create(client, text="red car")
    listed = client.get("/v1/subscriptions").json()
    assert listed["total"] == 2
    assert {s["id"] for s in listed["subscriptions"]} == {made["id"], other["id"]}
    assert client.delete(f"/v1/subscriptions/{made['id']}").status_code == 204
    assert client.get(f"/v1/subscriptions/{made['id']}").status_code == 404
    assert client.delete(f"/v1/subscriptions/{made['id']}").status_code == 404


def test_a_post_query_excludes_the_post_itself(
    client: TestClient, subscriptions: MemorySubscriptions
) -> None:
    made = _create(client, text=None, post_id="cats1", min_score=0.3)
    assert made["query"]["post_id"] == "cats1"
    [stored] = subscriptions.load()
    assert tuple(stored.filter.exclude_post_ids) == ("cats1",)


def test_an_image_subscription_is_multipart(client: TestClient, make_png: Any) -> None:
    files = {"file": ("x.png", make_png((200, 10, 10), fmt="PNG"), "image/png")}
    r = client.post("/v1/subscriptions", files=files, data={"min_score": "0.8", "name": "red"})
    assert r.status_code == 201, r.text
    assert r.json()["query"]["kind"] == "image" and len(r.json()["query"]["image_sha256"]) == 64


@pytest.mark.parametrize(
    "body",
    [
        {"text": "cats", "min_score": 1.5},
        {"text": "cats", "min_score": -2},
        {"text": "cats"},  # min_score is required
        {"text": "cats", "min_score": 0.5, "filters": {"modalities": ["smell"]}},
        {
            "text": "cats",
            "min_score": 0.5,
            "filters": {"since": "2024-05-02", "until": "2024-05-01"},
        },
        {"text": "cats", "min_score": 0.5, "filters": {"color": "red"}},
        {"text": "cats", "post_id": "cats1", "min_score": 0.5},
        {"min_score": 0.5},
        {"text": "cats", "min_score": 0.5, "name": "bad\nname"},
    ],
)
def test_bad_subscriptions_are_422_with_a_message(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/v1/subscriptions", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"]


def test_an_upload_that_is_not_an_image_is_422_and_a_huge_one_413(client: TestClient) -> None:
    r = client.post(
        "/v1/subscriptions",
        files={"file": ("x.png", b"not an image at all", "image/png")},
        data={"min_score": "0.5"},
    )
    assert r.status_code == 422, r.text
    r = client.post(
        "/v1/subscriptions",
        files={"file": ("x.png", b"\x89PNG" + bytes(300_000), "image/png")},
        data={"min_score": "0.5"},
    )
    assert r.status_code == 413
    r = client.post(
        "/v1/subscriptions",
        files={"file": ("x.png", b"\x89PNG", "image/png")},
        data={"min_score": "0.5", "filters": "{not json"},
    )
    assert r.status_code == 422


def test_unknown_subscription_ids_are_404(client: TestClient) -> None:
    for sid in ("0" * 32, "nope", "../../etc"):
        assert client.get(f"/v1/subscriptions/{sid}").status_code == 404
        assert client.get(f"/v1/subscriptions/{sid}/events").status_code == 404


def test_the_subscription_limit_is_enforced(client: TestClient, settings: Any) -> None:
    settings.live.max_subscriptions = 1
    _create(client)
    r = client.post("/v1/subscriptions", json={"text": "more", "min_score": 0.5})
    assert r.status_code == 409 and "limit" in r.json()["error"]["message"]


# --------------------------------------------------------------------------- SSE


def _record(store: MemorySubscriptions, sub_id: str, posts: list[str]) -> None:
    matches = [
        Match(sub_id, p, 0.9, {"post_id": p, "score": 0.9, "item": 0, "subscription": sub_id})
        for p in posts
    ]
    assert store.record(matches) == len(posts)


def _read_events(client: TestClient, url: str, want: int, **kw: Any) -> list[tuple[str, dict]]:
    """The first ``want`` events of the stream at ``url`` as (id, data)."""
    out: list[tuple[str, dict]] = []
    fields: dict[str, str] = {}
    with client.stream("GET", url, **kw) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
                continue
            if "data" in fields:  # a blank line ends an event
                out.append((fields.get("id", ""), json.loads(fields["data"])))
                if len(out) == want:
                    break
            fields = {}
    return out


def test_events_resume_exactly_after_last_event_id(
    client: TestClient, subscriptions: MemorySubscriptions
) -> None:
    sid = _create(client)["id"]
    _record(subscriptions, sid, ["p1", "p2", "p3"])
    first = _read_events(client, f"/v1/subscriptions/{sid}/events", 2)
    assert [d["post_id"] for _, d in first] == ["p1", "p2"]
    _record(subscriptions, sid, ["p4"])
    resumed = _read_events(
        client, f"/v1/subscriptions/{sid}/events", 2, headers={"Last-Event-ID": first[-1][0]}
    )
    assert [d["post_id"] for _, d in resumed] == ["p3", "p4"]  # no gap, no repeat
    by_query = _read_events(client, f"/v1/subscriptions/{sid}/events?after={resumed[0][0]}", 1)
    assert [d["post_id"] for _, d in by_query] == ["p4"]
    assert client.get(f"/v1/subscriptions/{sid}").json()["last_event_id"] == resumed[-1][0]


def test_idle_streams_carry_heartbeats(client: TestClient) -> None:
    sid = _create(client)["id"]
    with client.stream("GET", f"/v1/subscriptions/{sid}/events") as r:
        lines = []
        for line in r.iter_lines():
            lines.append(line)
            if line == ": heartbeat":
                break
    assert lines[0].startswith(": subscription") and "retry: 2000" in lines


def test_a_bad_last_event_id_is_422(client: TestClient) -> None:
    sid = _create(client)["id"]
    r = client.get(f"/v1/subscriptions/{sid}/events", headers={"Last-Event-ID": "yesterday"})
    assert r.status_code == 422 and "stream id" in r.json()["error"]["message"]
    assert client.get(f"/v1/subscriptions/{sid}/events?after=1-2-3").status_code == 422
