"""``crossfeed demo --no-serve`` end to end on a small corpus, on private names.

The README's main command, run the way a user runs it (CLI ``main(argv)``), but on
its own topics, consumer group, collection, Redis prefix and state directory, so
it neither reads nor disturbs anything else on the engines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from crossfeed.ops.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def private_env(
    private_deployment: Callable[[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> str:
    env = private_deployment("demo")
    suffix = env["CROSSFEED_APP_ID"].rsplit("-", 1)[1]
    monkeypatch.setenv("CROSSFEED_API_PORT", str(18000 + int(suffix[:4], 16) % 2000))
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width
    return suffix


def test_demo_indexes_its_corpus_and_answers(
    private_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--limit", "60", "--no-serve"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(next(line for line in out.splitlines() if line.startswith('{"posts"')))
    assert summary["rows"] >= summary["expected_rows"] > 60  # + video moments
    assert "ready" in out
    # Every example query printed hits (a score line under it).
    assert len(re.findall(r"^\s+\d\.\d{3} (image|video)", out, flags=re.M)) >= 5
    assert "tags the stream suggested" in out
    assert re.search(r"serving \S+ from collection crossfeed_demo_\w+__\w+", out)
