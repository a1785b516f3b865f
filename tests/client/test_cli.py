"""``crossfeed search`` and ``crossfeed post`` against the real API on a loopback port."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from crossfeed.ops.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_prints_a_readable_table(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "search", "cute cats sleeping on a sofa", "--url", api_url, "--top-k", "3"
    )
    assert code == 0
    lines = out.splitlines()
    header = lines[0]
    for column in ("score", "post", "author", "source", "posted", "text"):
        assert column in header
    first = next(line for line in lines if line.strip().startswith("1 "))
    assert "cats1" in first and "@author0" in first and "mastodon" in first
    assert "cute cats sleeping on a sofa" in out and "#pets" in out
    assert "3 results" in out and "--cursor" in out  # how to get the next page


def test_search_json_is_the_api_response(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "search", "cats", "--url", api_url, "--json", "--source", "bluesky")
    body = json.loads(out)
    assert code == 0 and body["query"] == "text"
    assert {r["source"] for r in body["results"]} == {"bluesky"}


def test_search_all_pages_as_json_lines(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "search", "cats", "--url", api_url, "--all", "--top-k", "3", "--json"
    )
    ids = [json.loads(line)["id"] for line in out.splitlines()]
    assert code == 0 and len(ids) == len(set(ids)) == 8
    code, out, _ = _run(capsys, "search", "cats", "--url", api_url, "--all", "--limit", "4")
    assert code == 0 and "4 results" in out


def test_search_by_image_and_by_post(
    api_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    make_picture: Callable[[tuple[int, int, int]], bytes],
) -> None:
    image = tmp_path / "blue.png"
    image.write_bytes(make_picture((30, 60, 230)))
    code, out, _ = _run(capsys, "search", "--image", str(image), "--url", api_url, "--json")
    assert code == 0 and json.loads(out)["results"][0]["id"] == "img1"
    code, out, _ = _run(capsys, "search", "--post", "cats1", "--url", api_url, "--json")
    assert code == 0 and "cats1" not in {r["id"] for r in json.loads(out)["results"]}


def test_post_view_and_json(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "post", "cats1", "--url", api_url)
    assert code == 0
    assert "cats1" in out and "@author0" in out and "mastodon" in out
    assert "cute cats sleeping on a sofa" in out
    code, out, _ = _run(capsys, "post", "a/b?c#d", "--url", api_url, "--json")
    assert code == 0 and json.loads(out)["id"] == "a/b?c#d"


def test_errors_are_one_clear_line(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "post", "missing", "--url", api_url)
    assert code == 1 and "not in the index" in err and "Traceback" not in err
    code, _, err = _run(capsys, "search", "cats", "--url", api_url, "--since", "yesterday")
    assert code == 1 and "since: Input should be a valid datetime" in err
    code, _, err = _run(capsys, "search", "cats", "--image", "x.png", "--url", api_url)
    assert code == 2 and "one of" in err
    code, _, err = _run(capsys, "search", "cats", "--url", "http://127.0.0.1:9", "--timeout", "1")
    assert code == 1 and "is the API running" in err


def test_post_text_is_not_taken_as_markup(
    api_url: str,
    capsys: pytest.CaptureFixture[str],
    index,
    embedder,  # type: ignore[no-untyped-def]
) -> None:
    from dataclasses import replace

    row = index.get_post("cats1")[0]
    index.upsert([replace(row, row_id="m:text:0", post_id="m", text="[red]not red[/red] [link=x]")])
    code, out, _ = _run(capsys, "search", "--post", "cats1", "--url", api_url, "--top-k", "20")
    assert code == 0 and "[red]not red[/red]" in out
